/*
 * checkpoint.c - every region at one epoch, in one file (docs/format.md).
 *
 * Written to ckpt-E.tmp, fsynced, renamed to ckpt-E.ckpt and the directory
 * fsynced, so a crash leaves either the old set of files or the new one.
 * The log then moves to a new segment and the segments and checkpoints the
 * new checkpoint covers are removed.  Loading picks the newest checkpoint
 * at or before the wanted epoch whose checksum holds; a bad one is
 * reported and an older one (or none) is used.
 */
#include "internal.h"
#include "tlog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include "hash.h"
#include <zstd.h>

typedef struct ckw {
  int fd;
  XXH3_state_t st;
  int err;
} ckw;

static void put(ckw *w, const void *p, size_t n) {
  if (w->err) return;
  XXH3_64bits_update(&w->st, p, n);
  for (size_t done = 0; done < n;) {
    ssize_t k = write(w->fd, (const uint8_t *)p + done, n - done);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) { w->err = k < 0 ? errno : EIO; return; }
    done += (size_t)k;
  }
}

static int put_region(ckw *w, const mmsb_region *r, bool compress) {
  void *z = NULL;
  size_t stored = r->size;
  if (compress) {
    size_t cap = ZSTD_compressBound(r->size);
    z = malloc(cap);
    if (!z) return mmsb_fail(MMSB_ENOMEM, "checkpoint compression buffer");
    stored = ZSTD_compress(z, cap, r->data, r->size, 1);
    if (ZSTD_isError(stored)) {
      free(z);
      return mmsb_fail(MMSB_EIO, "zstd: %s", ZSTD_getErrorName(stored));
    }
  }
  uint8_t h[MMSB_CKPT_REGION_HDR] = {0};
  uint32_t nl = (uint32_t)strlen(r->name);
  uint64_t size = r->size, st = stored;
  memcpy(h, &r->id, 4);
  memcpy(h + 4, &nl, 4);
  memcpy(h + 8, &size, 8);
  memcpy(h + 16, &st, 8);
  put(w, h, sizeof h);
  put(w, r->name, nl);
  put(w, z ? z : r->data, stored);
  free(z);
  return MMSB_OK;
}

/* Removes what checkpoint E covers: older checkpoints and segments whose
 * epochs all lie at or before E (the segment after them starts past E). */
static void retire(int dirfd, mmsb_epoch_t e) {
  char **names;
  int n = mmsb_dir_list(dirfd, "ckpt-", ".ckpt", &names);
  for (int i = 0; i < n; i++) {
    unsigned long long k;
    if (sscanf(names[i], "ckpt-%llu.ckpt", &k) == 1 && k < e) unlinkat(dirfd, names[i], 0);
  }
  if (n >= 0) mmsb_dir_list_free(names, n);
  n = mmsb_dir_list(dirfd, "seg-", ".log", &names);
  for (int i = 0; i + 1 < n; i++) {
    unsigned long long next;
    if (sscanf(names[i + 1], "seg-%llu.log", &next) == 1 && next <= e + 1)
      unlinkat(dirfd, names[i], 0);
  }
  if (n >= 0) mmsb_dir_list_free(names, n);
  fsync(dirfd);
}

int mmsb_checkpoint(mmsb_bus *bus) {
  if (!bus) bus = mmsb_default_bus();
  if (mmsb_refuse_inside(bus, "mmsb_checkpoint")) return MMSB_EBUSY;
  mmsb_tlog *lg = bus->log;
  if (!lg || bus->read_only) return mmsb_fail(MMSB_EINVAL, "the bus has no writable log directory");
  pthread_mutex_lock(&bus->lock);
  mmsb_epoch_t e = atomic_load(&bus->epoch);
  char tmp[64], fin[64];
  snprintf(tmp, sizeof tmp, "ckpt-%020llu.tmp", (unsigned long long)e);
  snprintf(fin, sizeof fin, "ckpt-%020llu.ckpt", (unsigned long long)e);
  ckw w = {.fd = openat(lg->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
  int rc = MMSB_OK;
  if (w.fd < 0) {
    rc = mmsb_fail(MMSB_EIO, "create %s: %s", tmp, strerror(errno));
    goto out;
  }
  XXH3_64bits_reset(&w.st);
  uint8_t h[MMSB_CKPT_HDR] = {0};
  uint32_t ver = 1, flags = bus->cfg.compress ? MMSB_CKPT_ZSTD : 0, nreg = 0;
  uint64_t digest = mmsb_digest(bus);
  for (uint32_t i = 0; i < bus->nregions; i++) nreg += bus->regions[i] != NULL;
  memcpy(h, MMSB_CKPT_MAGIC, 8);
  memcpy(h + 8, &ver, 4);
  memcpy(h + 12, &flags, 4);
  memcpy(h + 16, &e, 8);
  memcpy(h + 24, &digest, 8);
  memcpy(h + 32, &nreg, 4);
  put(&w, h, sizeof h);
  for (uint32_t i = 0; i < bus->nregions && !rc; i++)
    if (bus->regions[i]) rc = put_region(&w, bus->regions[i], flags & MMSB_CKPT_ZSTD);
  uint64_t sum = XXH3_64bits_digest(&w.st);
  if (!rc && !w.err && write(w.fd, &sum, 8) != 8) w.err = errno ? errno : EIO;
  if (!rc && !w.err && fsync(w.fd) != 0) w.err = errno;
  close(w.fd);
  if (!rc && w.err)
    rc = mmsb_fail(w.err == ENOSPC || w.err == EFBIG ? MMSB_ENOSPC : MMSB_EIO,
                   "write %s: %s", tmp, strerror(w.err));
  if (!rc && (renameat(lg->dirfd, tmp, lg->dirfd, fin) != 0 || fsync(lg->dirfd) != 0))
    rc = mmsb_fail(MMSB_EIO, "rename %s: %s", fin, strerror(errno));
  if (rc) {
    unlinkat(lg->dirfd, tmp, 0);
    goto out;
  }
  /* The next epoch goes to a new segment, so older ones can go. */
  pthread_mutex_lock(&lg->mu);
  rc = mmsb_log_rotate(lg, e + 1);
  pthread_mutex_unlock(&lg->mu);
  if (!rc) retire(lg->dirfd, e);
out:
  pthread_mutex_unlock(&bus->lock);
  return rc;
}

/* Whether `stored` bytes can be the zstd frame of a region of `size`
 * bytes, checked before the region is made: the frame's header must say
 * `size` (ZSTD_compress writes it), and RFC 8878 bounds what a frame can
 * hold: a block yields at most 128 KiB and takes at least 4 bytes (an RLE
 * block).  Without this, a corrupt header of a few bytes made recovery
 * allocate and hash a region of hundreds of GiB before the frame failed. */
static bool zstd_fits(const uint8_t *frame, uint64_t stored, uint64_t size) {
  unsigned long long fcs = ZSTD_getFrameContentSize(frame, stored);
  return fcs == size && size / (128u << 10) <= stored / 4;
}

/* Loads one checkpoint file into bus (which has no regions yet). */
static int load_one(mmsb_bus *bus, int dirfd, const char *name, mmsb_epoch_t *epoch) {
  int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return mmsb_fail(MMSB_EIO, "open %s: %s", name, strerror(errno));
  struct stat st;
  uint8_t *p = NULL;
  size_t len = 0;
  if (fstat(fd, &st) == 0 && st.st_size > 0) {
    len = (size_t)st.st_size;
    p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) p = NULL;
  }
  close(fd);
  int rc = MMSB_OK;
  uint64_t sum;
  if (!p || len < MMSB_CKPT_HDR + 8 || memcmp(p, MMSB_CKPT_MAGIC, 8)) {
    rc = mmsb_fail(MMSB_ECORRUPT, "%s: not a checkpoint", name);
    goto out;
  }
  memcpy(&sum, p + len - 8, 8);
  if (mmsb_xxh3(p, len - 8) != sum) {
    rc = mmsb_fail(MMSB_ECORRUPT, "%s: checksum mismatch", name);
    goto out;
  }
  uint32_t ver, flags, nreg;
  uint64_t digest;
  memcpy(&ver, p + 8, 4);
  memcpy(&flags, p + 12, 4);
  memcpy(epoch, p + 16, 8);
  memcpy(&digest, p + 24, 8);
  memcpy(&nreg, p + 32, 4);
  if (ver != 1 || (flags & ~MMSB_CKPT_ZSTD)) {
    rc = mmsb_fail(MMSB_ECORRUPT, "%s: version %u flags %u", name, ver, flags);
    goto out;
  }
  size_t off = MMSB_CKPT_HDR, end = len - 8;
  for (uint32_t i = 0; i < nreg && !rc; i++) {
    uint32_t id, nl;
    uint64_t size, stored;
    if (end - off < MMSB_CKPT_REGION_HDR) { rc = MMSB_ECORRUPT; break; }
    memcpy(&id, p + off, 4);
    memcpy(&nl, p + off + 4, 4);
    memcpy(&size, p + off + 8, 8);
    memcpy(&stored, p + off + 16, 8);
    off += MMSB_CKPT_REGION_HDR;
    if (nl == 0 || nl > MMSB_NAME_MAX || nl > end - off || stored > end - off - nl ||
        (!(flags & MMSB_CKPT_ZSTD) && stored != size)) { rc = MMSB_ECORRUPT; break; }
    char rname[MMSB_NAME_MAX + 1];
    memcpy(rname, p + off, nl);
    rname[nl] = 0;
    off += nl;
    if ((flags & MMSB_CKPT_ZSTD) && !zstd_fits(p + off, stored, size)) {
      rc = mmsb_fail(MMSB_ECORRUPT, "%s: region '%s' of %llu bytes in a zstd frame of %llu",
                     name, rname, (unsigned long long)size, (unsigned long long)stored);
      break;
    }
    mmsb_region *r;
    if ((rc = mmsb_region_recover(bus, id, rname, size, &r))) break;
    if (flags & MMSB_CKPT_ZSTD) {
      size_t got = ZSTD_decompress(r->data, size, p + off, stored);
      if (ZSTD_isError(got) || got != size) { rc = MMSB_ECORRUPT; break; }
    } else {
      memcpy(r->data, p + off, size);
    }
    off += stored;
    mmsb_digest_region_rehash(r);
  }
  if (!rc && off != end) rc = MMSB_ECORRUPT;
  if (!rc && mmsb_digest(bus) != digest) rc = mmsb_fail(MMSB_ECORRUPT, "%s: digest mismatch", name);
  if (rc == MMSB_ECORRUPT && !strstr(mmsb_last_error(), name))
    mmsb_fail(rc, "%s: bad region table at byte %zu", name, off);
  if (!rc) atomic_store(&bus->epoch, *epoch);
out:
  if (p) munmap(p, len);
  return rc;
}

/* Drops every region of bus (after a checkpoint that failed to load). */
static void drop_regions(mmsb_bus *bus) {
  for (uint32_t i = 0; i < bus->nregions; i++)
    if (bus->regions[i]) mmsb_region_release(bus->regions[i]);
  bus->nregions = 0;
  mmsb_nameidx_free(&bus->names);
  atomic_store(&bus->epoch, 0);
}

int mmsb_checkpoint_load(mmsb_bus *bus, int dirfd, mmsb_epoch_t stop_at, mmsb_epoch_t *epoch,
                         mmsb_recovery *rec) {
  *epoch = 0;
  char **names;
  int n = mmsb_dir_list(dirfd, "ckpt-", ".ckpt", &names);
  if (n < 0) return n;
  int rc = MMSB_OK;
  for (int i = n - 1; i >= 0; i--) {
    unsigned long long k;
    if (sscanf(names[i], "ckpt-%llu.ckpt", &k) != 1 || (stop_at && k > stop_at)) continue;
    rc = load_one(bus, dirfd, names[i], epoch);
    if (rc == MMSB_OK) break;
    if (rc != MMSB_ECORRUPT) break;
    snprintf(rec->detail, sizeof rec->detail, "skipped bad checkpoint: %s", mmsb_last_error());
    drop_regions(bus);
    *epoch = 0;
    rc = MMSB_OK;
  }
  mmsb_dir_list_free(names, n);
  return rc;
}
