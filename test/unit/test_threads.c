/* test_threads.c - several threads store through the entry points at once;
 * after they join, one commit must carry every byte they wrote. */
#include "check.h"
#include "mmsb_abi.h"

#include <pthread.h>

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

int main(void) {
  uint64_t seed = test_seed();
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
