// Several threads store into state at once through the inline fast path;
// after they join, one commit covers every byte (oracle) and the batch
// rebuilds the state on a replica.
// RUN: %cc-mmsb -O2 %s %rt -o %t && env MMSB_VERIFY=1 %t | FileCheck %s
// CHECK: untracked=0 replica=equal
#include <mmsb/mmsb.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define N (1 << 20)
MMSB_STATE static unsigned grid[N];

static void *worker(void *arg) {
  unsigned id = (unsigned)(size_t)arg, x = id * 2654435761u + 1;
  for (int i = 0; i < 200000; i++) {
    x = x * 1103515245u + 12345u;
    grid[(x >> 8) % N] = x | 1;            /* random, colliding across threads */
    ((unsigned char *)grid)[(x * 7) % (4 * N)] = (unsigned char)id;
  }
  return NULL;
}

int main(void) {
  mmsb_bus *rep;
  mmsb_region *rr, *live;
  mmsb_bus_open(NULL, &rep);
  mmsb_region_create(rep, "grid", sizeof grid, 0, &rr);
  mmsb_region_find(mmsb_default_bus(), "grid", &live);
  for (int round = 0; round < 3; round++) {
    pthread_t t[6];
    for (size_t i = 0; i < 6; i++) pthread_create(&t[i], NULL, worker, (void *)(i + round * 6));
    for (int i = 0; i < 6; i++) pthread_join(t[i], NULL);
    mmsb_commit(NULL, NULL);
    const mmsb_batch *b = mmsb_last_batch(NULL);
    /* the replica's region has id 1; the live one may differ */
    size_t len;
    const uint8_t *bytes = mmsb_batch_bytes(b, &len);
    mmsb_batch *copy;
    mmsb_batch_decode(bytes, len, &copy);
    for (size_t i = 0; i < mmsb_batch_count(copy); i++) {
      mmsb_delta d;
      mmsb_batch_delta(copy, i, &d);
      size_t start = d.page * MMSB_PAGE_SIZE;
      mmsb_delta_apply(&d, (char *)mmsb_region_data(rr) + start, MMSB_PAGE_SIZE);
    }
    mmsb_batch_free(copy);
  }
  mmsb_stats st;
  mmsb_stats_get(NULL, &st);
  printf("untracked=%llu replica=%s\n", (unsigned long long)st.untracked_bytes,
         memcmp(mmsb_region_data(rr), grid, sizeof grid) ? "differs" : "equal");
  (void)live;
  return 0;
}
