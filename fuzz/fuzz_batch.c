/*
 * fuzz_batch.c - untrusted batch and delta bytes (docs/format.md) through
 * every public call that reads them: mmsb_delta_view, mmsb_batch_decode,
 * the run iterator, mmsb_delta_apply into a full and a short page,
 * mmsb_delta_compose of neighbours, and mmsb_batch_apply to a bus whose
 * regions have ids 1 and 2.  A call may refuse the bytes; none may read or
 * write outside what it was given (ASan, UBSan), and a delta that decode
 * accepted must apply to its region.
 */
#include <mmsb/mmsb.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint8_t page[MMSB_PAGE_SIZE];
static uint8_t composed[MMSB_DELTA_MAX];

static void runs_of(const mmsb_delta *d) {
  uint32_t cursor = 0;
  mmsb_run run;
  uint64_t sum = 0;
  while (mmsb_delta_next_run(d, &cursor, &run) == 1) {
    if (run.offset + (uint64_t)run.length > MMSB_PAGE_SIZE) abort(); /* iterator let a bad run out */
    for (uint32_t i = 0; i < run.length; i++) sum += run.bytes[i]; /* ASan: bytes inside the input */
  }
  (void)sum;
}

static void one_delta(const mmsb_delta *d, const mmsb_delta *prev) {
  runs_of(d);
  mmsb_delta_apply(d, page, sizeof page);
  mmsb_delta_apply(d, page, 1 + d->page % sizeof page); /* a region's short last page */
  size_t len;
  if (prev && mmsb_delta_compose(prev, d, composed, sizeof composed, &len) == MMSB_OK) {
    mmsb_delta c;
    if (len > sizeof composed || mmsb_delta_view(composed, len, &c) != MMSB_OK) abort();
    runs_of(&c);
    mmsb_delta_apply(&c, page, sizeof page);
  }
}

static mmsb_bus *bus_with_regions(void) {
  static mmsb_bus *bus;
  if (bus) return bus;
  mmsb_region *r;
  if (mmsb_bus_open(NULL, &bus) || mmsb_region_create(bus, "a", 3 * MMSB_PAGE_SIZE + 100, 0, &r) ||
      mmsb_region_create(bus, "b", MMSB_PAGE_SIZE, 0, &r)) {
    fprintf(stderr, "fuzz_batch: no bus: %s\n", mmsb_last_error());
    abort();
  }
  return bus;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mmsb_bus *bus = bus_with_regions();
  mmsb_delta d;
  if (mmsb_delta_view(data, size, &d) == MMSB_OK) one_delta(&d, NULL);
  mmsb_batch *b;
  if (mmsb_batch_decode(data, size, &b) != MMSB_OK) return 0;
  size_t n = mmsb_batch_count(b);
  mmsb_delta prev;
  for (size_t i = 0; i < n; i++) {
    if (mmsb_batch_delta(b, i, &d) != MMSB_OK) abort(); /* decode accepted every one */
    one_delta(&d, i ? &prev : NULL);
    prev = d;
  }
  size_t len;
  const uint8_t *bytes = mmsb_batch_bytes(b, &len);
  mmsb_batch *again; /* what decode accepted, its bytes decode again */
  if (mmsb_batch_decode(bytes, len, &again) != MMSB_OK) abort();
  mmsb_batch_free(again);
  mmsb_batch_apply(b, bus);
  mmsb_batch_free(b);
  return 0;
}
