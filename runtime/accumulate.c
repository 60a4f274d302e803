/*
 * accumulate.c - accumulating deltas from CPU producers (mmsb_accumulate).
 *
 * Accumulations are queued and applied at the next commit, after that
 * epoch's ASSIGN deltas, in (region, page, queue order).  Each page's
 * queued accumulations of one op and type are composed into one delta, so
 * the batch stays one delta per (page, op) whatever the number of calls.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

int mmsb_accumulate(mmsb_region *r, size_t offset, int op, int type,
                    const void *values, size_t count) {
  if (!r || !values) return mmsb_fail(MMSB_EINVAL, "region or values is NULL");
  if (op == MMSB_OP_ASSIGN || !mmsb_op_valid(op, type))
    return mmsb_fail(MMSB_EINVAL, "op %d with type %d is not an accumulating op", op, type);
  size_t es = (size_t)mmsb_type_size(type);
  if (offset % es) return mmsb_fail(MMSB_EINVAL, "offset %zu is not element-aligned", offset);
  if (count == 0) return MMSB_OK;
  if (count > r->size / es || offset > r->size - count * es)
    return mmsb_fail(MMSB_ERANGE, "[%zu, +%zu elements) past region '%s'", offset,
                     count, r->name);
  mmsb_bus *bus = r->bus;
  uint8_t *copy = malloc(count * es);
  if (!copy) return mmsb_fail(MMSB_ENOMEM, "accumulation");
  memcpy(copy, values, count * es);
  int rc = mmsb_bus_lock(bus, "mmsb_accumulate");
  if (rc) {
    free(copy);
    return rc;
  }
  mmsb_accum *a = mmsb_grow(bus->accums, &bus->cap_accums, bus->naccums + 1, sizeof *a);
  if (!a) {
    pthread_mutex_unlock(&bus->lock);
    free(copy);
    return mmsb_fail(MMSB_ENOMEM, "accumulation queue");
  }
  bus->accums = a;
  bus->accums[bus->naccums++] = (mmsb_accum){r->id, (uint8_t)op, (uint8_t)type,
                                             offset, count * es, copy, bus->accum_seq++};
  pthread_mutex_unlock(&bus->lock);
  return MMSB_OK;
}

/* Orders by region, then queue order; pages are split out when flushing. */
static int by_region(const void *pa, const void *pb) {
  const mmsb_accum *a = pa, *b = pb;
  if (a->region_id != b->region_id) return a->region_id < b->region_id ? -1 : 1;
  return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* One page's accumulation image: bytes covered and their combined values. */
typedef struct page_acc {
  uint8_t mask[MMSB_PAGE_SIZE / 8];
  uint8_t values[MMSB_PAGE_SIZE];
} page_acc;

/* Combines the part of accumulation a that falls in page pg into img. */
static void fold(page_acc *img, const mmsb_accum *a, size_t pg, bool *any) {
  size_t ps = pg * MMSB_PAGE_SIZE, pe = ps + MMSB_PAGE_SIZE;
  size_t s = a->offset > ps ? a->offset : ps;
  size_t e = a->offset + a->len < pe ? a->offset + a->len : pe;
  if (s >= e) return;
  mmsb_overlay(img->mask, img->values, s - ps, a->values + (s - a->offset), e - s, a->op, a->type);
  *any = true;
}

static int by_size(const void *pa, const void *pb) {
  size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
  return a < b ? -1 : a > b;
}

/* The distinct pages the accumulations q[0..n) touch, sorted; *np of them. */
static size_t *touched_pages(const mmsb_accum *q, size_t n, size_t *np) {
  size_t total = 0, k = 0;
  for (size_t i = 0; i < n; i++)
    total += (q[i].offset + q[i].len - 1) / MMSB_PAGE_SIZE - q[i].offset / MMSB_PAGE_SIZE + 1;
  size_t *pages = malloc((total ? total : 1) * sizeof *pages);
  if (!pages) return NULL;
  for (size_t i = 0; i < n; i++)
    for (size_t pg = q[i].offset / MMSB_PAGE_SIZE;
         pg <= (q[i].offset + q[i].len - 1) / MMSB_PAGE_SIZE; pg++)
      pages[k++] = pg;
  qsort(pages, k, sizeof *pages, by_size);
  size_t u = 0;
  for (size_t i = 0; i < k; i++)
    if (!u || pages[u - 1] != pages[i]) pages[u++] = pages[i];
  *np = u;
  return pages;
}

/* Emits page pg's accumulations (indices cov[0..nc) of q, queue order): one
 * delta per distinct (op, type), in the order each first appears, so that
 * replay order equals this order; applies each to the region. */
static int flush_page(mmsb_batch *b, mmsb_region *r, const mmsb_accum *q, const size_t *cov,
                      size_t nc, size_t pg, page_acc *img, uint8_t *enc) {
  size_t start = pg * MMSB_PAGE_SIZE, plen = mmsb_region_page_len(r, pg);
  for (size_t f = 0; f < nc; f++) {
    const mmsb_accum *fa = &q[cov[f]];
    bool seen = false, any = false;
    for (size_t j = 0; j < f && !seen; j++)
      seen = q[cov[j]].op == fa->op && q[cov[j]].type == fa->type;
    if (seen) continue;
    memset(img->mask, 0, sizeof img->mask);
    for (size_t j = f; j < nc; j++)
      if (q[cov[j]].op == fa->op && q[cov[j]].type == fa->type) fold(img, &q[cov[j]], pg, &any);
    if (!any) continue;
    size_t len;
    mmsb_delta d;
    int rc = mmsb_delta_encode(r->id, pg, fa->op, fa->type, img->mask, img->values, plen, enc,
                               MMSB_DELTA_MAX, &len);
    if (!rc) rc = mmsb_delta_view(enc, len, &d);
    if (!rc) rc = mmsb_batch_append(b, enc, len);
    if (rc) return rc;
    mmsb_delta_apply_trusted(&d, r->data + start); /* encoded for plen just above */
  }
  return MMSB_OK;
}

/* Emits the deltas of one region's accumulations q[0..n), page by page,
 * visiting only the pages they touch. */
static int flush_region(mmsb_bus *bus, mmsb_batch *b, const mmsb_accum *q, size_t n) {
  mmsb_region *r = mmsb_region_by_id(bus, q[0].region_id);
  if (!r) return MMSB_OK; /* destroyed since: its accumulations go with it */
  size_t np = 0, *pages = touched_pages(q, n, &np);
  size_t *cov = malloc(n * sizeof *cov);
  page_acc *img = malloc(sizeof *img);
  uint8_t *enc = malloc(MMSB_DELTA_MAX);
  int rc = pages && cov && img && enc ? MMSB_OK : mmsb_fail(MMSB_ENOMEM, "accumulation flush");
  for (size_t i = 0; !rc && i < np; i++) {
    size_t nc = 0, ps = pages[i] * MMSB_PAGE_SIZE;
    for (size_t j = 0; j < n; j++)
      if (q[j].offset < ps + MMSB_PAGE_SIZE && q[j].offset + q[j].len > ps) cov[nc++] = j;
    rc = flush_page(b, r, q, cov, nc, pages[i], img, enc);
  }
  free(pages);
  free(cov);
  free(img);
  free(enc);
  return rc;
}

int mmsb_accum_flush(mmsb_bus *bus, mmsb_batch *b) {
  if (bus->naccums == 0) return MMSB_OK;
  qsort(bus->accums, bus->naccums, sizeof *bus->accums, by_region);
  int rc = MMSB_OK;
  for (size_t lo = 0; lo < bus->naccums && !rc;) {
    size_t hi = lo;
    while (hi < bus->naccums && bus->accums[hi].region_id == bus->accums[lo].region_id) hi++;
    rc = flush_region(bus, b, bus->accums + lo, hi - lo);
    lo = hi;
  }
  mmsb_accum_free(bus);
  return rc;
}

void mmsb_accum_free(mmsb_bus *bus) {
  for (size_t i = 0; i < bus->naccums; i++) free(bus->accums[i].values);
  bus->naccums = 0;
}
