/*
 * region.c - named, page-aligned blocks of tracked memory.
 *
 * Dynamic regions are carved from the arena (window 0); MMSB_STATE globals
 * are attached where the linker put them (window 1).  Ids count from 1 in
 * creation order and are what deltas carry.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int check_name(const char *name) {
  if (!name) return mmsb_fail(MMSB_EINVAL, "region name is NULL");
  size_t n = strnlen(name, MMSB_NAME_MAX + 1);
  if (n == 0) return mmsb_fail(MMSB_EINVAL, "region name is empty");
  if (n > MMSB_NAME_MAX)
    return mmsb_fail(MMSB_EINVAL, "region name longer than %d bytes", MMSB_NAME_MAX);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)name[i] < 0x20)
      return mmsb_fail(MMSB_EINVAL, "region name has a control character");
  return MMSB_OK;
}

mmsb_region *mmsb_region_lookup(mmsb_bus *bus, const char *name) {
  return mmsb_nameidx_find(&bus->names, name);
}

/* Adds r to the bus table under bus->lock; assigns its id. */
static int table_add(mmsb_bus *bus, mmsb_region *r) {
  mmsb_region **t = mmsb_grow(bus->regions, &bus->cap_regions, (size_t)bus->nregions + 1, sizeof *t);
  if (!t) return mmsb_fail(MMSB_ENOMEM, "region table");
  bus->regions = t;
  if (r) {
    bus->names.name_off = offsetof(mmsb_region, name);
    int rc = mmsb_nameidx_insert(&bus->names, r);
    if (rc) return rc;
  }
  bus->regions[bus->nregions++] = r;
  if (r) r->id = bus->nregions;
  return MMSB_OK;
}

/* Undoes the last table_add (a region that failed to set up). */
static void table_pop(mmsb_bus *bus, mmsb_region *r) {
  if (bus->nregions && bus->regions[bus->nregions - 1] == r) bus->regions[--bus->nregions] = NULL;
  mmsb_nameidx_remove(&bus->names, r);
}

static mmsb_region *region_new(mmsb_bus *bus, const char *name, size_t size) {
  mmsb_region *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->bus = bus;
  strcpy(r->name, name);
  r->size = size;
  r->map_size = (size + MMSB_PAGE_SIZE - 1) & ~(size_t)(MMSB_PAGE_SIZE - 1);
  r->fd = -1;
  return r;
}

/* Maps `path` over the arena block r->data (MAP_SHARED, MAP_FIXED). */
static int map_file(mmsb_region *r, const char *path) {
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return mmsb_fail(errno == ENOENT ? MMSB_ENOTFOUND : MMSB_EIO,
                     "open %s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 ||
      ((size_t)st.st_size < r->map_size && ftruncate(fd, (off_t)r->map_size) != 0)) {
    int e = errno;
    close(fd);
    return mmsb_fail(e == ENOSPC || e == EFBIG ? MMSB_ENOSPC : MMSB_EIO,
                     "size %s: %s", path, strerror(e));
  }
  void *p = mmap(r->data, r->map_size, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_FIXED, fd, 0);
  if (p == MAP_FAILED) {
    int e = errno;
    close(fd);
    return mmsb_fail(MMSB_EIO, "mmap %s: %s", path, strerror(e));
  }
  r->fd = fd;
  return MMSB_OK;
}

/* A name the bus already has: a region recovered from the log is handed to
 * the program once, if the size matches; anything else is a clash. */
static int claim(mmsb_region *r, size_t size, const char *path) {
  if (!r->recovered)
    return mmsb_fail(MMSB_EEXIST, "region '%s' exists", r->name);
  if (r->size != size)
    return mmsb_fail(MMSB_EMISMATCH, "region '%s' is %zu bytes in the log, %zu asked",
                     r->name, r->size, size);
  if (path)
    return mmsb_fail(MMSB_EUNSUPPORTED, "region '%s': a recovered region cannot be "
                     "mapped from a file", r->name);
  r->recovered = false;
  return MMSB_OK;
}

static int region_make(mmsb_bus *bus, const char *name, size_t size,
                       unsigned flags, const char *path, mmsb_region **out) {
  if (!bus || !out) return mmsb_fail(MMSB_EINVAL, "bus or out is NULL");
  *out = NULL;
  int rc = check_name(name);
  if (rc) return rc;
  if (size == 0) return mmsb_fail(MMSB_EINVAL, "region '%s': size 0", name);
  if (flags & ~(unsigned)MMSB_REGION_SHARED)
    return mmsb_fail(MMSB_EINVAL, "region '%s': unknown flags 0x%x", name, flags);
  if ((rc = mmsb_arena_init())) return rc;
  if (size > __mmsb_windows[0].size / 2)
    return mmsb_fail(MMSB_EINVAL, "region '%s': size %zu is larger than the "
                     "arena allows", name, size);
  if ((rc = mmsb_bus_lock(bus, "creating a region"))) return rc;
  mmsb_region *r = mmsb_region_lookup(bus, name);
  if (r) {
    rc = claim(r, size, path);
    pthread_mutex_unlock(&bus->lock);
    *out = rc ? NULL : r;
    return rc;
  }
  rc = MMSB_ENOMEM;
  r = region_new(bus, name, size);
  if (!r) { mmsb_fail(rc, "region '%s'", name); goto fail; }
  void *mem;
  if ((rc = mmsb_arena_alloc(r->map_size, &mem))) goto fail;
  r->data = mem;
  r->owned = true;
  r->win = 0;
  r->win_off = (uintptr_t)mem - __mmsb_windows[0].lo;
  r->flags = flags;
  if (path && (rc = map_file(r, path))) goto fail;
  mmsb_shadow_prefault(0, r->win_off, r->map_size);
  if ((rc = mmsb_verify_region_init(r)) || (rc = table_add(bus, r))) goto fail;
  if (bus->log && ((rc = mmsb_digest_region_init(r)) || (rc = mmsb_log_region(bus, r)))) {
    table_pop(bus, r);
    goto fail;
  }
  pthread_mutex_unlock(&bus->lock);
  *out = r;
  return MMSB_OK;
fail:
  if (r) mmsb_region_release(r);
  pthread_mutex_unlock(&bus->lock);
  return rc;
}

int mmsb_region_create(mmsb_bus *bus, const char *name, size_t size,
                       unsigned flags, mmsb_region **out) {
  char path[MMSB_NAME_MAX + 16];
  if ((flags & MMSB_REGION_SHARED) && name) {
    if (strchr(name, '/'))
      return mmsb_fail(MMSB_EINVAL, "shared region name '%s' has a '/'", name);
    snprintf(path, sizeof path, "/dev/shm/mmsb.%s", name);
    return region_make(bus, name, size, flags, path, out);
  }
  return region_make(bus, name, size, flags, NULL, out);
}

int mmsb_region_create_mapped(mmsb_bus *bus, const char *name, size_t size,
                              const char *path, mmsb_region **out) {
  if (!path) return mmsb_fail(MMSB_EINVAL, "path is NULL");
  return region_make(bus, name, size, MMSB_REGION_SHARED, path, out);
}

/* Registers memory the program owns (an MMSB_STATE global) as a region. */
int mmsb_region_attach(mmsb_bus *bus, const char *name, void *addr,
                       size_t size, mmsb_region **out) {
  int rc = check_name(name);
  if (rc) return rc;
  int w = mmsb_window_of((uintptr_t)addr, size);
  if (w < 0 || ((uintptr_t)addr & (MMSB_PAGE_SIZE - 1)))
    return mmsb_fail(MMSB_ERANGE, "state '%s' at %p is not page-aligned tracked "
                     "memory (compile it with the pass)", name, addr);
  pthread_mutex_lock(&bus->lock);
  mmsb_region *old = mmsb_region_lookup(bus, name);
  if (old) {
    rc = claim(old, size, NULL);
    if (rc == MMSB_OK) { /* the global takes the recovered bytes, then the region */
      memcpy(addr, old->data, size);
      mmsb_arena_free(old->data, old->map_size);
      old->data = addr;
      old->owned = false;
      old->win = w;
      old->win_off = (uintptr_t)addr - __mmsb_windows[w].lo;
    }
    pthread_mutex_unlock(&bus->lock);
    *out = rc ? NULL : old;
    return rc;
  }
  mmsb_region *r = region_new(bus, name, size);
  rc = r ? MMSB_OK : mmsb_fail(MMSB_ENOMEM, "region '%s'", name);
  if (r) {
    r->data = addr;
    r->win = w;
    r->win_off = (uintptr_t)addr - __mmsb_windows[w].lo;
    if ((rc = mmsb_verify_region_init(r)) || (rc = table_add(bus, r))) {
      mmsb_region_release(r);
      r = NULL;
    } else if (bus->log && ((rc = mmsb_digest_region_init(r)) || (rc = mmsb_log_region(bus, r)))) {
      table_pop(bus, r);
      r->data = NULL; /* the global is not ours to free */
      mmsb_region_release(r);
      r = NULL;
    }
  }
  pthread_mutex_unlock(&bus->lock);
  *out = r;
  return rc;
}

/* A region found in the log: arena memory, zero-filled, with the log's id.
 * The program claims it by creating (or registering) the same name. */
int mmsb_region_recover(mmsb_bus *bus, uint32_t id, const char *name, size_t size,
                        mmsb_region **out) {
  int rc = check_name(name);
  if (rc) return rc;
  if (size == 0 || size > __mmsb_windows[0].size / 2)
    return mmsb_fail(MMSB_ECORRUPT, "region '%s' of %zu bytes in the log", name, size);
  if (id == 0 || id > (1u << 24) || mmsb_region_by_id(bus, id) || mmsb_region_lookup(bus, name))
    return mmsb_fail(MMSB_ECORRUPT, "region id %u / name '%s' twice in the log", id, name);
  mmsb_region *r = region_new(bus, name, size);
  if (!r) return mmsb_fail(MMSB_ENOMEM, "region '%s'", name);
  void *mem;
  if ((rc = mmsb_arena_alloc(r->map_size, &mem))) { free(r); return rc; }
  r->data = mem;
  r->owned = true;
  r->win_off = (uintptr_t)mem - __mmsb_windows[0].lo;
  r->recovered = r->logged = true;
  while (bus->nregions < id - 1 && (rc = table_add(bus, NULL)) == MMSB_OK) {}
  if (!rc) rc = table_add(bus, r);
  if (!rc) rc = mmsb_digest_region_init(r);
  if (rc) {
    table_pop(bus, r);
    mmsb_region_release(r);
    return rc;
  }
  *out = r;
  return MMSB_OK;
}

/* Frees the region's memory and record; the caller unlinks it. */
void mmsb_region_release(mmsb_region *r) {
  if (r->owned && r->data) mmsb_arena_free(r->data, r->map_size);
  else if (r->data) mmsb_shadow_clear(r->win, r->win_off, r->map_size);
  if (r->fd >= 0) close(r->fd);
  free(r->shadow_copy);
  free(r->consumers);
  size_t pc_bytes = (r->map_size / MMSB_PAGE_SIZE) * sizeof(uint64_t);
  if (r->page_c) munmap(r->page_c, pc_bytes ? pc_bytes : 8); /* as digest.c mapped it */
  free(r);
}

int mmsb_region_destroy(mmsb_region *r) {
  if (!r) return mmsb_fail(MMSB_EINVAL, "region is NULL");
  if (!r->owned)
    return mmsb_fail(MMSB_EINVAL, "region '%s' is program state; it lives as "
                     "long as the program", r->name);
  mmsb_bus *bus = r->bus;
  if (mmsb_refuse_inside(bus, "mmsb_region_destroy")) return MMSB_EBUSY;
  pthread_mutex_lock(&bus->lock);
  /* What still points at it would read freed memory at the next commit. */
  const mmsb_node *n = r->producer ? r->producer : r->nconsumers ? r->consumers[0] : NULL;
  int rc = n ? mmsb_fail(MMSB_EBUSY, "region '%s' is %s node '%s': remove the node first",
                         r->name, r->producer ? "the output of" : "an input of", mmsb_node_name(n))
           : mmsb_mirror_of(bus, r)
               ? mmsb_fail(MMSB_EBUSY, "region '%s' has a mirror: destroy it first", r->name)
               : MMSB_OK;
  if (!rc) {
    bus->regions[r->id - 1] = NULL;
    mmsb_nameidx_remove(&bus->names, r);
  }
  pthread_mutex_unlock(&bus->lock);
  if (!rc) mmsb_region_release(r);
  return rc;
}

int mmsb_region_find(mmsb_bus *bus, const char *name, mmsb_region **out) {
  if (!bus || !out) return mmsb_fail(MMSB_EINVAL, "bus or out is NULL");
  *out = NULL;
  int rc = check_name(name);
  if (rc) return rc;
  if ((rc = mmsb_bus_lock(bus, "mmsb_region_find"))) return rc;
  *out = mmsb_region_lookup(bus, name);
  pthread_mutex_unlock(&bus->lock);
  return *out ? MMSB_OK : mmsb_fail(MMSB_ENOTFOUND, "no region '%s'", name);
}

mmsb_region *mmsb_region_by_id(mmsb_bus *bus, uint32_t id) {
  if (!bus || id == 0 || id > bus->nregions) return NULL;
  return bus->regions[id - 1];
}

void *mmsb_region_data(const mmsb_region *r) { return r ? r->data : NULL; }
size_t mmsb_region_size(const mmsb_region *r) { return r ? r->size : 0; }
const char *mmsb_region_name(const mmsb_region *r) { return r ? r->name : NULL; }
uint32_t mmsb_region_id(const mmsb_region *r) { return r ? r->id : 0; }
