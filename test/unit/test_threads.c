/* test_threads.c - several threads store through the entry points at once;
 * after they join, one commit must carry every byte they wrote. */
#include "check.h"
#include "mmsb_abi.h"
#include "internal.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <time.h>

#define NTHREADS 8
#define SIZE (8u << 20)

static uint8_t *data;

typedef struct { int id; uint64_t seed; int stores; } job;

/* Threads write interleaved granules of the same pages, so their bitmap
 * words collide: lost updates would show as missing runs. */
static void *writer(void *arg) {
  job *j = arg;
  for (int i = 0; i < j->stores; i++) {
    size_t g = rng_below(&j->seed, SIZE / 8 / NTHREADS) * NTHREADS + (size_t)j->id;
    uint64_t v = rng_next(&j->seed) | 1;
    memcpy(data + g * 8, &v, 8);
    if (i & 1) __mmsb_store8(data + g * 8);
    else __mmsb_store_range(data + g * 8 + 3, 5), __mmsb_store4(data + g * 8);
  }
  return NULL;
}

/* The runtime's pool: jobs back to back, of different part counts, each
 * part run once, and only while its job runs (a worker that woke late once
 * claimed a part of the next job before it started). */
typedef struct pool_job {
  _Atomic int runs[64];
  _Atomic int open; /* 1 while mmsb_pool_run for this job has not returned */
  _Atomic int bad;
} pool_job;

static void pool_part(void *ctx, int part, int nparts) {
  pool_job *j = ctx;
  if (!atomic_load(&j->open) || part >= nparts) atomic_fetch_add(&j->bad, 1);
  atomic_fetch_add(&j->runs[part], 1);
}

static void test_pool_jobs(int jobs) {
  static pool_job pj[2];
  int bad = 0;
  for (int k = 0; k < jobs; k++) {
    pool_job *j = &pj[k & 1];
    int nparts = k % 3 == 0 ? 2 : k % 3 == 1 ? 9 : 40;
    for (int i = 0; i < 64; i++) atomic_store(&j->runs[i], 0);
    atomic_store(&j->bad, 0);
    atomic_store(&j->open, 1);
    mmsb_pool_run(nparts, 8, pool_part, j);
    atomic_store(&j->open, 0);
    for (int i = 0; i < 64; i++) bad += atomic_load(&j->runs[i]) != (i < nparts);
    bad += atomic_load(&j->bad);
  }
  CHECK(bad == 0);
  printf("pool: %d jobs, each part once and in its job\n", jobs);
}

/* mmsb_pool_run_tick: tick runs on the caller only, after each of its
 * parts and then until it returns true, which it does once every part is
 * done (the fill's chunk sends wait on the workers' parts this way). */
typedef struct tick_job {
  _Atomic int done, ticks, off_caller, saw_all; /* saw_all: a tick returned true */
  pthread_t caller;
  int nparts;
} tick_job;

/* A worker's part takes ~20 us, so that the caller runs out of parts to
 * take while workers still run theirs. */
static void tick_part(void *ctx, int part, int nparts) {
  tick_job *j = ctx;
  (void)part;
  (void)nparts;
  if (!pthread_equal(pthread_self(), j->caller)) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < 20000);
  }
  atomic_fetch_add(&j->done, 1);
}

static bool tick(void *ctx) {
  tick_job *j = ctx;
  atomic_fetch_add(&j->ticks, 1);
  if (!pthread_equal(pthread_self(), j->caller)) atomic_fetch_add(&j->off_caller, 1);
  bool all = atomic_load(&j->done) == j->nparts;
  if (all) atomic_store(&j->saw_all, 1);
  return all;
}

static void test_pool_tick(int jobs) {
  int bad = 0;
  for (int k = 0; k < jobs; k++) {
    tick_job j = {0, 0, 0, 0, pthread_self(), k % 2 ? 40 : 3};
    mmsb_pool_run_tick(j.nparts, k % 5 ? 8 : 1, tick_part, &j, tick);
    /* saw_all: the caller ticked until the workers' last parts were done,
     * not only after its own (the last chunk's send needs that) */
    bad += atomic_load(&j.done) != j.nparts || atomic_load(&j.ticks) < 1 ||
           atomic_load(&j.off_caller) != 0 || !atomic_load(&j.saw_all);
  }
  CHECK(bad == 0);
  printf("pool: %d ticked jobs, tick on the caller until every part was done\n", jobs);
}

/* MMSB_POOL_SPIN_US, as the pool read it when its first thread started:
 * ctest runs this test once as it is and once with 0, where every worker
 * sleeps after each part and each job wakes them (the jobs above then
 * test sleeping and waking rather than spinning). */
static void test_pool_spin(void) {
  const char *v = getenv("MMSB_POOL_SPIN_US");
  uint64_t want = v && *v ? strtoull(v, NULL, 10) : 200;
  CHECK(mmsb_pool_spin_us() == want);
  printf("pool: threads spin %llu us before they sleep\n", (unsigned long long)mmsb_pool_spin_us());
}

int main(void) {
  uint64_t seed = test_seed();
  test_pool_jobs(20000 * test_scale());
  test_pool_tick(2000 * test_scale());
  test_pool_spin();
  mmsb_bus *bus, *rep;
  mmsb_region *r, *rr;
  CHECK_OK(mmsb_bus_open(NULL, &bus));
  CHECK_OK(mmsb_bus_open(NULL, &rep));
  CHECK_OK(mmsb_region_create(bus, "shared", SIZE, 0, &r));
  CHECK_OK(mmsb_region_create(rep, "shared", SIZE, 0, &rr));
  data = mmsb_region_data(r);
  int rounds = 5 * test_scale(), bad = 0;
  for (int round = 0; round < rounds; round++) {
    pthread_t t[NTHREADS];
    job jobs[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
      jobs[i] = (job){i, seed + (uint64_t)round * 100 + (uint64_t)i, 40000};
      pthread_create(&t[i], NULL, writer, &jobs[i]);
    }
    for (int i = 0; i < NTHREADS; i++) pthread_join(t[i], NULL);
    /* Capture the batch by committing with a subscriber-free bus and
     * replaying its bytes. */
    CHECK_OK(mmsb_commit(bus, NULL));
    /* The bus keeps the last batch; decode it as a consumer would. */
    size_t len;
    const uint8_t *bytes = mmsb_batch_bytes(mmsb_last_batch(bus), &len);
    mmsb_batch *b;
    CHECK_OK(mmsb_batch_decode(bytes, len, &b));
    CHECK_OK(mmsb_batch_apply(b, rep));
    mmsb_batch_free(b);
    bad += memcmp(data, mmsb_region_data(rr), SIZE) != 0;
  }
  CHECK(bad == 0);
  printf("threads: %d rounds of %d threads x 40000 stores\n", rounds, NTHREADS);
  CHECK_OK(mmsb_bus_close(bus));
  CHECK_OK(mmsb_bus_close(rep));
  return check_done("test_threads");
}
