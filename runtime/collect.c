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
 * waiting for them (see copy_q for how a thread keeps many in flight).  The
 * batch is byte-identical for any number of threads.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define PLAN_WHOLE 0x80000000u /* a page's plan: its delta goes whole */

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

/* A dirty page's runs of bytes (offset, length), clipped to the page's
 * bytes in the region: at most 256, maximal runs of 512 granules being
 * apart by one at least. */
typedef struct page_runs {
  uint32_t n;
  uint16_t off[GRANS_PER_PAGE / 2], len[GRANS_PER_PAGE / 2];
} page_runs;

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

/* The plan of a page's delta: its body size (0: no delta), with
 * PLAN_WHOLE when runs would take at least the page's plen bytes. */
static uint32_t runs_plan(const page_runs *pr, size_t plen) {
  size_t body = 0;
  for (uint32_t i = 0; i < pr->n; i++) body += MMSB_RUN_HDR + pr->len[i];
  return body >= plen ? (uint32_t)plen | PLAN_WHOLE : (uint32_t)body;
}

/* The copies of a part's dirty bytes are queued, not done on the spot:
 * writing a page's headers is bit scanning with branches that keep few
 * loads in flight, while a loop of nothing but copies keeps many cache
 * misses in flight at once (the region's dirty lines are spread all over
 * it).  A queue holds at least a page's worth (256 runs). */
#define COPY_MAX 1024
typedef struct copy_q {
  size_t n;
  struct { uint8_t *dst; const uint8_t *src; size_t len; } c[COPY_MAX];
} copy_q;

/* Copies 8 bytes at a time: runs are mostly one or two granules, and a
 * memcpy of variable length measured 2.3x slower here than this loop. */
static void copy_flush(copy_q *q) {
  for (size_t i = 0; i < q->n; i++) {
    uint8_t *dst = q->c[i].dst;
    const uint8_t *src = q->c[i].src;
    size_t n = q->c[i].len, k = 0;
    if (n >= 256) {
      memcpy(dst, src, n);
      continue;
    }
    for (; k + 8 <= n; k += 8) memcpy(dst + k, src + k, 8);
    for (; k < n; k++) dst[k] = src[k];
  }
  q->n = 0;
}

static inline void copy_push(copy_q *q, uint8_t *dst, const uint8_t *src, size_t len) {
  q->c[q->n].dst = dst;
  q->c[q->n].src = src;
  q->c[q->n++].len = len;
}

/* Writes the delta of a page (region page `page`) with runs pr and plan
 * (runs_plan) at o; its bytes are queued on q.  Returns the delta's length. */
static size_t emit_runs(uint8_t *o, const mmsb_region *r, size_t page, const page_runs *pr,
                        uint32_t plan, copy_q *q) {
  size_t start = page * MMSB_PAGE_SIZE;
  size_t plen = r->size - start < MMSB_PAGE_SIZE ? r->size - start : MMSB_PAGE_SIZE;
  const uint8_t *src = r->data + start;
  uint8_t *w = o + MMSB_DELTA_HDR;
  bool whole = plan & PLAN_WHOLE;
  uint32_t body = plan & ~PLAN_WHOLE;
  if (q->n + GRANS_PER_PAGE / 2 > COPY_MAX) copy_flush(q);
  if (whole) {
    copy_push(q, w, src, plen);
  } else {
    for (uint32_t i = 0; i < pr->n; i++) {
      memcpy(w, &pr->off[i], 2);
      memcpy(w + 2, &pr->len[i], 2);
      copy_push(q, w + MMSB_RUN_HDR, src + pr->off[i], pr->len[i]);
      w += MMSB_RUN_HDR + pr->len[i];
    }
  }
  mmsb_delta_write_header(o, r->id, page, MMSB_OP_ASSIGN, MMSB_T_BYTES, whole,
                          whole ? 0 : pr->n, body);
  return MMSB_DELTA_HDR + body;
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
} job;

static void part_range(const job *j, int part, int nparts, size_t *lo, size_t *hi) {
  *lo = j->n * (size_t)part / (size_t)nparts;
  *hi = j->n * (size_t)(part + 1) / (size_t)nparts;
}

/* The runs and plan of the job's page i, from its granule bits. */
static uint32_t plan_page(const job *j, size_t i, page_runs *pr) {
  size_t start = (j->pages[i] - j->p0) * MMSB_PAGE_SIZE;
  size_t plen = j->r->size - start < MMSB_PAGE_SIZE ? j->r->size - start : MMSB_PAGE_SIZE;
  runs_from_bits(j->m->gran + j->pages[i] * 8, plen, pr);
  return runs_plan(pr, plen);
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
  part_range(j, part, nparts, &lo, &hi);
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
  part_range(j, part, nparts, &lo, &hi);
  copy_q q;
  q.n = 0;
  if (!j->plan) prefetch_grans(j, lo, hi); /* one pass: not touched yet */
  for (size_t i = lo; i < hi; i++) {
    if (i + AHEAD < hi) prefetch_line(j->m->gran + j->pages[i + AHEAD] * 8);
    page_runs pr;
    uint32_t plan = plan_page(j, i, &pr);
    if (plan) {
      j->index[d++] = j->base + at;
      at += emit_runs(j->out + at, j->r, j->pages[i] - j->p0, &pr, plan, &q);
    }
    memset(j->m->gran + j->pages[i] * 8, 0, 8 * sizeof(uint64_t));
  }
  copy_flush(&q);
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
  job j = {r, m, plist, NULL, n, r->win_off >> PAGE_SHIFT, bytes, deltas, NULL, NULL, 0};
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

/* ---- Sparse epochs: straight from the mark logs ----
 * When no mark went into the bitmaps since the bus last collected from
 * them, every pending mark is still in a thread's log.  Commit then takes
 * the entries, sorts them by address and merges them into runs of granules,
 * and builds each dirty page's granule bits from those: the deltas are the
 * ones the bitmap path would make, without the random reads and writes of
 * granule lines (a sparse epoch touches one granule line per dirty page,
 * three times over, before it reads a single dirty byte).  Entries of
 * regions that are not this bus's go to the bitmaps, for their own bus. */

static uint64_t *ents, *ents_tmp;
static size_t ents_cap, tmp_cap;
typedef struct grun { uintptr_t g0, g1; } grun; /* granules [g0, g1), absolute */
static grun *runs;
static size_t runs_cap;

static inline uintptr_t ent_addr(uint64_t e) {
  return (uintptr_t)(e & (((uint64_t)1 << MMSB_LOG_LEN_SHIFT) - 1));
}

/* Sorts e[0..n) by address: LSD radix over the span of the addresses (a
 * GiB: 30 bits), 8 bits a pass for a few thousand entries, 11 for more (the
 * counters are cleared and summed every pass); tmp has room for n. */
static void sort_entries(uint64_t *e, uint64_t *tmp, size_t n) {
  if (n < 2) return;
  uintptr_t lo = UINTPTR_MAX, hi = 0;
  for (size_t i = 0; i < n; i++) {
    uintptr_t a = ent_addr(e[i]);
    lo = a < lo ? a : lo;
    hi = a > hi ? a : hi;
  }
  unsigned bits = n < 8192 ? 8 : 11;
  size_t nb = (size_t)1 << bits, mask = nb - 1, count[1 << 11];
  uint64_t *src = e, *dst = tmp;
  for (unsigned shift = 0; shift < 64 && (hi - lo) >> shift; shift += bits) {
    memset(count, 0, nb * sizeof *count);
    for (size_t i = 0; i < n; i++) count[((ent_addr(src[i]) - lo) >> shift) & mask]++;
    for (size_t k = 0, at = 0; k < nb; k++) {
      size_t c = count[k];
      count[k] = at;
      at += c;
    }
    for (size_t i = 0; i < n; i++) dst[count[((ent_addr(src[i]) - lo) >> shift) & mask]++] = src[i];
    uint64_t *t = src;
    src = dst;
    dst = t;
  }
  if (src != e) memcpy(e, src, n * sizeof *e);
}

/* Merges sorted entries into runs of granules; returns how many, or
 * SIZE_MAX when memory is short. */
static size_t merge_entries(const uint64_t *e, size_t n) {
  grun *t = mmsb_grow(runs, &runs_cap, n ? n : 1, sizeof *t);
  if (!t) return SIZE_MAX;
  runs = t;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    uintptr_t a = ent_addr(e[i]);
    uintptr_t g0 = a >> GRAN_SHIFT;
    uintptr_t g1 = (a + (size_t)(e[i] >> MMSB_LOG_LEN_SHIFT) + 1 + MMSB_GRANULE - 1) >> GRAN_SHIFT;
    if (k && g0 <= runs[k - 1].g1) {
      if (g1 > runs[k - 1].g1) runs[k - 1].g1 = g1;
    } else {
      runs[k++] = (grun){g0, g1};
    }
  }
  return k;
}

/* Emits one page of r with runs pr (the queue is flushed first if the
 * batch buffer may move: the queue points into it). */
static int emit_one(mmsb_batch *b, const mmsb_region *r, size_t page, const page_runs *pr,
                    copy_q *q) {
  size_t start = page * MMSB_PAGE_SIZE;
  size_t plen = r->size - start < MMSB_PAGE_SIZE ? r->size - start : MMSB_PAGE_SIZE;
  uint32_t plan = runs_plan(pr, plen);
  size_t body = plan & ~PLAN_WHOLE;
  if (body == 0) return MMSB_OK;
  if (b->bytes.cap - b->bytes.len < MMSB_DELTA_HDR + body) copy_flush(q);
  uint8_t *o = mmsb_batch_reserve(b, MMSB_DELTA_HDR + body);
  if (!o) return MMSB_ENOMEM;
  return mmsb_batch_commit_reserved(b, emit_runs(o, r, page, pr, plan, q));
}

/* Emits region r's pages from the runs of granules that fall in it (rs[0..n)
 * sorted, apart); adds to covered[i] the granules of run i that lie in r.
 * The page runs are the ones the bitmap path finds: maximal, cut at page
 * boundaries and at the region's end. */
static int emit_region_runs(mmsb_batch *b, const mmsb_region *r, const grun *rs, size_t n,
                            size_t *covered, copy_q *q) {
  uintptr_t r0 = (uintptr_t)r->data >> GRAN_SHIFT, r1 = r0 + (r->map_size >> GRAN_SHIFT);
  size_t i = 0, hi = n; /* the first run that ends past r0 */
  while (i < hi) {
    size_t mid = i + (hi - i) / 2;
    if (rs[mid].g1 <= r0) i = mid + 1;
    else hi = mid;
  }
  page_runs pr;
  pr.n = 0;
  size_t page = SIZE_MAX; /* the page pr belongs to */
  for (; i < n && rs[i].g0 < r1; i++) {
    uintptr_t a = rs[i].g0 > r0 ? rs[i].g0 - r0 : 0, e = (rs[i].g1 < r1 ? rs[i].g1 : r1) - r0;
    covered[i] += e - a;
    while (a < e) {
      size_t pg = a / GRANS_PER_PAGE, end = (pg + 1) * GRANS_PER_PAGE;
      if (end > e) end = e;
      if (pg != page) {
        int rc = page == SIZE_MAX ? MMSB_OK : emit_one(b, r, page, &pr, q);
        if (rc) return rc;
        pr.n = 0;
        page = pg;
      }
      size_t start = pg * MMSB_PAGE_SIZE;
      size_t plen = r->size - start < MMSB_PAGE_SIZE ? r->size - start : MMSB_PAGE_SIZE;
      size_t off = (a % GRANS_PER_PAGE) * MMSB_GRANULE, stop = (end - pg * GRANS_PER_PAGE) * MMSB_GRANULE;
      if (off < plen) {
        pr.off[pr.n] = (uint16_t)off;
        pr.len[pr.n++] = (uint16_t)((stop < plen ? stop : plen) - off);
      }
      a = end;
    }
  }
  return page == SIZE_MAX ? MMSB_OK : emit_one(b, r, page, &pr, q);
}

static size_t *covered;
static size_t covered_cap;

/* Collects every region of bus from the entries taken from the logs.  On
 * failure, and for entries of no region of this bus, the entries go to the
 * bitmaps (a mark too many sends unchanged bytes; a lost one would lose
 * stores). */
static int collect_from_logs(mmsb_bus *bus, mmsb_batch *b) {
  size_t n = mmsb_logs_take(&ents, &ents_cap);
  if (n == SIZE_MAX) return mmsb_fail(MMSB_ENOMEM, "mark log entries");
  uint64_t *t = mmsb_grow(ents_tmp, &tmp_cap, n ? n : 1, sizeof *t);
  size_t nr = SIZE_MAX, *c = NULL;
  if (t) {
    ents_tmp = t;
    sort_entries(ents, ents_tmp, n);
    nr = merge_entries(ents, n);
  }
  if (nr != SIZE_MAX && (c = mmsb_grow(covered, &covered_cap, nr ? nr : 1, sizeof *c))) covered = c;
  if (!c) {
    mmsb_logs_fold(ents, n);
    return mmsb_fail(MMSB_ENOMEM, "sorting mark log entries");
  }
  memset(covered, 0, nr * sizeof *covered);
  copy_q q;
  q.n = 0;
  int rc = MMSB_OK;
  for (uint32_t i = 0; !rc && i < bus->nregions; i++)
    if (bus->regions[i]) rc = emit_region_runs(b, bus->regions[i], runs, nr, covered, &q);
  copy_flush(&q);
  if (rc) {
    mmsb_logs_fold(ents, n);
    return rc;
  }
  /* Entries of runs not wholly in this bus's regions: to the bitmaps. */
  for (size_t i = 0, k = 0; i < n; i++) {
    uintptr_t g0 = ent_addr(ents[i]) >> GRAN_SHIFT;
    while (k + 1 < nr && runs[k].g1 <= g0) k++;
    if (covered[k] < runs[k].g1 - runs[k].g0) mmsb_logs_fold(&ents[i], 1);
  }
  return MMSB_OK;
}

int mmsb_collect_all(mmsb_bus *bus, mmsb_batch *b) {
  if (mmsb_bitmap_gen == bus->bitmap_gen_seen) {
    bus->stats.log_commits++;
    return collect_from_logs(bus, b);
  }
  mmsb_logs_flush_all();
  int rc = MMSB_OK;
  for (uint32_t i = 0; !rc && i < bus->nregions; i++)
    if (bus->regions[i]) rc = mmsb_collect_region(bus, bus->regions[i], b);
  if (!rc) bus->bitmap_gen_seen = mmsb_bitmap_gen;
  return rc;
}
