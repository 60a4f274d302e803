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
  pthread_mutex_lock(&bus->lock);
  if (bus->naccums == bus->cap_accums) {
    size_t cap = bus->cap_accums ? bus->cap_accums * 2 : 64;
    mmsb_accum *a = realloc(bus->accums, cap * sizeof *a);
    if (!a) {
      pthread_mutex_unlock(&bus->lock);
      free(copy);
      return mmsb_fail(MMSB_ENOMEM, "accumulation queue");
    }
    bus->accums = a;
    bus->cap_accums = cap;
  }
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
  size_t es = (size_t)mmsb_type_size(a->type);
  for (size_t at = s; at < e; at += es) {
    size_t o = at - ps;
    if (img->mask[o >> 3] >> (o & 7) & 1)
      mmsb_accumulate_bytes(img->values + o, a->values + (at - a->offset), es, a->op, a->type);
    else
      memcpy(img->values + o, a->values + (at - a->offset), es);
    for (size_t k = 0; k < es; k++) img->mask[(o + k) >> 3] |= (uint8_t)(1u << ((o + k) & 7));
    *any = true;
  }
}

/* Emits one delta per (page, op, type) for region rid's accumulations in
 * [lo, hi) of the sorted queue, applies it to the region, and appends it. */
static int flush_region(mmsb_bus *bus, mmsb_batch *b, size_t lo, size_t hi) {
  mmsb_region *r = mmsb_region_by_id(bus, bus->accums[lo].region_id);
  if (!r) return MMSB_OK; /* destroyed since: its accumulations go with it */
  size_t pmin = SIZE_MAX, pmax = 0;
  for (size_t i = lo; i < hi; i++) {
    size_t p0 = bus->accums[i].offset / MMSB_PAGE_SIZE;
    size_t p1 = (bus->accums[i].offset + bus->accums[i].len - 1) / MMSB_PAGE_SIZE;
    if (p0 < pmin) pmin = p0;
    if (p1 > pmax) pmax = p1;
  }
  page_acc *img = malloc(sizeof *img);
  uint8_t *enc = malloc(MMSB_DELTA_MAX);
  int rc = img && enc ? MMSB_OK : mmsb_fail(MMSB_ENOMEM, "accumulation flush");
  /* Pages in order; within a page one delta per distinct (op, type) in the
   * order each first appears, so that replay order equals this order. */
  for (size_t pg = pmin; !rc && pg <= pmax; pg++) {
    for (size_t first = lo; !rc && first < hi; first++) {
      const mmsb_accum *f = &bus->accums[first];
      bool seen = false, any = false;
      for (size_t j = lo; j < first && !seen; j++)
        seen = bus->accums[j].op == f->op && bus->accums[j].type == f->type;
      if (seen) continue;
      memset(img->mask, 0, sizeof img->mask);
      for (size_t j = first; j < hi; j++)
        if (bus->accums[j].op == f->op && bus->accums[j].type == f->type)
          fold(img, &bus->accums[j], pg, &any);
      if (!any) continue;
      size_t start = pg * MMSB_PAGE_SIZE, len;
      size_t plen = r->size - start < MMSB_PAGE_SIZE ? r->size - start : MMSB_PAGE_SIZE;
      mmsb_delta d;
      rc = mmsb_delta_encode(r->id, pg, f->op, f->type, img->mask, img->values,
                             plen, enc, MMSB_DELTA_MAX, &len);
      if (!rc) rc = mmsb_delta_view(enc, len, &d);
      if (!rc) rc = mmsb_batch_append(b, enc, len);
      if (!rc) mmsb_delta_apply(&d, r->data + start, plen);
    }
  }
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
    rc = flush_region(bus, b, lo, hi);
    lo = hi;
  }
  mmsb_accum_free(bus);
  return rc;
}

void mmsb_accum_free(mmsb_bus *bus) {
  for (size_t i = 0; i < bus->naccums; i++) free(bus->accums[i].values);
  bus->naccums = 0;
}
