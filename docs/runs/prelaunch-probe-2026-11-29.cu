// prelaunch probe: does launching the apply kernel before the commit's CPU
// work (kernel waits on a flag in mapped host memory) shorten commit+wait?
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <algorithm>
#include <vector>
#include <thread>
#include <atomic>
static double now_us() { timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e6 + t.tv_nsec / 1e3; }
#define CK(x) do { cudaError_t e = (x); if (e) { printf("%s: %s\n", #x, cudaGetErrorString(e)); return 1; } } while (0)
struct Pair { uint64_t off, val; };
__global__ void apply_now(uint64_t *dst, const Pair *p, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) dst[p[i].off] = p[i].val;
}
__device__ uint32_t ld_acquire_sys(const uint32_t *p) {
  uint32_t v; asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory"); return v;
}
// waits until *flag == want (n of pairs in *nptr), then applies grid-stride
__device__ uint32_t dflag;
// one poller of host memory (block 0), the other blocks poll its copy in device memory
__global__ void apply_spin(uint64_t *dst, const Pair *p, const uint32_t *flag, uint32_t want, const uint32_t *nptr) {
  __shared__ uint32_t n;
  if (threadIdx.x == 0) {
    if (blockIdx.x == 0) { while (*(volatile const uint32_t *)flag != want) {} __threadfence_system(); atomicExch(&dflag, want); }
    else while (*(volatile uint32_t *)&dflag != want) {}
    __threadfence_system(); n = *(volatile const uint32_t *)nptr; }
  __syncthreads();
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) dst[p[i].off] = p[i].val;
}
__global__ void apply_wait(uint64_t *dst, const Pair *p, const uint32_t *flag, uint32_t want, const uint32_t *nptr) {
  __shared__ uint32_t n;
  if (threadIdx.x == 0) { while (ld_acquire_sys(flag) != want) __nanosleep(200); n = *(volatile const uint32_t *)nptr; }
  __syncthreads();
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) dst[p[i].off] = p[i].val;
}
static void work(Pair *pin, int n, double us, uint64_t seed) { // the "collection"
  double t0 = now_us();
  for (int i = 0; i < n; i++) { seed = seed * 6364136223846793005ull + 1; pin[i].off = (seed >> 20) % (1u << 27); pin[i].val = seed; }
  while (now_us() - t0 < us) {}
}
int main() {
  const int n = 1342, reps = 400; uint64_t *dst; Pair *pin, *pind; uint32_t *flag, *flagd;
  CK(cudaMalloc(&dst, (size_t)1 << 30)); CK(cudaHostAlloc(&pin, n * sizeof(Pair), cudaHostAllocMapped));
  CK(cudaHostGetDevicePointer((void **)&pind, pin, 0)); CK(cudaHostAlloc(&flag, 64, cudaHostAllocMapped));
  CK(cudaHostGetDevicePointer((void **)&flagd, flag, 0)); memset(flag, 0, 64);
  cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  int sms; cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  std::atomic<uint32_t> go{0}, launched{0};
  std::thread th([&] { // the launcher: spins for go (as a pool thread spinning would), launches
    uint32_t seen = 0;
    for (;;) { uint32_t g; while ((g = go.load(std::memory_order_acquire)) == seen) {} seen = g; if (g == 0xffffffffu) return;
      apply_spin<<<sms, 256, 0, s>>>(dst, pind, flagd, g, flagd + 1); launched.store(g, std::memory_order_release); }
  });
  const char *names[4] = {"launch after", "prelaunch, 1 block polls", "prelaunch, block 0 polls", "launcher thread+spin poll"};
  for (double W : {0.0, 20.0, 40.0}) {
    std::vector<double> tot[4], wt[4]; uint32_t ep = 0;
    for (int r = 0; r < reps; r++) {
      std::this_thread::sleep_for(std::chrono::microseconds(300));
      int mode = r & 3;
      double t0 = now_us(), t2;
      if (mode == 0) {
        work(pin, n, W, r);
        apply_now<<<(n + 255) / 256, 256, 0, s>>>(dst, pind, n); t2 = now_us();
      } else if (mode == 3) {
        ep++; go.store(ep, std::memory_order_release);
        work(pin, n, W, r);
        flag[1] = n; __atomic_store_n(&flag[0], ep, __ATOMIC_RELEASE); t2 = now_us();
        while (launched.load(std::memory_order_acquire) != ep) {}
      } else {
        ep++;
        if (mode == 1) apply_spin<<<1, 256, 0, s>>>(dst, pind, flagd, ep, flagd + 1);
        else apply_spin<<<sms, 256, 0, s>>>(dst, pind, flagd, ep, flagd + 1);
        work(pin, n, W, r);
        flag[1] = n; __atomic_store_n(&flag[0], ep, __ATOMIC_RELEASE); t2 = now_us();
      }
      cudaStreamSynchronize(s); double t3 = now_us();
      tot[mode].push_back(t3 - t0); wt[mode].push_back(t3 - t2);
    }
    auto q = [](std::vector<double> v, double f) { std::sort(v.begin(), v.end()); return v[(size_t)(v.size() * f)]; };
    for (int m = 0; m < 4; m++)
      printf("W=%2.0f %-28s total med %6.1f p10 %6.1f p90 %6.1f | after work med %6.1f\n", W, names[m], q(tot[m], .5), q(tot[m], .1), q(tot[m], .9), q(wt[m], .5));
  }
  go.store(0xffffffffu); th.join();
  CK(cudaGetLastError());
  return 0;
}
