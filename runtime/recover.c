/*
 * recover.c - rebuilds a bus from its log directory: the newest valid
 * checkpoint, then every record after it, each checked before it is used.
 *
 * Rules (docs/format.md): a record is used only if its header, lengths and
 * checksum are valid, so a partial epoch is never applied.  A bad record
 * with nothing valid after it, in the last segment, is a torn tail: it is
 * cut off (when writing) and reported.  A bad record followed by valid
 * ones is corruption in the middle: the open is refused, naming the file and
 * offset, unless salvage is asked for (then the valid prefix is kept).
 * Every epoch's digest is recomputed from the pages it touched and compared
 * with the record's.
 */
#include "internal.h"
#include "tlog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "hash.h"

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

int mmsb_dir_list(int dirfd, const char *prefix, const char *suffix, char ***out) {
  int fd = dup(dirfd);
  DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
  if (!d) {
    if (fd >= 0) close(fd);
    return mmsb_fail(MMSB_EIO, "cannot list the log directory: %s", strerror(errno));
  }
  rewinddir(d);
  char **names = NULL;
  int n = 0, cap = 0;
  struct dirent *e;
  size_t pl = strlen(prefix), sl = strlen(suffix);
  while ((e = readdir(d))) {
    size_t l = strlen(e->d_name);
    if (l < pl + sl || strncmp(e->d_name, prefix, pl) || strcmp(e->d_name + l - sl, suffix))
      continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      char **t = realloc(names, (size_t)cap * sizeof *t);
      if (!t) break;
      names = t;
    }
    if (!(names[n] = strdup(e->d_name))) break;
    n++;
  }
  closedir(d);
  if (n > 1) qsort(names, (size_t)n, sizeof *names, by_name);
  *out = names;
  return n;
}

void mmsb_dir_list_free(char **names, int n) {
  for (int i = 0; i < n; i++) free(names[i]);
  free(names);
}

/* A file mapped read-only. */
typedef struct mapped { uint8_t *p; size_t len; } mapped;

static int map_file(int dirfd, const char *name, mapped *m) {
  m->p = NULL;
  m->len = 0;
  int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return mmsb_fail(MMSB_EIO, "open %s: %s", name, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return mmsb_fail(MMSB_EIO, "stat %s: %s", name, strerror(errno));
  }
  m->len = (size_t)st.st_size;
  if (m->len) {
    m->p = mmap(NULL, m->len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m->p == MAP_FAILED) {
      m->p = NULL;
      close(fd);
      return mmsb_fail(MMSB_EIO, "mmap %s: %s", name, strerror(errno));
    }
  }
  close(fd);
  return MMSB_OK;
}

static void unmap_file(mapped *m) {
  if (m->p) munmap(m->p, m->len);
  m->p = NULL;
}

/* A record at off in m, checked; returns its total length or 0. */
static uint64_t record_at(const mapped *m, size_t off, int *type, mmsb_epoch_t *epoch,
                          const uint8_t **payload, uint64_t *plen) {
  if (m->len - off < MMSB_REC_HDR) return 0;
  const uint8_t *h = m->p + off;
  uint32_t magic;
  uint16_t t, z;
  uint64_t len, sum;
  memcpy(&magic, h, 4);
  memcpy(&t, h + 4, 2);
  memcpy(&z, h + 6, 2);
  memcpy(epoch, h + 8, 8);
  memcpy(&len, h + 16, 8);
  memcpy(&sum, h + 24, 8);
  if (magic != MMSB_REC_MAGIC || z != 0 || t < MMSB_REC_REGION || t > MMSB_REC_GRAPH)
    return 0;
  if (len > m->len - off - MMSB_REC_HDR) return 0;
  const void *parts[2] = {h, h + MMSB_REC_HDR};
  size_t lens[2] = {24, (size_t)len};
  if (mmsb_xxh3_parts(parts, lens, 2) != sum) return 0;
  *type = t;
  *payload = h + MMSB_REC_HDR;
  *plen = len;
  return MMSB_REC_HDR + len;
}

/* True if some valid record starts after off (in m). */
static bool valid_after(const mapped *m, size_t off) {
  static const uint8_t magic[4] = {'M', 'R', 'E', 'C'};
  for (size_t at = off + 1; at + MMSB_REC_HDR <= m->len; at++) {
    const uint8_t *hit = memmem(m->p + at, m->len - at, magic, 4);
    if (!hit) return false;
    at = (size_t)(hit - m->p);
    int t;
    mmsb_epoch_t e;
    const uint8_t *pl;
    uint64_t plen;
    if (record_at(m, at, &t, &e, &pl, &plen)) return true;
  }
  return false;
}

typedef struct rstate {
  mmsb_bus *bus;
  mmsb_recover_opts *o;
  mmsb_recovery *rec;
  mmsb_epoch_t ckpt;
  mmsb_digest_delta dd;
  bool done;
} rstate;

static int apply_region(rstate *s, const uint8_t *p, uint64_t len) {
  mmsb_region_rec rec;
  int rc = mmsb_region_record_read(p, len, &rec);
  if (rc) return rc;
  mmsb_region *r = mmsb_region_by_id(s->bus, rec.id);
  if (r) { /* known from the checkpoint */
    if (strcmp(r->name, rec.name) || r->size != rec.size)
      return mmsb_fail(MMSB_ECORRUPT, "region %u is '%s' in the checkpoint, '%s' in the log",
                       rec.id, r->name, rec.name);
    return MMSB_OK;
  }
  rc = mmsb_region_recover(s->bus, rec.id, rec.name, rec.size, &r);
  if (rc) return rc;
  if (rec.flags & 1) { /* a global's initial bytes */
    memcpy(r->data, rec.image, rec.size);
    mmsb_digest_region_rehash(r);
  }
  return MMSB_OK;
}

static int apply_epoch(rstate *s, mmsb_epoch_t e, const uint8_t *p, uint64_t len) {
  mmsb_epoch_t cur = atomic_load(&s->bus->epoch);
  if (e <= s->ckpt) return MMSB_OK; /* covered by the checkpoint */
  if (s->o->stop_at && e > s->o->stop_at) { s->done = true; return MMSB_OK; }
  if (e != cur + 1)
    return mmsb_fail(MMSB_ECORRUPT, "epoch %llu follows epoch %llu",
                     (unsigned long long)e, (unsigned long long)cur);
  if (len < 8) return mmsb_fail(MMSB_ECORRUPT, "short epoch record");
  uint64_t digest;
  memcpy(&digest, p, 8);
  mmsb_batch view, *b = &view; /* in place: the mapped log is not copied */
  int rc = mmsb_batch_view(p + 8, len - 8, b);
  if (rc) return rc;
  if (mmsb_batch_epoch(b) != e) rc = mmsb_fail(MMSB_ECORRUPT, "batch of epoch %llu in record %llu",
                                               (unsigned long long)mmsb_batch_epoch(b),
                                               (unsigned long long)e);
  if (!rc) rc = mmsb_batch_apply(b, s->bus);
  if (!rc) rc = mmsb_digest_compute(s->bus, b, &s->dd);
  if (!rc && s->dd.digest != digest)
    rc = mmsb_fail(MMSB_ECORRUPT, "epoch %llu: state digest %016llx, log says %016llx",
                   (unsigned long long)e, (unsigned long long)s->dd.digest,
                   (unsigned long long)digest);
  if (!rc) {
    mmsb_digest_apply(&s->dd);
    atomic_store(&s->bus->epoch, e);
  }
  mmsb_batch_view_free(b);
  return rc;
}

/* Reads one segment; *bad gets the offset of the first bad record or the
 * file length. */
static int read_segment(rstate *s, const char *name, const mapped *m, size_t *bad) {
  if (m->len < MMSB_SEG_HDR || memcmp(m->p, MMSB_SEG_MAGIC, 8)) {
    *bad = 0;
    return MMSB_OK;
  }
  uint32_t v;
  memcpy(&v, m->p + 8, 4);
  if (v != MMSB_LOG_VERSION)
    return mmsb_fail(MMSB_ECORRUPT, "%s: log version %u (this build reads %u)", name, v,
                     MMSB_LOG_VERSION);
  size_t off = MMSB_SEG_HDR;
  while (off < m->len && !s->done) {
    int t;
    mmsb_epoch_t e;
    const uint8_t *pl;
    uint64_t plen, n = record_at(m, off, &t, &e, &pl, &plen);
    if (!n) break;
    int rc = t == MMSB_REC_REGION  ? apply_region(s, pl, plen)
             : t == MMSB_REC_EPOCH ? apply_epoch(s, e, pl, plen)
                                   : MMSB_OK; /* GRAPH: for tools; replay needs no code */
    if (rc) return mmsb_fail(rc, "%s offset %zu: %s", name, off, mmsb_last_error());
    s->rec->records++;
    off += n;
  }
  *bad = s->done ? m->len : off;
  return MMSB_OK;
}

/* A bad record at `bad` of segment i of n: torn tail or corruption. */
static int handle_bad(rstate *s, int dirfd, char **segs, int i, int n, const mapped *m,
                      size_t bad) {
  bool later = valid_after(m, bad);
  for (int k = i + 1; k < n && !later; k++) {
    mapped mk;
    if (map_file(dirfd, segs[k], &mk) == MMSB_OK) {
      later = mk.len > MMSB_SEG_HDR && valid_after(&mk, MMSB_SEG_HDR - 1);
      unmap_file(&mk);
    }
  }
  if (later && !s->o->salvage)
    return mmsb_fail(MMSB_ECORRUPT, "log corrupt in the middle: %s offset %zu (valid "
                     "records follow; open with salvage to keep the prefix)", segs[i], bad);
  uint64_t dropped = m->len - bad;
  for (int k = i + 1; k < n; k++) {
    struct stat st;
    if (fstatat(dirfd, segs[k], &st, 0) == 0) dropped += (uint64_t)st.st_size;
  }
  s->rec->bytes_dropped += dropped;
  s->rec->records_dropped += 1;
  snprintf(s->rec->detail, sizeof s->rec->detail, "%s: cut %s at offset %zu (%llu bytes)",
           later ? "salvaged" : "torn tail", segs[i], bad, (unsigned long long)dropped);
  if (s->o->write) {
    int fd = openat(dirfd, segs[i], O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)(bad < MMSB_SEG_HDR ? 0 : bad)) != 0 || fsync(fd) != 0) {
      if (fd >= 0) close(fd);
      return mmsb_fail(MMSB_EIO, "cannot cut %s: %s", segs[i], strerror(errno));
    }
    close(fd);
    if (bad < MMSB_SEG_HDR) unlinkat(dirfd, segs[i], 0);
    for (int k = i + 1; k < n; k++) unlinkat(dirfd, segs[k], 0);
    fsync(dirfd);
  }
  return MMSB_OK;
}

int mmsb_checkpoint_load(mmsb_bus *bus, int dirfd, mmsb_epoch_t stop_at, mmsb_epoch_t *epoch,
                         mmsb_recovery *rec);

int mmsb_recover(mmsb_bus *bus, int dirfd, mmsb_recover_opts *o, mmsb_recovery *rec) {
  memset(rec, 0, sizeof *rec);
  rstate s = {.bus = bus, .o = o, .rec = rec};
  int rc = mmsb_checkpoint_load(bus, dirfd, o->stop_at, &s.ckpt, rec);
  if (rc) return rc;
  rec->checkpoint_epoch = s.ckpt;
  char **segs;
  int n = mmsb_dir_list(dirfd, "seg-", ".log", &segs);
  if (n < 0) return n;
  o->last_seg[0] = 0;
  for (int i = 0; i < n && !rc && !s.done; i++) {
    mapped m;
    if ((rc = map_file(dirfd, segs[i], &m))) break;
    size_t bad = 0;
    rc = read_segment(&s, segs[i], &m, &bad);
    if (!rc && (bad < m.len || bad < MMSB_SEG_HDR)) { /* a header-less file is bad too */
      rc = handle_bad(&s, dirfd, segs, i, n, &m, bad);
      if (!rc && bad >= MMSB_SEG_HDR) {
        snprintf(o->last_seg, sizeof o->last_seg, "%s", segs[i]);
        o->last_seg_end = bad;
      }
      s.done = true;
    } else if (!rc) {
      snprintf(o->last_seg, sizeof o->last_seg, "%s", segs[i]);
      o->last_seg_end = m.len;
    }
    unmap_file(&m);
  }
  mmsb_dir_list_free(segs, n);
  mmsb_digest_free(&s.dd);
  rec->last_epoch = atomic_load(&bus->epoch);
  if (!rc && o->stop_at && rec->last_epoch < o->stop_at && o->stop_at != UINT64_MAX)
    rc = mmsb_fail(MMSB_ENOTFOUND, "epoch %llu is not in the log (last %llu)",
                   (unsigned long long)o->stop_at, (unsigned long long)rec->last_epoch);
  return rc;
}

/* Calls fn for every valid record of every segment of dir, in order; stops
 * at the first bad record of a segment (reporting it through fn with
 * type 0) or when fn returns nonzero. */
int mmsb_log_scan(const char *dir, mmsb_scan_fn fn, void *ctx) {
  int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0)
    return mmsb_fail(errno == ENOENT ? MMSB_ENOTFOUND : MMSB_EIO, "open %s: %s", dir,
                     strerror(errno));
  char **segs;
  int n = mmsb_dir_list(dirfd, "seg-", ".log", &segs), rc = n < 0 ? n : MMSB_OK, stop = 0;
  for (int i = 0; i < n && !rc && !stop; i++) {
    mapped m;
    if ((rc = map_file(dirfd, segs[i], &m))) break;
    size_t off = MMSB_SEG_HDR;
    if (m.len < MMSB_SEG_HDR || memcmp(m.p, MMSB_SEG_MAGIC, 8)) off = m.len + 1;
    while (off < m.len && !stop) {
      int t;
      mmsb_epoch_t e;
      const uint8_t *pl;
      uint64_t plen, k = record_at(&m, off, &t, &e, &pl, &plen);
      if (!k) break;
      stop = fn(ctx, segs[i], off, t, e, pl, plen);
      off += k;
    }
    if (!stop && off != m.len) stop = fn(ctx, segs[i], off > m.len ? 0 : off, 0, 0, NULL, 0);
    unmap_file(&m);
  }
  if (n >= 0) mmsb_dir_list_free(segs, n);
  close(dirfd);
  return rc;
}
