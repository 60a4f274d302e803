/* demo_api.c - MMSB without the compiler pass: a region, stores reported with
 * mmsb_touch, commits, and a subscriber that prints each epoch's deltas. */
#include <mmsb/mmsb.h>

#include <stdio.h>
#include <string.h>

static int show(void *ctx, const mmsb_batch *b) {
  (void)ctx;
  printf("epoch %llu: %zu delta(s)\n", (unsigned long long)mmsb_batch_epoch(b),
         mmsb_batch_count(b));
  for (size_t i = 0; i < mmsb_batch_count(b); i++) {
    mmsb_delta d;
    mmsb_batch_delta(b, i, &d);
    printf("  region %u page %llu: %s, %u bytes\n", d.region_id,
           (unsigned long long)d.page, d.whole_page ? "whole page" : "runs",
           d.body_len);
  }
  return 0;
}

int main(void) {
  mmsb_bus *bus = mmsb_default_bus();
  mmsb_region *r;
  if (mmsb_region_create(bus, "prices", 1 << 20, 0, &r) != MMSB_OK) {
    fprintf(stderr, "demo: %s\n", mmsb_last_error());
    return 1;
  }
  mmsb_subscribe(bus, show, NULL, NULL);
  double *prices = mmsb_region_data(r);
  for (int step = 0; step < 3; step++) {
    for (int i = 0; i < 5; i++) {
      size_t k = (size_t)(i * 7919 + step * 31) % (mmsb_region_size(r) / sizeof *prices);
      prices[k] += 1.5;
      mmsb_touch(&prices[k], sizeof *prices);
    }
    mmsb_epoch_t e;
    if (mmsb_commit(bus, &e) != MMSB_OK) {
      fprintf(stderr, "demo: commit: %s\n", mmsb_last_error());
      return 1;
    }
  }
  return 0;
}
