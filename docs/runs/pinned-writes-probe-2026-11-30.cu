// scratch: are writes and reads of pinned host memory (cudaHostAlloc,
// cudaHostRegister) slower than of malloc'd memory on this VM?  One thread
// writes 36-byte records (a fill's pattern) over n bytes, then reads them;
// medians of 200 rounds, each on memory written the round before.
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>
#include <algorithm>
#include <vector>
static uint64_t now() { timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000ull + t.tv_nsec; }
static volatile uint64_t sink;
static void fill(uint8_t *o, size_t n, uint64_t seed) {
  for (size_t at = 0; at + 36 <= n; at += 36) {
    uint64_t v = seed + at;
    memcpy(o + at, &v, 8); memcpy(o + at + 8, &at, 8); memcpy(o + at + 16, &v, 8);
    uint32_t h = 0x00080000u; memcpy(o + at + 24, &h, 4); memcpy(o + at + 28, &v, 8);
  }
}
static uint64_t readall(const uint8_t *p, size_t n) {
  uint64_t s = 0; for (size_t i = 0; i + 8 <= n; i += 8) { uint64_t v; memcpy(&v, p + i, 8); s += v; } return s;
}
int main() {
  cudaFree(0);
  size_t sizes[] = {470 * 1024, 4700 * 1024};
  const char *names[] = {"malloc", "hostalloc-default", "hostalloc-mapped-portable", "hostregister"};
  for (size_t n : sizes) {
    for (int k = 0; k < 4; k++) {
      uint8_t *p = nullptr;
      if (k == 0) p = (uint8_t *)aligned_alloc(4096, n);
      if (k == 1) cudaHostAlloc((void **)&p, n, cudaHostAllocDefault);
      if (k == 2) cudaHostAlloc((void **)&p, n, cudaHostAllocPortable | cudaHostAllocMapped);
      if (k == 3) { p = (uint8_t *)aligned_alloc(4096, n); cudaHostRegister(p, n, cudaHostRegisterDefault); }
      memset(p, 1, n);
      std::vector<double> w, r;
      for (int it = 0; it < 200; it++) {
        uint64_t t0 = now(); fill(p, n, it); uint64_t t1 = now(); sink += readall(p, n); uint64_t t2 = now();
        w.push_back((t1 - t0) / 1e3); r.push_back((t2 - t1) / 1e3);
      }
      std::sort(w.begin(), w.end()); std::sort(r.begin(), r.end());
      printf("%7zu KB %-26s write %8.1f us (p10 %7.1f, p90 %7.1f)  read %8.1f us\n", n / 1024, names[k], w[100], w[20], w[180], r[100]);
      if (k == 1 || k == 2) cudaFreeHost(p); else { if (k == 3) cudaHostUnregister(p); free(p); }
    }
  }
  return 0;
}
