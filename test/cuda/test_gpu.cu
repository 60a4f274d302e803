// test_gpu.cu - a GPU node with a real kernel: it reads one mirror, writes
// another; its writes come back through the device diff as deltas, update
// the host region and feed a CPU node; with two GPUs or more, on the last
// one while the program keeps device 0, with commits from another thread.
// Exits 77 where there is no GPU.
#include <cuda_runtime.h>
#include <mmsb/mmsb.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define N 100000

__global__ void square(const unsigned *in, unsigned *out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n && in[i]) out[i] = in[i] * in[i];
}

static int launch(void *ctx, void *stream, void *const *in, void *const *out) {
  (void)ctx;
  square<<<(N + 255) / 256, 256, 0, (cudaStream_t)stream>>>((const unsigned *)in[0], (unsigned *)out[0], N);
  return cudaGetLastError() != cudaSuccess;
}

static unsigned *sq, *total;
static int sum(void *ctx) {
  (void)ctx;
  unsigned long long s = 0;
  for (int i = 0; i < N; i++) s += sq[i];
  total[0] = (unsigned)s;
  return 0;
}

static int commit_rc;
static void *commit_thread(void *bus) { // a thread of the program's own: device 0 current
  commit_rc = mmsb_commit((mmsb_bus *)bus, NULL);
  return NULL;
}

// The node's mirrors on device `dev`, while the program's thread keeps
// device 0 current (checked after every commit) and every other epoch is
// committed from another thread.
static int run(int dev) {
  mmsb_bus *bus;
  mmsb_region *a, *b, *c;
  mmsb_bus_open(NULL, &bus);
  mmsb_region_create(bus, "in", N * 4, 0, &a);
  mmsb_region_create(bus, "sq", N * 4, 0, &b);
  mmsb_region_create(bus, "total", 4096, 0, &c);
  mmsb_mirror *ma, *mb;
  cudaSetDevice(0);
  if (mmsb_mirror_create(a, dev, &ma) || mmsb_mirror_create(b, dev, &mb) ||
      strcmp(mmsb_mirror_backend(ma), "cuda")) {
    printf("FAIL: mirrors: %s\n", mmsb_last_error());
    return 1;
  }
  mmsb_node *g, *s;
  if (mmsb_gpu_node_create(bus, "square", launch, NULL, &ma, 1, &mb, 1, &g)) return 1;
  sq = (unsigned *)mmsb_region_data(b);
  total = (unsigned *)mmsb_region_data(c);
  mmsb_node_create(bus, "sum", sum, NULL, &s);
  mmsb_node_input(s, b);
  mmsb_node_output(s, c, MMSB_DETECT_DIFF);
  unsigned *in = (unsigned *)mmsb_region_data(a);
  int bad = 0;
  unsigned long long want = 0;
  for (int e = 1; e <= 20; e++) {
    for (int k = 0; k < 50; k++) {
      int i = (e * 7919 + k * 104729) % N;
      if (in[i]) continue; /* each word set once: the kernel only writes where in != 0 */
      in[i] = (unsigned)(e + k + 1);
      want += (unsigned long long)in[i] * in[i];
      mmsb_touch(&in[i], 4);
    }
    pthread_t t;
    if (e % 2) commit_rc = mmsb_commit(bus, NULL);
    else if (pthread_create(&t, NULL, commit_thread, bus) == 0) pthread_join(t, NULL);
    else commit_rc = 1;
    if (commit_rc) { printf("FAIL commit: %s\n", mmsb_last_error()); return 1; }
    int cur = -1;
    cudaGetDevice(&cur);
    bad += cur != 0; /* the program's device is its own */
    for (int i = 0; i < N; i++) bad += sq[i] != in[i] * in[i];
    bad += total[0] != (unsigned)want;
  }
  printf("gpu node on device %d: 20 epochs, %d mismatches, total %u\n", dev, bad, total[0]);
  mmsb_bus_close(bus);
  return bad ? 1 : 0;
}

// A node's mirrors must share a device.
static int mixed_devices(int n) {
  mmsb_bus *bus;
  mmsb_region *a, *b;
  mmsb_bus_open(NULL, &bus);
  mmsb_region_create(bus, "a", 4096, 0, &a);
  mmsb_region_create(bus, "b", 4096, 0, &b);
  mmsb_mirror *ma, *mb;
  mmsb_node *g;
  if (mmsb_mirror_create(a, 0, &ma) || mmsb_mirror_create(b, n - 1, &mb)) return 1;
  int rc = mmsb_gpu_node_create(bus, "mixed", launch, NULL, &ma, 1, &mb, 1, &g);
  printf("node over devices 0 and %d: %s\n", n - 1, rc == MMSB_EINVAL ? "refused" : "ACCEPTED");
  mmsb_bus_close(bus);
  return rc != MMSB_EINVAL;
}

int main(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    printf("no GPU: skipped\n");
    return 77;
  }
  int bad = run(0);
  if (n > 1) bad |= run(n - 1) | mixed_devices(n);
  else printf("one GPU: the node on another device than the program's not tried\n");
  printf("%s\n", bad ? "FAIL" : "PASS");
  return bad;
}
