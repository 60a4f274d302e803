/*
 * collect_logs.c - epochs collected straight from the threads' mark logs.
 *
 * When no mark went into the bitmaps since the bus last collected from
 * them, every pending mark is still in a thread's log (marklog.c lets a
 * log grow so that this holds up to ~1e-3 of a GiB's words).  Commit then
 * sorts the entries by address and merges them into runs of granules, and
 * builds each dirty page's runs from those: the deltas are the ones the
 * bitmap path would make, without its random reads and writes of granule
 * lines.  Entries of regions that are not this bus's go to the bitmaps, for
 * their own bus.
 *
 * The sort is a partition first: the span of the bus's regions is cut into
 * page-aligned buckets (NB_MAX at most, ~BUCKET_FILL entries each), and
 * entries are counted per bucket and scattered in parts on the worker pool
 * (an entry that crosses a bucket's edge is cut in two).  Each part counts
 * its entries and at once scatters them into an area of its own, bucket
 * after bucket ("part-major"), while they are in its cache: twice as many
 * slots as it has entries, and an epoch whose entries are cut into more
 * pieces than that (long ranges across many buckets) goes to the bitmaps.
 * Scattered straight into the buckets, after a first job had counted them,
 * sixteen parts wrote ~8 entries each into every bucket at 1e-3, side by
 * side, sharing the cache lines, and read their entries a second time.
 * Each bucket then gathers its pieces from the parts' areas, sorts them in
 * cache, merges them into runs and sizes the deltas of each (region,
 * bucket) pair, a "unit"; prefix sums of the sizes give every unit its
 * place in the batch, and the units are filled in parts.  Units go in
 * region order, pages ascending in each: the batch is the bitmap path's,
 * byte for byte, for any number of threads.
 *
 * An epoch of fewer than ONE_MAX entries, or any epoch on one commit
 * thread (up to BUCKET_MAX entries), goes the one-thread way
 * (collect_tiny.c) when its entries allow: one sort and one walk, none of
 * the steps below.
 *
 * The fill also stages the deltas of mirrored regions as it goes: each
 * part hands its piece (offsets, and the bytes unless the batch is pinned)
 * to the mirror's staging, and the committing thread sends each chunk of
 * parts to the device as soon as all of its parts are done, between its
 * own parts (mmsb_pool_run_tick), so that the transfer overlaps the rest of
 * the fill.  On the H200's VM this took the wait after a 1e-3 commit from
 * ~210 to ~60 us.
 */
#include "emit.h"

#include <stdlib.h>
#include <string.h>

enum {
  NB_MAX = 1024,      /* buckets at most */
  BUCKET_FILL = 128,  /* entries a bucket gets on average */
  PART_MIN = 2048,    /* entries a part of the partition has at least */
  ONE_MAX = 2 * PART_MIN, /* fewer entries than this go the one-thread way */
  MAX_PARTS = 64,
  /* A bucket with more entries than this makes the epoch go to the
   * bitmaps: one thread would sort it (hot words whose repeats the logs'
   * table did not catch, or all stores in a small part of a large span),
   * while folding many entries into few granule lines is cheap. */
  BUCKET_MAX = 65536
};

typedef struct grun { uintptr_t g0, g1; } grun; /* granules [g0, g1), absolute */

/* The runs of one bucket that lie in one region: sized, then filled. */
typedef struct unit {
  const mmsb_region *r;
  size_t b;              /* its bucket */
  size_t r0, r1;         /* its runs, [r0, r1) of the runs array */
  size_t bytes, deltas;  /* sizes, then where its deltas start */
} unit;

enum { STAGE_MIRRORS = 4, STAGE_CHUNKS = 8, STAGE_CHUNK_MIN = 256 << 10 /* bytes */ };

/* A mirror whose region's deltas the fill stages as it goes
 * (mmsb_mirror_stage_*): its units [ua, ub), per chunk (a run of fill
 * parts, sent in one copy) how many of the chunk's parts are not staged
 * yet, and how many chunks the committing thread has sent, in order.  At
 * most eight chunks of the epoch's bytes, of STAGE_CHUNK_MIN at least:
 * each is two CUDA calls (~2 us each) on that thread. */
typedef struct stager {
  mmsb_mirror *m;
  size_t ua, ub;
  int sent;
  _Atomic int left[STAGE_CHUNKS];
} stager;

typedef struct lcol {
  const mmsb_log_seg *segs;
  size_t nsegs, *seg_at; /* seg_at[i]: index of segs[i]'s first entry */
  size_t n, total;       /* entries in the logs; pieces (entries cut at edges) */
  uintptr_t lo, hi;      /* the span of the bus's regions */
  unsigned shift;        /* bucket of address a: (a - lo) >> shift */
  size_t nb;             /* buckets; index nb holds everything outside the span */
  int parts, sparts;     /* parts of the partition; of the sort and the fill */
  size_t *counts;        /* [part][nb + 2]: row[b + 1]: pieces of bucket b, then where
                            they go in pm (row[b] is then where they start) */
  uint64_t *pm;          /* the pieces part-major: part p's area from 2 * its first
                            entry (ents itself with one part) */
  _Atomic int overflow;  /* a part had more pieces than its area holds */
  size_t *bstart;        /* [nb + 2]: where each bucket starts in ents */
  uint64_t *ents, *tmp;  /* the pieces by bucket; the sort's scratch */
  grun *runs;            /* bucket b's runs from runs + bstart[b] */
  size_t *nruns;         /* per bucket */
  uint8_t *foreign;      /* per bucket: some run lies outside the units */
  unit *units;
  size_t nunits, *bu_start, *bu; /* the units of bucket b: bu[bu_start[b] ..] */
  size_t *sp_b, *sp_u;   /* sort parts' first buckets; fill parts' first units */
  uint8_t *out;          /* fill: where this epoch's deltas go */
  size_t *index, base;
  mmsb_batch *b;
  size_t fill_bytes, fill_deltas; /* the epoch's, as sizing found them */
  int nstaged, chunks;
  stager stg[STAGE_MIRRORS];
} lcol;

/* The bucket of address a, and in *cut where the addresses of that bucket
 * end. */
static size_t bucket_of(const lcol *c, uintptr_t a, uintptr_t *cut) {
  if (a < c->lo) {
    *cut = c->lo;
    return c->nb;
  }
  if (a >= c->hi) {
    *cut = UINTPTR_MAX;
    return c->nb;
  }
  size_t b = (a - c->lo) >> c->shift;
  uintptr_t e = c->lo + ((uintptr_t)(b + 1) << c->shift);
  *cut = e < c->hi ? e : c->hi;
  return b;
}

/* Counts (scatter false) or scatters (true) the pieces of the logs'
 * entries [lo, hi) into cnt[b] (bucket b's count, then its next write
 * position in pm). */
static void pieces(lcol *c, size_t *cnt, size_t lo, size_t hi, bool scatter) {
  size_t s = 0;
  uintptr_t span = c->hi - c->lo;
  while (s + 1 < c->nsegs && c->seg_at[s + 1] <= lo) s++;
  for (size_t i = lo; i < hi; s++) {
    const uint64_t *e = c->segs[s].e + (i - c->seg_at[s]);
    size_t end = c->seg_at[s] + c->segs[s].n, k = (end < hi ? end : hi) - i;
    for (size_t j = 0; j < k; j++) {
      uintptr_t a = mmsb_log_entry_addr(e[j]), last = (uintptr_t)(e[j] >> MMSB_LOG_LEN_SHIFT);
      uintptr_t off = a - c->lo, stop = a + last + 1;
      if (off + last < span && (off >> c->shift) == ((off + last) >> c->shift)) {
        size_t b = off >> c->shift; /* the common case: one bucket, the entry whole */
        if (scatter) c->pm[cnt[b]++] = e[j];
        else cnt[b]++;
        continue;
      }
      for (;;) {
        uintptr_t cut;
        size_t b = bucket_of(c, a, &cut);
        uintptr_t z = stop < cut ? stop : cut;
        if (scatter) c->pm[cnt[b]++] = (uint64_t)a | (uint64_t)(z - a - 1) << MMSB_LOG_LEN_SHIFT;
        else cnt[b]++;
        if (z == stop) break;
        a = z;
      }
    }
    i += k;
  }
}

/* Counts one part's pieces, turns its row of counts into write positions
 * in its area of pm (row[0]: the area's start), and scatters them. */
static void partition_part(void *ctx, int part, int nparts) {
  lcol *c = ctx;
  size_t nb1 = c->nb + 1, *row = c->counts + (size_t)part * (nb1 + 1), lo, hi;
  mmsb_part_range(c->n, part, nparts, &lo, &hi);
  memset(row, 0, (nb1 + 1) * sizeof *row);
  pieces(c, row + 1, lo, hi, false);
  size_t at = 2 * lo;
  row[0] = at;
  for (size_t b = 0; b < nb1; b++) {
    size_t t = row[b + 1];
    row[b + 1] = at;
    at += t;
  }
  if (at - 2 * lo > 2 * (hi - lo)) {
    atomic_store_explicit(&c->overflow, 1, memory_order_relaxed);
    return;
  }
  pieces(c, row + 1, lo, hi, true);
}

/* Merges sorted entries into runs of granules at rs; returns how many,
 * and in *granules the granules they cover (each run's, added as the next
 * one starts: no second pass over the runs). */
static size_t merge_entries(const uint64_t *e, size_t n, grun *rs, size_t *granules) {
  size_t k = 0, all = 0;
  for (size_t i = 0; i < n; i++) {
    uintptr_t a = mmsb_log_entry_addr(e[i]);
    uintptr_t g0 = a >> GRAN_SHIFT;
    uintptr_t g1 = (a + (size_t)(e[i] >> MMSB_LOG_LEN_SHIFT) + 1 + MMSB_GRANULE - 1) >> GRAN_SHIFT;
    if (k && g0 <= rs[k - 1].g1) {
      if (g1 > rs[k - 1].g1) rs[k - 1].g1 = g1;
    } else {
      if (k) all += rs[k - 1].g1 - rs[k - 1].g0;
      rs[k++] = (grun){g0, g1};
    }
  }
  *granules = k ? all + (rs[k - 1].g1 - rs[k - 1].g0) : 0;
  return k;
}

/* A page's delta size when its runs and their headers take body bytes,
 * as the fill will plan it (the whole page when that is not larger). */
static inline size_t page_delta_bytes(size_t body, size_t plen) {
  return MMSB_DELTA_HDR + (mmsb_body_plan(body, plen) & ~PLAN_WHOLE);
}

/* The end of page `page` (plen bytes): its delta written (k: runs pr) or
 * sized (body: the sum of its runs and their headers). */
static void page_end(const mmsb_region *r, size_t page, const page_runs *pr, size_t body,
                     size_t plen, delta_out *k, size_t *bytes, size_t *deltas) {
  if (k) {
    mmsb_out_page(k, r, page, pr, plen);
  } else if (body) { /* as mmsb_runs_plan plans it */
    *bytes += page_delta_bytes(body, plen);
    ++*deltas;
  }
}

/* Whether run i of unit u is the last to touch page pg (its region's
 * page; r0: the region's first granule): the next run starts on a later
 * page. */
static inline bool alone(const lcol *c, const unit *u, size_t i, uintptr_t r0, size_t pg) {
  return i + 1 == u->r1 || (c->runs[i + 1].g0 - r0) / GRANS_PER_PAGE > pg;
}

/* Writes the deltas of unit u's runs from run i on that are each one or
 * two granules alone in a whole page of the region, up to the first that
 * is not, and returns its index (i when run i is not): each as
 * mmsb_out_one_run writes it, in a loop of mmsb_lone_put, the bytes
 * through the copy queue (a 1e-3 epoch's lines are no longer cached).
 * Most pages of a sparse epoch hold one store. */
static size_t lone_runs(const lcol *c, const unit *u, delta_out *k, size_t i) {
  const mmsb_region *r = u->r;
  const grun *rs = c->runs;
  uintptr_t r0 = (uintptr_t)r->data >> GRAN_SHIFT;
  uintptr_t whole = r0 + r->size / MMSB_PAGE_SIZE * GRANS_PER_PAGE; /* a short last page's start */
  lone_cursor cur = mmsb_lone_begin(k);
  for (; i < u->r1; i++) {
    uintptr_t g0 = rs[i].g0, g1 = rs[i].g1;
    if (g0 < r0 || g1 > whole || g1 - g0 > 2) break;
    size_t pg = (g0 - r0) / GRANS_PER_PAGE;
    if ((g1 - 1 - r0) / GRANS_PER_PAGE != pg || !alone(c, u, i, r0, pg))
      break; /* across pages, or not alone in its page */
    uint32_t off = (uint32_t)((g0 - r0) % GRANS_PER_PAGE) * MMSB_GRANULE;
    mmsb_lone_put(&cur, r->id, pg, off, (uint32_t)(g1 - g0) * MMSB_GRANULE,
                  r->data + (g0 - r0) * MMSB_GRANULE, k->q);
  }
  mmsb_lone_end(k, &cur);
  return i;
}

/* Sizes (k NULL: adds to *bytes and *deltas) or writes (k) the deltas of
 * unit u: its runs, clipped to its region and cut at pages, give each
 * page's runs, as the granule bits do in the bitmap path.  Sizing sums a
 * page's runs as they come instead of listing them (listing them and
 * planning from the list was ~40% of a 1e-3 epoch's sort and size).
 * Returns the granules it covers. */
static size_t unit_pages(lcol *c, const unit *u, delta_out *k, size_t *bytes, size_t *deltas) {
  const mmsb_region *r = u->r;
  uintptr_t r0 = (uintptr_t)r->data >> GRAN_SHIFT, r1 = r0 + (r->map_size >> GRAN_SHIFT);
  size_t covered = 0, page = SIZE_MAX, body = 0, plen = 0; /* the page pr belongs to */
  page_runs pr;
  pr.n = 0;
  for (size_t i = u->r0; i < u->r1; i++) {
    if (k && page == SIZE_MAX) { /* no page open: pages of one run go at once */
      size_t j = lone_runs(c, u, k, i);
      if (j == u->r1) break;
      i = j;
    }
    uintptr_t a = (c->runs[i].g0 > r0 ? c->runs[i].g0 : r0) - r0;
    uintptr_t e = (c->runs[i].g1 < r1 ? c->runs[i].g1 : r1) - r0;
    covered += e - a;
    while (a < e) {
      size_t pg = a / GRANS_PER_PAGE, end = (pg + 1) * GRANS_PER_PAGE;
      if (end > e) end = e;
      if (k && pg != page && end == e && alone(c, u, i, r0, pg)) { /* maybe the page's one run */
        if (page != SIZE_MAX) page_end(r, page, &pr, body, plen, k, bytes, deltas);
        page = SIZE_MAX;
        if (mmsb_out_one_run(k, r, pg, a, end, mmsb_region_page_len(r, pg))) break;
      }
      if (pg != page) {
        if (page != SIZE_MAX) page_end(r, page, &pr, body, plen, k, bytes, deltas);
        pr.n = 0;
        body = 0;
        page = pg;
        plen = mmsb_region_page_len(r, pg);
      }
      uint16_t off, len;
      if (mmsb_run_clip(a, end, pg, plen, &off, &len)) {
        if (k) {
          pr.off[pr.n] = off;
          pr.len[pr.n++] = len;
        } else {
          body += MMSB_RUN_HDR + len;
        }
      }
      a = end;
    }
  }
  if (page != SIZE_MAX) page_end(r, page, &pr, body, plen, k, bytes, deltas);
  return covered;
}

/* Sizes the deltas of runs rs[0..n) (adds to *bytes and *deltas) when
 * they lie in whole pages of one region, as unit_pages sizes them: a page's
 * runs with their headers, or the page when that is not smaller.  Returns
 * the granules they cover.  unit_pages' walk, general (clipping to the
 * region, short last pages), was ~45% of a 1e-3 epoch's sort and size on
 * the CPU machine; most buckets lie inside one region, all whole pages. */
static size_t size_runs(const grun *rs, size_t n, size_t *bytes, size_t *deltas) {
  size_t b = 0, d = 0, body = 0, all = 0; /* body: the current page's, d pages */
  uintptr_t page = UINTPTR_MAX;
  for (size_t i = 0; i < n; i++) {
    all += rs[i].g1 - rs[i].g0;
    for (uintptr_t g = rs[i].g0; g < rs[i].g1;) {
      uintptr_t pg = g / GRANS_PER_PAGE, end = (pg + 1) * GRANS_PER_PAGE;
      if (end > rs[i].g1) end = rs[i].g1;
      if (pg != page) { /* the page before is done (none before the first) */
        b += d ? page_delta_bytes(body, MMSB_PAGE_SIZE) : 0;
        d++;
        page = pg;
        body = 0;
      }
      body += MMSB_RUN_HDR + (end - g) * MMSB_GRANULE;
      g = end;
    }
  }
  *bytes += b + (d ? page_delta_bytes(body, MMSB_PAGE_SIZE) : 0);
  *deltas += d;
  return all;
}

/* Whether bucket b lies in whole pages of unit u's region (then its runs
 * are the unit's and size_runs sizes them). */
static bool in_whole_pages(const lcol *c, const unit *u, size_t b) {
  uintptr_t lo = c->lo + ((uintptr_t)b << c->shift), hi = lo + ((uintptr_t)1 << c->shift);
  uintptr_t r0 = (uintptr_t)u->r->data, whole = r0 + u->r->size / MMSB_PAGE_SIZE * MMSB_PAGE_SIZE;
  return r0 <= lo && hi <= whole;
}

/* The number of runs among rs[0..n) (sorted, apart) whose start (ends
 * false) or end (true) is at most g. */
static size_t runs_upto(const grun *rs, size_t n, uintptr_t g, bool ends) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if ((ends ? rs[mid].g1 : rs[mid].g0) <= g) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/* Copies bucket b's pieces from the parts' areas to its place in ents. */
static void gather(lcol *c, size_t b) {
  if (c->pm == c->ents) return; /* one part: its area is the buckets */
  uint64_t *e = c->ents + c->bstart[b];
  for (int p = 0; p < c->parts; p++) {
    const size_t *row = c->counts + (size_t)p * (c->nb + 2);
    memcpy(e, c->pm + row[b], (row[b + 1] - row[b]) * sizeof *e);
    e += row[b + 1] - row[b];
  }
}

/* Sorts each bucket of the part, merges it into runs and sizes its units. */
static void sort_part(void *ctx, int part, int nparts) {
  lcol *c = ctx;
  (void)nparts;
  for (size_t b = c->sp_b[part]; b < c->sp_b[part + 1]; b++) {
    size_t s = c->bstart[b], m = c->bstart[b + 1] - s;
    c->nruns[b] = 0;
    c->foreign[b] = 0;
    if (!m) continue;
    gather(c, b);
    mmsb_sort_entries(c->ents + s, c->tmp + s, m, c->lo + ((uintptr_t)b << c->shift), c->shift - GRAN_SHIFT);
    grun *rs = c->runs + s;
    size_t all, nr = merge_entries(c->ents + s, m, rs, &all), covered = 0;
    c->nruns[b] = nr;
    for (size_t k = c->bu_start[b]; k < c->bu_start[b + 1]; k++) {
      unit *u = &c->units[c->bu[k]];
      uintptr_t g0 = (uintptr_t)u->r->data >> GRAN_SHIFT, g1 = g0 + (u->r->map_size >> GRAN_SHIFT);
      u->r0 = s + runs_upto(rs, nr, g0, true);
      u->r1 = s + runs_upto(rs, nr, g1 - 1, false);
      u->bytes = u->deltas = 0;
      if (in_whole_pages(c, u, b))
        covered += size_runs(c->runs + u->r0, u->r1 - u->r0, &u->bytes, &u->deltas);
      else
        covered += unit_pages(c, u, NULL, &u->bytes, &u->deltas);
    }
    c->foreign[b] = covered < all;
  }
}

/* Fills the units of one part at the offsets sizing gave them. */
static void fill_units(lcol *c, int part) {
  copy_q q;
  mmsb_copy_init(&q);
  for (size_t i = c->sp_u[part]; i < c->sp_u[part + 1]; i++) {
    delta_out k = {c->out, c->index, c->base, c->units[i].bytes, c->units[i].deltas, &q};
    unit_pages(c, &c->units[i], &k, NULL, NULL);
  }
  mmsb_copy_done(&q, c->b);
}

/* ---- staging for mirrors during the fill (device.h says why) ---- */

/* Where unit u's bytes and deltas start (u = nunits: the epoch's end). */
static size_t unit_bytes(const lcol *c, size_t u) {
  return u < c->nunits ? c->units[u].bytes : c->fill_bytes;
}
static size_t unit_deltas(const lcol *c, size_t u) {
  return u < c->nunits ? c->units[u].deltas : c->fill_deltas;
}

/* The first fill part of chunk k (k = chunks: the end). */
static int chunk_first(const lcol *c, int k) {
  return (k * c->sparts + c->chunks - 1) / c->chunks;
}

/* Starts staging for the bus's mirrors (STAGE_MIRRORS at most; the others
 * stage at the mirror stage) whose region has deltas in the epoch.  A
 * region's units are adjacent: they are listed region by region. */
static void stage_begin(lcol *c, mmsb_bus *bus) {
  size_t chunks = c->fill_bytes / STAGE_CHUNK_MIN;
  if (chunks > STAGE_CHUNKS) chunks = STAGE_CHUNKS;
  if (chunks > (size_t)c->sparts) chunks = (size_t)c->sparts;
  c->chunks = chunks < 1 ? 1 : (int)chunks;
  c->nstaged = 0;
  for (unsigned i = 0; i < bus->nmirrors && c->nstaged < STAGE_MIRRORS; i++) {
    stager *s = &c->stg[c->nstaged];
    s->m = bus->mirrors[i];
    const mmsb_region *r = mmsb_mirror_region(s->m);
    for (s->ua = 0; s->ua < c->nunits && c->units[s->ua].r != r;) s->ua++;
    for (s->ub = s->ua; s->ub < c->nunits && c->units[s->ub].r == r;) s->ub++;
    size_t from = unit_bytes(c, s->ua);
    if (!mmsb_mirror_stage_begin(s->m, mmsb_batch_epoch(c->b), c->base + from,
                                 unit_bytes(c, s->ub) - from,
                                 unit_deltas(c, s->ub) - unit_deltas(c, s->ua)))
      continue;
    for (int k = 0; k < c->chunks; k++)
      atomic_store(&s->left[k], chunk_first(c, k + 1) - chunk_first(c, k));
    s->sent = 0;
    c->nstaged++;
  }
}

/* Stages (send false) or sends (true) the deltas of s's region among
 * units [u0, u1). */
static void stage_units(lcol *c, stager *s, size_t u0, size_t u1, bool send) {
  if (u0 < s->ua) u0 = s->ua;
  if (u1 > s->ub) u1 = s->ub;
  if (u0 >= u1) return;
  size_t from = unit_bytes(c, u0), len = unit_bytes(c, u1) - from;
  size_t d = unit_deltas(c, u0), nd = unit_deltas(c, u1) - d, d0 = unit_deltas(c, s->ua);
  if (!nd) return;
  if (send) mmsb_mirror_stage_send(s->m, c->out + from, c->base + from, len, d - d0, nd);
  else mmsb_mirror_stage_piece(s->m, c->out + from, c->base + from, len, c->index + d, d - d0, nd);
}

/* After fill part `part`: its pieces are staged while in this thread's
 * cache. */
static void stage_part(lcol *c, int part) {
  int k = part * c->chunks / c->sparts;
  for (int i = 0; i < c->nstaged; i++) {
    stage_units(c, &c->stg[i], c->sp_u[part], c->sp_u[part + 1], false);
    atomic_fetch_sub_explicit(&c->stg[i].left[k], 1, memory_order_release);
  }
}

/* The committing thread, between its own fill parts and after them: sends
 * each chunk whose parts are all staged (in order); true when all are. */
static bool stage_tick(void *ctx) {
  lcol *c = ctx;
  bool all = true;
  for (int i = 0; i < c->nstaged; i++) {
    stager *s = &c->stg[i];
    while (s->sent < c->chunks &&
           atomic_load_explicit(&s->left[s->sent], memory_order_acquire) == 0) {
      int k = s->sent++;
      stage_units(c, s, c->sp_u[chunk_first(c, k)], c->sp_u[chunk_first(c, k + 1)], true);
    }
    all &= s->sent == c->chunks;
  }
  return all;
}

static void fill_part(void *ctx, int part, int nparts) {
  lcol *c = ctx;
  (void)nparts;
  fill_units(c, part);
  if (c->nstaged) stage_part(c, part);
}

/* Marks granules [g0, g1) in the bitmaps (they lie in a bucket, so in
 * one window). */
static void fold_granules(uintptr_t g0, uintptr_t g1) {
  uintptr_t a = g0 << GRAN_SHIFT;
  size_t len = (g1 - g0) << GRAN_SHIFT;
  int w = mmsb_window_of(a, len);
  if (w >= 0) mmsb_bits_set(w, a - __mmsb_windows[w].lo, len);
}

/* Marks outside the bus's regions go to the bitmaps, for their own bus:
 * the pieces outside the span, and the parts of runs that no region of
 * their bucket covers. */
static void fold_foreign(const lcol *c) {
  mmsb_logs_fold(c->ents + c->bstart[c->nb], c->bstart[c->nb + 1] - c->bstart[c->nb]);
  for (size_t b = 0; b < c->nb; b++) {
    for (size_t i = 0; c->foreign[b] && i < c->nruns[b]; i++) {
      const grun *run = &c->runs[c->bstart[b] + i];
      for (uintptr_t g = run->g0; g < run->g1;) {
        uintptr_t next = run->g1;
        bool in = false;
        for (size_t k = c->bu_start[b]; k < c->bu_start[b + 1] && !in; k++) {
          const mmsb_region *r = c->units[c->bu[k]].r;
          uintptr_t ra = (uintptr_t)r->data >> GRAN_SHIFT, rb = ra + (r->map_size >> GRAN_SHIFT);
          if (ra <= g && g < rb) {
            in = true;
            next = rb < run->g1 ? rb : run->g1;
          } else if (ra > g && ra < next) {
            next = ra;
          }
        }
        if (!in) fold_granules(g, next);
        g = next;
      }
    }
  }
}

/* The buffers of a collection, kept from commit to commit (collection runs
 * under mmsb_mark_lock). */
static struct {
  mmsb_log_seg *segs;
  size_t *seg_at, *counts, *bstart, *nruns, *bu_start, *bu, *sp_b, *sp_u, *cum;
  unit *units;
  uint64_t *ents, *tmp, *pm;
  grun *runs;
  uint8_t *foreign;
  size_t segs_cap, seg_at_cap, counts_cap, bstart_cap, nruns_cap, bu_start_cap, bu_cap,
      sp_b_cap, sp_u_cap, cum_cap, units_cap, ents_cap, tmp_cap, pm_cap, runs_cap, foreign_cap;
} B;

#define GROW(field, need) ((B.field = mmsb_grow(B.field, &B.field##_cap, (need), sizeof *B.field)) != NULL)

/* Lists the units: for each region of the bus in order, the buckets of
 * its span that hold entries; then, by bucket, which units each has. */
static int make_units(lcol *c, const mmsb_bus *bus) {
  c->nunits = 0;
  for (uint32_t i = 0; i < bus->nregions; i++) {
    const mmsb_region *r = bus->regions[i];
    if (!r || !r->map_size) continue;
    size_t b0 = ((uintptr_t)r->data - c->lo) >> c->shift;
    size_t b1 = ((uintptr_t)r->data + r->map_size - 1 - c->lo) >> c->shift;
    for (size_t b = b0; b <= b1; b++) {
      if (c->bstart[b + 1] == c->bstart[b]) continue;
      if (!GROW(units, c->nunits + 1)) return MMSB_ENOMEM;
      B.units[c->nunits++] = (unit){r, b, 0, 0, 0, 0};
    }
  }
  if (!GROW(bu, c->nunits ? c->nunits : 1)) return MMSB_ENOMEM;
  unit *units = c->units = B.units;
  size_t *bu = c->bu = B.bu;
  memset(c->bu_start, 0, (c->nb + 1) * sizeof *c->bu_start);
  for (size_t u = 0; u < c->nunits; u++) c->bu_start[units[u].b + 1]++;
  for (size_t b = 0; b < c->nb; b++) c->bu_start[b + 1] += c->bu_start[b];
  for (size_t u = 0; u < c->nunits; u++) bu[c->bu_start[units[u].b]++] = u;
  for (size_t b = c->nb; b > 0; b--) c->bu_start[b] = c->bu_start[b - 1]; /* back to starts */
  c->bu_start[0] = 0;
  return MMSB_OK;
}

/* bstart gets each bucket's start in ents: its pieces over all parts
 * (after the scatter, part p's pieces of bucket b are at pm[row[b],
 * row[b + 1])).  Returns the number of pieces. */
static size_t bucket_starts(lcol *c) {
  size_t nb1 = c->nb + 1, *run = c->bstart; /* run[b + 1]: bucket b's pieces */
  memset(run, 0, (nb1 + 1) * sizeof *run);
  for (int p = 0; p < c->parts; p++) {
    const size_t *row = c->counts + (size_t)p * (nb1 + 1);
    for (size_t b = 0; b < nb1; b++) run[b + 1] += row[b + 1] - row[b];
  }
  for (size_t b = 0; b < nb1; b++) run[b + 1] += run[b];
  return run[nb1];
}

/* Cuts items [0, n) with cumulative weights cum[0..n] (cum[0] = 0) into
 * `parts` parts of about equal weight: first[p] is part p's first item. */
static void cut_parts(size_t *first, int parts, size_t n, const size_t *cum) {
  size_t i = 0;
  first[0] = 0; /* leading empty items too: every item is in a part */
  for (int p = 1; p < parts; p++) {
    size_t target = cum[n] / (size_t)parts * (size_t)p;
    while (i < n && cum[i + 1] <= target) i++;
    first[p] = i;
  }
  first[parts] = n;
}

/* The parts of the partition for `threads` threads: one per PART_MIN
 * entries. */
static int partition_parts(size_t n, int threads) {
  size_t parts = n / PART_MIN;
  if (parts > (size_t)threads) parts = (size_t)threads;
  if (parts > MAX_PARTS) parts = MAX_PARTS;
  return parts < 1 ? 1 : (int)parts;
}

/* The span [*lo, *hi) of the bus's regions: false when it has none. */
static bool bus_span(const mmsb_bus *bus, uintptr_t *lo, uintptr_t *hi) {
  *lo = UINTPTR_MAX;
  *hi = 0;
  for (uint32_t i = 0; i < bus->nregions; i++) {
    const mmsb_region *r = bus->regions[i];
    if (!r || !r->map_size) continue;
    if ((uintptr_t)r->data < *lo) *lo = (uintptr_t)r->data;
    if ((uintptr_t)r->data + r->map_size > *hi) *hi = (uintptr_t)r->data + r->map_size;
  }
  return *lo < *hi;
}

/* Buckets of ~BUCKET_FILL entries over the span [c->lo, c->hi). */
static void plan_buckets(lcol *c) {
  size_t want = 1;
  while (want < NB_MAX && want * BUCKET_FILL < c->n) want *= 2;
  c->shift = PAGE_SHIFT;
  while (c->shift < 63 && ((c->hi - c->lo - 1) >> c->shift) >= want) c->shift++;
  c->nb = ((c->hi - c->lo - 1) >> c->shift) + 1;
}

/* Partitions the logs' entries into buckets (the logs are empty after)
 * and lists the units; false when memory is short, a bucket is over
 * BUCKET_MAX or a part's pieces over its area (logs untouched). */
static bool partition(lcol *c, const mmsb_bus *bus, int threads) {
  c->parts = partition_parts(c->n, threads);
  if (!GROW(seg_at, c->nsegs) || !GROW(counts, (size_t)c->parts * (c->nb + 2)) ||
      !GROW(bstart, c->nb + 2) || !GROW(bu_start, c->nb + 1) || !GROW(nruns, c->nb) ||
      !GROW(foreign, c->nb) || !GROW(sp_b, MAX_PARTS + 1) || !GROW(sp_u, MAX_PARTS + 1) ||
      !GROW(pm, 2 * c->n))
    return false;
  for (size_t i = 0, at = 0; i < c->nsegs; at += c->segs[i++].n) B.seg_at[i] = at;
  c->seg_at = B.seg_at;
  c->counts = B.counts;
  c->bstart = B.bstart;
  c->bu_start = B.bu_start;
  c->nruns = B.nruns;
  c->foreign = B.foreign;
  c->pm = B.pm;
  mmsb_pool_run(c->parts, threads, partition_part, c);
  if (atomic_load(&c->overflow)) return false;
  c->total = bucket_starts(c);
  for (size_t b = 0; b < c->nb; b++)
    if (c->bstart[b + 1] - c->bstart[b] > BUCKET_MAX) return false;
  if ((c->parts > 1 && !GROW(ents, c->total)) || !GROW(tmp, c->total) || !GROW(runs, c->total) ||
      make_units(c, bus) || !GROW(cum, c->nunits + 1))
    return false;
  c->ents = c->parts > 1 ? B.ents : B.pm; /* one part: its area is in bucket order */
  c->tmp = B.tmp;
  c->runs = B.runs;
  gather(c, c->nb); /* the pieces outside the span: no sort part takes them */
  mmsb_logs_clear();
  return true;
}

/* The parts of the sort and of the fill: four a part of the partition,
 * rounded up to a multiple of the threads so that each takes as many, at
 * most MAX_PARTS.  At 1e-4 of a GiB on sixteen threads, 32 parts instead of
 * 24 (half the threads taking two, half one) took the sort and fill from
 * 79-82 to 72-79 us (probe on the H200's VM, three rounds). */
static size_t sort_parts(int parts, int threads) {
  if (parts <= 1) return 1;
  size_t want = (size_t)parts * 4, t = threads > 1 ? (size_t)threads : 1;
  want = (want + t - 1) / t * t;
  return want > MAX_PARTS ? MAX_PARTS : want;
}

/* Sorts the buckets and sizes the units on the pool; the sizes become
 * starts.  Returns the epoch's bytes; *deltas its deltas. */
static size_t size_units(lcol *c, int threads, size_t *deltas) {
  size_t parts = sort_parts(c->parts, threads);
  if (parts > c->nb) parts = c->nb;
  c->sparts = (int)parts;
  c->sp_b = B.sp_b;
  c->sp_u = B.sp_u;
  cut_parts(c->sp_b, c->sparts, c->nb, c->bstart); /* sort parts: equal entries */
  mmsb_pool_run(c->sparts, threads, sort_part, c);
  size_t bytes = 0, count = 0;
  B.cum[0] = 0;
  for (size_t u = 0; u < c->nunits; u++) { /* fill parts: equal numbers of runs */
    unit *t = &c->units[u];
    size_t bt = t->bytes, dt = t->deltas;
    t->bytes = bytes;
    t->deltas = count;
    bytes += bt;
    count += dt;
    B.cum[u + 1] = B.cum[u] + (t->r1 - t->r0) + 1;
  }
  *deltas = count;
  return bytes;
}

void mmsb_trace_logs_steps(mmsb_bus *bus, const mmsb_batch *b, uint64_t t0, uint64_t t1,
                           uint64_t t2, size_t deltas) {
  mmsb_epoch_t e = mmsb_batch_epoch(b);
  mmsb_trace_event(bus, "logs: partition", t0, t1, e, deltas);
  mmsb_trace_event(bus, "logs: sort and size", t1, t2, e, deltas);
  mmsb_trace_event(bus, "logs: fill", t2, mmsb_now_ns(), e, deltas);
}

int mmsb_collect_logs(mmsb_bus *bus, mmsb_batch *b) {
  lcol c;
  memset(&c, 0, sizeof c);
  size_t ns = mmsb_logs_segs(&B.segs, &B.segs_cap);
  if (ns == SIZE_MAX) return MMSB_COLLECT_BITMAPS;
  c.segs = B.segs;
  c.nsegs = ns;
  for (size_t i = 0; i < ns; i++) c.n += c.segs[i].n;
  if (c.n == 0) return MMSB_OK;
  int threads = bus->cfg.commit_threads > 0 ? bus->cfg.commit_threads : 1;
  if (!bus_span(bus, &c.lo, &c.hi)) { /* no region: every mark is another bus's */
    mmsb_logs_flush_all();
    return MMSB_OK;
  }
  if ((c.n < ONE_MAX || threads == 1) && c.n <= BUCKET_MAX) {
    int rc = mmsb_collect_tiny(bus, b, c.segs, c.nsegs, c.n, c.lo, c.hi);
    if (rc != MMSB_COLLECT_GENERAL) return rc;
  }
  plan_buckets(&c);
  uint64_t t0 = bus->trace ? mmsb_now_ns() : 0, t1 = 0, t2 = 0;
  if (!partition(&c, bus, threads)) return MMSB_COLLECT_BITMAPS; /* short or skewed */
  if (bus->trace) t1 = mmsb_now_ns();
  size_t count, bytes = size_units(&c, threads, &count);
  if (bus->trace) t2 = mmsb_now_ns();
  int rc = mmsb_batch_reserve_many(b, count, bytes);
  if (rc) {
    mmsb_logs_fold(c.ents, c.total);
    return rc;
  }
  c.base = b->bytes.len;
  c.out = b->bytes.p + c.base;
  c.index = b->index + b->count;
  c.b = b;
  cut_parts(c.sp_u, c.sparts, c.nunits, B.cum);
  c.fill_bytes = bytes;
  c.fill_deltas = count;
  if (bus->nmirrors) stage_begin(&c, bus);
  mmsb_pool_run_tick(c.sparts, threads, fill_part, &c, c.nstaged ? stage_tick : NULL);
  mmsb_batch_commit_many(b, count, bytes);
  fold_foreign(&c);
  if (bus->trace) mmsb_trace_logs_steps(bus, b, t0, t1, t2, count);
  return MMSB_OK;
}
