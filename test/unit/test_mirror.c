/* test_mirror.c - mirrors equal their regions byte for byte after random
 * epochs, for every op; GPU nodes feed CPU nodes.  `test_mirror host` runs
 * the host backend (CI); `test_mirror gpu` the CUDA backend, and exits 77
 * where there is no GPU. */
#include "check.h"
#include "device.h"
#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

static uint64_t seed;
static int device;
#define SZ (3 * 4096 + 1000)

static const int ops[][2] = {
  {MMSB_OP_ADD, MMSB_T_U32}, {MMSB_OP_ADD, MMSB_T_U64}, {MMSB_OP_ADD, MMSB_T_I64},
  {MMSB_OP_ADD, MMSB_T_F32}, {MMSB_OP_ADD, MMSB_T_F64}, {MMSB_OP_MIN, MMSB_T_I64},
  {MMSB_OP_MAX, MMSB_T_U32}, {MMSB_OP_MIN, MMSB_T_F64}, {MMSB_OP_OR, MMSB_T_U64},
  {MMSB_OP_XOR, MMSB_T_U32},
};

/* Commits the bus's epoch; whether mirror m then holds the region's size
 * bytes d (read back through back). */
static bool commit_matches(mmsb_bus *bus, mmsb_mirror *m, const uint8_t *d, size_t size,
                           uint8_t *back) {
  mmsb_epoch_t got;
  CHECK_OK(mmsb_commit(bus, &got));
  CHECK_OK(mmsb_mirror_wait(m, got));
  CHECK_OK(mmsb_mirror_download(m, back));
  return memcmp(back, d, size) == 0;
}

static void test_epochs(int epochs) {
  mmsb_bus *bus;
  CHECK_OK(mmsb_bus_open(NULL, &bus));
  mmsb_region *r, *big;
  CHECK_OK(mmsb_region_create(bus, "m", SZ, 0, &r));
  CHECK_OK(mmsb_region_create(bus, "big", 1 << 22, 0, &big));
  uint8_t *d = mmsb_region_data(r), *bd = mmsb_region_data(big);
  for (int i = 0; i < SZ; i++) d[i] = (uint8_t)i;
  mmsb_mirror *m, *mb;
  CHECK_OK(mmsb_mirror_create(r, device, &m));
  CHECK_OK(mmsb_mirror_create(big, device, &mb));
  if (device >= 0 && strcmp(mmsb_mirror_backend(m), "cuda") != 0) {
    printf("no GPU: skipped\n");
    exit(77);
  }
  uint8_t *back = malloc(1 << 22);
  int bad = 0;
  for (int e = 1; e <= epochs; e++) {
    int n = (int)rng_below(&seed, 50);
    for (int s = 0; s < n; s++) {
      size_t len = 1 + rng_below(&seed, s % 7 == 0 ? 5000 : 16);
      size_t off = rng_below(&seed, SZ - (len > SZ ? SZ : len) + 1);
      if (len > SZ - off) len = SZ - off;
      for (size_t k = 0; k < len; k++) d[off + k] = (uint8_t)rng_next(&seed);
      mmsb_touch(d + off, len);
    }
    if (e % 5 == 0) { /* a comb: every other granule of a page, 256 runs */
      size_t pg = rng_below(&seed, SZ / 4096);
      for (size_t g = 0; g < 512; g += 2) {
        d[pg * 4096 + g * 8] ^= (uint8_t)(e | 1);
        mmsb_touch(d + pg * 4096 + g * 8, 8);
      }
    }
    /* Scattered words in the big one; every tenth epoch enough for the
     * commit to collect them on the pool, and every fiftieth enough
     * (~1-4 MB of deltas) for the fill to stage them in several chunks. */
    int nbig = e % 50 == 0 ? 100000 : e % 10 == 0 ? 6000 : 200;
    for (int s = 0; s < nbig; s++) {
      size_t w = rng_below(&seed, (1 << 22) / 8);
      bd[w * 8] ^= (uint8_t)(s + 1);
      mmsb_touch(bd + w * 8, 8);
    }
    if (e % 3 == 0) { /* accumulating ops of every kind */
      int k = (int)rng_below(&seed, sizeof ops / sizeof ops[0]);
      uint64_t vals[16];
      for (int i = 0; i < 16; i++) {
        vals[i] = rng_below(&seed, 1000);
        if (ops[k][1] == MMSB_T_F64) { double f = (double)vals[i] / 4; memcpy(&vals[i], &f, 8); }
        if (ops[k][1] == MMSB_T_F32) { float f = (float)vals[i] / 4; memcpy(&vals[i], &f, 4); }
      }
      size_t es = ops[k][1] == MMSB_T_U32 || ops[k][1] == MMSB_T_F32 ? 4 : 8;
      size_t off = es * rng_below(&seed, (SZ - 16 * es) / es);
      CHECK_OK(mmsb_accumulate(r, off, ops[k][0], ops[k][1], vals, 8));
    }
    bad += !commit_matches(bus, m, d, SZ, back);
    if (e % 10 == 0) {
      CHECK_OK(mmsb_mirror_download(mb, back));
      bad += memcmp(back, bd, 1 << 22) != 0;
    }
  }
  CHECK(bad == 0);
  CHECK_FAILS(mmsb_mirror_wait(m, 1000000), MMSB_ERANGE);
  printf("mirrors (%s): %d epochs, %d mismatches\n", mmsb_mirror_backend(m), epochs, bad);
  free(back);
  CHECK_OK(mmsb_mirror_destroy(m));
  CHECK_OK(mmsb_mirror_destroy(mb));
  CHECK_OK(mmsb_bus_close(bus));
}

/* Epochs of one region, collected by four threads, whose fill stages the
 * mirror's deltas: every fourth epoch is large enough for several chunks,
 * and every seventh also touches a second region (its deltas follow the
 * mirror's region's in the batch). */
static void test_one_region(int epochs) {
  mmsb_config cfg;
  mmsb_config_init(&cfg);
  cfg.commit_threads = 4;
  mmsb_bus *bus;
  CHECK_OK(mmsb_bus_open(&cfg, &bus));
  enum { RS = 1 << 22 };
  mmsb_region *r, *other;
  CHECK_OK(mmsb_region_create(bus, "solo", RS, 0, &r));
  CHECK_OK(mmsb_region_create(bus, "other", 4096, 0, &other));
  uint8_t *d = mmsb_region_data(r), *od = mmsb_region_data(other), *back = malloc(RS);
  mmsb_mirror *m;
  CHECK_OK(mmsb_mirror_create(r, device, &m));
  int bad = 0;
  uint64_t staged_before = atomic_load(&mmsb_staged_applies);
  for (int e = 1; e <= epochs; e++) {
    int n = e % 4 == 0 ? 100000 : 6000 + (int)rng_below(&seed, 4000);
    for (int s = 0; s < n; s++) {
      size_t w = rng_below(&seed, RS / 8), len = s % 97 == 0 ? 1 + rng_below(&seed, 300) : 8;
      if (w * 8 + len > RS) len = RS - w * 8;
      for (size_t k = 0; k < len; k++) d[w * 8 + k] ^= (uint8_t)(s + k + 1);
      mmsb_touch(d + w * 8, len);
    }
    if (e % 7 == 0) {
      od[e % 4096] ^= 1;
      mmsb_touch(od + e % 4096, 1);
    }
    bad += !commit_matches(bus, m, d, RS, back);
  }
  CHECK(bad == 0);
  /* and the fill staged every epoch: apply only launched */
  CHECK(atomic_load(&mmsb_staged_applies) - staged_before == (uint64_t)epochs);
  printf("one region (%s): %d epochs, %d mismatches\n", mmsb_mirror_backend(m), epochs, bad);
  free(back);
  CHECK_OK(mmsb_mirror_destroy(m));
  CHECK_OK(mmsb_bus_close(bus));
}

/* A "GPU" node (on the host backend its launch runs on the CPU) doubles
 * its input into its output; a CPU node adds 1 to that. */
static int launch_status; /* what launch_double returns */
static int launch_double(void *ctx, void *stream, void *const *in, void *const *out) {
  (void)ctx;
  (void)stream;
  const uint64_t *a = in[0];
  uint64_t *b = out[0];
  for (int i = 0; i < 512; i++) b[i] = a[i] * 2;
  return launch_status;
}

static uint64_t *plus_in, *plus_out;
static int plus_one(void *ctx) {
  (void)ctx;
  for (int i = 0; i < 512; i++) plus_out[i] = plus_in[i] + 1;
  return 0;
}

/* A program's store into a GPU node's output region (the node should be
 * its one producer) reaches the output's mirror, in epochs where the node
 * runs and where it does not, and the node's values win where it writes
 * too, the old value over a store included: the mirror once counted as
 * holding the epoch as soon as the node had run, and the store never
 * reached it; and the node's diff compared with a previous version that
 * lacked the store (fuzz_mirror found both). */
static int launch_head(void *ctx, void *stream, void *const *in, void *const *out) {
  (void)ctx;
  (void)stream;
  memcpy(out[0], in[0], 64);
  return 0;
}

static void test_gpu_output_stores(void) {
  mmsb_bus *bus;
  mmsb_region *a, *b;
  mmsb_mirror *ma, *mb;
  mmsb_node *g;
  CHECK_OK(mmsb_bus_open(NULL, &bus));
  CHECK_OK(mmsb_region_create(bus, "a", 4096, 0, &a));
  CHECK_OK(mmsb_region_create(bus, "b", 4096, 0, &b));
  CHECK_OK(mmsb_mirror_create(a, -1, &ma));
  CHECK_OK(mmsb_mirror_create(b, -1, &mb));
  CHECK_OK(mmsb_gpu_node_create(bus, "head", launch_head, NULL, &ma, 1, &mb, 1, &g));
  uint64_t *pa = mmsb_region_data(a), *pb = mmsb_region_data(b), back[512];
  int bad = 0;
  for (int e = 1; e <= 6; e++) {
    if (e % 2) { /* the node runs */
      pa[1] = (uint64_t)e;
      mmsb_touch(&pa[1], 8);
    }
    pb[300] = (uint64_t)e * 7; /* the program's own store */
    pb[1] = 99;                /* one the node overwrites when it runs */
    pb[2] = 555;               /* and one it sets back to what it was (0) */
    mmsb_touch(&pb[300], 8);
    mmsb_touch(&pb[1], 2 * 8);
    mmsb_epoch_t got;
    CHECK_OK(mmsb_commit(bus, &got));
    CHECK_OK(mmsb_mirror_wait(mb, got));
    CHECK_OK(mmsb_mirror_download(mb, back));
    bad += memcmp(back, pb, 4096) != 0;
    CHECK(pb[300] == (uint64_t)e * 7 && pb[1] == (e % 2 ? (uint64_t)e : 99u));
    CHECK(pb[2] == (e % 2 ? 0u : 555u));
  }
  CHECK(bad == 0);
  CHECK_OK(mmsb_node_remove(g));
  CHECK_OK(mmsb_bus_close(bus));
}

static void test_gpu_node_feeds_cpu(void) {
  mmsb_bus *bus;
  CHECK_OK(mmsb_bus_open(NULL, &bus));
  mmsb_region *a, *b, *c;
  CHECK_OK(mmsb_region_create(bus, "a", 4096, 0, &a));
  CHECK_OK(mmsb_region_create(bus, "b", 4096, 0, &b));
  CHECK_OK(mmsb_region_create(bus, "c", 4096, 0, &c));
  mmsb_mirror *ma, *mbm;
  CHECK_OK(mmsb_mirror_create(a, -1, &ma));
  CHECK_OK(mmsb_mirror_create(b, -1, &mbm));
  mmsb_node *g, *n;
  CHECK_OK(mmsb_gpu_node_create(bus, "double", launch_double, NULL, &ma, 1, &mbm, 1, &g));
  plus_in = mmsb_region_data(b);
  plus_out = mmsb_region_data(c);
  CHECK_OK(mmsb_node_create(bus, "plus", plus_one, NULL, &n));
  CHECK_OK(mmsb_node_input(n, b));
  CHECK_OK(mmsb_node_output(n, c, MMSB_DETECT_DIFF));
  uint64_t *pa = mmsb_region_data(a);
  for (int e = 1; e <= 5; e++) {
    pa[e * 3] = (uint64_t)e * 10;
    mmsb_touch(&pa[e * 3], 8);
    CHECK_OK(mmsb_commit(bus, NULL));
    CHECK(((uint64_t *)mmsb_region_data(b))[e * 3] == (uint64_t)e * 20);
    CHECK(((uint64_t *)mmsb_region_data(c))[e * 3] == (uint64_t)e * 20 + 1);
  }
  /* the derived deltas are in the batch: b's change came back as a delta */
  const mmsb_batch *last = mmsb_last_batch(bus);
  int has_b = 0;
  for (size_t i = 0; i < mmsb_batch_count(last); i++) {
    mmsb_delta d;
    mmsb_batch_delta(last, i, &d);
    has_b += d.region_id == mmsb_region_id(b);
  }
  CHECK(has_b == 1);
  /* a launch that reports failure fails the commit, which says what it
   * returned, and seals nothing */
  launch_status = 3;
  pa[1] = 7;
  mmsb_touch(&pa[1], 8);
  mmsb_epoch_t e0 = mmsb_epoch(bus);
  CHECK_FAILS(mmsb_commit(bus, NULL), MMSB_ENODE);
  CHECK(strstr(mmsb_last_error(), "'double'") && strstr(mmsb_last_error(), "launch function returned 3"));
  CHECK(mmsb_epoch(bus) == e0);
  launch_status = 0;
  CHECK_OK(mmsb_commit(bus, NULL)); /* the store comes back in the next epoch */
  CHECK(((uint64_t *)mmsb_region_data(c))[1] == 15);
  /* what a node or a mirror still uses cannot go: the next commit would
   * read freed memory */
  CHECK_FAILS(mmsb_mirror_destroy(ma), MMSB_EBUSY);
  CHECK(strstr(mmsb_last_error(), "used by 1 GPU node"));
  CHECK_FAILS(mmsb_region_destroy(a), MMSB_EBUSY);
  CHECK(strstr(mmsb_last_error(), "input of node 'double'"));
  CHECK_FAILS(mmsb_region_destroy(b), MMSB_EBUSY); /* the GPU node's output */
  CHECK_OK(mmsb_node_remove(g));
  CHECK_FAILS(mmsb_region_destroy(a), MMSB_EBUSY);
  CHECK(strstr(mmsb_last_error(), "has a mirror"));
  CHECK_OK(mmsb_mirror_destroy(ma));
  CHECK_OK(mmsb_region_destroy(a));
  pa = NULL;
  CHECK_OK(mmsb_commit(bus, NULL));
  CHECK_OK(mmsb_bus_close(bus)); /* with the mirror of b and the node 'plus' */
}

/* Float accumulations meeting NaNs and infinities give the same bits in
 * the mirror as in the region (the GPU's add returned its one canonical
 * NaN where x86 keeps the payload), and the bits mmsb_accumulate names. */
static void test_nan_adds(void) {
  mmsb_bus *bus;
  CHECK_OK(mmsb_bus_open(NULL, &bus));
  mmsb_region *r;
  CHECK_OK(mmsb_region_create(bus, "nan", 4096, 0, &r));
  uint8_t *d = mmsb_region_data(r), back[4096];
  static const uint32_t f0[5] = {0x7fa00001u, 0x7ff0213cu, 0x7f800000u, 0x3fc00000u, 0xffc01234u};
  static const uint32_t fv[5] = {0x3f800000u, 0x40000000u, 0xff800000u, 0x7fc0beefu, 0x40400000u};
  static const uint32_t fx[5] = {0x7fe00001u, 0x7ff0213cu, 0x7fc00000u, 0x7fc0beefu, 0xffc01234u};
  static const uint64_t d0[3] = {0x7ff4000000000001ull, 0x3ff0000000000000ull, 0xfff0000000000000ull};
  static const uint64_t dv[3] = {0x3ff0000000000000ull, 0x7ff0000000000002ull, 0x7ff0000000000000ull};
  static const uint64_t dx[3] = {0x7ffc000000000001ull, 0x7ff8000000000002ull, 0x7ff8000000000000ull};
  memcpy(d, f0, sizeof f0);
  memcpy(d + 64, d0, sizeof d0);
  mmsb_touch(d, 128);
  CHECK_OK(mmsb_commit(bus, NULL));
  mmsb_mirror *m;
  CHECK_OK(mmsb_mirror_create(r, device, &m));
  CHECK_OK(mmsb_accumulate(r, 0, MMSB_OP_ADD, MMSB_T_F32, fv, 5));
  CHECK_OK(mmsb_accumulate(r, 64, MMSB_OP_ADD, MMSB_T_F64, dv, 3));
  mmsb_epoch_t e;
  CHECK_OK(mmsb_commit(bus, &e));
  CHECK_OK(mmsb_mirror_wait(m, e));
  CHECK_OK(mmsb_mirror_download(m, back));
  CHECK(memcmp(d, fx, sizeof fx) == 0);
  CHECK(memcmp(d + 64, dx, sizeof dx) == 0);
  CHECK(memcmp(back, d, 4096) == 0);
  CHECK_OK(mmsb_mirror_destroy(m));
  CHECK_OK(mmsb_bus_close(bus));
}

/* The backend's diff alone: a copy of an odd size (its last granule short)
 * changed at random bytes; the diff must name exactly the changed granules,
 * in page and granule order, with their new bytes, and leave prev == cur. */
static void test_diff(int rounds) {
  const mmsb_dev_ops *ops = device < 0 ? &mmsb_dev_host : mmsb_dev_cuda();
  CHECK(ops != NULL);
  if (!ops) return;
  enum { N = 67 * 4096 + 13 };
  static uint8_t now[N], old[N], back[N];
  void *st = NULL, *cur = NULL, *prev = NULL;
  CHECK_OK(ops->open(device < 0 ? 0 : device, &st));
  CHECK_OK(ops->alloc(st, N, &cur));
  CHECK_OK(ops->alloc(st, N, &prev));
  for (size_t i = 0; i < N; i++) now[i] = (uint8_t)rng_next(&seed);
  memcpy(old, now, N);
  CHECK_OK(ops->upload(st, cur, now, N));
  CHECK_OK(ops->upload(st, prev, now, N));
  int bad = 0;
  for (int r = 0; r < rounds; r++) {
    int changes = r % 5 == 0 ? 0 : (int)rng_below(&seed, r % 3 ? 40 : 4000);
    for (int k = 0; k < changes; k++) now[rng_below(&seed, N)] ^= (uint8_t)(1 + rng_below(&seed, 255));
    if (r % 7 == 3) now[N - 1] ^= 0x5a; /* the short last granule */
    CHECK_OK(ops->upload(st, cur, now, N));
    mmsb_diff d;
    CHECK_OK(ops->diff(st, cur, prev, N, &d));
    size_t gi = 0, pi = 0;
    for (size_t g = 0; g * 8 < N; g++) { /* every granule: changed iff listed */
      size_t len = N - g * 8 < 8 ? N - g * 8 : 8;
      bool changed = memcmp(now + g * 8, old + g * 8, len) != 0;
      size_t page = g / 512;
      while (pi < d.npages && d.pages[pi].page < page) pi++;
      bool listed = pi < d.npages && d.pages[pi].page == page &&
                    (d.pages[pi].mask[(g % 512) >> 6] >> (g & 63) & 1);
      if (changed != listed) bad++;
      if (listed) {
        uint64_t want = 0;
        memcpy(&want, now + g * 8, len);
        if (gi >= d.ngran || d.data[gi] != want) bad++;
        gi++;
      }
    }
    for (size_t i = 1; i < d.npages; i++) bad += d.pages[i].page <= d.pages[i - 1].page;
    bad += gi != d.ngran;
    CHECK_OK(ops->download(st, back, prev, N));
    bad += memcmp(back, now, N) != 0;
    memcpy(old, now, N);
  }
  CHECK(bad == 0);
  printf("diff (%s): %d rounds, %d wrong\n", ops->name, rounds, bad);
  ops->free(st, cur);
  ops->free(st, prev);
  ops->close(st);
}

/* Sparse epochs of a 64 MiB region: a run on about three in four of its
 * 16 384 pages, as a program's scattered word stores leave them.  Most
 * deltas are one aligned 8-byte word; some a run of 1 to 60 bytes at any
 * offset, a few three words or the whole page.  Such an epoch (one delta a
 * page, under 64 bytes a delta on average) is applied on the GPU by a
 * lane-a-delta kernel, a lane a word, the warp the rest: with the default
 * MMSB_ZERO_COPY its ~0.6 MB of staging are read in place, by the kernel
 * that copies a warp's deltas into shared memory at once (and pulls those
 * of a warp with a whole page one by one); with MMSB_ZERO_COPY=0 they are
 * copied to the device first.  On the host backend the pool's threads
 * apply them (8 192 deltas or more). */
static void test_sparse_pages(int epochs) {
  enum { PAGES = 16384, RS = PAGES * 4096 };
  mmsb_config cfg;
  mmsb_config_init(&cfg);
  cfg.commit_threads = 4;
  mmsb_bus *bus;
  CHECK_OK(mmsb_bus_open(&cfg, &bus));
  mmsb_region *r;
  CHECK_OK(mmsb_region_create(bus, "sparse", RS, 0, &r));
  uint8_t *d = mmsb_region_data(r), *back = malloc(RS);
  mmsb_mirror *m;
  CHECK_OK(mmsb_mirror_create(r, device, &m));
  int bad = 0;
  size_t pages = 0;
  uint64_t lanes_before = __atomic_load_n(&mmsb_lane_launches, __ATOMIC_RELAXED);
  uint64_t mapped_before = __atomic_load_n(&mmsb_lane_mapped_launches, __ATOMIC_RELAXED);
  for (int e = 1; e <= epochs; e++) {
    for (size_t pg = 0; pg < PAGES; pg++) {
      if (rng_below(&seed, 4) == 0) continue;
      uint8_t *p = d + pg * 4096;
      uint64_t kind = rng_below(&seed, 1000), v = rng_next(&seed);
      pages++;
      if (kind < 900) { /* a word */
        size_t off = 8 * rng_below(&seed, 512);
        memcpy(p + off, &v, 8);
        mmsb_touch(p + off, 8);
      } else if (kind < 970) { /* a short run anywhere */
        size_t len = 1 + rng_below(&seed, 60), off = rng_below(&seed, 4096 - len + 1);
        memset(p + off, (int)v, len);
        mmsb_touch(p + off, len);
      } else if (kind < 998) { /* three words: three runs */
        for (size_t off = 8 * rng_below(&seed, 100); off < 4096; off += 1480) {
          memcpy(p + off, &v, 8);
          mmsb_touch(p + off, 8);
        }
      } else { /* the whole page */
        memset(p, (int)v, 4096);
        mmsb_touch(p, 4096);
      }
    }
    bad += !commit_matches(bus, m, d, RS, back);
  }
  CHECK(bad == 0);
  /* On the GPU every epoch here is one delta a page, ~45 bytes a delta:
   * each must take a lane kernel, the one that reads host memory unless
   * MMSB_ZERO_COPY is 0 (another value: either). */
  bool cuda = !strcmp(mmsb_mirror_backend(m), "cuda");
  const char *zc = getenv("MMSB_ZERO_COPY");
  uint64_t lanes = __atomic_load_n(&mmsb_lane_launches, __ATOMIC_RELAXED) - lanes_before;
  uint64_t mapped = __atomic_load_n(&mmsb_lane_mapped_launches, __ATOMIC_RELAXED) - mapped_before;
  CHECK(lanes == (cuda ? (uint64_t)epochs : 0));
  if (!zc || !*zc) CHECK(mapped == lanes);
  else if (!strcmp(zc, "0")) CHECK(mapped == 0);
  printf("sparse pages (%s): %d epochs, %zu page deltas, %d mismatches, %llu lane-kernel "
         "launches (%llu reading host memory)\n", mmsb_mirror_backend(m), epochs, pages, bad,
         (unsigned long long)lanes, (unsigned long long)mapped);
  free(back);
  CHECK_OK(mmsb_mirror_destroy(m));
  CHECK_OK(mmsb_bus_close(bus));
}

/* Two buses, each with its mirror, committed from two threads at once:
 * each mirror equals its region after every epoch.  The buses share the
 * runtime's pool, the threads' mark logs (a commit hands the other bus's
 * marks to its bitmaps) and the backend; every tenth epoch is large enough
 * for the pool.  The threads store, then meet, then commit at once: a
 * commit of either bus needs every thread's stores quiescent, since the
 * marks of all buses share the threads' logs (docs/semantics.md; without
 * the meeting, 20-30 of 40 epochs lost marks).  The threads count their
 * own mismatches (CHECK is not for threads). */
typedef struct bus_run {
  uint64_t seed;
  int epochs, bad, failed;
} bus_run;
static pthread_barrier_t step; /* the two threads' step boundary */

/* One epoch of bus_run br on region r (data d) and mirror m: stores, the
 * step boundary, the commit and the check. */
static void two_buses_epoch(bus_run *br, int e, mmsb_bus *bus, uint8_t *d, size_t size,
                            mmsb_mirror *m, uint8_t *back) {
  int n = e % 10 == 0 ? 6000 : (int)rng_below(&br->seed, 300);
  for (int s = 0; s < n; s++) {
    size_t len = s % 9 == 0 ? 1 + rng_below(&br->seed, 200) : 8;
    size_t off = rng_below(&br->seed, size - 200) & ~(size_t)(len == 8 ? 7 : 0);
    for (size_t k = 0; k < len; k++) d[off + k] = (uint8_t)rng_next(&br->seed);
    mmsb_touch(d + off, len);
  }
  pthread_barrier_wait(&step);
  mmsb_epoch_t got;
  if (mmsb_commit(bus, &got) || mmsb_mirror_wait(m, got) || mmsb_mirror_download(m, back))
    br->failed = 1;
  else
    br->bad += memcmp(back, d, size) != 0;
}

/* A thread of test_two_buses: its own bus, region and mirror.  It meets
 * the other thread twice an epoch even after a failure, so that the other
 * does not wait for ever. */
static void *two_buses_thread(void *arg) {
  enum { RS = 1 << 22 };
  bus_run *br = arg;
  mmsb_bus *bus = NULL;
  mmsb_region *r;
  mmsb_mirror *m;
  uint8_t *back = malloc(RS);
  if (!back || mmsb_bus_open(NULL, &bus) || mmsb_region_create(bus, "two", RS, 0, &r) ||
      mmsb_mirror_create(r, device, &m))
    br->failed = 1;
  for (int e = 1; e <= br->epochs; e++) {
    if (br->failed) pthread_barrier_wait(&step);
    else two_buses_epoch(br, e, bus, mmsb_region_data(r), RS, m, back);
    pthread_barrier_wait(&step);
  }
  free(back);
  if (bus && mmsb_bus_close(bus)) br->failed = 1;
  return NULL;
}

static void test_two_buses(int epochs) {
  bus_run runs[2] = {{seed ^ 1, epochs, 0, 0}, {seed ^ 2, epochs, 0, 0}};
  pthread_t t[2];
  CHECK(pthread_barrier_init(&step, NULL, 2) == 0);
  int started = 0;
  for (int i = 0; i < 2; i++) started += pthread_create(&t[i], NULL, two_buses_thread, &runs[i]) == 0;
  if (started < 2) { /* the one thread would wait at the barrier for ever */
    printf("two buses: a thread could not start\n");
    exit(1);
  }
  for (int i = 0; i < started; i++) pthread_join(t[i], NULL);
  pthread_barrier_destroy(&step);
  for (int i = 0; i < 2; i++) CHECK(runs[i].failed == 0 && runs[i].bad == 0);
  printf("two buses at once: %d epochs each, %d and %d mismatches\n", epochs, runs[0].bad, runs[1].bad);
}

/* A thread that waits for the mirror, and now and then downloads it, while
 * another commits: each epoch the committing thread has returned from is
 * one the mirror can be waited for, from any thread, and the waits do not
 * make the commits lose track of work still in flight (the mirror equals
 * the region at the end, after epochs large enough for staging and small
 * ones read in place). */
typedef struct waiter_run {
  mmsb_mirror *m;
  _Atomic mmsb_epoch_t published; /* committed and returned */
  _Atomic int stop;
  int waits, failed;
  uint8_t *copy; /* what the waiter downloads now and then */
} waiter_run;

static void *waiter_thread(void *arg) {
  waiter_run *w = arg;
  mmsb_epoch_t last = 0;
  while (!atomic_load(&w->stop)) {
    mmsb_epoch_t e = atomic_load(&w->published);
    if (e == last) {
      sched_yield();
      continue;
    }
    if (mmsb_mirror_wait(w->m, e)) w->failed++;
    if (w->waits++ % 4 == 0 && mmsb_mirror_download(w->m, w->copy)) w->failed++;
    last = e;
  }
  return NULL;
}

static void test_waiter_thread(int epochs) {
  enum { RS = 1 << 22 };
  mmsb_bus *bus;
  mmsb_region *r;
  waiter_run w = {0};
  CHECK_OK(mmsb_bus_open(NULL, &bus));
  CHECK_OK(mmsb_region_create(bus, "waited", RS, 0, &r));
  CHECK_OK(mmsb_mirror_create(r, device, &w.m));
  uint8_t *d = mmsb_region_data(r), *back = malloc(RS);
  w.copy = malloc(RS);
  pthread_t t;
  CHECK(back && w.copy && pthread_create(&t, NULL, waiter_thread, &w) == 0);
  for (int e = 1; e <= epochs; e++) {
    int n = e % 7 == 0 ? 60000 : e % 3 == 0 ? 5000 : (int)rng_below(&seed, 400);
    for (int s = 0; s < n; s++) {
      size_t off = rng_below(&seed, RS / 8) * 8;
      d[off] ^= (uint8_t)(s + 1);
      mmsb_touch(d + off, 8);
    }
    mmsb_epoch_t got;
    CHECK_OK(mmsb_commit(bus, &got));
    atomic_store(&w.published, got);
  }
  atomic_store(&w.stop, 1);
  pthread_join(t, NULL);
  CHECK(w.failed == 0);
  CHECK_OK(mmsb_mirror_wait(w.m, mmsb_epoch(bus)));
  CHECK_OK(mmsb_mirror_download(w.m, back));
  CHECK(memcmp(back, d, RS) == 0);
  printf("a waiting thread: %d epochs, %d waits, %d failed\n", epochs, w.waits, w.failed);
  free(back);
  free(w.copy);
  CHECK_OK(mmsb_bus_close(bus));
}

/* A device number the machine lacks: the host backend where there is no
 * GPU (or no CUDA in the build), so that a program written for a GPU runs
 * anywhere; MMSB_ENODEV where there are GPUs (test_gpu checks the rest of
 * the CUDA side). */
static void test_device_numbers(void) {
  const mmsb_dev_ops *cuda = mmsb_dev_cuda();
  int gpus = cuda ? cuda->devices() : 0;
  mmsb_bus *bus;
  mmsb_region *r;
  mmsb_mirror *m = NULL;
  CHECK_OK(mmsb_bus_open(NULL, &bus));
  CHECK_OK(mmsb_region_create(bus, "r", 4096, 0, &r));
  int rc = mmsb_mirror_create(r, 1000, &m);
  if (gpus) CHECK(rc == MMSB_ENODEV && m == NULL && strstr(mmsb_last_error(), "CUDA device 1000"));
  else CHECK(rc == MMSB_OK && m && !strcmp(mmsb_mirror_backend(m), "host"));
  mmsb_mirror *bad = NULL; /* below -1 is a mistake on every machine */
  CHECK_FAILS(mmsb_mirror_create(r, -2, &bad), MMSB_EINVAL);
  CHECK(bad == NULL && strstr(mmsb_last_error(), "device -2"));
  CHECK_OK(mmsb_bus_close(bus));
}

int main(int argc, char **argv) {
  seed = test_seed();
  device = argc > 1 && !strcmp(argv[1], "gpu") ? 0 : -1;
  test_device_numbers();
  test_nan_adds();
  test_epochs(300 * test_scale());
  test_one_region(40 * test_scale());
  test_sparse_pages(8 * test_scale());
  test_two_buses(40 * test_scale());
  test_waiter_thread(60 * test_scale());
  test_diff(60 * test_scale());
  if (device < 0) test_gpu_node_feeds_cpu();
  if (device < 0) test_gpu_output_stores();
  return check_done(device < 0 ? "test_mirror host" : "test_mirror gpu");
}
