/*
 * stage.c - what a mirror's staging holds besides the deltas' bytes: for
 * each delta its offset in them, or, for a sparse epoch read over PCIe, its
 * record (device.h): the word itself when the delta is one aligned 8-byte
 * assignment, so that the kernel stores it without reading the delta.
 */
#include "internal.h"
#include "device.h"

#include <string.h>

_Atomic uint64_t mmsb_staged_words;

/* The record of the delta at d, o bytes from the first one. */
static mmsb_stage_rec record_of(const uint8_t *d, size_t o) {
  mmsb_dhdr h;
  mmsb_dhdr_read(d, &h);
  mmsb_stage_rec r = {MMSB_STAGE_DELTA | o, (uint64_t)MMSB_DELTA_HDR + h.body};
  if (h.form != MMSB_FORM_RUNS || h.op != MMSB_OP_ASSIGN || h.nruns != 1 ||
      h.body != MMSB_RUN_HDR + 8)
    return r;
  uint16_t off, len;
  memcpy(&off, d + MMSB_DELTA_HDR, 2);
  memcpy(&len, d + MMSB_DELTA_HDR + 2, 2);
  if (len != 8 || (off & 7)) return r; /* the kernel's store is one aligned word */
  r.at = h.page * MMSB_PAGE_SIZE + off;
  memcpy(&r.word, d + MMSB_DELTA_HDR + MMSB_RUN_HDR, 8);
  return r;
}

void mmsb_stage_index(void *arr, bool recs, const uint8_t *first, const size_t *index,
                      size_t base, size_t n) {
  if (!recs) {
    uint32_t *offs = arr;
    for (size_t i = 0; i < n; i++) offs[i] = (uint32_t)(index[i] - base);
    return;
  }
  mmsb_stage_rec *r = arr;
  uint64_t words = 0;
  for (size_t i = 0; i < n; i++) {
    size_t o = index[i] - base;
    r[i] = record_of(first + o, o);
    words += !(r[i].at & MMSB_STAGE_DELTA);
  }
  atomic_fetch_add_explicit(&mmsb_staged_words, words, memory_order_relaxed);
}

void mmsb_stage_copy(void *dst, const void *src, size_t len, void *arr, bool recs,
                     const uint8_t *first, const size_t *index, size_t base, size_t n) {
  memcpy(dst, src, len);
  mmsb_stage_index(arr, recs, first, index, base, n);
}

/* Filling pinned staging (mmsb_parallel_stage) on up to `threads`
 * threads, in parts of at least 64 KiB: the batch was just written by the
 * collection's threads and sits in their caches, and the pool's threads are
 * still spinning from it (a 470 KB batch at 1e-4 of a GiB was one thread's
 * copy with 1 MiB parts).  The offsets or records are made in the same
 * parts: as a loop of their own on the caller the offsets took ~100 us of
 * a 1e-3 epoch (105k deltas) on the H200's VM. */
typedef struct stage_job {
  uint8_t *dst;
  const uint8_t *src;
  size_t len;
  uint8_t *arr;
  bool recs;
  const size_t *index;
  size_t base, n;
} stage_job;

static void stage_part(void *ctx, int part, int nparts) {
  stage_job *c = ctx;
  size_t lo, hi, dlo, dhi;
  size_t each = c->recs ? sizeof(mmsb_stage_rec) : sizeof(uint32_t);
  mmsb_part_range(c->len, part, nparts, &lo, &hi);
  mmsb_part_range(c->n, part, nparts, &dlo, &dhi);
  mmsb_stage_copy(c->dst + lo, c->src + lo, hi - lo, c->arr + dlo * each, c->recs, c->src,
                  c->index + dlo, c->base, dhi - dlo);
}

void mmsb_parallel_stage(void *dst, const void *src, size_t len, void *arr, bool recs,
                         const size_t *index, size_t base, size_t n, int threads) {
  size_t parts = (len + (recs ? sizeof(mmsb_stage_rec) : sizeof(uint32_t)) * n) >> 16;
  if (parts > (size_t)threads) parts = (size_t)threads;
  stage_job c = {dst, src, len, arr, recs, index, base, n};
  mmsb_pool_run(parts < 1 ? 1 : (int)parts, threads, stage_part, &c);
}
