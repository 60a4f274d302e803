/*
 * collect_tiny.c - an epoch of few marks, collected from the threads' logs
 * in one pass on the committing thread.
 *
 * Below ONE_MAX entries (collect_logs.c), or with one commit thread, the
 * pool's workers would come too late to help: on the lent VMs they wake
 * 24-58 us after a job is posted, longer than a 1e-5 epoch's whole
 * collection.  The general way's steps for many threads (a partition into
 * buckets, the runs listed per bucket, units sized, then filled) cost
 * there more than the sort itself.  Here the entries are copied out of the
 * logs, sorted by address in one array, and each region's slice of it is
 * walked once: entries merge into runs page by page, and each page's delta
 * is written as the page ends.  The batch is the general way's (and the
 * bitmap path's), byte for byte: regions in the bus's order, pages
 * ascending in each, the same runs and forms.
 *
 * It takes an epoch only when every entry lies in one page, and inside or
 * outside the span of the bus's regions, not across its edges (what stores
 * of up to 8 bytes make); else the general way does, since nothing was
 * taken from the logs yet.  Entries in no region of this bus go to the
 * bitmaps, for their own bus, as there.
 */
#include "emit.h"

#include <stdlib.h>
#include <string.h>

_Atomic uint64_t mmsb_tiny_epochs;

/* A region's slice of the sorted entries. */
typedef struct slice {
  const mmsb_region *r;
  size_t i0, i1;
} slice;

/* Buffers kept from commit to commit (collection runs under
 * mmsb_mark_lock). */
static struct {
  uint64_t *ents, *tmp;
  slice *sl;
  size_t ents_cap, tmp_cap, sl_cap;
} T;

/* Copies the logs' n entries into e: those inside [lo, hi) from the
 * front (their number), the others (another bus's) from the back.
 * SIZE_MAX when one crosses a page or the span's edge.  *bound: at least
 * the bytes of the deltas the inside ones make (each entry a delta and a
 * run of its own, its bytes widened to whole granules); [*amin, *amax]:
 * the inside ones' addresses (lo, lo when there are none). */
static size_t take(const mmsb_log_seg *segs, size_t nsegs, size_t n, uintptr_t lo, uintptr_t hi,
                   uint64_t *e, size_t *bound, uintptr_t *amin, uintptr_t *amax) {
  size_t k = 0, out = n, bytes = 0;
  uintptr_t mn = UINTPTR_MAX, mx = 0;
  for (size_t s = 0; s < nsegs; s++)
    for (size_t j = 0; j < segs[s].n; j++) {
      uint64_t x = segs[s].e[j];
      uintptr_t a = mmsb_log_entry_addr(x), last = (uintptr_t)(x >> MMSB_LOG_LEN_SHIFT);
      if ((a >> PAGE_SHIFT) != ((a + last) >> PAGE_SHIFT)) return SIZE_MAX;
      if (a >= lo && a < hi && hi - a > last) {
        bytes += last + 1;
        mn = a < mn ? a : mn;
        mx = a > mx ? a : mx;
        e[k++] = x;
      } else if (a + last < lo || a >= hi) {
        e[--out] = x;
      } else {
        return SIZE_MAX;
      }
    }
  *bound = k * (MMSB_DELTA_HDR + MMSB_RUN_HDR + 2 * MMSB_GRANULE) + bytes;
  *amin = k ? mn : lo;
  *amax = k ? mx : lo;
  return k;
}

/* The first of sorted entries e[0..n) whose granule is at least g's. */
static size_t lower_bound(const uint64_t *e, size_t n, uintptr_t g) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (mmsb_log_entry_addr(e[mid]) >> GRAN_SHIFT < g) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/* Adds the run of granules [g0, g1) (from the region's start, in page pg)
 * to pr, clipped to the page's plen bytes. */
static inline void add_run(page_runs *pr, size_t pg, uintptr_t g0, uintptr_t g1, size_t plen) {
  if (mmsb_run_clip(g0, g1, pg, plen, &pr->off[pr->n], &pr->len[pr->n])) pr->n++;
}

/* Writes the open page's delta: its listed runs pr and the open run
 * [g0, g1). */
static inline void close_page(delta_out *k, const mmsb_region *r, size_t page, page_runs *pr,
                              uintptr_t g0, uintptr_t g1, size_t plen) {
  if (pr->n == 0 && mmsb_out_one_run(k, r, page, g0, g1, plen)) return;
  add_run(pr, page, g0, g1, plen);
  mmsb_out_page(k, r, page, pr, plen);
}

/* Writes the deltas of the pages that hold one entry each of e[i..m),
 * from e[i] up to the first that does not qualify, and returns its index
 * (i when e[i] does not): entries of one or two granules in a whole page
 * of region r, alone in it, the page before e[i]'s closed.  Each delta is
 * what mmsb_out_one_run writes for it, without the run list, the plan and
 * the copy queue, its bytes copied here: most pages of a small epoch hold
 * one store.  CPU machine, 1 342 stores in a GiB, one commit thread: the
 * fill 10.5-11.0 -> 6.6-7.3 us (MMSB_TRACE), with the sort's branchless
 * pass (sort_entries.c) the commit 18.3 -> 11.7-12.5 us.  The copies'
 * sources are prefetched PREFETCH_AHEAD entries ahead, for lines no longer
 * cached (the copy queue's reason); with the lines cold (256 MiB touched
 * after the stores) the VM's page walks decide, ~0.4 ms a commit either
 * way, too noisy to rank the two. */
enum { PREFETCH_AHEAD = 16 };
static size_t out_lone_pages(delta_out *k, const mmsb_region *r, const uint64_t *e, size_t i,
                             size_t m) {
  uintptr_t data = (uintptr_t)r->data, whole_end = data + (r->size & ~(size_t)(MMSB_PAGE_SIZE - 1));
  lone_cursor c = mmsb_lone_begin(k);
  for (; i < m; i++) {
    if (i + PREFETCH_AHEAD < m)
      __builtin_prefetch((const void *)mmsb_log_entry_addr(e[i + PREFETCH_AHEAD]));
    uintptr_t a = mmsb_log_entry_addr(e[i]), last = a + (uintptr_t)(e[i] >> MMSB_LOG_LEN_SHIFT);
    uintptr_t g0 = a >> GRAN_SHIFT, g1 = (last >> GRAN_SHIFT) + 1;
    if (g1 - g0 > 2 || a >= whole_end ||
        (i + 1 < m && mmsb_log_entry_addr(e[i + 1]) >> PAGE_SHIFT == a >> PAGE_SHIFT))
      break;
    uint32_t off = (uint32_t)(a & (MMSB_PAGE_SIZE - 1) & ~(uintptr_t)(MMSB_GRANULE - 1));
    const uint8_t *src = r->data + ((a - data) & ~(uintptr_t)(MMSB_GRANULE - 1));
    mmsb_lone_put(&c, r->id, (a - data) >> PAGE_SHIFT, off, (uint32_t)(g1 - g0) * MMSB_GRANULE,
                  src, NULL);
  }
  mmsb_lone_end(k, &c);
  return i;
}

/* Writes the deltas of region r from its sorted entries e[0..m), each in
 * one page of it.  An entry that overlaps or touches the open run (in the
 * same page) extends it, as merging the entries into runs and cutting
 * those at pages would.  Regions are page-aligned: an entry's page in the
 * region is its address's page less the region's first. */
static void emit_region(delta_out *k, const mmsb_region *r, const uint64_t *e, size_t m) {
  uintptr_t r0 = (uintptr_t)r->data >> GRAN_SHIFT, p0 = (uintptr_t)r->data >> PAGE_SHIFT;
  uintptr_t g0 = 0, g1 = 0; /* the open run */
  size_t page = SIZE_MAX, plen = 0;
  page_runs pr;
  pr.n = 0;
  for (size_t i = 0; i < m; i++) {
    uintptr_t a = mmsb_log_entry_addr(e[i]);
    uintptr_t s = (a >> GRAN_SHIFT) - r0;
    uintptr_t t = ((a + (uintptr_t)(e[i] >> MMSB_LOG_LEN_SHIFT) + MMSB_GRANULE) >> GRAN_SHIFT) - r0;
    size_t pg = (a >> PAGE_SHIFT) - p0;
    if (pg == page && s <= g1) {
      if (t > g1) g1 = t;
      continue;
    }
    if (pg != page && page != SIZE_MAX) {
      close_page(k, r, page, &pr, g0, g1, plen);
      page = SIZE_MAX;
    }
    if (page == SIZE_MAX) {
      size_t j = out_lone_pages(k, r, e, i, m);
      if (j > i) {
        i = j - 1;
        continue;
      }
    }
    if (pg != page) {
      pr.n = 0;
      page = pg;
      plen = mmsb_region_page_len(r, pg);
    } else {
      add_run(&pr, page, g0, g1, plen);
    }
    g0 = s;
    g1 = t;
  }
  if (page != SIZE_MAX) close_page(k, r, page, &pr, g0, g1, plen);
}

/* Each region's slice of the sorted entries e[0..n), in T.sl in the bus's
 * order of regions (empty slices left out); the number of slices, or
 * SIZE_MAX when memory is short. */
static size_t slices(const mmsb_bus *bus, const uint64_t *e, size_t n) {
  size_t ns = 0;
  if (!(T.sl = mmsb_grow(T.sl, &T.sl_cap, bus->nregions ? bus->nregions : 1, sizeof *T.sl)))
    return SIZE_MAX;
  for (uint32_t i = 0; i < bus->nregions; i++) {
    const mmsb_region *r = bus->regions[i];
    if (!r || !r->map_size) continue;
    uintptr_t g = (uintptr_t)r->data >> GRAN_SHIFT;
    size_t i0 = lower_bound(e, n, g), i1 = lower_bound(e, n, g + (r->map_size >> GRAN_SHIFT));
    if (i1 > i0) T.sl[ns++] = (slice){r, i0, i1};
  }
  return ns;
}

static int by_first(const void *a, const void *b) {
  size_t x = ((const slice *)a)->i0, y = ((const slice *)b)->i0;
  return (x > y) - (x < y);
}

/* Folds the entries of e[0..n) that no slice holds into the bitmaps: the
 * gaps between the slices, put in address order (they are in the bus's
 * order, which emission needed; slices do not overlap, as regions do not). */
static void fold_gaps(const uint64_t *e, size_t n, size_t ns) {
  size_t covered = 0;
  for (size_t i = 0; i < ns; i++) covered += T.sl[i].i1 - T.sl[i].i0;
  if (covered == n) return; /* the common case: every entry is this bus's */
  qsort(T.sl, ns, sizeof *T.sl, by_first);
  size_t at = 0;
  for (size_t i = 0; i < ns; at = T.sl[i++].i1)
    if (T.sl[i].i0 > at) mmsb_logs_fold(e + at, T.sl[i].i0 - at);
  if (n > at) mmsb_logs_fold(e + at, n - at);
}

int mmsb_collect_tiny(mmsb_bus *bus, mmsb_batch *b, const mmsb_log_seg *segs, size_t nsegs,
                      size_t n, uintptr_t lo, uintptr_t hi) {
  if (!(T.ents = mmsb_grow(T.ents, &T.ents_cap, n, sizeof *T.ents)) ||
      !(T.tmp = mmsb_grow(T.tmp, &T.tmp_cap, n, sizeof *T.tmp)))
    return MMSB_COLLECT_GENERAL;
  uint64_t t0 = bus->trace ? mmsb_now_ns() : 0, t1 = 0, t2 = 0;
  size_t bound;
  uintptr_t amin, amax;
  size_t in = take(segs, nsegs, n, lo, hi, T.ents, &bound, &amin, &amax);
  if (in == SIZE_MAX) return MMSB_COLLECT_GENERAL;
  if (bus->trace) t1 = mmsb_now_ns();
  /* Keys count granules from the lowest entry's, over the entries' own
   * range: a small epoch's stores often lie in one region of a wider span,
   * and keys over the span left most of the sort's first groups empty and
   * crowded the rest (1 342 entries in one GiB region of a two-GiB span,
   * host_mirror under MMSB_TRACE on the CPU machine: sort 10.0 -> 6.6 us,
   * the copy out of the logs 1.6 -> 2.0).  Keys below 2^(shift - GRAN_SHIFT). */
  uintptr_t kbase = amin & ~(uintptr_t)(MMSB_GRANULE - 1);
  unsigned shift = PAGE_SHIFT;
  while (shift < 63 && (amax - kbase) >> shift) shift++;
  mmsb_sort_entries(T.ents, T.tmp, in, kbase, shift - GRAN_SHIFT);
  size_t ns = slices(bus, T.ents, in);
  if (ns == SIZE_MAX) return MMSB_COLLECT_GENERAL;
  if (bus->trace) t2 = mmsb_now_ns();
  int rc = mmsb_batch_reserve_many(b, in, bound);
  if (rc) return rc; /* the marks stay in the logs, for the next commit */
  mmsb_logs_clear();
  copy_q q;
  mmsb_copy_init(&q);
  delta_out k = {b->bytes.p + b->bytes.len, b->index + b->count, b->bytes.len, 0, 0, &q};
  for (size_t i = 0; i < ns; i++) emit_region(&k, T.sl[i].r, T.ents + T.sl[i].i0, T.sl[i].i1 - T.sl[i].i0);
  mmsb_copy_done(&q, b);
  mmsb_batch_commit_many(b, k.d, k.at);
  fold_gaps(T.ents, in, ns);
  mmsb_logs_fold(T.ents + in, n - in); /* outside the span */
  atomic_fetch_add_explicit(&mmsb_tiny_epochs, 1, memory_order_relaxed);
  if (bus->trace) mmsb_trace_logs_steps(bus, b, t0, t1, t2, k.d); /* named as the general way's */
  return MMSB_OK;
}
