/*
 * emit.h - writing one page's delta into a batch (emit.c), shared by the
 * two ways of collecting an epoch: from the dirty bitmaps (collect.c) and
 * from the threads' mark logs (collect_logs.c).  Internal.
 */
#ifndef MMSB_EMIT_H
#define MMSB_EMIT_H

#include "internal.h"

#define PLAN_WHOLE 0x80000000u /* a page's plan: its delta goes whole */

/* A dirty page's runs of bytes (offset, length), clipped to the page's
 * bytes in the region: at most 256, maximal runs of 512 granules being
 * apart by one at least. */
typedef struct page_runs {
  uint32_t n;
  uint16_t off[GRANS_PER_PAGE / 2], len[GRANS_PER_PAGE / 2];
} page_runs;

/* The copies of dirty bytes into the batch are queued, not done on the
 * spot: writing a page's headers is bit scanning with branches that keep
 * few loads in flight, while a loop of nothing but copies keeps many cache
 * misses in flight at once (the region's dirty lines are spread all over
 * it).  A queue holds at least a page's worth (256 runs). */
#define COPY_MAX 1024
typedef struct copy_q {
  uint64_t runs, whole; /* of the deltas written through it (stats) */
  size_t n;
  struct { uint8_t *dst; const uint8_t *src; size_t len; } c[COPY_MAX];
} copy_q;
void mmsb_copy_flush(copy_q *q);
/* An empty queue. */
static inline void mmsb_copy_init(copy_q *q) { q->runs = q->whole = q->n = 0; }
/* Flushes q and adds its counts to b's (parts of a collection run at once). */
void mmsb_copy_done(copy_q *q, mmsb_batch *b);

/* Queues a copy of len bytes from src to dst, and starts reading src: the
 * copy is made at the next flush, up to ~768 copies later, and the walk
 * over the pages' runs meanwhile hides the read's latency (the dirty words
 * of a sparse epoch are all over the region).  To L2 (locality 2): that
 * many lines would crowd L1 (the flush brings them there, 16 copies
 * ahead).  The flush's prefetch alone came too late to cover the latency:
 * CPU machine, two threads, the fill of a 1e-3 epoch 1672-1819 ->
 * 1348-1479 us, of a 1e-4 epoch 141-145 -> 122-123. */
static inline void mmsb_copy_push(copy_q *q, uint8_t *dst, const uint8_t *src, size_t len) {
  __builtin_prefetch(src, 0, 2);
  q->c[q->n].dst = dst;
  q->c[q->n].src = src;
  q->c[q->n++].len = len;
}

/* The plan of a page's delta whose runs with their headers take body
 * bytes: body (0: no delta), or plen with PLAN_WHOLE when they would take
 * at least the page's plen bytes.  Sizing (collect_logs.c) plans by it
 * too, so that the bytes it reserves are the bytes the fill writes. */
static inline uint32_t mmsb_body_plan(size_t body, size_t plen) {
  return body >= plen ? (uint32_t)plen | PLAN_WHOLE : (uint32_t)body;
}
/* The same from the page's runs (their bytes and headers are its body). */
static inline uint32_t mmsb_runs_plan(const page_runs *pr, size_t plen) {
  size_t body = 0;
  for (uint32_t i = 0; i < pr->n; i++) body += MMSB_RUN_HDR + pr->len[i];
  return mmsb_body_plan(body, plen);
}

/* Writes the delta of region page `page` with runs pr and plan at o; its
 * bytes are queued on q.  Returns the delta's length.  Inline, with the
 * plan and the header writer: collection calls them for every dirty page
 * (as calls into other files, a one-thread fill of a 1e-4 epoch took
 * 278-293 us on the CPU machine; inline, 250-278). */
static inline size_t mmsb_emit_runs(uint8_t *o, const mmsb_region *r, size_t page,
                                    const page_runs *pr, uint32_t plan, copy_q *q) {
  size_t plen = mmsb_region_page_len(r, page);
  const uint8_t *src = r->data + page * MMSB_PAGE_SIZE;
  uint8_t *w = o + MMSB_DELTA_HDR;
  bool whole = plan & PLAN_WHOLE;
  uint32_t body = plan & ~PLAN_WHOLE;
  if (q->n + GRANS_PER_PAGE / 2 > COPY_MAX) mmsb_copy_flush(q);
  if (whole) {
    mmsb_copy_push(q, w, src, plen);
  } else {
    for (uint32_t i = 0; i < pr->n; i++) {
      mmsb_run_write_header(w, pr->off[i], pr->len[i]);
      mmsb_copy_push(q, w + MMSB_RUN_HDR, src + pr->off[i], pr->len[i]);
      w += MMSB_RUN_HDR + pr->len[i];
    }
  }
  q->runs += whole ? 1 : pr->n;
  q->whole += whole;
  mmsb_delta_write_header(o, r->id, page, MMSB_OP_ASSIGN, MMSB_T_BYTES, whole,
                          whole ? 0 : pr->n, body);
  return MMSB_DELTA_HDR + body;
}
/* Where a collection writes deltas: out (the batch's bytes from its offset
 * base), index (their batch offsets), the bytes and deltas written so far
 * from there, and the queue of their copies. */
typedef struct delta_out {
  uint8_t *out;
  size_t *index, base, at, d;
  copy_q *q;
} delta_out;

/* The bytes of granules [g0, g1) of region page pg (granules counted from
 * the region's first; the run inside the page), clipped to the page's plen
 * bytes as the bitmap path clips them: false when they start past plen. */
static inline bool mmsb_run_clip(uintptr_t g0, uintptr_t g1, size_t pg, size_t plen,
                                 uint16_t *off, uint16_t *len) {
  size_t o = (g0 - pg * GRANS_PER_PAGE) * MMSB_GRANULE, stop = (g1 - pg * GRANS_PER_PAGE) * MMSB_GRANULE;
  if (o >= plen) return false;
  *off = (uint16_t)o;
  *len = (uint16_t)((stop < plen ? stop : plen) - o);
  return true;
}

/* Writes the delta of region page `page` (plen bytes) with runs pr, unless
 * they have no bytes. */
static inline void mmsb_out_page(delta_out *k, const mmsb_region *r, size_t page,
                                 const page_runs *pr, size_t plen) {
  uint32_t plan = mmsb_runs_plan(pr, plen);
  if (!plan) return;
  k->index[k->d++] = k->base + k->at;
  k->at += mmsb_emit_runs(k->out + k->at, r, page, pr, plan, k->q);
}

/* Writes the delta of region page pg (plen bytes) when granules [g0, g1)
 * are its only run and take less than the page with their header; false,
 * nothing written, else (its runs then go through mmsb_out_page).  Most
 * pages of a sparse epoch have one run: this skips listing and planning
 * runs (a one-thread 1e-5 fill, collect_tiny.c: 12.4 -> 10.1 us on the CPU
 * machine, when that way still wrote its pages of one store through here).
 * Both ways now write pages of one run of one or two granules with
 * mmsb_lone_put, and this the other pages of one run. */
static inline bool mmsb_out_one_run(delta_out *k, const mmsb_region *r, size_t pg, uintptr_t g0,
                                    uintptr_t g1, size_t plen) {
  page_runs one; /* only its first run is written and read */
  one.n = 1;
  if (!mmsb_run_clip(g0, g1, pg, plen, &one.off[0], &one.len[0]) ||
      MMSB_RUN_HDR + (size_t)one.len[0] >= plen)
    return false;
  k->index[k->d++] = k->base + k->at;
  k->at += mmsb_emit_runs(k->out + k->at, r, pg, &one, MMSB_RUN_HDR + one.len[0], k->q);
  return true;
}

/* Pages of one store, written one after the other: most pages of a sparse
 * epoch hold one store, and both ways of collecting from the logs write
 * those in a loop of their own (out_lone_pages in collect_tiny.c,
 * lone_runs in collect_logs.c), without the run list and the plan.  The
 * cursor lives in the loop's registers, not in k: stores into the batch's
 * bytes could alias k's fields, so the compiler would reload them. */
typedef struct lone_cursor {
  uint8_t *o, *o0;    /* where the next delta goes; where the loop began */
  size_t *ix, *ix0, at0; /* the same in the index; o0's offset in the batch */
} lone_cursor;

static inline lone_cursor mmsb_lone_begin(const delta_out *k) {
  return (lone_cursor){k->out + k->at, k->out + k->at, k->index + k->d, k->index + k->d,
                       k->base + k->at};
}

/* Writes the delta of region page `page` whose one run is len bytes (8 or
 * 16) at page offset off, from src: what mmsb_out_one_run writes for it.
 * Its bytes are copied now (q NULL: their lines are cached, as a small
 * epoch's are just after its stores) or queued on q. */
static inline void mmsb_lone_put(lone_cursor *c, uint32_t id, size_t page, uint32_t off,
                                 uint32_t len, const uint8_t *src, copy_q *q) {
  uint8_t *o = c->o;
  *c->ix++ = c->at0 + (size_t)(o - c->o0);
  mmsb_delta_write_header(o, id, page, MMSB_OP_ASSIGN, MMSB_T_BYTES, 0, 1, MMSB_RUN_HDR + len);
  mmsb_run_write_header(o + MMSB_DELTA_HDR, (uint16_t)off, (uint16_t)len);
  uint8_t *w = o + MMSB_DELTA_HDR + MMSB_RUN_HDR;
  if (q) {
    if (q->n == COPY_MAX) mmsb_copy_flush(q);
    mmsb_copy_push(q, w, src, len);
  } else {
    memcpy(w, src, 8);
    if (len > 8) memcpy(w + 8, src + 8, 8);
  }
  c->o = w + len;
}

/* Hands the cursor's deltas over to k (its runs counted too). */
static inline void mmsb_lone_end(delta_out *k, const lone_cursor *c) {
  size_t n = (size_t)(c->ix - c->ix0);
  k->at += (size_t)(c->o - c->o0);
  k->d += n;
  k->q->runs += n;
}
#endif
