/* scratch: when do the pool's workers start after a sleep, and how long do
 * three back-to-back jobs (a commit's shape) take? */
#include "internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
static uint64_t t0;
static uint64_t arr[64];
static uint64_t work_ns;
static void part(void *ctx, int i, int n) {
  (void)ctx; (void)n;
  arr[i] = mmsb_now_ns() - t0;
  uint64_t e = mmsb_now_ns() + work_ns;
  while (mmsb_now_ns() < e) {}
}
static int cmpu(const void *a, const void *b) { uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b; return x < y ? -1 : x > y; }
#define J 300
static uint64_t rk[16][J], tot[J], tot3[J];
int main(int argc, char **argv) {
  int gap_us = argc > 1 ? atoi(argv[1]) : 2000;
  mmsb_pool_run(16, 16, part, NULL); /* start threads */
  for (int j = 0; j < J; j++) {
    usleep(gap_us);
    work_ns = 30000;
    t0 = mmsb_now_ns();
    mmsb_pool_run(16, 16, part, NULL);
    tot[j] = mmsb_now_ns() - t0;
    qsort(arr, 16, 8, cmpu);
    for (int k = 0; k < 16; k++) rk[k][j] = arr[k];
    /* a commit's shape: 3 jobs of 32 parts of 10 us each, after a sleep */
    usleep(gap_us);
    work_ns = 10000;
    t0 = mmsb_now_ns();
    for (int q = 0; q < 3; q++) mmsb_pool_run(32, 16, part, NULL);
    tot3[j] = mmsb_now_ns() - t0;
  }
  printf("rank medians (us):");
  for (int k = 0; k < 16; k++) { qsort(rk[k], J, 8, cmpu); printf(" %.1f", rk[k][J / 2] / 1e3); }
  qsort(tot, J, 8, cmpu); qsort(tot3, J, 8, cmpu);
  printf("\none job of 16x30us: median %.1f p90 %.1f us\n", tot[J / 2] / 1e3, tot[J * 9 / 10] / 1e3);
  printf("three jobs of 32x10us: median %.1f p90 %.1f us (ideal 3x20=60)\n", tot3[J / 2] / 1e3, tot3[J * 9 / 10] / 1e3);
  return 0;
}
