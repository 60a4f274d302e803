// gpu_sync - keeping a 1 GiB device copy of a region up to date, end to
// end (commit, pack, transfer, apply, mirror holds the epoch), at dirty
// fractions 1e-5 .. 1e-1 of its 8-byte words, against in the same run:
//   full      cudaMemcpy of the whole region each epoch (pinned host memory)
//   um        Unified Memory: host writes to cudaMallocManaged memory, then
//             cudaMemPrefetchAsync to the device (after the GPU used it)
//   floor     just the changed words and their offsets: the words read from
//             the host copy at the offsets (known for free), packed into
//             pinned memory, one copy, scattered by a kernel.  floor_gen is
//             the same without reading the host copy (values made up in
//             registers): a floor no synchronizer can reach, shown for scale.
// mmsb and the floor run in alternate order from rep to rep (an even number
// of reps: each is first in half), so that neither always finds the written
// lines in cache or follows the same work.  Unified Memory runs in a loop of
// its own after them: its host writes fault pages back from the GPU, and the
// driver's work after its prefetch slowed the next CUDA calls of whoever ran
// next (up to ~20 us a call, seen in the first reps).  collect_ms is the commit
// of the same stores into a second region that has no mirror (the CPU part).
// and the device diff + D2H of a 1 GiB GPU-node output.
// --quick: fractions 1e-5 .. 1e-3 only, 16 reps each, no Unified Memory (for
// before/after comparisons of mmsb against the floor in one device call).
#include "bench.h"
#include "device.h"
#include "mmsb/mmsb.h"
#include "fastpath.h"

#include <cuda_runtime.h>

#define GIB ((size_t)1 << 30)
#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
  fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_)); exit(1); } } while (0)

__global__ void scatter(uint64_t *dst, const uint64_t *pairs, size_t n) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i < n) dst[pairs[2 * i]] = pairs[2 * i + 1];
}

__global__ void touch_pages(uint64_t *p, size_t words) { // the GPU "uses" the data
  size_t i = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) * 512;
  if (i < words) p[i] += 0;
}

__global__ void write_some(uint64_t *p, const uint64_t *idx, size_t n, uint64_t v) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i < n) p[idx[i]] = v + i;
}


int main(int argc, char **argv) {
  bench_out o;
  bench_init(&o, "gpu_sync", argc, argv);
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    fprintf(stderr, "gpu_sync: no GPU\n");
    return 77;
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  fprintf(stderr, "gpu_sync on %s\n", prop.name);
  bool quick = false;
  for (int i = 1; i < argc; i++) quick |= !strcmp(argv[i], "--quick");
  size_t words = GIB / 8;
  mmsb_region *r;
  if (mmsb_region_create(mmsb_default_bus(), "bench", GIB, 0, &r)) return 1;
  uint64_t *host = (uint64_t *)mmsb_region_data(r);
  memset(host, 0, GIB);
  CK(cudaHostRegister(host, GIB, cudaHostRegisterDefault)); // the full copy's best case
  mmsb_mirror *m;
  if (mmsb_mirror_create(r, 0, &m) || strcmp(mmsb_mirror_backend(m), "cuda")) {
    fprintf(stderr, "gpu_sync: mirror: %s\n", mmsb_last_error());
    return 1;
  }
  mmsb_region *r2; // the same stores without a mirror: the CPU part alone
  if (mmsb_region_create(mmsb_default_bus(), "bench-nomirror", GIB, 0, &r2)) return 1;
  uint64_t *host2 = (uint64_t *)mmsb_region_data(r2);
  memset(host2, 0, GIB);
  mmsb_commit(NULL, NULL);
  uint64_t *dfull, *dfloor, *um, *pairs_h, *pairs_d;
  CK(cudaMalloc(&dfull, GIB));
  CK(cudaMalloc(&dfloor, GIB));
  CK(cudaMallocManaged(&um, GIB));
  memset(um, 0, GIB);
  size_t maxn = (size_t)(0.1 * (double)words) + 1;
  CK(cudaHostAlloc(&pairs_h, maxn * 16, cudaHostAllocDefault));
  CK(cudaMalloc(&pairs_d, maxn * 16));
  uint64_t *idx = (uint64_t *)malloc(maxn * 8), seed = 42;
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  cudaMemLocation dev0 = {cudaMemLocationTypeDevice, 0};
  static const double fracs[] = {1e-5, 1e-4, 1e-3, 1e-2, 1e-1};
  int bad = 0;
  for (int f = 0; f < (quick ? 3 : 5); f++) {
    size_t n = (size_t)(fracs[f] * (double)words);
    // Medians of 32 reps below 1e-2: a sync there is tens to hundreds of
    // microseconds, and the lent VMs' calls vary by 2x from rep to rep.
    // Unified Memory, ~0.25 s a rep, takes 8 (4 at 1e-2 and up).
    int reps = quick ? 16 : f >= 3 ? 4 : 32, um_reps = quick ? 0 : f >= 3 ? 4 : 8;
    double tm[32], tst[32], tfull[32], tum[32], tfl[32], tgen[32], tcm[32], tcol[32];
    for (int rep = 0; rep < reps; rep++) {
      for (size_t i = 0; i < n; i++) idx[i] = bench_rng(&seed) % words;
      uint64_t v = ((uint64_t)f << 48) | ((uint64_t)rep << 40);
      // the CPU part alone: commit of a region without a mirror
      for (size_t i = 0; i < n; i++) tracked_store8(&host2[idx[i]], v + i);
      double t0 = bench_now_ms();
      mmsb_commit(NULL, NULL);
      tcol[rep] = bench_now_ms() - t0;
      // mmsb: stores through the pass's fast path, then commit -> mirror holds it
      t0 = bench_now_ms();
      for (size_t i = 0; i < n; i++) tracked_store8(&host[idx[i]], v + i);
      tst[rep] = bench_now_ms() - t0;
      for (int k = 0; k < 2; k++) {
        if ((k + rep) % 2 == 0) {
          t0 = bench_now_ms();
          mmsb_epoch_t e;
          mmsb_commit(NULL, &e);
          tcm[rep] = bench_now_ms() - t0;
          mmsb_mirror_wait(m, e);
          tm[rep] = bench_now_ms() - t0;
        } else { // floor: the changed words read from the host copy, one copy, one scatter
          t0 = bench_now_ms();
          for (size_t i = 0; i < n; i++) { pairs_h[2 * i] = idx[i]; pairs_h[2 * i + 1] = host[idx[i]]; }
          CK(cudaMemcpyAsync(pairs_d, pairs_h, n * 16, cudaMemcpyHostToDevice, s));
          scatter<<<(unsigned)((n + 255) / 256), 256, 0, s>>>(dfloor, pairs_d, n);
          CK(cudaStreamSynchronize(s));
          tfl[rep] = bench_now_ms() - t0;
        }
      }
      // floor_gen: values made up, the host copy not read
      t0 = bench_now_ms();
      for (size_t i = 0; i < n; i++) { pairs_h[2 * i] = idx[i]; pairs_h[2 * i + 1] = v + i; }
      CK(cudaMemcpyAsync(pairs_d, pairs_h, n * 16, cudaMemcpyHostToDevice, s));
      scatter<<<(unsigned)((n + 255) / 256), 256, 0, s>>>(dfloor, pairs_d, n);
      CK(cudaStreamSynchronize(s));
      tgen[rep] = bench_now_ms() - t0;
      // full copy of the region
      t0 = bench_now_ms();
      CK(cudaMemcpyAsync(dfull, host, GIB, cudaMemcpyHostToDevice, s));
      CK(cudaStreamSynchronize(s));
      tfull[rep] = bench_now_ms() - t0;
    }
    for (int rep = 0; rep < um_reps; rep++) {
      for (size_t i = 0; i < n; i++) idx[i] = bench_rng(&seed) % words;
      uint64_t v = ((uint64_t)f << 48) | ((uint64_t)rep << 40);
      // Unified Memory: the GPU has the pages, the host writes, prefetch back
      CK(cudaMemPrefetchAsync(um, GIB, dev0, 0, s));
      touch_pages<<<(unsigned)((words / 512 + 255) / 256), 256, 0, s>>>(um, words);
      CK(cudaStreamSynchronize(s));
      double t0 = bench_now_ms();
      for (size_t i = 0; i < n; i++) um[idx[i]] = v + i;
      CK(cudaMemPrefetchAsync(um, GIB, dev0, 0, s));
      CK(cudaStreamSynchronize(s));
      tum[rep] = bench_now_ms() - t0;
    }
    double mm = bench_median(tm, reps), fu = bench_median(tfull, reps), fl = bench_median(tfl, reps);
    double u = quick ? 0 : bench_median(tum, um_reps), st = bench_median(tst, reps);
    bench_row *row = bench_add(&o, "1GiB frac=%g", fracs[f]);
    bench_metric(row, "stores", (double)n);
    bench_metric(row, "mmsb_store_ms", st);
    bench_metric(row, "mmsb_sync_ms", mm);
    bench_metric(row, "commit_ms", bench_median(tcm, reps));
    bench_metric(row, "collect_ms", bench_median(tcol, reps));
    bench_metric(row, "floor_ms", fl);
    bench_metric(row, "floor_gen_ms", bench_median(tgen, reps));
    bench_metric(row, "full_copy_ms", fu);
    if (!quick) bench_metric(row, "um_ms", u);
    bench_metric(row, "x_of_floor", mm / fl);
    bench_metric(row, "x_vs_full_copy", fu / mm);
    if (!quick) bench_metric(row, "x_vs_um", u / (mm + st)); /* UM pays the host writes too */
  }
  // correctness: the mirror equals the region
  uint64_t *back = (uint64_t *)malloc(GIB);
  mmsb_mirror_download(m, back);
  bad = memcmp(back, host, GIB) != 0;
  fprintf(stderr, "gpu_sync: mirror %s the region\n", bad ? "DIFFERS FROM" : "equals");
  // device diff + D2H of a 1 GiB GPU-node output
  const mmsb_dev_ops *ops = mmsb_dev_cuda();
  void *st;
  ops->open(0, &st);
  uint64_t *cur, *prev, *didx;
  CK(cudaMalloc(&cur, GIB));
  CK(cudaMalloc(&prev, GIB));
  CK(cudaMalloc(&didx, maxn * 8));
  CK(cudaMemset(cur, 0, GIB));
  CK(cudaMemset(prev, 0, GIB));
  for (int f = 0; f < 3; f++) {
    size_t n = (size_t)(fracs[f] * (double)words);
    double t[7];
    for (int rep = 0; rep < 7; rep++) {
      for (size_t i = 0; i < n; i++) idx[i] = bench_rng(&seed) % words;
      CK(cudaMemcpy(didx, idx, n * 8, cudaMemcpyHostToDevice));
      write_some<<<(unsigned)((n + 255) / 256), 256>>>(cur, didx, n, (uint64_t)rep + 1);
      CK(cudaDeviceSynchronize());
      mmsb_diff d;
      double t0 = bench_now_ms();
      if (ops->diff(st, cur, prev, GIB, &d) || d.ngran > n) bad = 1;
      t[rep] = bench_now_ms() - t0;
    }
    bench_row *row = bench_add(&o, "device diff + D2H, 1GiB output, frac=%g", fracs[f]);
    bench_metric(row, "ms", bench_median(t, 7));
  }
  { // the diff kernel alone, with events
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    mmsb_diff d;
    float best = 1e9f;
    for (int rep = 0; rep < 5; rep++) {
      cudaEventRecord(a, 0);
      ops->diff(st, cur, prev, GIB, &d); // includes its own syncs and copy-back
      cudaEventRecord(b, 0);
      cudaEventSynchronize(b);
      if (d.npages) bad = 1;
      float ms;
      cudaEventElapsedTime(&ms, a, b);
      if (ms < best) best = ms;
    }
    bench_row *row = bench_add(&o, "device diff, 1GiB, nothing changed");
    bench_metric(row, "ms", best);
  }
  bench_print(&o);
  return bad;
}
