/*
 * commit.c - turns dirty marks into the epoch's batch (collect.c) and
 * routes it; seals the epoch or, on failure, puts its marks back.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

uint64_t mmsb_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* After a failed commit: marks every page of the partial batch dirty again,
 * so the stores it had collected are not lost. */
static void remark(mmsb_bus *bus, const mmsb_batch *b) {
  for (size_t i = 0; i < b->count; i++) {
    mmsb_delta d;
    mmsb_batch_delta_trusted(b, i, &d);
    mmsb_region *r = mmsb_region_by_id(bus, d.region_id);
    if (!r) continue;
    mmsb_mark_range((uintptr_t)r->data + (size_t)d.page * MMSB_PAGE_SIZE,
                    mmsb_region_page_len(r, d.page));
  }
}

static __thread mmsb_inside inside; /* the commit this thread is in */

mmsb_inside mmsb_enter_commit(const mmsb_bus *bus, bool holds_lock) {
  mmsb_inside was = inside;
  if (inside.bus != bus) inside = (mmsb_inside){bus, holds_lock};
  return was;
}

void mmsb_leave_commit(mmsb_inside was) { inside = was; }

int mmsb_refuse_inside(const mmsb_bus *bus, const char *what) {
  if (!bus || inside.bus != bus) return MMSB_OK;
  return mmsb_fail(MMSB_EBUSY, "%s inside a commit of the same bus (from a node, a GPU node's "
                   "launch or a subscriber): call it after mmsb_commit returns", what);
}

int mmsb_bus_lock(mmsb_bus *bus, const char *what) {
  if (inside.bus == bus && !inside.holds)
    return mmsb_fail(MMSB_EBUSY, "%s from a node on the pool's threads (MMSB_THREADS > 1) "
                     "inside a commit of its own bus", what);
  pthread_mutex_lock(&bus->lock);
  return MMSB_OK;
}

static int collect(mmsb_bus *bus, mmsb_batch *b, mmsb_epoch_t e) {
  uint64_t t0 = bus->trace ? mmsb_now_ns() : 0;
  mmsb_mirrors_prepare(bus);
  int rc = mmsb_batch_begin(b, e);
  mmsb_logs_lock();
  if (!rc) rc = mmsb_collect_all(bus, b);
  mmsb_logs_unlock();
  if (bus->trace) mmsb_trace_event(bus, "collect", t0, mmsb_now_ns(), e, b->count);
  if (!rc && bus->naccums) {
    rc = mmsb_accum_flush(bus, b);
    if (!rc) rc = mmsb_batch_sort(b);
  }
  if (rc) {
    remark(bus, b);
    return rc;
  }
  mmsb_batch_finish(b);
  return MMSB_OK;
}

static void count(mmsb_bus *bus, const mmsb_batch *b) {
  bus->stats.commits++;
  bus->stats.deltas += b->count;
  bus->stats.delta_bytes += b->bytes.len;
  bus->stats.runs += b->runs; /* the collection counted its own */
  bus->stats.whole_pages += b->whole;
  for (size_t i = b->ordered; i < b->count; i++) { /* the rest, from their headers */
    mmsb_delta d;
    mmsb_batch_delta_trusted(b, i, &d);
    bus->stats.runs += d.whole_page ? 1 : d.nruns;
    bus->stats.whole_pages += d.whole_page;
  }
}

/* The epoch is sealed once propagation and the log accept it; if either
 * fails, its marks are put back and the epoch number is not used, so the
 * next commit carries those stores.  Mirrors and subscribers see only
 * sealed epochs; their failure is reported but the epoch stays. */
int mmsb_commit(mmsb_bus *bus, mmsb_epoch_t *epoch) {
  if (!bus) bus = mmsb_default_bus();
  if (bus->read_only) return mmsb_fail(MMSB_EINVAL, "a replay view cannot commit");
  int rc = mmsb_refuse_inside(bus, "mmsb_commit");
  if (rc) return rc;
  uint64_t t0 = mmsb_now_ns();
  pthread_mutex_lock(&bus->lock);
  mmsb_inside was = mmsb_enter_commit(bus, true);
  mmsb_epoch_t e = atomic_load(&bus->epoch) + 1;
  mmsb_batch *b = &bus->batch;
  rc = collect(bus, b, e);
  if (rc == MMSB_OK) {
    rc = mmsb_route(bus, b, MMSB_STAGE_PROPAGATE, MMSB_STAGE_LOG);
    if (rc) remark(bus, b);
  }
  if (rc == MMSB_OK) {
    if (bus->cfg.verify) {
      uint64_t bad = mmsb_verify_commit(bus, b);
      bus->verify_last = bad;
      bus->stats.untracked_bytes += bad;
    }
    atomic_store(&bus->epoch, e);
    count(bus, b);
    rc = mmsb_route(bus, b, MMSB_STAGE_MIRROR, MMSB_STAGE_SUBSCRIBE);
  }
  uint64_t t1 = mmsb_now_ns();
  bus->stats.commit_ns += t1 - t0;
  mmsb_trace_event(bus, rc ? "commit (failed)" : "commit", t0, t1, e, b->count);
  mmsb_leave_commit(was);
  pthread_mutex_unlock(&bus->lock);
  if (epoch) *epoch = atomic_load(&bus->epoch);
  return rc;
}

mmsb_epoch_t mmsb_epoch(const mmsb_bus *bus) {
  if (!bus) bus = mmsb_default_bus();
  return atomic_load(&((mmsb_bus *)bus)->epoch);
}

const mmsb_batch *mmsb_last_batch(const mmsb_bus *bus) {
  if (!bus) bus = mmsb_default_bus();
  return &bus->batch;
}
