/* test_commit.c - random stores through the entry points, then the batch
 * applied to a replica of the previous state must give the new state byte
 * for byte.  MMSB_VERIFY is on, so the runtime checks itself too. */
#include "check.h"
#include "internal.h"
#include "mmsb_abi.h"

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t seed;

#define NREG 4
typedef struct {
  mmsb_bus *live, *replica;
  mmsb_region *r[NREG], *rr[NREG];
  mmsb_batch *last;   /* decoded copy of the last batch a subscriber saw */
  int calls;
} world;

static int capture(void *ctx, const mmsb_batch *b) {
  world *w = ctx;
  size_t len;
  const uint8_t *bytes = mmsb_batch_bytes(b, &len);
  mmsb_batch_free(w->last);
  w->last = NULL;
  CHECK_OK(mmsb_batch_decode(bytes, len, &w->last));
  w->calls++;
  return 0;
}

/* One random store of a random kind into region i, as the pass emits it. */
static void random_store(world *w, int i) {
  uint8_t *d = mmsb_region_data(w->r[i]);
  size_t size = mmsb_region_size(w->r[i]);
  static const size_t sizes[] = {1, 2, 4, 8, 16};
  int kind = (int)rng_below(&seed, 7);
  size_t n = kind < 5 ? sizes[kind] : 1 + rng_below(&seed, kind == 5 ? 300 : 9000);
  if (n > size) n = size;
  size_t off = rng_below(&seed, size - n + 1);
  for (size_t k = 0; k < n; k++) d[off + k] = (uint8_t)rng_next(&seed);
  switch (kind) {
  case 0: __mmsb_store1(d + off); break;
  case 1: __mmsb_store2(d + off); break;
  case 2: __mmsb_store4(d + off); break;
  case 3: __mmsb_store8(d + off); break;
  case 4: __mmsb_store16(d + off); break;
  case 5: __mmsb_store_range(d + off, n); break;
  default: CHECK_OK(mmsb_touch(d + off, n)); break;
  }
}

/* Checks the batch's order; adds its runs and whole pages (as the stats
 * count them: a whole page is one run) to *runs and *whole. */
static void check_order(const mmsb_batch *b, uint64_t *runs, uint64_t *whole) {
  uint32_t pr = 0;
  uint64_t pp = 0;
  for (size_t i = 0; i < mmsb_batch_count(b); i++) {
    mmsb_delta d;
    CHECK_OK(mmsb_batch_delta(b, i, &d));
    if (i && d.op == MMSB_OP_ASSIGN)
      CHECK(d.region_id > pr || (d.region_id == pr && d.page > pp));
    pr = d.region_id;
    pp = d.page;
    *runs += d.whole_page ? 1 : d.nruns;
    *whole += d.whole_page;
  }
}

static void test_random_epochs(int epochs) {
  world w = {0};
  mmsb_config cfg;
  mmsb_config_init(&cfg);
  cfg.verify = 1;
  CHECK_OK(mmsb_bus_open(&cfg, &w.live));
  cfg.verify = 0;
  CHECK_OK(mmsb_bus_open(&cfg, &w.replica));
  static const size_t sizes[NREG] = {4096, 100000, 3 * 4096 + 17, 1 << 20};
  for (int i = 0; i < NREG; i++) {
    char name[16];
    snprintf(name, sizeof name, "r%d", i);
    CHECK_OK(mmsb_region_create(w.live, name, sizes[i], 0, &w.r[i]));
    CHECK_OK(mmsb_region_create(w.replica, name, sizes[i], 0, &w.rr[i]));
    CHECK(mmsb_region_id(w.r[i]) == mmsb_region_id(w.rr[i]));
  }
  CHECK_OK(mmsb_subscribe(w.live, capture, &w, NULL));
  int mismatches = 0;
  uint64_t total_deltas = 0, runs = 0, whole = 0;
  for (int e = 1; e <= epochs; e++) {
    int nstores = (int)rng_below(&seed, e % 10 == 0 ? 5000 : 60);
    for (int s = 0; s < nstores; s++) random_store(&w, (int)rng_below(&seed, NREG));
    if (e % 13 == 0) { /* a range too long for a log entry: straight into the
                          bitmaps, so this epoch is collected from them */
      uint8_t *d3 = mmsb_region_data(w.r[3]);
      size_t off = rng_below(&seed, (1 << 20) - 70000);
      for (size_t k = 0; k < 70000; k += 61) d3[off + k] ^= 0x3c;
      CHECK_OK(mmsb_touch(d3 + off, 70000));
    }
    if (e % 7 == 0) { /* accumulations on top of stores */
      uint64_t v[5] = {1, 2, 3, 4, 5};
      CHECK_OK(mmsb_accumulate(w.r[1], 8 * rng_below(&seed, 12000), MMSB_OP_ADD,
                               MMSB_T_U64, v, 5));
      CHECK_OK(mmsb_accumulate(w.r[1], 8 * rng_below(&seed, 12000), MMSB_OP_XOR,
                               MMSB_T_U64, v, 3));
      CHECK_OK(mmsb_accumulate(w.r[3], 4 * rng_below(&seed, 200000), MMSB_OP_MAX,
                               MMSB_T_U32, v, 2));
    }
    mmsb_epoch_t got;
    CHECK_OK(mmsb_commit(w.live, &got));
    CHECK(got == (mmsb_epoch_t)e);
    CHECK(w.calls == e && w.last && mmsb_batch_epoch(w.last) == (mmsb_epoch_t)e);
    CHECK(mmsb_verify_last(w.live) == 0);
    check_order(w.last, &runs, &whole);
    total_deltas += mmsb_batch_count(w.last);
    CHECK_OK(mmsb_batch_apply(w.last, w.replica));
    for (int i = 0; i < NREG; i++)
      mismatches += memcmp(mmsb_region_data(w.r[i]), mmsb_region_data(w.rr[i]),
                           sizes[i]) != 0;
  }
  CHECK(mismatches == 0);
  /* A commit with no stores is an empty epoch. */
  mmsb_epoch_t got;
  CHECK_OK(mmsb_commit(w.live, &got));
  CHECK(got == (mmsb_epoch_t)epochs + 1 && mmsb_batch_count(w.last) == 0);
  mmsb_stats st;
  CHECK_OK(mmsb_stats_get(w.live, &st));
  CHECK(st.commits == (uint64_t)epochs + 1 && st.deltas == total_deltas &&
        st.untracked_bytes == 0);
  CHECK(st.runs == runs && st.whole_pages == whole && whole > 0);
  CHECK(st.log_commits > 0 && st.log_commits < st.commits); /* both paths ran */
  printf("random epochs: %d, %llu deltas, %llu from the logs\n", epochs,
         (unsigned long long)total_deltas, (unsigned long long)st.log_commits);
  mmsb_batch_free(w.last);
  CHECK_OK(mmsb_bus_close(w.live));
  CHECK_OK(mmsb_bus_close(w.replica));
}

/* A bus with MMSB_VERIFY on and one region; commit_threads 0: the default. */
static void open_verify_bus(const char *name, size_t size, int commit_threads, mmsb_bus **bus,
                            mmsb_region **r) {
  mmsb_config cfg;
  mmsb_config_init(&cfg);
  cfg.verify = 1;
  if (commit_threads) cfg.commit_threads = commit_threads;
  CHECK_OK(mmsb_bus_open(&cfg, bus));
  CHECK_OK(mmsb_region_create(*bus, name, size, 0, r));
}

/* Whether the last batches of buses a and b are the same bytes. */
static bool same_batches(const mmsb_bus *a, const mmsb_bus *b) {
  size_t la, lb;
  const uint8_t *pa = mmsb_batch_bytes(mmsb_last_batch(a), &la);
  const uint8_t *pb = mmsb_batch_bytes(mmsb_last_batch(b), &lb);
  return la == lb && memcmp(pa, pb, la) == 0;
}

/* Large epochs are collected by several threads: the batch must be the
 * same bytes as one thread's, and right (MMSB_VERIFY checks it).  Both
 * buses' stores go to this thread's log: bus 0 commits first and takes
 * them from the log (bus 1's entries are folded for it), bus 1 from the
 * bitmaps; threads[k] is bus k's commit threads. */
static void test_parallel_collect(int epochs, const int threads[2]) {
  mmsb_bus *bus[2];
  mmsb_region *r[2];
  size_t size = (48u << 20) + 17; /* 12 289 pages, the last one short */
  for (int k = 0; k < 2; k++) open_verify_bus("big", size, threads[k], &bus[k], &r[k]);
  for (int k = 0; k < 2; k++) CHECK_OK(mmsb_commit(bus[k], NULL)); /* a new bus starts on the bitmaps */
  mmsb_stats before;
  CHECK_OK(mmsb_stats_get(bus[0], &before));
  size_t same = 0, deltas = 0;
  for (int e = 1; e <= epochs; e++) {
    /* Up to ~10k dirty pages: small epochs take one pass on one thread,
     * large ones (over 4 096 pages) two passes on the pool. */
    int nstores = (int)rng_below(&seed, 30000);
    for (int s = 0; s < nstores; s++) {
      size_t n = rng_below(&seed, 4) == 0 ? 1 + rng_below(&seed, 5000) : 8;
      size_t off = rng_below(&seed, size - n + 1);
      uint8_t v = (uint8_t)rng_next(&seed);
      for (int k = 0; k < 2; k++) {
        uint8_t *d = mmsb_region_data(r[k]);
        memset(d + off, v, n);
        __mmsb_store_range(d + off, n);
      }
    }
    for (int k = 0; k < 2; k++) {
      CHECK_OK(mmsb_commit(bus[k], NULL));
      CHECK(mmsb_verify_last(bus[k]) == 0);
    }
    same += same_batches(bus[0], bus[1]);
    deltas += mmsb_batch_count(mmsb_last_batch(bus[1]));
  }
  CHECK(same == (size_t)epochs);
  mmsb_stats after;
  CHECK_OK(mmsb_stats_get(bus[0], &after));
  CHECK(after.log_commits - before.log_commits == (uint64_t)epochs);
  printf("parallel collect (%d/%d threads): %d epochs, %zu deltas, batches identical\n",
         threads[0], threads[1], epochs, deltas);
  for (int k = 0; k < 2; k++) CHECK_OK(mmsb_bus_close(bus[k]));
}

/* The one-thread way (collect_tiny.c) against the bitmap path, batch for
 * batch.  Buses A and B have the same regions, made in the same order, but
 * laid out so that B's lie between A's, and A's last region lies below its
 * first (made in a hole): A's span holds B's regions, and A's order of
 * regions is not the order of their addresses.  The last region ends in a
 * short page.  Both get the same stores (1 to 16 bytes, some ranges inside
 * a page, some past the region's size in its last page, some twice); A
 * commits first and takes every entry from the log, folding B's for it,
 * and B collects from the bitmaps.  A page-crossing store every fifth
 * epoch sends A's epoch the general way instead, as do 4 096 entries or
 * more; the one-thread way must have taken all the others. */
static void test_tiny_batches(int epochs) {
  enum { NR = 3 };
  static const size_t sizes[NR] = {4 << 20, 32 << 10, 3 * 4096 + 100};
  mmsb_bus *bus[2];
  mmsb_region *r[2][NR], *tmp[2];
  for (int k = 0; k < 2; k++) {
    mmsb_config cfg;
    mmsb_config_init(&cfg);
    cfg.commit_threads = 4;
    CHECK_OK(mmsb_bus_open(&cfg, &bus[k]));
  }
  for (int k = 0; k < 2; k++) CHECK_OK(mmsb_region_create(bus[k], "tmp", 64 << 10, 0, &tmp[k]));
  for (int k = 0; k < 2; k++) CHECK_OK(mmsb_region_create(bus[k], "r0", sizes[0], 0, &r[k][0]));
  for (int k = 0; k < 2; k++) CHECK_OK(mmsb_region_destroy(tmp[k]));
  for (int i = 1; i < NR; i++)
    for (int k = 0; k < 2; k++) CHECK_OK(mmsb_region_create(bus[k], i == 1 ? "r1" : "r2", sizes[i], 0, &r[k][i]));
  uint8_t *a0 = mmsb_region_data(r[0][0]), *a1 = mmsb_region_data(r[0][1]), *b0 = mmsb_region_data(r[1][0]);
  CHECK(a1 < a0 && a0 < b0); /* r1 in tmp's hole, below r0; B's between A's */
  for (int k = 0; k < 2; k++) CHECK_OK(mmsb_commit(bus[k], NULL)); /* a new bus starts on the bitmaps */
  mmsb_stats before, after;
  CHECK_OK(mmsb_stats_get(bus[0], &before));
  uint64_t tiny_before = atomic_load(&mmsb_tiny_epochs), tiny_expected = 0;
  size_t same = 0, deltas = 0;
  for (int e = 1; e <= epochs; e++) {
    /* Every fourth epoch a few stores only (one at least: an epoch of
     * none collects nothing): pages of one store each, in the short last
     * page too, take collect_tiny.c's shortcut for them. */
    int n = e % 4 == 0 ? 1 + (int)rng_below(&seed, 11) : (int)rng_below(&seed, 3000);
    /* A's commit takes both buses' entries, one a store: the one-thread way
     * takes them below 4 096 (ONE_MAX) unless a store crosses a page. */
    tiny_expected += 2 * n < 4096 && e % 5 != 0;
    for (int s = 0; s < n; s++) {
      int i = (int)rng_below(&seed, NR);
      size_t len = s % 11 == 0 ? 1 + rng_below(&seed, 200) : 1 + rng_below(&seed, 16);
      size_t map = (sizes[i] + 4095) & ~(size_t)4095, off = rng_below(&seed, map - len + 1);
      if (off / 4096 != (off + len - 1) / 4096) off = (off + len - 1) / 4096 * 4096; /* in one page */
      uint8_t v = (uint8_t)rng_next(&seed);
      for (int k = 0; k < 2; k++) {
        uint8_t *d = mmsb_region_data(r[k][i]);
        memset(d + off, v, len);
        __mmsb_store_range(d + off, len);
      }
    }
    if (e % 5 == 0)
      for (int k = 0; k < 2; k++) __mmsb_store_range((uint8_t *)mmsb_region_data(r[k][0]) + 4090, 12);
    for (int k = 0; k < 2; k++) CHECK_OK(mmsb_commit(bus[k], NULL));
    same += same_batches(bus[0], bus[1]);
    deltas += mmsb_batch_count(mmsb_last_batch(bus[0]));
  }
  CHECK(same == (size_t)epochs);
  CHECK_OK(mmsb_stats_get(bus[0], &after));
  CHECK(after.log_commits - before.log_commits == (uint64_t)epochs);
  CHECK(atomic_load(&mmsb_tiny_epochs) - tiny_before == tiny_expected);
  printf("one-thread way: %d epochs (%llu taken by it), %zu deltas, %zu batches identical to the "
         "bitmaps'\n", epochs, (unsigned long long)tiny_expected, deltas, same);
  for (int k = 0; k < 2; k++) CHECK_OK(mmsb_bus_close(bus[k]));
}

/* Stores that repeat: a loop over a few hot words leaves each in its mark
 * log about once (repeats are dropped as the log fills), and the stores of
 * the next epoch to the same words are still marked (what repeats are
 * dropped against is cleared with the log).  Each epoch stops storing when
 * the log is full and ends with one more store, so all but that one entry
 * of its hot words go through the dropping.  MMSB_VERIFY checks that every
 * changed byte has its delta; the deltas are the hot words' pages. */
static void test_hot_words(int epochs) {
  mmsb_bus *bus;
  mmsb_region *r;
  size_t words = (1 << 20) / 8;
  open_verify_bus("hot", 1 << 20, 0, &bus, &r);
  uint64_t *w = mmsb_region_data(r);
  CHECK_OK(mmsb_commit(bus, NULL)); /* a new bus starts on the bitmaps */
  mmsb_stats before;
  CHECK_OK(mmsb_stats_get(bus, &before));
  for (int e = 1; e <= epochs; e++) {
    size_t hot = 1 + (size_t)(e % 7) * 40; /* 1 to 241 words */
    static unsigned char page[(1 << 20) / 4096];
    memset(page, 0, sizeof page);
    size_t i = 0;
    do {
      size_t k = (i % hot) * 131 % words;
      w[k] = (uint64_t)e << 32 | i;
      __mmsb_store8(&w[k]);
      page[k * 8 / 4096] = 1;
      i++;
    } while (i < 20000 || __mmsb_log.pos != __mmsb_log.end);
    w[0] ^= 1; /* the log is full: this store empties it of repeats */
    __mmsb_store8(&w[0]);
    page[0] = 1;
    size_t pages = 0;
    for (size_t p = 0; p < sizeof page; p++) pages += page[p];
    CHECK_OK(mmsb_commit(bus, NULL));
    CHECK(mmsb_verify_last(bus) == 0);
    CHECK(mmsb_batch_count(mmsb_last_batch(bus)) == pages);
  }
  mmsb_stats after;
  CHECK_OK(mmsb_stats_get(bus, &after));
  CHECK(after.log_commits - before.log_commits == (uint64_t)epochs); /* never folded */
  printf("hot words: %d epochs of 20000 stores to 1-241 words\n", epochs);
  CHECK_OK(mmsb_bus_close(bus));
}

/* More distinct marks in one bucket than one thread should sort (a
 * region of one page: one bucket): the epoch is collected from the
 * bitmaps instead, with the same result. */
static void test_crowded_bucket(void) {
  mmsb_bus *bus;
  mmsb_region *r;
  open_verify_bus("crowd", 4096, 0, &bus, &r);
  uint8_t *d = mmsb_region_data(r);
  CHECK_OK(mmsb_commit(bus, NULL)); /* a new bus starts on the bitmaps */
  mmsb_stats before, after;
  CHECK_OK(mmsb_stats_get(bus, &before));
  for (size_t i = 0; i < 70000; i++) { /* 70 000 different (offset, length) marks */
    size_t off = i % 4000, len = 1 + i / 4000;
    d[off] = (uint8_t)i;
    CHECK_OK(mmsb_touch(d + off, len));
  }
  CHECK_OK(mmsb_commit(bus, NULL));
  CHECK(mmsb_verify_last(bus) == 0 && mmsb_batch_count(mmsb_last_batch(bus)) == 1);
  CHECK_OK(mmsb_stats_get(bus, &after));
  CHECK(after.log_commits == before.log_commits && after.commits == before.commits + 1);
  CHECK_OK(mmsb_bus_close(bus));
}

/* Long ranges across many small buckets: a part cuts its entries into
 * more pieces than its area holds (twice its entries), so the epoch goes
 * to the bitmaps, whole.  8 192 range marks of 60 KiB over a 1 MiB region
 * (64 buckets of 16 KiB: each mark is cut into 4 or 5 pieces). */
static void test_pieces_overflow(void) {
  mmsb_bus *bus;
  mmsb_region *r;
  size_t size = 1u << 20, len = 60u << 10;
  open_verify_bus("ranges", size, 4, &bus, &r);
  uint8_t *d = mmsb_region_data(r);
  CHECK_OK(mmsb_commit(bus, NULL)); /* a new bus starts on the bitmaps */
  mmsb_stats before, after;
  CHECK_OK(mmsb_stats_get(bus, &before));
  for (size_t i = 0; i < 8192; i++) {
    size_t off = (i * 7919 * 64) % (size - len);
    d[off + len - 1] = (uint8_t)(i + 1);
    __mmsb_store_range(d + off, len);
  }
  CHECK_OK(mmsb_commit(bus, NULL));
  CHECK(mmsb_verify_last(bus) == 0);
  CHECK_OK(mmsb_stats_get(bus, &after));
  CHECK(after.commits == before.commits + 1 && after.log_commits == before.log_commits);
  CHECK(mmsb_batch_count(mmsb_last_batch(bus)) == size / 4096); /* every page marked */
  CHECK_OK(mmsb_bus_close(bus));
}

/* A bucket's sort puts its entries in 256 groups by their top bits and
 * sorts each group by insertion, or by radix when it is large.  One store
 * every 2 KiB of a 16 MiB region (8 192, collected in parallel: buckets of
 * 128 KiB, 64 entries) and 40 words stored backwards inside one 512-byte
 * group of one bucket: the deltas must still be two runs a page, in page
 * order, and one more in the cluster's page, its 40 words merged. */
static void test_clustered_group(void) {
  mmsb_bus *bus;
  mmsb_region *r;
  size_t size = 16u << 20, cluster = (5u << 20) + 1024;
  open_verify_bus("cluster", size, 4, &bus, &r);
  uint64_t *d = mmsb_region_data(r);
  CHECK_OK(mmsb_commit(bus, NULL)); /* a new bus starts on the bitmaps */
  mmsb_stats before, after;
  CHECK_OK(mmsb_stats_get(bus, &before));
  for (size_t off = 0; off < size; off += 2048) {
    d[off / 8] = off + 1;
    __mmsb_store8(&d[off / 8]);
  }
  for (size_t k = 40; k-- > 0;) {
    d[cluster / 8 + k] = k + 7;
    __mmsb_store8(&d[cluster / 8 + k]);
  }
  CHECK_OK(mmsb_commit(bus, NULL));
  CHECK(mmsb_verify_last(bus) == 0);
  CHECK_OK(mmsb_stats_get(bus, &after));
  CHECK(after.log_commits == before.log_commits + 1);
  uint64_t runs = 0, whole = 0;
  check_order(mmsb_last_batch(bus), &runs, &whole);
  /* 4 096 pages of two runs (0 and 2048); the cluster's page has a third,
   * [1024, 1344) */
  CHECK(mmsb_batch_count(mmsb_last_batch(bus)) == size / 4096 && whole == 0);
  CHECK(runs == 2 * (size / 4096) + 1);
  CHECK_OK(mmsb_bus_close(bus));
}

/* One commit thread sorts the epoch in one bucket: in 2^8 .. 2^12 groups
 * up to 3 072 entries, by LSD radix over that.  Epochs of sizes on both
 * sides of each step, random 8-byte stores over a 48 MiB region, some
 * twice: MMSB_VERIFY checks every changed byte has its delta, and the
 * deltas must come in page order. */
static void test_one_bucket_sizes(void) {
  static const size_t sizes[] = {33, 192, 193, 384, 385, 1536, 1537, 3072, 3073, 20000};
  mmsb_bus *bus;
  mmsb_region *r;
  size_t words = (48u << 20) / 8;
  open_verify_bus("onebucket", words * 8, 1, &bus, &r);
  uint64_t *d = mmsb_region_data(r);
  CHECK_OK(mmsb_commit(bus, NULL)); /* a new bus starts on the bitmaps */
  mmsb_stats before, after;
  CHECK_OK(mmsb_stats_get(bus, &before));
  for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
    for (size_t i = 0; i < sizes[k]; i++) {
      size_t w = rng_below(&seed, words);
      d[w] = rng_next(&seed);
      __mmsb_store8(&d[w]);
    }
    CHECK_OK(mmsb_commit(bus, NULL));
    CHECK(mmsb_verify_last(bus) == 0);
    uint64_t runs = 0, whole = 0;
    check_order(mmsb_last_batch(bus), &runs, &whole);
    CHECK(runs >= mmsb_batch_count(mmsb_last_batch(bus)) && runs <= sizes[k]);
  }
  CHECK_OK(mmsb_stats_get(bus, &after));
  CHECK(after.log_commits == before.log_commits + sizeof sizes / sizeof *sizes);
  CHECK_OK(mmsb_bus_close(bus));
}

/* Another bus's region inside this bus's span: its marks are folded for
 * it, once.  Bus A has a1 and a2, bus B has b1 between them (created in
 * that order).  Epoch 1 stores into all three; epoch 2 only into a2, so
 * the log path's first buckets are empty that time and must not act on
 * what they held in epoch 1 (it once folded a stale run into the bitmaps,
 * which the last commit here would find). */
static void test_interleaved_buses(void) {
  mmsb_bus *A, *B;
  mmsb_region *a1, *b1, *a2;
  size_t size = 64 << 10;
  open_verify_bus("a1", 2 * size, 4, &A, &a1);
  open_verify_bus("b1", size, 4, &B, &b1);
  CHECK_OK(mmsb_region_create(A, "a2", size, 0, &a2));
  uint64_t *p1 = mmsb_region_data(a1), *q = mmsb_region_data(b1), *p2 = mmsb_region_data(a2);
  CHECK((uintptr_t)p1 < (uintptr_t)q && (uintptr_t)q < (uintptr_t)p2);
  CHECK_OK(mmsb_commit(A, NULL)); /* a new bus starts on the bitmaps */
  CHECK_OK(mmsb_commit(B, NULL));
  for (int e = 1; e <= 2; e++) {
    for (size_t k = 0; k < 400; k++) { /* enough entries for several buckets */
      p2[k * 17 % (size / 8)] = k + (size_t)e;
      __mmsb_store8(&p2[k * 17 % (size / 8)]);
    }
    if (e == 1) {
      p1[5] = 1;
      __mmsb_store8(&p1[5]);
      q[700] = 2;
      __mmsb_store8(&q[700]);
    }
    mmsb_stats st;
    CHECK_OK(mmsb_stats_get(A, &st));
    CHECK_OK(mmsb_commit(A, NULL));
    mmsb_stats st2;
    CHECK_OK(mmsb_stats_get(A, &st2));
    CHECK(st2.log_commits == st.log_commits + 1);
    CHECK_OK(mmsb_commit(B, NULL));
    CHECK(mmsb_batch_count(mmsb_last_batch(B)) == (e == 1 ? 1u : 0u));
    CHECK(mmsb_verify_last(A) == 0 && mmsb_verify_last(B) == 0);
    CHECK_OK(mmsb_commit(A, NULL)); /* nothing stored since: nothing sent */
    CHECK(mmsb_batch_count(mmsb_last_batch(A)) == 0);
  }
  /* A range too long for a log goes to the bitmaps, and so does this
   * commit: it finds a1's 32 pages and nothing else of A's. */
  CHECK_OK(mmsb_touch(p1, 2 * size));
  CHECK_OK(mmsb_commit(A, NULL));
  CHECK(mmsb_batch_count(mmsb_last_batch(A)) == 2 * size / 4096);
  CHECK_OK(mmsb_bus_close(A));
  CHECK_OK(mmsb_bus_close(B));
}

/* Destroying a region clears its dirty bits and no one else's.  B's middle
 * region is large (its granule map is dropped a page at a time, not
 * zeroed) and ends mid-page, so the region after it shares a page of the
 * granule map and a word of the page map with it (in a process that has
 * freed no region, small ones fill the gap below a large one and then
 * follow it; main runs this test in a process of its own).  Marks go to the
 * bitmaps when A's commit folds B's log entries for it. */
static void test_destroy_clears_own_bits(void) {
  mmsb_bus *A, *B;
  mmsb_region *a, *r[3];
  const size_t sizes[3] = {8192, (256u << 20) + 3 * 4096, 8192};
  CHECK_OK(mmsb_bus_open(NULL, &A));
  CHECK_OK(mmsb_bus_open(NULL, &B));
  CHECK_OK(mmsb_region_create(A, "a", 4096, 0, &a));
  CHECK_OK(mmsb_region_create(B, "r0", sizes[0], 0, &r[0]));
  CHECK_OK(mmsb_region_create(B, "r1", sizes[1], 0, &r[1]));
  uint8_t *end1 = (uint8_t *)mmsb_region_data(r[1]) + sizes[1];
  /* Small regions fill the gap below r1 (its huge page boundary) until
   * one lands right after it. */
  for (int fills = 0; fills < 1000; fills++) {
    char name[16];
    snprintf(name, sizeof name, "fill%d", fills);
    CHECK_OK(mmsb_region_create(B, name, sizes[2], 0, &r[2]));
    if (mmsb_region_data(r[2]) == end1) break;
  }
  CHECK(mmsb_region_data(r[2]) == end1);
  CHECK_OK(mmsb_commit(A, NULL));
  CHECK_OK(mmsb_commit(B, NULL));
  for (int round = 0; round < 2; round++) {
    for (int i = 0; i < 3; i++) { /* the first and last page of each */
      uint64_t *p = mmsb_region_data(r[i]);
      size_t last = sizes[i] / 8 - 1;
      p[0] = p[last] = 7 + (uint64_t)round;
      __mmsb_store8(&p[0]);
      __mmsb_store8(&p[last]);
    }
    CHECK_OK(mmsb_commit(A, NULL)); /* B's entries into the bitmaps */
    CHECK_OK(mmsb_region_destroy(r[1]));
    CHECK_OK(mmsb_commit(B, NULL));
    const mmsb_batch *b = mmsb_last_batch(B); /* r0's and r2's two pages */
    CHECK(mmsb_batch_count(b) == 4);
    for (size_t k = 0; k < mmsb_batch_count(b); k++) {
      mmsb_delta d;
      CHECK_OK(mmsb_batch_delta(b, k, &d));
      CHECK(d.region_id == mmsb_region_id(r[k < 2 ? 0 : 2]) && d.page == k % 2);
    }
    /* Made again in its place, it has no marks. */
    CHECK_OK(mmsb_region_create(B, "r1", sizes[1], 0, &r[1]));
    CHECK((uint8_t *)mmsb_region_data(r[1]) + sizes[1] == end1);
    CHECK_OK(mmsb_commit(B, NULL));
    CHECK(mmsb_batch_count(mmsb_last_batch(B)) == 0);
    /* A store at the start of its last page: one run, without the word
     * at the end that the old region stored to. */
    uint64_t *w = (uint64_t *)(end1 - 4096);
    *w = 1;
    __mmsb_store8(w);
    CHECK_OK(mmsb_commit(A, NULL));
    CHECK_OK(mmsb_commit(B, NULL));
    mmsb_delta d;
    uint32_t cursor = 0;
    mmsb_run run;
    CHECK(mmsb_batch_count(mmsb_last_batch(B)) == 1);
    CHECK_OK(mmsb_batch_delta(mmsb_last_batch(B), 0, &d));
    CHECK(d.page == sizes[1] / 4096 - 1 && mmsb_delta_next_run(&d, &cursor, &run) == 1);
    CHECK(run.offset == 0 && run.length == 8 && mmsb_delta_next_run(&d, &cursor, &run) == 0);
  }
  CHECK_OK(mmsb_bus_close(A));
  CHECK_OK(mmsb_bus_close(B));
  printf("destroy: a region of %zu bytes between two of %zu, its bits alone cleared (%d checks)\n",
         sizes[1], sizes[0], check_count);
}

/* Two buses: a commit of one takes every thread's log entries; the other
 * bus's must reach it (MMSB_VERIFY: no changed byte without a delta). */
static void test_two_buses(int epochs) {
  mmsb_bus *bus[2];
  mmsb_region *r[2];
  for (int k = 0; k < 2; k++) open_verify_bus(k ? "b" : "a", 3 * 4096 + 5, 0, &bus[k], &r[k]);
  uint64_t log_commits = 0;
  for (int e = 0; e < epochs; e++) {
    for (int s = 0; s < 40; s++) {
      int k = (int)rng_below(&seed, 2);
      uint8_t *d = mmsb_region_data(r[k]);
      size_t off = rng_below(&seed, 3 * 4096 + 5 - 8);
      d[off] ^= (uint8_t)(1 + s);
      __mmsb_store1(d + off);
    }
    int first = (int)rng_below(&seed, 2); /* either may commit first, or alone */
    CHECK_OK(mmsb_commit(bus[first], NULL));
    CHECK(mmsb_verify_last(bus[first]) == 0);
    if (e % 3) {
      CHECK_OK(mmsb_commit(bus[!first], NULL));
      CHECK(mmsb_verify_last(bus[!first]) == 0);
    }
  }
  for (int k = 0; k < 2; k++) {
    mmsb_stats st;
    CHECK_OK(mmsb_stats_get(bus[k], &st));
    log_commits += st.log_commits;
    CHECK_OK(mmsb_bus_close(bus[k]));
  }
  CHECK(log_commits > 0);
  printf("two buses: %d epochs, %llu commits from the logs\n", epochs,
         (unsigned long long)log_commits);
}

/* Several threads' logs, none full, make one epoch taken straight from the
 * logs (more entries than the small radix sort handles).  The writers wait
 * until the commit is done: a thread that exits folds its log. */
typedef struct log_writer {
  uint8_t *d;
  size_t size;
  uint64_t seed;
  pthread_barrier_t *wrote, *committed;
} log_writer;

static void *write_some(void *arg) {
  log_writer *w = arg;
  for (int i = 0; i < 3000; i++) { /* under the 4096 entries of a log */
    size_t off = rng_below(&w->seed, w->size - 8);
    w->d[off] ^= 0x81;
    __mmsb_store1(w->d + off);
  }
  pthread_barrier_wait(w->wrote);
  pthread_barrier_wait(w->committed);
  return NULL;
}

static void test_logs_of_threads(int epochs) {
  mmsb_bus *bus;
  mmsb_region *r;
  open_verify_bus("t", 4u << 20, 0, &bus, &r);
  CHECK_OK(mmsb_commit(bus, NULL)); /* a first collection from the bitmaps */
  mmsb_stats before, after;
  CHECK_OK(mmsb_stats_get(bus, &before));
  for (int e = 0; e < epochs; e++) {
    pthread_t t[4];
    log_writer w[4];
    pthread_barrier_t wrote, committed;
    pthread_barrier_init(&wrote, NULL, 5);
    pthread_barrier_init(&committed, NULL, 5);
    for (int k = 0; k < 4; k++) {
      /* each thread its own MiB: the stores must not race */
      w[k] = (log_writer){(uint8_t *)mmsb_region_data(r) + ((size_t)k << 20), 1u << 20,
                          rng_next(&seed), &wrote, &committed};
      CHECK(pthread_create(&t[k], NULL, write_some, &w[k]) == 0);
    }
    pthread_barrier_wait(&wrote);
    CHECK_OK(mmsb_commit(bus, NULL));
    CHECK(mmsb_verify_last(bus) == 0);
    pthread_barrier_wait(&committed);
    for (int k = 0; k < 4; k++) pthread_join(t[k], NULL);
    pthread_barrier_destroy(&wrote);
    pthread_barrier_destroy(&committed);
    CHECK_OK(mmsb_commit(bus, NULL)); /* what the exits folded: nothing new */
    CHECK(mmsb_verify_last(bus) == 0 && mmsb_batch_count(mmsb_last_batch(bus)) == 0);
  }
  CHECK_OK(mmsb_stats_get(bus, &after));
  CHECK(after.log_commits - before.log_commits >= (uint64_t)epochs);
  printf("logs of threads: %d epochs of 12000 marks from 4 logs\n", epochs);
  CHECK_OK(mmsb_bus_close(bus));
}

/* The verify oracle reports bytes changed without a mark. */
static void test_verify_catches(void) {
  mmsb_bus *bus;
  mmsb_region *r;
  open_verify_bus("v", 3 * 4096, 0, &bus, &r);
  uint8_t *d = mmsb_region_data(r);
  d[10] = 1;           /* tracked */
  __mmsb_store1(d + 10);
  d[5000] = 7;         /* untracked: 3 bytes */
  d[5001] = 7;
  d[9000] = 7;
  CHECK_OK(mmsb_commit(bus, NULL));
  CHECK(mmsb_verify_last(bus) == 3);
  d[11] = 2;
  __mmsb_store1(d + 11);
  CHECK_OK(mmsb_commit(bus, NULL));
  CHECK(mmsb_verify_last(bus) == 0); /* each miss is reported once */
  CHECK_OK(mmsb_bus_close(bus));
}

/* Whole pages are sent whole; a page of scattered bytes as runs. */
static void test_forms(void) {
  world w = {0};
  CHECK_OK(mmsb_bus_open(NULL, &w.live));
  mmsb_region *r;
  CHECK_OK(mmsb_region_create(w.live, "f", 4 * 4096, 0, &r));
  CHECK_OK(mmsb_subscribe(w.live, capture, &w, NULL));
  uint8_t *d = mmsb_region_data(r);
  memset(d, 1, 4096);
  __mmsb_store_range(d, 4096);
  d[3 * 4096 + 100] = 9;
  __mmsb_store1(d + 3 * 4096 + 100);
  CHECK_OK(mmsb_commit(w.live, NULL));
  CHECK(mmsb_batch_count(w.last) == 2);
  mmsb_delta a, b;
  CHECK_OK(mmsb_batch_delta(w.last, 0, &a));
  CHECK_OK(mmsb_batch_delta(w.last, 1, &b));
  CHECK(a.page == 0 && a.whole_page && a.body_len == 4096);
  CHECK(b.page == 3 && !b.whole_page && b.nruns == 1 && b.body_len == 4 + 8);
  uint32_t cur = 0;
  mmsb_run run;
  CHECK(mmsb_delta_next_run(&b, &cur, &run) == 1 && run.offset == 96 && run.length == 8);
  CHECK(mmsb_delta_next_run(&b, &cur, &run) == 0);
  mmsb_batch_free(w.last);
  CHECK_OK(mmsb_bus_close(w.live));
}

static int failing(void *ctx, const mmsb_batch *b) { (void)ctx; (void)b; return 1; }

static void test_subscribers(void) {
  mmsb_bus *bus;
  CHECK_OK(mmsb_bus_open(NULL, &bus));
  unsigned id;
  CHECK_OK(mmsb_subscribe(bus, failing, NULL, &id));
  mmsb_epoch_t e;
  CHECK_FAILS(mmsb_commit(bus, &e), MMSB_EIO);
  CHECK(e == 1 && mmsb_epoch(bus) == 1); /* the epoch stays committed */
  CHECK_OK(mmsb_unsubscribe(bus, id));
  CHECK_FAILS(mmsb_unsubscribe(bus, id), MMSB_ENOTFOUND);
  CHECK_OK(mmsb_commit(bus, &e));
  CHECK(e == 2);
  CHECK_OK(mmsb_bus_close(bus));
}

static void test_accumulate_args(void) {
  mmsb_bus *bus;
  mmsb_region *r;
  CHECK_OK(mmsb_bus_open(NULL, &bus));
  CHECK_OK(mmsb_region_create(bus, "acc", 4096, 0, &r));
  uint64_t v = 1;
  CHECK_FAILS(mmsb_accumulate(NULL, 0, MMSB_OP_ADD, MMSB_T_U64, &v, 1), MMSB_EINVAL);
  CHECK_FAILS(mmsb_accumulate(r, 0, MMSB_OP_ASSIGN, MMSB_T_BYTES, &v, 1), MMSB_EINVAL);
  CHECK_FAILS(mmsb_accumulate(r, 0, MMSB_OP_OR, MMSB_T_F64, &v, 1), MMSB_EINVAL);
  CHECK_FAILS(mmsb_accumulate(r, 3, MMSB_OP_ADD, MMSB_T_U64, &v, 1), MMSB_EINVAL);
  CHECK_FAILS(mmsb_accumulate(r, 4096, MMSB_OP_ADD, MMSB_T_U64, &v, 1), MMSB_ERANGE);
  CHECK_FAILS(mmsb_accumulate(r, 0, MMSB_OP_ADD, MMSB_T_U64, &v, SIZE_MAX / 4), MMSB_ERANGE);
  uint64_t *d = mmsb_region_data(r);
  d[1] = 10;
  __mmsb_store8(&d[1]);
  uint64_t three[3] = {5, 5, 5};
  CHECK_OK(mmsb_accumulate(r, 8, MMSB_OP_ADD, MMSB_T_U64, three, 3));
  CHECK_OK(mmsb_accumulate(r, 16, MMSB_OP_ADD, MMSB_T_U64, three, 1));
  CHECK(d[1] == 10 && d[2] == 0); /* applied at commit */
  CHECK_OK(mmsb_commit(bus, NULL));
  CHECK(d[1] == 15 && d[2] == 10 && d[3] == 5);
  CHECK_OK(mmsb_bus_close(bus));
}

/* The arena reuses what regions free: neighbours' blocks merge, a large
 * region gets a huge page boundary inside a free block too, and a region
 * made and dropped a little larger each round stays in one place (before,
 * each round left a hole the next could not use: 1 GiB rounds ran out of
 * the arena's 4 TiB after ~4 000).  In a process of its own, so that the
 * layout starts empty. */
static void test_arena_reuse(void) {
  mmsb_bus *bus;
  mmsb_region *a, *b, *c, *guard, *d, *e;
  CHECK_OK(mmsb_bus_open(NULL, &bus));
  CHECK_OK(mmsb_region_create(bus, "a", 8192, 0, &a));
  CHECK_OK(mmsb_region_create(bus, "b", 8192, 0, &b));
  CHECK_OK(mmsb_region_create(bus, "c", 8192, 0, &c));
  CHECK_OK(mmsb_region_create(bus, "guard", 8192, 0, &guard));
  uint8_t *pa = mmsb_region_data(a);
  CHECK((uint8_t *)mmsb_region_data(c) == pa + 16384);
  CHECK_OK(mmsb_region_destroy(a));
  CHECK_OK(mmsb_region_destroy(b));
  CHECK_OK(mmsb_region_create(bus, "d", 16384, 0, &d)); /* a's and b's blocks, merged */
  CHECK((uint8_t *)mmsb_region_data(d) == pa);
  CHECK_OK(mmsb_region_destroy(c));
  CHECK_OK(mmsb_region_destroy(d));
  CHECK_OK(mmsb_region_create(bus, "e", 24576, 0, &e));
  CHECK((uint8_t *)mmsb_region_data(e) == pa);
  /* 4 MiB above the guard, then 3 MiB in its place: on a 2 MiB boundary */
  mmsb_region *big, *mid;
  CHECK_OK(mmsb_region_create(bus, "big", 4 << 20, 0, &big));
  uint8_t *pb = mmsb_region_data(big);
  CHECK(((uintptr_t)pb & ((2 << 20) - 1)) == 0);
  CHECK_OK(mmsb_region_destroy(big));
  CHECK_OK(mmsb_region_create(bus, "mid", 3 << 20, 0, &mid));
  CHECK((uint8_t *)mmsb_region_data(mid) == pb);
  /* growing rounds: every one in the same place */
  int moved = 0;
  uint8_t *first = NULL;
  for (int i = 0; i < 300; i++) {
    mmsb_region *r;
    CHECK_OK(mmsb_region_create(bus, "grow", (64u << 20) + (size_t)i * 4096, 0, &r));
    if (!i) first = mmsb_region_data(r);
    moved += (uint8_t *)mmsb_region_data(r) != first;
    CHECK_OK(mmsb_region_destroy(r));
  }
  CHECK(moved == 0);
  CHECK_OK(mmsb_bus_close(bus));
  printf("arena: freed blocks merged and reused, 300 growing rounds in %d places\n", 1 + moved);
}

/* Runs test in a child process, which counts its checks as this one does;
 * its failures become this process's.  Called before any thread starts. */
static void in_own_process(void (*test)(void)) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    check_failures = 0; /* its own, not the parent's so far */
    test();
    fflush(stdout);
    _exit(check_failures ? 1 : 0);
  }
  int status = 0;
  CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void) {
  /* Several checks count the epochs collected from the mark logs, so the
   * logs must hold a whole test epoch: the default limit, whatever the
   * environment says (it is read once, at the first store). */
  unsetenv("MMSB_MARK_LOG");
  seed = test_seed();
  in_own_process(test_destroy_clears_own_bits);
  in_own_process(test_arena_reuse);
  test_interleaved_buses(); /* first: regions in creation order, no holes */
  test_tiny_batches(100 * test_scale());
  test_random_epochs(400 * test_scale());
  test_parallel_collect(30 * test_scale(), (const int[2]){1, 5});
  test_parallel_collect(30 * test_scale(), (const int[2]){5, 1});
  test_two_buses(200 * test_scale());
  test_hot_words(30 * test_scale());
  test_crowded_bucket();
  test_clustered_group();
  test_one_bucket_sizes();
  test_pieces_overflow();
  test_logs_of_threads(20 * test_scale());
  test_verify_catches();
  test_forms();
  test_subscribers();
  test_accumulate_args();
  return check_done("test_commit");
}
