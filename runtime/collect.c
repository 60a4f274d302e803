/*
 * collect.c - a region's dirty marks become deltas in the epoch's batch.
 *
 * The summary and page bits give the list of dirty pages; each page's 512
 * granule bits (one cache line) give its runs of dirty bytes; a page whose
 * runs would take as many bytes as the page itself goes whole.
 *
 * A page's delta size follows from its granule bits alone, so collection is
 * two passes over the list: size every page (which gives the batch's length
 * and each delta's offset), then fill the deltas in.  Both passes cut the
 * list into parts that run on the worker pool (pool.c) when the epoch is
 * large: reading the dirty bytes is one cache and TLB miss per page, spread
 * over the whole region, and a single thread spends most of its time
 * waiting for them (see copy_q in emit.h for how a thread keeps many in
 * flight).  The batch is byte-identical for any number of threads.
 *
 * An epoch whose marks all still sit in the threads' logs is collected
 * from those instead (collect_logs.c); mmsb_collect_all picks the way.
 */
#include "emit.h"

#include <stdlib.h>
#include <string.h>

enum {
  PART_PAGES = 256, /* pages a part has at least: smaller cost more to hand
                       out than to run; parts are many (up to MAX_PARTS) so
                       that threads that wake late take fewer */
  MAX_PARTS = 64,
  AHEAD = 16       /* pages: granule lines prefetched ahead */
};

/* Finds the next run [lo, hi) of set bits in a page's 512 granule bits,
 * starting at *pos; false when none is left. */
static bool next_run(const uint64_t g[8], unsigned *pos, unsigned *lo, unsigned *hi) {
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

static void runs_from_bits(const uint64_t g[8], size_t plen, page_runs *pr) {
  unsigned pos = 0, lo, hi;
  pr->n = 0;
  while (next_run(g, &pos, &lo, &hi)) {
    size_t a = (size_t)lo * MMSB_GRANULE, e = (size_t)hi * MMSB_GRANULE;
    if (a >= plen) break;
    pr->off[pr->n] = (uint16_t)a;
    pr->len[pr->n++] = (uint16_t)((e < plen ? e : plen) - a);
  }
}

/* One collection job: the dirty pages of one region, cut into parts. */
typedef struct job {
  const mmsb_region *r;
  mmsb_win_maps *m;
  const size_t *pages;   /* window page numbers, ascending */
  uint32_t *plan;        /* per page: body size (0: no delta) | PLAN_WHOLE;
                            NULL: one pass, each page sized as it is filled */
  size_t n, p0;          /* pages; the region's first window page */
  size_t *bytes, *deltas; /* per part: pass 1 sizes, then pass 2 starts */
  uint8_t *out;          /* pass 2: where the region's deltas go */
  size_t *index;         /* pass 2: their offsets (relative to out) */
  size_t base;           /* offset of out in the batch */
  mmsb_batch *b;
} job;

/* The runs and plan of the job's page i, from its granule bits. */
static uint32_t plan_page(const job *j, size_t i, page_runs *pr) {
  size_t plen = mmsb_region_page_len(j->r, j->pages[i] - j->p0);
  runs_from_bits(j->m->gran + j->pages[i] * 8, plen, pr);
  return mmsb_runs_plan(pr, plen);
}

/* A prefetch the compiler keeps: GCC deletes a loop whose only effect is
 * __builtin_prefetch (it did, silently, to an earlier version of this). */
static inline void prefetch_line(const void *p) {
#if defined(__x86_64__) || defined(__i386__)
  __asm__ volatile("prefetcht0 %0" : : "m"(*(const char *)p));
#else
  __builtin_prefetch(p);
  __asm__ volatile("" : : "r"(p) : "memory");
#endif
}

/* Prefetches the granule lines of pages [lo, hi) in a loop of nothing
 * else, so that their misses overlap (at most the first GRAN_PREFETCH: they
 * must still be in cache when their turn comes). */
#define GRAN_PREFETCH 8192
static void prefetch_grans(const job *j, size_t lo, size_t hi) {
  if (hi - lo > GRAN_PREFETCH) hi = lo + GRAN_PREFETCH;
  for (size_t i = lo; i < hi; i++) prefetch_line(j->m->gran + j->pages[i] * 8);
}

static void size_part(void *ctx, int part, int nparts) {
  job *j = ctx;
  size_t lo, hi, bytes = 0, deltas = 0;
  mmsb_part_range(j->n, part, nparts, &lo, &hi);
  prefetch_grans(j, lo, hi);
  for (size_t i = lo; i < hi; i++) {
    if (i + AHEAD < hi) prefetch_line(j->m->gran + j->pages[i + AHEAD] * 8);
    page_runs pr;
    j->plan[i] = plan_page(j, i, &pr);
    if (j->plan[i]) {
      bytes += MMSB_DELTA_HDR + (j->plan[i] & ~PLAN_WHOLE);
      deltas++;
    }
  }
  j->bytes[part] = bytes;
  j->deltas[part] = deltas;
}

/* Writes the part's deltas from bytes[part] and deltas[part] on; both
 * become the part's ends. */
static void fill_part(void *ctx, int part, int nparts) {
  job *j = ctx;
  size_t lo, hi, at = j->bytes[part], d = j->deltas[part];
  mmsb_part_range(j->n, part, nparts, &lo, &hi);
  copy_q q;
  mmsb_copy_init(&q);
  if (!j->plan) prefetch_grans(j, lo, hi); /* one pass: not touched yet */
  for (size_t i = lo; i < hi; i++) {
    if (i + AHEAD < hi) prefetch_line(j->m->gran + j->pages[i + AHEAD] * 8);
    page_runs pr;
    uint32_t plan = plan_page(j, i, &pr);
    if (plan) {
      j->index[d++] = j->base + at;
      at += mmsb_emit_runs(j->out + at, j->r, j->pages[i] - j->p0, &pr, plan, &q);
    }
    memset(j->m->gran + j->pages[i] * 8, 0, 8 * sizeof(uint64_t));
  }
  mmsb_copy_done(&q, j->b);
  j->bytes[part] = at;
  j->deltas[part] = d;
}

/* The dirty page list and its plans; collection runs under mmsb_mark_lock,
 * so one list serves every call. */
static size_t *plist, plist_cap, plan_cap;
static uint32_t *plans;

/* Sets the page and summary bits of pages[0..n) again. */
static void put_back(mmsb_win_maps *m, const size_t *pages, size_t n) {
  for (size_t k = 0; k < n; k++) {
    m->pages[pages[k] >> 6] |= (uint64_t)1 << (pages[k] & 63);
    m->summary[pages[k] >> 12] |= (uint64_t)1 << ((pages[k] >> 6) & 63);
  }
}

/* Takes the dirty pages of r off the page and summary bits into plist;
 * returns how many, or SIZE_MAX when memory is short (bits as they were). */
static size_t take_pages(mmsb_win_maps *m, const mmsb_region *r) {
  size_t p0 = r->win_off >> PAGE_SHIFT, pend = p0 + (r->map_size >> PAGE_SHIFT), n = 0;
  size_t w0 = p0 >> 6, w1 = (pend - 1) >> 6;
  for (size_t sw = w0 >> 6; sw <= w1 >> 6; sw++) {
    for (uint64_t s = m->summary[sw]; s; s &= s - 1) {
      size_t pw = sw * 64 + (size_t)__builtin_ctzll(s);
      if (pw < w0 || pw > w1) continue; /* another region's */
      uint64_t mine = m->pages[pw];
      /* Keep only this region's pages: a word can span two regions. */
      if (pw * 64 < p0) mine &= ~(uint64_t)0 << (p0 - pw * 64);
      if (pw * 64 + 64 > pend) mine &= ((uint64_t)1 << (pend - pw * 64)) - 1;
      size_t *t = mmsb_grow(plist, &plist_cap, n + 64, sizeof *t);
      if (!t) {
        put_back(m, plist, n);
        return SIZE_MAX;
      }
      plist = t;
      for (uint64_t x = mine; x; x &= x - 1) plist[n++] = pw * 64 + (size_t)__builtin_ctzll(x);
      m->pages[pw] &= ~mine;
      if (m->pages[pw] == 0) m->summary[sw] &= ~((uint64_t)1 << (pw & 63));
    }
  }
  return n;
}

/* Few pages: one pass on this thread, into room for every page whole (at
 * most ONE_PASS_MAX pages: 16 MiB). */
#define ONE_PASS_MAX 4096

int mmsb_collect_region(mmsb_bus *bus, mmsb_region *r, mmsb_batch *b) {
  mmsb_win_maps *m = &mmsb_maps[r->win];
  size_t n = take_pages(m, r);
  if (n == SIZE_MAX) return mmsb_fail(MMSB_ENOMEM, "dirty page list");
  if (n == 0) return MMSB_OK;
  int threads = bus->cfg.commit_threads > 0 ? bus->cfg.commit_threads : 1;
  /* Few pages: waking the pool costs more than it saves (1e-5 of 1 GiB,
   * 1 342 pages, measured faster on one thread). */
  int nparts = threads == 1 || n <= ONE_PASS_MAX ? 1
               : n / PART_PAGES > MAX_PARTS ? MAX_PARTS : (int)(n / PART_PAGES);
  if (nparts < 1) nparts = 1;
  size_t bytes[MAX_PARTS] = {0}, deltas[MAX_PARTS] = {0}, total = n * (MMSB_DELTA_HDR + MMSB_PAGE_SIZE), count = n;
  job j = {r, m, plist, NULL, n, r->win_off >> PAGE_SHIFT, bytes, deltas, NULL, NULL, 0, b};
  if (nparts > 1 || n > ONE_PASS_MAX) { /* size first: the parts' starts */
    j.plan = mmsb_grow(plans, &plan_cap, n, sizeof *plans);
    if (!j.plan) {
      put_back(m, plist, n);
      return mmsb_fail(MMSB_ENOMEM, "dirty page plans");
    }
    plans = j.plan;
    mmsb_pool_run(nparts, threads, size_part, &j);
    total = count = 0;
    for (int i = 0; i < nparts; i++) { /* sizes become starts */
      size_t bt = bytes[i], dt = deltas[i];
      bytes[i] = total;
      deltas[i] = count;
      total += bt;
      count += dt;
    }
  }
  int rc = mmsb_batch_reserve_many(b, count, total);
  if (rc) {
    put_back(m, plist, n); /* the granule bits are still there */
    return rc;
  }
  j.base = b->bytes.len;
  j.out = b->bytes.p + j.base;
  j.index = b->index + b->count;
  mmsb_pool_run(nparts, threads, fill_part, &j);
  mmsb_batch_commit_many(b, deltas[nparts - 1], bytes[nparts - 1]);
  return MMSB_OK;
}

int mmsb_collect_all(mmsb_bus *bus, mmsb_batch *b) {
  int rc = MMSB_COLLECT_BITMAPS;
  if (mmsb_bitmap_gen == bus->bitmap_gen_seen) {
    rc = mmsb_collect_logs(bus, b);
    if (rc == MMSB_OK) bus->stats.log_commits++;
  }
  if (rc == MMSB_COLLECT_BITMAPS) {
    mmsb_logs_flush_all();
    rc = MMSB_OK;
    for (uint32_t i = 0; !rc && i < bus->nregions; i++)
      if (bus->regions[i]) rc = mmsb_collect_region(bus, bus->regions[i], b);
  }
  if (!rc) { /* what the logs' way folded was other buses' marks */
    bus->bitmap_gen_seen = mmsb_bitmap_gen;
    b->ordered = b->count;
  }
  return rc;
}
