/*
 * tlog.c - the transaction log: segment files of checksummed records
 * (docs/format.md), written at the log stage of every commit.
 *
 * Write-ahead: the router runs this sink before mirrors and subscribers; if
 * the write fails the epoch is not committed.  A failed write is cut off
 * the file again (ftruncate to the last good end), so the log on disk is
 * always a sequence of whole records.  Sync policies: none (the OS decides),
 * commit (fdatasync before mmsb_commit returns), group (a thread fdatasyncs
 * every group_ms; mmsb_durable_epoch says how far it got).
 */
#include "internal.h"
#include "tlog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include "hash.h"

static int io_status(int e) {
  return e == ENOSPC || e == EFBIG || e == EDQUOT ? MMSB_ENOSPC : MMSB_EIO;
}

/* The name of the segment whose first epoch is `first`. */
static void seg_name(char out[64], mmsb_epoch_t first) {
  snprintf(out, 64, "seg-%020llu.log", (unsigned long long)first);
}

static int sync_now(mmsb_tlog *lg) {
  if (fdatasync(lg->fd) != 0)
    return mmsb_fail(io_status(errno), "fdatasync %s: %s", lg->seg_name, strerror(errno));
  return MMSB_OK;
}

static int open_segment(mmsb_tlog *lg, mmsb_epoch_t first, bool create) {
  seg_name(lg->seg_name, first);
  int fd = openat(lg->dirfd, lg->seg_name, O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0), 0600);
  if (fd < 0)
    return mmsb_fail(io_status(errno), "open %s/%s: %s", lg->dir, lg->seg_name, strerror(errno));
  if (create) {
    uint8_t h[MMSB_SEG_HDR] = {0};
    uint32_t v = MMSB_LOG_VERSION;
    memcpy(h, MMSB_SEG_MAGIC, 8);
    memcpy(h + 8, &v, 4);
    if (write(fd, h, sizeof h) != (ssize_t)sizeof h || fsync(lg->dirfd) != 0) {
      int e = errno;
      close(fd);
      unlinkat(lg->dirfd, lg->seg_name, 0);
      return mmsb_fail(io_status(e), "create %s/%s: %s", lg->dir, lg->seg_name, strerror(e));
    }
    lg->seg_size = MMSB_SEG_HDR;
  }
  if (lg->fd >= 0) close(lg->fd);
  lg->fd = fd;
  return MMSB_OK;
}

/* Writes one record (header + parts) at the end of the segment; on failure
 * cuts the file back to where it was. */
static int append(mmsb_tlog *lg, int type, mmsb_epoch_t epoch, struct iovec *parts,
                  int nparts) {
  uint64_t len = 0;
  for (int i = 0; i < nparts; i++) len += parts[i].iov_len;
  uint8_t h[MMSB_REC_HDR];
  uint32_t magic = MMSB_REC_MAGIC;
  uint16_t t = (uint16_t)type, z = 0;
  memcpy(h, &magic, 4);
  memcpy(h + 4, &t, 2);
  memcpy(h + 6, &z, 2);
  memcpy(h + 8, &epoch, 8);
  memcpy(h + 16, &len, 8);
  const void *ps[8] = {h};
  size_t ls[8] = {24};
  for (int i = 0; i < nparts && i < 7; i++) {
    ps[i + 1] = parts[i].iov_base;
    ls[i + 1] = parts[i].iov_len;
  }
  uint64_t sum = mmsb_xxh3_parts(ps, ls, nparts + 1 > 8 ? 8 : nparts + 1);
  memcpy(h + 24, &sum, 8);
  struct iovec iov[8];
  iov[0] = (struct iovec){h, sizeof h};
  for (int i = 0; i < nparts && i < 7; i++) iov[i + 1] = parts[i];
  uint64_t total = sizeof h + len, done = 0;
  int n = nparts + 1, first = 0;
  while (done < total) {
    ssize_t w = pwritev(lg->fd, iov + first, n - first, (off_t)(lg->seg_size + done));
    if (w <= 0) {
      int e = w < 0 ? errno : EIO;
      if (e == EINTR) continue;
      if (ftruncate(lg->fd, (off_t)lg->seg_size) != 0) { /* keep whole records */ }
      return mmsb_fail(io_status(e), "log write to %s/%s: %s", lg->dir, lg->seg_name,
                       strerror(e));
    }
    done += (uint64_t)w;
    for (size_t k = (size_t)w; k > 0 && first < n;) { /* advance the iovecs */
      if (k >= iov[first].iov_len) { k -= iov[first].iov_len; first++; }
      else { iov[first].iov_base = (uint8_t *)iov[first].iov_base + k; iov[first].iov_len -= k; k = 0; }
    }
  }
  lg->seg_size += total;
  return MMSB_OK;
}

int mmsb_log_rotate(mmsb_tlog *lg, mmsb_epoch_t first) {
  char seg[64];
  seg_name(seg, first);
  if (strcmp(seg, lg->seg_name) == 0) return MMSB_OK;
  int rc = sync_now(lg);
  return rc ? rc : open_segment(lg, first, true);
}

int mmsb_log_region(mmsb_bus *bus, mmsb_region *r) {
  mmsb_tlog *lg = bus->log;
  if (!lg || r->logged) return MMSB_OK;
  uint8_t h[18];
  uint32_t flags = r->owned ? 0 : 1; /* a global: its initial bytes follow */
  uint64_t size = r->size;
  uint16_t nl = (uint16_t)strlen(r->name);
  memcpy(h, &r->id, 4);
  memcpy(h + 4, &flags, 4);
  memcpy(h + 8, &size, 8);
  memcpy(h + 16, &nl, 2);
  struct iovec parts[3] = {{h, sizeof h}, {r->name, nl}, {r->data, flags ? r->size : 0}};
  int rc = append(lg, MMSB_REC_REGION, atomic_load(&bus->epoch), parts, 3);
  if (rc == MMSB_OK) r->logged = true;
  return rc;
}

int mmsb_region_record_read(const uint8_t *p, uint64_t len, mmsb_region_rec *out) {
  if (len < 18) return mmsb_fail(MMSB_ECORRUPT, "short region record");
  uint16_t nl;
  memcpy(&out->id, p, 4);
  memcpy(&out->flags, p + 4, 4);
  memcpy(&out->size, p + 8, 8);
  memcpy(&nl, p + 16, 2);
  if (nl == 0 || nl > MMSB_NAME_MAX || 18 + (uint64_t)nl > len || (out->flags & ~1u) ||
      ((out->flags & 1) ? len != 18 + nl + out->size : len != 18u + nl))
    return mmsb_fail(MMSB_ECORRUPT, "bad region record");
  memcpy(out->name, p + 18, nl);
  out->name[nl] = 0;
  out->image = p + 18 + nl;
  return MMSB_OK;
}

/* The log stage: digest, record, sync per policy; the digest changes are
 * kept only once the record is written. */
static int log_sink(void *ctx, mmsb_bus *bus, const mmsb_batch *b) {
  mmsb_tlog *lg = ctx;
  mmsb_epoch_t e = mmsb_batch_epoch(b);
  if (lg->seg_size >= lg->seg_limit) { /* rotate; sync the old one unless told not to */
    pthread_mutex_lock(&lg->mu); /* the group syncer reads fd: not while it changes */
    int rc = bus->cfg.sync == MMSB_SYNC_NONE ? MMSB_OK : sync_now(lg);
    if (!rc) rc = open_segment(lg, e, true);
    pthread_mutex_unlock(&lg->mu);
    if (rc) return rc;
  }
  int rc = mmsb_graph_serialize(bus, &lg->graph);
  if (rc == 1) { /* the graph changed: its record precedes the epoch's */
    struct iovec gp[1] = {{lg->graph.p, lg->graph.len}};
    pthread_mutex_lock(&lg->mu);
    rc = append(lg, MMSB_REC_GRAPH, e, gp, 1);
    pthread_mutex_unlock(&lg->mu);
  }
  if (rc) return rc;
  rc = mmsb_digest_compute(bus, b, &lg->dd);
  if (rc) return rc;
  size_t blen;
  const uint8_t *bytes = mmsb_batch_bytes(b, &blen);
  struct iovec parts[2] = {{&lg->dd.digest, 8}, {(void *)bytes, blen}};
  pthread_mutex_lock(&lg->mu);
  rc = append(lg, MMSB_REC_EPOCH, e, parts, 2);
  if (!rc && bus->cfg.sync == MMSB_SYNC_COMMIT) rc = sync_now(lg);
  if (!rc) {
    atomic_store(&lg->written, e);
    if (bus->cfg.sync == MMSB_SYNC_COMMIT) atomic_store(&lg->durable, e);
  }
  pthread_mutex_unlock(&lg->mu);
  if (rc) return rc;
  mmsb_digest_apply(&lg->dd);
  return MMSB_OK;
}

/* Group commit: one fdatasync every group_ms covers every epoch written. */
static void *syncer(void *arg) {
  mmsb_tlog *lg = arg;
  pthread_mutex_lock(&lg->mu);
  while (!lg->stop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)lg->group_ms * 1000000u;
    ts.tv_sec += (time_t)(ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    pthread_cond_timedwait(&lg->cv, &lg->mu, &ts);
    mmsb_epoch_t w = atomic_load(&lg->written);
    if (w != atomic_load(&lg->durable) && fdatasync(lg->fd) == 0)
      atomic_store(&lg->durable, w);
  }
  pthread_mutex_unlock(&lg->mu);
  return NULL;
}

int mmsb_bus_attach_log(mmsb_bus *bus) {
  mmsb_tlog *lg = calloc(1, sizeof *lg);
  if (!lg) return mmsb_fail(MMSB_ENOMEM, "log");
  lg->fd = -1;
  lg->dir = bus->dir;
  lg->group_ms = bus->cfg.group_ms ? bus->cfg.group_ms : 10;
  lg->seg_limit = bus->cfg.segment_bytes ? bus->cfg.segment_bytes : ((uint64_t)64 << 20);
  pthread_mutex_init(&lg->mu, NULL);
  pthread_cond_init(&lg->cv, NULL);
  bus->log = lg;
  if (!bus->read_only && mkdir(bus->dir, 0700) != 0 && errno != EEXIST)
    return mmsb_fail(io_status(errno), "mkdir %s: %s", bus->dir, strerror(errno));
  lg->dirfd = open(bus->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (lg->dirfd < 0)
    return mmsb_fail(errno == ENOENT ? MMSB_ENOTFOUND : MMSB_EIO, "open %s: %s",
                     bus->dir, strerror(errno));
  mmsb_recover_opts o = {.stop_at = bus->replay_stop, .write = !bus->read_only,
                         .salvage = bus->cfg.salvage != 0};
  int rc = mmsb_recover(bus, lg->dirfd, &o, &lg->rec);
  if (rc || bus->read_only) return rc;
  atomic_store(&lg->written, atomic_load(&bus->epoch));
  atomic_store(&lg->durable, atomic_load(&bus->epoch));
  if (o.last_seg[0]) {
    unsigned long long first;
    if (sscanf(o.last_seg, "seg-%llu.log", &first) != 1)
      return mmsb_fail(MMSB_ECORRUPT, "bad segment name %s", o.last_seg);
    if ((rc = open_segment(lg, first, false))) return rc;
    lg->seg_size = o.last_seg_end;
  } else if ((rc = open_segment(lg, atomic_load(&bus->epoch) + 1, true))) {
    return rc;
  }
  for (uint32_t i = 0; i < bus->nregions; i++)
    if (bus->regions[i]) bus->regions[i]->logged = true;
  if ((rc = mmsb_router_add(bus, MMSB_STAGE_LOG, log_sink, lg, NULL))) return rc;
  if (bus->cfg.sync == MMSB_SYNC_GROUP) {
    if (pthread_create(&lg->thread, NULL, syncer, lg) != 0)
      return mmsb_fail(MMSB_ENOMEM, "group-commit thread");
    lg->thread_on = true;
  }
  return MMSB_OK;
}

int mmsb_bus_detach_log(mmsb_bus *bus) {
  mmsb_tlog *lg = bus ? bus->log : NULL;
  if (!lg) return MMSB_OK;
  int rc = MMSB_OK;
  if (lg->thread_on) {
    pthread_mutex_lock(&lg->mu);
    lg->stop = true;
    pthread_cond_signal(&lg->cv);
    pthread_mutex_unlock(&lg->mu);
    pthread_join(lg->thread, NULL);
    lg->thread_on = false;
  }
  if (lg->fd >= 0 && !bus->read_only && bus->cfg.sync != MMSB_SYNC_NONE) rc = sync_now(lg);
  if (lg->fd >= 0) close(lg->fd);
  if (lg->dirfd >= 0) close(lg->dirfd);
  lg->fd = lg->dirfd = -1;
  mmsb_digest_free(&lg->dd);
  mmsb_buf_free(&lg->graph);
  pthread_mutex_destroy(&lg->mu);
  pthread_cond_destroy(&lg->cv);
  free(lg);
  bus->log = NULL;
  return rc;
}

mmsb_epoch_t mmsb_durable_epoch(const mmsb_bus *bus) {
  if (!bus) bus = mmsb_default_bus();
  return bus->log ? atomic_load(&bus->log->durable) : 0;
}

int mmsb_log_sync(mmsb_bus *bus) {
  if (!bus) bus = mmsb_default_bus();
  mmsb_tlog *lg = bus->log;
  if (!lg) return mmsb_fail(MMSB_EINVAL, "the bus has no log directory");
  pthread_mutex_lock(&lg->mu);
  int rc = sync_now(lg);
  if (!rc) atomic_store(&lg->durable, atomic_load(&lg->written));
  pthread_mutex_unlock(&lg->mu);
  return rc;
}

int mmsb_recovery_info(const mmsb_bus *bus, mmsb_recovery *out) {
  if (!bus || !out) return mmsb_fail(MMSB_EINVAL, "NULL argument");
  if (!bus->log) return mmsb_fail(MMSB_EINVAL, "the bus has no log directory");
  *out = bus->log->rec;
  return MMSB_OK;
}
