// test_gpu.cu - a GPU node with a real kernel: it reads one mirror, writes
// another; its writes come back through the device diff as deltas, update
// the host region and feed a CPU node; with two GPUs or more, on the last
// one while the program keeps device 0, with commits from another thread.
// CUDA failures are statuses: a device the machine lacks, a mirror the
// device has no memory for (the bus and its other mirror go on), and, with
// the argument "fault" (a process of its own: the device is lost after it),
// a GPU node whose kernel writes where it must not.
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

// A device the machine does not have: MMSB_ENODEV, not the host backend;
// device -1 with MMSB_DEVICE unset: the host backend.
static int bad_device(int n) {
  mmsb_bus *bus;
  mmsb_region *a;
  mmsb_mirror *m = NULL, *h = NULL;
  mmsb_bus_open(NULL, &bus);
  mmsb_region_create(bus, "a", 4096, 0, &a);
  int rc = mmsb_mirror_create(a, n, &m);
  printf("mirror on device %d of %d: %s (%s)\n", n, n, mmsb_strerror(rc), mmsb_last_error());
  int bad = rc != MMSB_ENODEV || m || !strstr(mmsb_last_error(), "CUDA device");
  bad |= mmsb_mirror_create(a, -1, &h) != MMSB_OK || strcmp(mmsb_mirror_backend(h), "host");
  mmsb_bus_close(bus);
  return bad;
}

// A mirror the device has no memory for: MMSB_ENOMEM, and then the bus
// commits and its other mirror follows, three epochs, byte for byte.
static int short_of_memory(void) {
  enum { SMALL = 4 * 4096 };
  const size_t big_size = (size_t)2 << 30, leave = (size_t)1 << 30;
  mmsb_bus *bus;
  mmsb_region *a, *big;
  mmsb_mirror *ma, *mb = NULL;
  mmsb_bus_open(NULL, &bus);
  if (mmsb_region_create(bus, "a", SMALL, 0, &a) || mmsb_region_create(bus, "big", big_size, 0, &big) ||
      mmsb_mirror_create(a, 0, &ma)) {
    printf("FAIL: setup: %s\n", mmsb_last_error());
    return 1;
  }
  size_t free_b = 0, total_b = 0;
  void *hog = NULL;
  cudaMemGetInfo(&free_b, &total_b);
  if (free_b <= leave || cudaMalloc(&hog, free_b - leave) != cudaSuccess) {
    printf("FAIL: could not fill the device (%zu bytes free)\n", free_b);
    return 1;
  }
  int rc = mmsb_mirror_create(big, 0, &mb);
  printf("mirror of 2 GiB with 1 GiB free: %s (%s)\n", mmsb_strerror(rc), mmsb_last_error());
  int bad = rc != MMSB_ENOMEM || mb;
  unsigned char *d = (unsigned char *)mmsb_region_data(a), back[SMALL];
  for (int e = 1; e <= 3; e++) {
    d[e * 4000] = (unsigned char)e;
    mmsb_touch(&d[e * 4000], 1);
    mmsb_epoch_t got = 0;
    rc = mmsb_commit(bus, &got);
    if (!rc) rc = mmsb_mirror_wait(ma, got);
    if (!rc) rc = mmsb_mirror_download(ma, back);
    if (rc || memcmp(back, d, SMALL)) {
      printf("FAIL: epoch %d after the failed mirror: %s (%s)\n", e, mmsb_strerror(rc), mmsb_last_error());
      bad = 1;
    }
  }
  cudaFree(hog);
  mmsb_bus_close(bus);
  return bad;
}

__global__ void wild(unsigned *p) { p[threadIdx.x] = 1; }

static int launch_wild(void *ctx, void *stream, void *const *in, void *const *out) {
  (void)ctx;
  (void)in;
  (void)out;
  wild<<<1, 32, 0, (cudaStream_t)stream>>>((unsigned *)(uintptr_t)64); // no memory there
  return 0;
}

// A GPU node's kernel writes to an address that is not memory: the device
// is lost for this process (a sticky error), so commit fails with a status
// and detail, the epoch is not sealed, and every call after it returns a
// status too.
static int fault(void) {
  mmsb_bus *bus;
  mmsb_region *a, *b;
  mmsb_mirror *ma, *mb;
  mmsb_node *g;
  mmsb_bus_open(NULL, &bus);
  mmsb_region_create(bus, "in", 4096, 0, &a);
  mmsb_region_create(bus, "out", 4096, 0, &b);
  if (mmsb_mirror_create(a, 0, &ma) || mmsb_mirror_create(b, 0, &mb) ||
      mmsb_gpu_node_create(bus, "wild", launch_wild, NULL, &ma, 1, &mb, 1, &g)) {
    printf("FAIL: setup: %s\n", mmsb_last_error());
    return 1;
  }
  unsigned *in = (unsigned *)mmsb_region_data(a);
  in[0] = 1;
  mmsb_touch(in, 4);
  mmsb_epoch_t before = mmsb_epoch(bus);
  int rc = mmsb_commit(bus, NULL);
  printf("commit after a kernel's bad write: %s (%s)\n", mmsb_strerror(rc), mmsb_last_error());
  int bad = rc == MMSB_OK || mmsb_epoch(bus) != before || !strstr(mmsb_last_error(), "CUDA");
  in[1] = 2;
  mmsb_touch(in + 1, 4);
  rc = mmsb_commit(bus, NULL);
  printf("the next commit: %s (%s)\n", mmsb_strerror(rc), mmsb_last_error());
  bad |= rc == MMSB_OK || mmsb_epoch(bus) != before || !strstr(mmsb_last_error(), "CUDA");
  unsigned back[1024];
  rc = mmsb_mirror_download(mb, back);
  printf("download: %s\n", mmsb_strerror(rc));
  bad |= rc == MMSB_OK;
  printf("mirror destroy: %s\n", mmsb_strerror(mmsb_mirror_destroy(ma)));
  printf("bus close: %s\n", mmsb_strerror(mmsb_bus_close(bus)));
  printf("%s\n", bad ? "FAIL" : "PASS");
  return bad;
}

int main(int argc, char **argv) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    printf("no GPU: skipped\n");
    return 77;
  }
  if (argc > 1 && !strcmp(argv[1], "fault")) return fault();
  int bad = bad_device(n) | short_of_memory();
  bad |= run(0);
  if (n > 1) bad |= run(n - 1) | mixed_devices(n);
  else printf("one GPU: the node on another device than the program's not tried\n");
  printf("%s\n", bad ? "FAIL" : "PASS");
  return bad;
}
