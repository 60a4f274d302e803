/*
 * collect_logs.c - sparse epochs, collected straight from the mark logs.
 *
 * When no mark went into the bitmaps since the bus last collected from
 * them, every pending mark is still in a thread's log.  Commit then takes
 * the entries, sorts them by address and merges them into runs of granules,
 * and builds each dirty page's runs from those: the deltas are the
 * ones the bitmap path would make, without the random reads and writes of
 * granule lines (a sparse epoch touches one granule line per dirty page,
 * three times over, before it reads a single dirty byte).  Entries of
 * regions that are not this bus's go to the bitmaps, for their own bus.
 */
#include "emit.h"

#include <string.h>

static uint64_t *ents, *ents_tmp;
static size_t ents_cap, tmp_cap;
typedef struct grun { uintptr_t g0, g1; } grun; /* granules [g0, g1), absolute */
static grun *runs;
static size_t runs_cap;

/* Sorts e[0..n) by address: LSD radix over the span of the addresses (a
 * GiB: 30 bits), 8 bits a pass for a few thousand entries, 11 for more (the
 * counters are cleared and summed every pass); tmp has room for n. */
static void sort_entries(uint64_t *e, uint64_t *tmp, size_t n) {
  if (n < 2) return;
  uintptr_t lo = UINTPTR_MAX, hi = 0;
  for (size_t i = 0; i < n; i++) {
    uintptr_t a = mmsb_log_entry_addr(e[i]);
    lo = a < lo ? a : lo;
    hi = a > hi ? a : hi;
  }
  unsigned bits = n < 8192 ? 8 : 11;
  size_t nb = (size_t)1 << bits, mask = nb - 1, count[1 << 11];
  uint64_t *src = e, *dst = tmp;
  for (unsigned shift = 0; shift < 64 && (hi - lo) >> shift; shift += bits) {
    memset(count, 0, nb * sizeof *count);
    for (size_t i = 0; i < n; i++) count[((mmsb_log_entry_addr(src[i]) - lo) >> shift) & mask]++;
    for (size_t k = 0, at = 0; k < nb; k++) {
      size_t c = count[k];
      count[k] = at;
      at += c;
    }
    for (size_t i = 0; i < n; i++) dst[count[((mmsb_log_entry_addr(src[i]) - lo) >> shift) & mask]++] = src[i];
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
    uintptr_t a = mmsb_log_entry_addr(e[i]);
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
        int rc = page == SIZE_MAX ? MMSB_OK : mmsb_emit_page(b, r, page, &pr, q);
        if (rc) return rc;
        pr.n = 0;
        page = pg;
      }
      size_t plen = mmsb_region_page_len(r, pg);
      size_t off = (a % GRANS_PER_PAGE) * MMSB_GRANULE, stop = (end - pg * GRANS_PER_PAGE) * MMSB_GRANULE;
      if (off < plen) {
        pr.off[pr.n] = (uint16_t)off;
        pr.len[pr.n++] = (uint16_t)((stop < plen ? stop : plen) - off);
      }
      a = end;
    }
  }
  return page == SIZE_MAX ? MMSB_OK : mmsb_emit_page(b, r, page, &pr, q);
}

static size_t *covered;
static size_t covered_cap;

/* Collects every region of bus from the entries taken from the logs.  On
 * failure, and for entries of no region of this bus, the entries go to the
 * bitmaps (a mark too many sends unchanged bytes; a lost one would lose
 * stores). */
int mmsb_collect_logs(mmsb_bus *bus, mmsb_batch *b) {
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
  mmsb_copy_flush(&q);
  if (rc) {
    mmsb_logs_fold(ents, n);
    return rc;
  }
  /* Entries of runs not wholly in this bus's regions: to the bitmaps. */
  for (size_t i = 0, k = 0; i < n; i++) {
    uintptr_t g0 = mmsb_log_entry_addr(ents[i]) >> GRAN_SHIFT;
    while (k + 1 < nr && runs[k].g1 <= g0) k++;
    if (covered[k] < runs[k].g1 - runs[k].g0) mmsb_logs_fold(&ents[i], 1);
  }
  return MMSB_OK;
}
