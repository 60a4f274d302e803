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

/* The plan of a page's delta: its body size (0: no delta), with
 * PLAN_WHOLE when runs would take at least the page's plen bytes. */
uint32_t mmsb_runs_plan(const page_runs *pr, size_t plen);
/* Writes the delta of region page `page` with runs pr and plan at o; its
 * bytes are queued on q.  Returns the delta's length. */
size_t mmsb_emit_runs(uint8_t *o, const mmsb_region *r, size_t page, const page_runs *pr,
                      uint32_t plan, copy_q *q);
#endif
