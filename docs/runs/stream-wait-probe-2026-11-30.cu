// scratch: does a kernel queued behind cuStreamWaitValue32 on a host flag
// start sooner after the host's write than a kernel launched after the
// host's work?  A: work, launch, sync.  B: wait-value + launch queued
// before the work, then the flag written, sync.  Times from the work's
// end to the sync's return; the queueing calls' cost too.  The kernel
// reads `n` words from mapped host memory into device memory (a 1e-4
// epoch's ~13 100 one-word deltas read in place, roughly).
#include <cuda.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdint.h>
#include <time.h>
#include <algorithm>
#include <vector>
static uint64_t now() { timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000ull + t.tv_nsec; }
#define CK(x) do { cudaError_t e = (x); if (e) { printf("%s: %s\n", #x, cudaGetErrorString(e)); return 1; } } while (0)
__global__ void apply(uint64_t *dst, const uint64_t *src, const uint32_t *off, const volatile uint32_t *desc) {
  uint32_t n = desc ? desc[0] : 13100;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) dst[off[i]] = src[i];
}
typedef CUresult (*wait_fn)(CUstream, CUdeviceptr, cuuint32_t, unsigned int);
static void spin_us(double us) { uint64_t t = now(); while (now() - t < us * 1000) {} }
int main() {
  CK(cudaFree(0));
  int dev = 0, memops = -1;
  (void)dev;
  void *fp = nullptr; cudaDriverEntryPointQueryResult q;
  CK(cudaGetDriverEntryPointByVersion("cuStreamWaitValue32", &fp, 12000, cudaEnableDefault, &q));
  printf("stream mem ops attr(v1) %d, entry point %p (query %d)\n", memops, fp, (int)q);
  wait_fn waitv = (wait_fn)fp;
  cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const uint32_t n = 13100;
  uint64_t *dst; CK(cudaMalloc(&dst, (size_t)1 << 30));
  uint64_t *src; uint32_t *off, *flag, *desc;
  CK(cudaHostAlloc(&src, n * 8, cudaHostAllocMapped)); CK(cudaHostAlloc(&off, n * 4, cudaHostAllocMapped));
  CK(cudaHostAlloc(&flag, 64, cudaHostAllocMapped)); CK(cudaHostAlloc(&desc, 64, cudaHostAllocMapped));
  for (uint32_t i = 0; i < n; i++) { src[i] = i; off[i] = (uint32_t)(((uint64_t)i * 2654435761u) % (1u << 27)); }
  *flag = 0; desc[0] = n;
  std::vector<double> a, b, bq, c;
  uint32_t epoch = 0;
  for (int it = 0; it < 400; it++) {
    // A: launched after the work
    spin_us(100);
    uint64_t t0 = now();
    apply<<<52, 256, 0, s>>>(dst, src, off, nullptr);
    CK(cudaStreamSynchronize(s));
    a.push_back((now() - t0) / 1e3);
    // B: queued behind a wait on the flag before the work
    epoch++;
    uint64_t q0 = now();
    CUresult r = waitv((CUstream)s, (CUdeviceptr)flag, epoch, CU_STREAM_WAIT_VALUE_GEQ);
    if (r) { printf("cuStreamWaitValue32: %d\n", (int)r); return 1; }
    apply<<<52, 256, 0, s>>>(dst, src, off, desc);
    bq.push_back((now() - q0) / 1e3);
    spin_us(100);
    uint64_t t1 = now();
    __atomic_store_n(flag, epoch, __ATOMIC_RELEASE);
    CK(cudaStreamSynchronize(s));
    b.push_back((now() - t1) / 1e3);
    // C: the same, the kernel empty (n = 0): the wait's own latency
    epoch++;
    desc[0] = 0;
    waitv((CUstream)s, (CUdeviceptr)flag, epoch, CU_STREAM_WAIT_VALUE_GEQ);
    apply<<<52, 256, 0, s>>>(dst, src, off, desc);
    spin_us(100);
    uint64_t t2 = now();
    __atomic_store_n(flag, epoch, __ATOMIC_RELEASE);
    CK(cudaStreamSynchronize(s));
    c.push_back((now() - t2) / 1e3);
    desc[0] = n;
  }
  for (auto *v : {&a, &b, &bq, &c}) std::sort(v->begin(), v->end());
  auto pr = [](const char *k, std::vector<double> &v) { printf("%-44s median %6.1f us  p10 %6.1f  p90 %6.1f\n", k, v[v.size() / 2], v[v.size() / 10], v[v.size() * 9 / 10]); };
  pr("A launch after the work -> sync", a);
  pr("B flag written -> sync (queued before)", b);
  pr("B the wait and launch calls, before", bq);
  pr("C flag written -> sync, empty kernel", c);
  return 0;
}
