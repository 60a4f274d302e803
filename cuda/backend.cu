// backend.cu - the CUDA backend of mirrors (runtime/device.h), C ABI.
//
// apply: a region's deltas of one epoch are copied into pinned staging
// memory (two buffers, used by alternate epochs, so packing epoch e+1
// overlaps the transfer and kernel of epoch e), sent with one
// cudaMemcpyAsync and applied by one launch: one block per delta, whole
// pages and runs copied cooperatively by the block's threads, with the
// same per-page code as the host backend (include/mmsb/page_apply.h).
// diff: one block per page compares the copy with its previous version
// granule by granule (warp ballots build the 512-bit mask), and dirty pages
// are compacted into an output array by an atomic counter; the host sorts
// them by page.
#include "device.h"
#include "mmsb/mmsb.h"
#include "mmsb/format.h"
#include "mmsb/page_apply.h"

#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

extern "C" int mmsb_fail(int status, const char *fmt, ...);

namespace {

struct Stage {
  uint8_t *host = nullptr, *dev = nullptr; // pinned / device
  size_t cap = 0;
  cudaEvent_t done = nullptr;
  uint64_t epoch = 0;
};

struct Stream {
  int device;
  cudaStream_t s;
  Stage stage[2];
  mmsb_dirty_page *dout = nullptr; // diff output
  size_t dout_cap = 0;             // pages
  unsigned *dcount = nullptr;
};

int cuda_err(cudaError_t e, const char *what) {
  if (e == cudaSuccess) return MMSB_OK;
  return mmsb_fail(e == cudaErrorMemoryAllocation ? MMSB_ENOMEM : MMSB_ENODEV, "CUDA %s: %s", what,
                   cudaGetErrorString(e));
}

// One delta, applied by the whole block.
__device__ void apply_delta(uint8_t *base, size_t size, const uint8_t *d) {
  mmsb_dhdr h;
  mmsb_dhdr_read(d, &h);
  uint8_t op = h.op, type = h.type;
  uint32_t nruns = h.nruns;
  uint8_t *pg = base + h.page * MMSB_PAGE_SIZE;
  uint32_t plen = mmsb_page_len(size, h.page);
  const uint8_t *b = d + MMSB_DELTA_HDR;
  if (h.form == MMSB_FORM_PAGE) { // 16 bytes a thread
    uint32_t n = h.body <= plen ? h.body : plen;
    for (uint32_t lo = threadIdx.x * 16; lo < n; lo += blockDim.x * 16) {
      uint32_t hi = lo + 16 < n ? lo + 16 : n;
      if (hi - lo == 16 && !(((uintptr_t)(b + lo)) & 15))
        *(uint4 *)(pg + lo) = *(const uint4 *)(b + lo);
      else
        mmsb_run_apply_part(pg, 0, b, lo, hi, 0, 0);
    }
    return; // uniform across the block: every thread returns here
  }
  // Runs: thread 0 finds where each run starts; the block shares them out.
  __shared__ uint32_t start[512];
  __shared__ uint32_t count;
  if (threadIdx.x == 0) {
    uint32_t at = 0, r = 0;
    for (; r < nruns && r < 512; r++) {
      start[r] = at;
      uint16_t len;
      memcpy(&len, b + at + 2, 2);
      at += 4u + len;
    }
    count = r;
  }
  __syncthreads();
  for (uint32_t r = threadIdx.x; r < count; r += blockDim.x) {
    uint16_t off, len;
    memcpy(&off, b + start[r], 2);
    memcpy(&len, b + start[r] + 2, 2);
    if (off + (size_t)len <= plen) mmsb_run_apply_part(pg, off, b + start[r] + 4, 0, len, op, type);
  }
}

// One block per page: the page's deltas (adjacent in offs) in order.
__global__ void apply_kernel(uint8_t *base, size_t size, const uint8_t *bytes,
                             const uint32_t *offs, const uint32_t *group) {
  for (uint32_t k = group[blockIdx.x]; k < group[blockIdx.x + 1]; k++) {
    apply_delta(base, size, bytes + offs[k]);
    __syncthreads();
  }
}

// One block of 64 threads per page; thread t looks at granules t, t+64, ...
__global__ void diff_kernel(uint8_t *cur, uint8_t *prev, size_t size, mmsb_dirty_page *out,
                            unsigned *count) {
  size_t page = blockIdx.x, start = page * MMSB_PAGE_SIZE;
  size_t plen = size - start < MMSB_PAGE_SIZE ? size - start : MMSB_PAGE_SIZE;
  __shared__ uint32_t half[8][2];
  __shared__ unsigned slot;
  unsigned t = threadIdx.x, warp = t >> 5, lane = t & 31;
  for (int j = 0; j < 8; j++) {
    size_t g = (size_t)j * 64 + t, a = g * 8;
    bool differs = false;
    if (a + 8 <= plen) {
      differs = *(const uint64_t *)(cur + start + a) != *(const uint64_t *)(prev + start + a);
    } else {
      for (size_t k = a; k < plen; k++) differs |= cur[start + k] != prev[start + k];
    }
    unsigned bits = __ballot_sync(0xffffffffu, differs);
    if (lane == 0) half[j][warp] = bits;
  }
  __syncthreads();
  bool any = false;
  for (int j = 0; j < 8; j++) any |= (half[j][0] | half[j][1]) != 0;
  if (!any) return;
  if (t == 0) slot = atomicAdd(count, 1u);
  __syncthreads();
  mmsb_dirty_page *o = out + slot;
  if (t < 8) o->mask[t] = (uint64_t)half[t][0] | ((uint64_t)half[t][1] << 32);
  if (t == 0) o->page = page;
  for (size_t a = t * 8; a < plen; a += 64 * 8) {
    size_t n = plen - a < 8 ? plen - a : 8;
    for (size_t k = 0; k < n; k++) {
      o->data[a + k] = cur[start + a + k];
      prev[start + a + k] = cur[start + a + k];
    }
  }
}

int c_open(int device, void **out) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0)
    return mmsb_fail(MMSB_ENODEV, "no CUDA device");
  if (device < 0 || device >= n) return mmsb_fail(MMSB_ENODEV, "CUDA device %d of %d", device, n);
  int rc = cuda_err(cudaSetDevice(device), "set device");
  if (rc) return rc;
  Stream *s = new Stream();
  s->device = device;
  rc = cuda_err(cudaStreamCreateWithFlags(&s->s, cudaStreamNonBlocking), "stream");
  for (int i = 0; i < 2 && !rc; i++)
    rc = cuda_err(cudaEventCreateWithFlags(&s->stage[i].done, cudaEventDisableTiming), "event");
  if (!rc) rc = cuda_err(cudaMalloc(&s->dcount, sizeof(unsigned)), "malloc");
  if (rc) {
    delete s;
    return rc;
  }
  *out = s;
  return MMSB_OK;
}

void c_close(void *p) {
  Stream *s = (Stream *)p;
  if (!s) return;
  cudaStreamSynchronize(s->s);
  for (auto &st : s->stage) {
    cudaFreeHost(st.host);
    cudaFree(st.dev);
    cudaEventDestroy(st.done);
  }
  cudaFree(s->dout);
  cudaFree(s->dcount);
  cudaStreamDestroy(s->s);
  delete s;
}

int c_alloc(size_t n, void **p) { return cuda_err(cudaMalloc(p, n ? n : 1), "malloc"); }
void c_free(void *p) { cudaFree(p); }

int c_upload(void *p, void *dst, const void *src, size_t n) {
  Stream *s = (Stream *)p;
  int rc = cuda_err(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, s->s), "upload");
  return rc ? rc : cuda_err(cudaStreamSynchronize(s->s), "upload");
}

int c_download(void *p, void *dst, const void *src, size_t n) {
  Stream *s = (Stream *)p;
  int rc = cuda_err(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, s->s), "download");
  return rc ? rc : cuda_err(cudaStreamSynchronize(s->s), "download");
}

int c_copy(void *p, void *dst, const void *src, size_t n) {
  Stream *s = (Stream *)p;
  return cuda_err(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, s->s), "copy");
}

int c_apply(void *p, void *dptr, size_t size, const uint8_t *bytes, size_t len,
            const uint32_t *offs, size_t n, uint64_t epoch) {
  Stream *s = (Stream *)p;
  Stage &st = s->stage[epoch & 1];
  int rc = cuda_err(cudaEventSynchronize(st.done), "staging"); // its last epoch is done
  // bytes | offs | group starts (one group per page)
  size_t olen = (len + 15) & ~(size_t)15, need = olen + (2 * n + 1) * sizeof(uint32_t);
  if (!rc && need > st.cap) {
    cudaFreeHost(st.host);
    cudaFree(st.dev);
    st.host = st.dev = nullptr;
    size_t cap = need + need / 2;
    rc = cuda_err(cudaHostAlloc(&st.host, cap, cudaHostAllocDefault), "pinned staging");
    if (!rc) rc = cuda_err(cudaMalloc(&st.dev, cap), "device staging");
    st.cap = rc ? 0 : cap;
  }
  if (rc) return rc;
  memcpy(st.host, bytes, len);
  memcpy(st.host + olen, offs, n * sizeof(uint32_t));
  uint32_t *group = (uint32_t *)(st.host + olen) + n, ng = 0;
  uint64_t last = UINT64_MAX;
  for (size_t i = 0; i < n; i++) {
    uint64_t pg;
    memcpy(&pg, bytes + offs[i] + 8, 8);
    if (pg != last) group[ng++] = (uint32_t)i;
    last = pg;
  }
  group[ng] = (uint32_t)n;
  need = olen + (n + ng + 1) * sizeof(uint32_t);
  rc = cuda_err(cudaMemcpyAsync(st.dev, st.host, need, cudaMemcpyHostToDevice, s->s), "send deltas");
  if (rc) return rc;
  apply_kernel<<<ng, 256, 0, s->s>>>((uint8_t *)dptr, size, st.dev, (const uint32_t *)(st.dev + olen),
                                     (const uint32_t *)(st.dev + olen) + n);
  rc = cuda_err(cudaGetLastError(), "apply kernel");
  if (!rc) rc = cuda_err(cudaEventRecord(st.done, s->s), "event");
  st.epoch = epoch;
  return rc;
}

int c_wait(void *p, uint64_t e) {
  (void)e; // the stream is in order: everything queued so far covers e
  Stream *s = (Stream *)p;
  return cuda_err(cudaStreamSynchronize(s->s), "wait");
}

int cmp_page(const void *a, const void *b) {
  uint64_t x = ((const mmsb_dirty_page *)a)->page, y = ((const mmsb_dirty_page *)b)->page;
  return x < y ? -1 : x > y;
}

int c_diff(void *p, void *cur, void *prev, size_t size, mmsb_dirty_page **out, size_t *n) {
  Stream *s = (Stream *)p;
  size_t np = (size + MMSB_PAGE_SIZE - 1) / MMSB_PAGE_SIZE;
  int rc = MMSB_OK;
  if (np > s->dout_cap) {
    cudaFree(s->dout);
    s->dout = nullptr;
    rc = cuda_err(cudaMalloc(&s->dout, np * sizeof(mmsb_dirty_page)), "diff buffer");
    s->dout_cap = rc ? 0 : np;
  }
  if (!rc) rc = cuda_err(cudaMemsetAsync(s->dcount, 0, sizeof(unsigned), s->s), "memset");
  if (rc) return rc;
  diff_kernel<<<(unsigned)np, 64, 0, s->s>>>((uint8_t *)cur, (uint8_t *)prev, size, s->dout, s->dcount);
  unsigned count = 0;
  rc = cuda_err(cudaGetLastError(), "diff kernel");
  if (!rc) rc = cuda_err(cudaMemcpyAsync(&count, s->dcount, sizeof count, cudaMemcpyDeviceToHost, s->s), "count");
  if (!rc) rc = cuda_err(cudaStreamSynchronize(s->s), "diff");
  if (rc) return rc;
  mmsb_dirty_page *h = (mmsb_dirty_page *)malloc(count ? count * sizeof *h : 1);
  if (!h) return mmsb_fail(MMSB_ENOMEM, "diff result");
  if (count) rc = c_download(s, h, s->dout, count * sizeof *h);
  if (rc) {
    free(h);
    return rc;
  }
  qsort(h, count, sizeof *h, cmp_page);
  *out = h;
  *n = count;
  return MMSB_OK;
}

void *c_native(void *p) { return ((Stream *)p)->s; }

const mmsb_dev_ops ops = {"cuda", c_open, c_close, c_alloc, c_free, c_upload,
                          c_download, c_copy, c_apply, c_wait, c_diff, c_native};

} // namespace

extern "C" const mmsb_dev_ops *mmsb_dev_cuda(void) { return &ops; }
