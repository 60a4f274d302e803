/* scratch: what limits a fill-like pass over the freshly written lines of
 * a 1 GiB region, on 16 spinning threads?  Variants per iteration:
 *  A: 16 threads read their slice of the sorted lines (prefetch ahead) and
 *     write 35 B each to an output buffer
 *  R: reads only (sum)          W: writes only (no region read)
 *  D: as A, the lines flushed (clflushopt) by the writer first
 *  M: the writer thread alone, reads + writes (floor-like) */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#define T 16
static uint64_t now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1000000000ull+t.tv_nsec;}
static uint64_t *reg, *addr; static size_t n; static uint8_t *out;
static _Atomic int go_gen, done; static int mode, nt, w40;
static _Atomic uint64_t sink;
static void work(int t, int nt) {
  size_t lo = n * t / nt, hi = n * (t + 1) / nt; uint64_t s = 0;
  uint8_t *o = out + lo * (nt || w40 ? 40 : 35);
  for (size_t i = lo; i < hi; i++) {
    if (i + 32 < hi && mode != 'W') __builtin_prefetch(&reg[addr[i + 32]], 0, 2);
    uint64_t v = mode == 'W' ? i : reg[addr[i]];
    if (mode == 'R') { s += v; continue; }
    if (nt) { long long *q = (long long *)o; __builtin_ia32_movnti64(q, (long long)addr[i]); __builtin_ia32_movnti64(q + 1, (long long)i);
      __builtin_ia32_movnti64(q + 2, (long long)v); __builtin_ia32_movnti64(q + 3, (long long)v); __builtin_ia32_movnti64(q + 4, 0x010101); o += 40; continue; }
    if (w40) { memcpy(o, &addr[i], 8); memcpy(o + 8, &i, 8); memcpy(o + 16, &v, 8); memcpy(o + 24, &v, 8); uint64_t z = 0x010101; memcpy(o + 32, &z, 8); o += 40; continue; }
    memcpy(o, &addr[i], 8); memcpy(o + 8, &i, 8); memcpy(o + 16, &v, 8); memcpy(o + 24, &v, 8); o[32] = o[33] = o[34] = 1; o += 35;
  }
  if (nt) __builtin_ia32_sfence();
  atomic_fetch_add(&sink, s);
}
static void *worker(void *a) { int t = (int)(intptr_t)a, seen = 0;
  for (;;) { int g; while ((g = atomic_load(&go_gen)) == seen) __builtin_ia32_pause(); seen = g; if (g < 0) return 0; work(t, T); atomic_fetch_add(&done, 1); } }
static int cmpu(const void *a, const void *b){uint64_t x=*(const uint64_t*)a,y=*(const uint64_t*)b;return x<y?-1:x>y;}
int main(int argc, char **argv) {
  double frac = argc > 1 ? atof(argv[1]) : 1e-4; size_t words = (1ull << 30) / 8; n = (size_t)(frac * words);
  reg = mmap(0, 1ull << 30, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0); madvise(reg, 1ull<<30, MADV_HUGEPAGE); memset(reg, 0, 1ull << 30);
  addr = malloc(n * 8); out = aligned_alloc(64, n * 40 + 64); memset(out, 0, n * 40);
  pthread_t th[T]; for (int t = 1; t < T; t++) pthread_create(&th[t], 0, worker, (void*)(intptr_t)t);
  const char *modes = "ARWBNVM"; uint64_t s = 88172645463325252ull;
  enum { IT = 100 }; static uint64_t tm[7][IT], tp[7][IT];
  for (int it = 0; it < IT; it++) for (int m = 0; m < 7; m++) {
    for (size_t i = 0; i < n; i++) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; addr[i] = s % words; }
    for (size_t i = 0; i < n; i++) reg[addr[i]] = i + it;   /* the stores, by this thread */
    qsort(addr, n, 8, cmpu);
    mode = modes[m]; nt = w40 = 0;
    if (mode == 'B') { w40 = 1; mode = 'A'; }
    if (mode == 'N') { nt = 1; mode = 'A'; }
    if (mode == 'V') { nt = 1; mode = 'W'; }
    if (mode == 'D') { for (size_t i = 0; i < n; i++) __builtin_ia32_clflushopt(&reg[addr[i]]); __builtin_ia32_sfence(); mode = 'A'; }
    uint64_t tq = now();
    if (mode == 'X') { for (size_t i = 0; i < n; i++) __builtin_ia32_cldemote(&reg[addr[i]]); mode = 'A'; }
    if (mode == 'F') { for (size_t i = 0; i < n; i++) __builtin_ia32_clflushopt(&reg[addr[i]]); __builtin_ia32_sfence(); mode = 'A'; }
    tp[m][it] = now() - tq;
    uint64_t t0 = now();
    if (mode == 'M') work(0, 1);
    else { atomic_store(&done, 0); atomic_fetch_add(&go_gen, 1); work(0, T); while (atomic_load(&done) < T - 1) __builtin_ia32_pause(); }
    tm[m][it] = now() - t0;
  }
  printf("frac %g n %zu:", frac, n);
  for (int m = 0; m < 7; m++) { qsort(tm[m], IT, 8, cmpu); qsort(tp[m], IT, 8, cmpu); printf("  %c %.1f us", modes[m], tm[m][IT / 2] / 1e3);  }
  printf("\n"); atomic_store(&go_gen, -1); return 0;
}
