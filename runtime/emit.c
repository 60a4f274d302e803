/*
 * emit.c - one dirty page's delta, from its runs of dirty bytes (emit.h):
 * the header and run headers now, the bytes through a queue of copies.
 */
#include "emit.h"

#include <string.h>

/* Copies 8 bytes at a time: runs are mostly one or two granules, and a
 * memcpy of variable length measured 2.3x slower here than this loop. */
void mmsb_copy_flush(copy_q *q) {
  for (size_t i = 0; i < q->n && i < 16; i++) __builtin_prefetch(q->c[i].src);
  for (size_t i = 0; i < q->n; i++) {
    if (i + 16 < q->n) __builtin_prefetch(q->c[i + 16].src);
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

void mmsb_copy_done(copy_q *q, mmsb_batch *b) {
  mmsb_copy_flush(q);
  __atomic_fetch_add(&b->runs, q->runs, __ATOMIC_RELAXED);
  __atomic_fetch_add(&b->whole, q->whole, __ATOMIC_RELAXED);
}

static inline void copy_push(copy_q *q, uint8_t *dst, const uint8_t *src, size_t len) {
  q->c[q->n].dst = dst;
  q->c[q->n].src = src;
  q->c[q->n++].len = len;
}

uint32_t mmsb_runs_plan(const page_runs *pr, size_t plen) {
  size_t body = 0;
  for (uint32_t i = 0; i < pr->n; i++) body += MMSB_RUN_HDR + pr->len[i];
  return body >= plen ? (uint32_t)plen | PLAN_WHOLE : (uint32_t)body;
}

size_t mmsb_emit_runs(uint8_t *o, const mmsb_region *r, size_t page, const page_runs *pr,
                      uint32_t plan, copy_q *q) {
  size_t plen = mmsb_region_page_len(r, page);
  const uint8_t *src = r->data + page * MMSB_PAGE_SIZE;
  uint8_t *w = o + MMSB_DELTA_HDR;
  bool whole = plan & PLAN_WHOLE;
  uint32_t body = plan & ~PLAN_WHOLE;
  if (q->n + GRANS_PER_PAGE / 2 > COPY_MAX) mmsb_copy_flush(q);
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
  q->runs += whole ? 1 : pr->n;
  q->whole += whole;
  mmsb_delta_write_header(o, r->id, page, MMSB_OP_ASSIGN, MMSB_T_BYTES, whole,
                          whole ? 0 : pr->n, body);
  return MMSB_DELTA_HDR + body;
}
