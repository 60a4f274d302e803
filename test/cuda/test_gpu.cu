// test_gpu.cu - a GPU node with a real kernel: it reads one mirror, writes
// another; its writes come back through the device diff as deltas, update
// the host region and feed a CPU node.  Exits 77 where there is no GPU.
#include <cuda_runtime.h>
#include <mmsb/mmsb.h>
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

int main(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    printf("no GPU: skipped\n");
    return 77;
  }
  mmsb_bus *bus;
  mmsb_region *a, *b, *c;
  mmsb_bus_open(NULL, &bus);
  mmsb_region_create(bus, "in", N * 4, 0, &a);
  mmsb_region_create(bus, "sq", N * 4, 0, &b);
  mmsb_region_create(bus, "total", 4096, 0, &c);
  mmsb_mirror *ma, *mb;
  if (mmsb_mirror_create(a, 0, &ma) || mmsb_mirror_create(b, 0, &mb) ||
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
    if (mmsb_commit(bus, NULL)) { printf("FAIL commit: %s\n", mmsb_last_error()); return 1; }
    for (int i = 0; i < N; i++) bad += sq[i] != in[i] * in[i];
    bad += total[0] != (unsigned)want;
  }
  printf("gpu node: 20 epochs, %d mismatches, total %u\n", bad, total[0]);
  printf("%s\n", bad ? "FAIL" : "PASS");
  mmsb_bus_close(bus);
  return bad ? 1 : 0;
}
