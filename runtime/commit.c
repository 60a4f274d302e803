/*
 * commit.c - turns dirty marks into the epoch's batch and routes it.
 *
 * Collection walks each region's summary bits, then page bits, then the
 * page's 512 granule bits (one cache line), so it touches only what changed.
 * Runs of dirty granules become runs of bytes; a page whose runs would take
 * more bytes than the page itself is sent whole.
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

/* Finds the next run [lo, hi) of set bits in a page's 512 granule bits,
 * starting at *pos; false when none is left. */
static bool next_run(const uint64_t g[8], unsigned *pos, unsigned *lo,
                     unsigned *hi) {
  unsigned i = *pos;
  while (i < GRANS_PER_PAGE) {
    uint64_t w = g[i >> 6] >> (i & 63);
    if (w) { i += (unsigned)__builtin_ctzll(w); break; }
    i = (i & ~63u) + 64;
  }
  if (i >= GRANS_PER_PAGE) return false;
  *lo = i;
  while (i < GRANS_PER_PAGE) {
    uint64_t w = ~g[i >> 6] >> (i & 63);
    if (w) { i += (unsigned)__builtin_ctzll(w); break; }
    i = (i & ~63u) + 64;
  }
  *hi = *pos = i;
  return true;
}

/* Emits the delta of one dirty page: g holds its granule bits.  Runs are
 * written in one pass; if they reach the page's size the page goes whole.
 * Runs of granules never exceed a whole page plus its header: at worst 256
 * one-granule runs take 256 * 12 = 3072 bytes. */
static int emit_page(mmsb_batch *b, const mmsb_region *r, size_t page,
                     const uint64_t g[8]) {
  size_t start = page * MMSB_PAGE_SIZE;
  size_t plen = r->size - start < MMSB_PAGE_SIZE ? r->size - start : MMSB_PAGE_SIZE;
  const uint8_t *src = r->data + start;
  uint8_t *o = mmsb_batch_reserve(b, MMSB_DELTA_HDR + MMSB_PAGE_SIZE);
  if (!o) return MMSB_ENOMEM;
  uint8_t *w = o + MMSB_DELTA_HDR, *limit = w + plen;
  uint32_t nruns = 0;
  unsigned pos = 0, lo, hi;
  bool whole = false;
  while (next_run(g, &pos, &lo, &hi)) {
    size_t a = (size_t)lo * MMSB_GRANULE, e = (size_t)hi * MMSB_GRANULE;
    if (a >= plen) break;
    if (e > plen) e = plen;
    size_t n = e - a;
    if ((size_t)(limit - w) <= MMSB_RUN_HDR + n) { whole = true; break; }
    uint16_t off16 = (uint16_t)a, n16 = (uint16_t)n;
    memcpy(w, &off16, 2);
    memcpy(w + 2, &n16, 2);
    w += MMSB_RUN_HDR;
    size_t k = 0;
    for (; k + 8 <= n; k += 8) memcpy(w + k, src + a + k, 8);
    for (; k < n; k++) w[k] = src[a + k];
    w += n;
    nruns++;
  }
  if (!whole && nruns == 0) return MMSB_OK; /* only padding past the end */
  if (whole) {
    memcpy(o + MMSB_DELTA_HDR, src, plen);
    w = o + MMSB_DELTA_HDR + plen;
    nruns = 0;
  }
  size_t body = (size_t)(w - o) - MMSB_DELTA_HDR;
  mmsb_delta_write_header(o, r->id, page, MMSB_OP_ASSIGN, MMSB_T_BYTES, whole,
                          nruns, (uint32_t)body);
  return mmsb_batch_commit_reserved(b, MMSB_DELTA_HDR + body);
}

int mmsb_collect_region(mmsb_bus *bus, mmsb_region *r, mmsb_batch *b) {
  (void)bus;
  mmsb_win_maps *m = &mmsb_maps[r->win];
  size_t p0 = r->win_off >> PAGE_SHIFT, np = r->map_size >> PAGE_SHIFT;
  size_t pend = p0 + np;
  for (size_t sw = (p0 >> 6) >> 6; sw <= ((pend - 1) >> 6) >> 6; sw++) {
    uint64_t s = m->summary[sw];
    while (s) {
      size_t pw = sw * 64 + (size_t)__builtin_ctzll(s);
      s &= s - 1;
      if (pw < (p0 >> 6) || pw > ((pend - 1) >> 6)) continue; /* another region's */
      uint64_t word = m->pages[pw], mine = word;
      /* Keep only this region's pages: a word can span two regions. */
      if (pw * 64 < p0) mine &= ~(uint64_t)0 << (p0 - pw * 64);
      if (pw * 64 + 64 > pend) mine &= ((uint64_t)1 << (pend - pw * 64)) - 1;
      for (uint64_t x = mine; x; x &= x - 1) {
        size_t pg = pw * 64 + (size_t)__builtin_ctzll(x);
        uint64_t *g = m->gran + pg * 8;
        int rc = emit_page(b, r, pg - p0, g);
        if (rc) return rc;
        memset(g, 0, 8 * sizeof *g);
      }
      m->pages[pw] = word & ~mine;
      if (m->pages[pw] == 0) m->summary[sw] &= ~((uint64_t)1 << (pw & 63));
    }
  }
  return MMSB_OK;
}

/* After a failed commit: marks every page of the partial batch dirty again,
 * so the stores it had collected are not lost. */
static void remark(mmsb_bus *bus, const mmsb_batch *b) {
  for (size_t i = 0; i < b->count; i++) {
    mmsb_delta d;
    mmsb_batch_delta_trusted(b, i, &d);
    mmsb_region *r = mmsb_region_by_id(bus, d.region_id);
    if (!r) continue;
    size_t start = (size_t)d.page * MMSB_PAGE_SIZE;
    size_t plen = r->size - start < MMSB_PAGE_SIZE ? r->size - start : MMSB_PAGE_SIZE;
    mmsb_mark_range((uintptr_t)r->data + start, plen);
  }
}

static int collect(mmsb_bus *bus, mmsb_batch *b, mmsb_epoch_t e) {
  int rc = mmsb_batch_begin(b, e);
  pthread_mutex_lock(&mmsb_mark_lock);
  mmsb_logs_flush_all();
  for (uint32_t i = 0; !rc && i < bus->nregions; i++)
    if (bus->regions[i]) rc = mmsb_collect_region(bus, bus->regions[i], b);
  pthread_mutex_unlock(&mmsb_mark_lock);
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
  for (size_t i = 0; i < b->count; i++) {
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
  uint64_t t0 = mmsb_now_ns();
  pthread_mutex_lock(&bus->lock);
  mmsb_epoch_t e = atomic_load(&bus->epoch) + 1;
  mmsb_batch *b = &bus->batch;
  int rc = collect(bus, b, e);
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
