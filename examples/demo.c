/*
 * demo.c - an order book whose state is a plain C global, marked MMSB_STATE
 * and compiled with mmsb-cc.  The program has no logging or dirty-flag code:
 * the pass records its stores, each commit seals them as one epoch, and a
 * subscriber prints what each epoch changed.
 *
 *   mmsb-cc -O2 examples/demo.c -o demo && MMSB_VERIFY=1 ./demo
 */
#include <mmsb/mmsb.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct level { double price; long qty; };
struct book {
  struct level bids[512], asks[512];
  long trades;
  double last_price;
};

MMSB_STATE static struct book book;

static void add_order(int side, int level, double price, long qty) {
  struct level *l = side ? &book.asks[level] : &book.bids[level];
  l->price = price;
  l->qty += qty;
}

static void trade(int level, long qty) {
  book.asks[level].qty -= qty;
  book.trades++;
  book.last_price = book.asks[level].price;
}

static int show(void *ctx, const mmsb_batch *b) {
  (void)ctx;
  size_t bytes = 0, runs = 0;
  for (size_t i = 0; i < mmsb_batch_count(b); i++) {
    mmsb_delta d;
    mmsb_batch_delta(b, i, &d);
    uint32_t cur = 0;
    mmsb_run r;
    while (mmsb_delta_next_run(&d, &cur, &r)) {
      bytes += r.length;
      runs++;
    }
  }
  mmsb_region *reg = mmsb_region_by_id(mmsb_default_bus(), 1);
  printf("epoch %llu: %zu page delta(s), %zu run(s), %zu bytes of '%s' (%zu bytes)\n",
         (unsigned long long)mmsb_batch_epoch(b), mmsb_batch_count(b), runs, bytes,
         reg ? mmsb_region_name(reg) : "?", reg ? mmsb_region_size(reg) : 0);
  return 0;
}

int main(void) {
  mmsb_subscribe(mmsb_default_bus(), show, NULL, NULL);
  for (int i = 0; i < 512; i++) add_order(0, i, 100.0 - i * 0.01, 10);
  mmsb_commit(NULL, NULL);                 /* the whole bid side */
  add_order(1, 3, 100.05, 25);
  trade(3, 5);
  mmsb_commit(NULL, NULL);                 /* two levels and two fields */
  mmsb_commit(NULL, NULL);                 /* nothing changed: empty epoch */
  mmsb_stats st;
  mmsb_stats_get(NULL, &st);
  printf("%llu epochs, %llu deltas, trades=%ld last=%.2f, untracked bytes=%llu%s\n",
         (unsigned long long)mmsb_epoch(NULL), (unsigned long long)st.deltas, book.trades,
         book.last_price, (unsigned long long)st.untracked_bytes,
         getenv("MMSB_VERIFY") ? "" : " (run with MMSB_VERIFY=1 to check)");
  return 0;
}
