// backend.cu - the CUDA backend of mirrors (runtime/device.h), C ABI.
//
// apply: a region's deltas of one epoch get their 32-bit offsets (and,
// unless they are read from the bus's pinned batch, their bytes) in pinned
// staging memory (two buffers, used by alternate epochs, so packing epoch
// e+1 overlaps the transfer and kernel of epoch e; a stage is reused once a
// stream sync has covered its epoch: mirror_wait's, or its own at the
// reuse, which waits for epoch e+1 too but saves a cudaEventRecord per
// epoch, ~5 us of a 1e-5 epoch's ~130 on the H200's VM), are copied with
// cudaMemcpyAsync and applied by one launch: one warp per page (its deltas
// in order), whole pages and runs copied cooperatively by the lanes, with the
// same per-page code as the host backend (include/mmsb/page_apply.h).  When
// commit fills the epoch on several threads, the staging and the copies are
// made during the fill (c_stage_*), and apply only launches.
// A small batch is not copied at all (up to MMSB_ZERO_COPY bytes of
// staging, default ZERO_COPY_MAX, and a sparse one of one delta a page up
// to four times that: read_in_place): the staging is mapped pinned memory,
// and the kernel reads it over PCIe, each warp pulling its delta into
// shared memory with a few wide reads first, or, for a sparse epoch, 32
// deltas at once (apply_lanes_mapped_kernel); its bytes are read from the
// bus's pinned batch itself when they lie there (in_place), only their
// offsets staged, by apply or by the fill's pieces.  That saves the copy
// calls and the DMA's start, less the kernel's round trips: a few
// microseconds of a 1e-5 epoch's ~50-75 on the H200's VM, and ~12 of a
// 1e-4 epoch's ~190, where the commit got ~26 us shorter and the wait
// after it ~13 longer (docs/performance.md, thirteenth session).  With a
// warp a delta, reading a 1e-4 epoch in place shortened the commit but
// lengthened the wait by as much (MMSB_ZERO_COPY of 4 MB at 17:51, of 1 MiB
// at 17:56 and 00:00); a dense epoch's many warps' reads cost more than
// one DMA.
// diff: a first kernel counts each page's changed granules (one block per
// page, warp ballots); two exclusive prefix sums (CUB) over the counts give
// each changed page its slot and each changed granule its place; a second
// kernel, for changed pages only, writes the page's mask and its changed
// granules there and updates the previous version.  The host copies back
// the totals, then the masks and the changed granules only, into pinned
// buffers: in page order, with no sort and no per-page round trip.
#include "device.h"
#include "mmsb/mmsb.h"
#include "mmsb/format.h"
#include "mmsb/page_apply.h"

#include <cub/device/device_scan.cuh>
#include <cuda_runtime.h>
#include <atomic>
#include <new>
#include <stdlib.h>
#include <string.h>

extern "C" int mmsb_fail(int status, const char *fmt, ...);
extern "C" bool mmsb_env_number(const char *name, long long min, long long max, long long *out);
extern "C" uint64_t mmsb_lane_launches, mmsb_lane_mapped_launches; // runtime/internal.h: for the tests
extern "C" void mmsb_parallel_stage(void *dst, const void *src, size_t len, uint32_t *offs,
                                    const size_t *index, size_t base, size_t n, int threads);
extern "C" void mmsb_stage_copy(void *dst, const void *src, size_t len, uint32_t *offs,
                                const size_t *index, size_t base, size_t n);

namespace {

struct Stage {
  uint8_t *host = nullptr, *dev = nullptr; // pinned / device
  uint8_t *mapped = nullptr;               // host, as the device addresses it
  size_t cap = 0;
  uint64_t used = 0; // the number of the last work queued that reads it (Stream::queued)
  // Staged during the fill (c_stage_*): the epoch (0: none), its bytes and
  // deltas, and whether the kernel reads it in place.
  uint64_t staged = 0;
  size_t staged_len = 0, staged_n = 0;
  bool staged_mapped = false, staged_direct = false; // direct: bytes sent from the batch
  bool staged_inplace = false; // mapped, the bytes to be read from the pinned batch
};

struct Stream {
  int device;
  cudaStream_t s;
  Stage stage[2];
  uint64_t batch_used = 0; // the same, for work that reads the bus's (pinned) batch
  // Work that reads a stage or the batch is numbered once it is queued
  // (queued: the last number), and a stream sync covers every number
  // handed out before it began (done: the highest so covered).  The
  // committing thread queues and checks; any thread may wait
  // (mmsb_mirror_wait).  With flags that a wait cleared, a waiting thread
  // could clear the flag of work queued while it waited, and the next
  // commit would write a stage or the batch that a copy still read.
  std::atomic<uint64_t> queued{0}, done{0};
  bool uva = false;           // unified addressing: pinned host memory has one address
  // diff: per page counts and their prefix sums (np each), scan scratch
  uint32_t *gcount = nullptr, *pflag = nullptr, *goff = nullptr, *poff = nullptr;
  size_t np_cap = 0;
  void *scan_tmp = nullptr;
  size_t scan_cap = 0;
  uint64_t *totals = nullptr, *htotals = nullptr; // device / pinned: pages, granules
  mmsb_diff_page *dpages = nullptr, *hpages = nullptr;
  uint64_t *ddata = nullptr, *hdata = nullptr;
  size_t pages_cap = 0, data_cap = 0; // elements
};

// The number of work just queued on s (after the call that queued it: a
// wait that sees the number began after the work was on the stream).
uint64_t number(Stream *s) { return s->queued.fetch_add(1, std::memory_order_acq_rel) + 1; }

// Numbers the work just queued that reads stage st, and the batch too
// when it reads the batch.
void queued(Stream *s, Stage &st, bool reads_batch) {
  st.used = number(s);
  if (reads_batch) s->batch_used = st.used;
}

// Whether work numbered `used` may still run.
bool busy(const Stream *s, uint64_t used) { return used > s->done.load(std::memory_order_acquire); }

// Makes device d current; returns the device to restore (-1: none, it was
// d already).  Any thread may commit (pool threads and a program's own
// start on device 0), and a program's current device is its own business.
// cudaGetDevice reads the runtime's per-thread state, no driver call.
int use_device(int d) {
  int prev = -1;
  if (cudaGetDevice(&prev) != cudaSuccess) prev = -1;
  if (prev == d) return -1;
  cudaSetDevice(d); // a failure shows in the calls that follow
  return prev;
}

void restore_device(int prev) {
  if (prev >= 0) cudaSetDevice(prev);
}

// Device d current for the life of the guard, then the caller's again.
struct OnDevice {
  int prev;
  explicit OnDevice(int d) : prev(use_device(d)) {}
  ~OnDevice() { restore_device(prev); }
};

// A CUDA failure as a status.  The runtime also keeps a failure as the
// thread's "last error" until cudaGetLastError reads it, and the apply and
// diff launches are checked with cudaGetLastError: a mirror that could not
// get its memory made the next commit's apply on the same thread fail with
// that out-of-memory.  So the error is read here, once it is reported.
int cuda_err(cudaError_t e, const char *what) {
  if (e == cudaSuccess) return MMSB_OK;
  cudaGetLastError();
  return mmsb_fail(e == cudaErrorMemoryAllocation ? MMSB_ENOMEM : MMSB_ENODEV, "CUDA %s: %s", what,
                   cudaGetErrorString(e));
}

// A warp applies a page's deltas: most pages of a sparse epoch carry one or
// two runs of 8 bytes, so a block per page left most of its threads idle.
constexpr unsigned WARPS = 8;      // warps (pages) a block
constexpr uint32_t RUN_CHUNK = 64; // run starts a warp finds at a time

constexpr uint32_t NEAR = 256;     // bytes of a delta a warp pulls from host memory
constexpr uint32_t NEAR_FIRST = 64; // pulled before the header is read

// Delta `off` of staging `bytes` (mapped host memory whose first `blen`
// bytes may be read, blen a multiple of 4) copied into the warp's shared
// buffer buf by 4-byte reads, all of a round trip at once; returns where
// to parse it.  The header's fields, read one by one from host memory,
// were a PCIe round trip each.  A delta over NEAR bytes (whole pages:
// already read 16 bytes a lane) is read where it is.
__device__ const uint8_t *pull(const uint8_t *bytes, size_t blen, uint32_t off, uint32_t *buf) {
  unsigned lane = threadIdx.x & 31;
  size_t a0 = off & ~3u, lead = off - a0;
  const uint32_t *src = (const uint32_t *)(bytes + a0);
  if (lane < NEAR_FIRST / 4 && a0 + lane * 4 < blen) buf[lane] = src[lane];
  __syncwarp();
  const uint8_t *d = (const uint8_t *)buf + lead;
  uint32_t body;
  memcpy(&body, d + 20, 4);
  size_t need = lead + MMSB_DELTA_HDR + (size_t)body;
  if (need > NEAR) return bytes + off; // uniform across the warp
  for (uint32_t i = NEAR_FIRST / 4 + lane; i * 4 < need && a0 + i * 4 < blen; i += 32) buf[i] = src[i];
  __syncwarp();
  return d;
}

// One delta, applied by the calling warp; start: the warp's shared scratch.
__device__ void apply_delta(uint8_t *base, size_t size, const uint8_t *d, uint32_t *start) {
  unsigned lane = threadIdx.x & 31;
  mmsb_dhdr h;
  mmsb_dhdr_read(d, &h);
  uint8_t *pg = base + h.page * MMSB_PAGE_SIZE;
  uint32_t plen = mmsb_page_len(size, h.page);
  const uint8_t *b = d + MMSB_DELTA_HDR;
  if (h.form == MMSB_FORM_PAGE) { // 16 bytes a lane
    uint32_t n = h.body <= plen ? h.body : plen;
    for (uint32_t lo = lane * 16; lo < n; lo += 32 * 16) {
      uint32_t hi = lo + 16 < n ? lo + 16 : n;
      if (hi - lo == 16 && !(((uintptr_t)(b + lo)) & 15))
        *(uint4 *)(pg + lo) = *(const uint4 *)(b + lo);
      else
        mmsb_run_apply_part(pg, 0, b, lo, hi, 0, 0);
    }
    return; // uniform across the warp
  }
  // Runs: lane 0 finds where the next RUN_CHUNK runs start; the warp shares
  // them out (runs of one delta never overlap).
  uint32_t at = 0;
  for (uint32_t done = 0; done < h.nruns; done += RUN_CHUNK) {
    uint32_t cnt = h.nruns - done < RUN_CHUNK ? h.nruns - done : RUN_CHUNK;
    if (lane == 0)
      for (uint32_t r = 0; r < cnt; r++) {
        start[r] = at;
        uint16_t len;
        memcpy(&len, b + at + 2, 2);
        at += 4u + len;
      }
    at = __shfl_sync(0xffffffffu, at, 0);
    __syncwarp();
    for (uint32_t r = lane; r < cnt; r += 32) {
      uint16_t off, len;
      memcpy(&off, b + start[r], 2);
      memcpy(&len, b + start[r] + 2, 2);
      if (off + (size_t)len <= plen) mmsb_run_apply(pg, off, b + start[r] + 4, len, h.op, h.type);
    }
    __syncwarp();
  }
}

// A warp per page: the page's deltas (adjacent in offs) in order; group
// NULL: one delta a page.  mapped: bytes (blen of them) are host memory.
__global__ void apply_kernel(uint8_t *base, size_t size, const uint8_t *bytes, size_t blen,
                             bool mapped, const uint32_t *offs, const uint32_t *group,
                             uint32_t ngroups) {
  __shared__ uint32_t start[WARPS][RUN_CHUNK];
  __shared__ uint32_t near[WARPS][NEAR / 4];
  unsigned warp = threadIdx.x >> 5;
  size_t g = (size_t)blockIdx.x * WARPS + warp;
  if (g >= ngroups) return; // the whole warp
  uint32_t k0 = group ? group[g] : (uint32_t)g, k1 = group ? group[g + 1] : (uint32_t)g + 1;
  for (uint32_t k = k0; k < k1; k++) {
    uint32_t off = offs[k];
    apply_delta(base, size, mapped ? pull(bytes, blen, off, near[warp]) : bytes + off, start[warp]);
    __syncwarp();
  }
}

// Deltas of one run of at most LANE_RUN bytes are applied by a lane alone
// (apply_lanes_kernel) in epochs of LANE_AVG bytes a delta at most: a
// sparse epoch's deltas are nearly all one 8-byte run, and with a warp per
// delta a 1e-3 epoch of a GiB (134 217 deltas) took 13 119 blocks of
// warps with one lane at work, 41 us (ncu, H200); a lane each, 411 blocks
// and 33 us, and 17-20 with mmsb_run_apply's 8-byte stores.  Denser epochs
// (whole pages, many runs) keep a warp a delta: a lane's warp would apply
// them one after the other.
constexpr uint32_t LANE_RUN = 64, LANE_AVG = 64;

// The run of delta d, when it is one run of at most LANE_RUN bytes that
// the calling lane applies alone: true, and applied.  (Its bytes are in
// device or shared memory: read over PCIe field by field, each field would
// be a round trip.)
__device__ bool apply_one_run(uint8_t *base, size_t size, const uint8_t *d) {
  mmsb_dhdr h;
  mmsb_dhdr_read(d, &h);
  if (h.form == MMSB_FORM_PAGE || h.nruns != 1) return false;
  uint16_t off, len;
  memcpy(&off, d + MMSB_DELTA_HDR, 2);
  memcpy(&len, d + MMSB_DELTA_HDR + 2, 2);
  if (len > LANE_RUN) return false;
  if (off + (size_t)len <= mmsb_page_len(size, h.page))
    mmsb_run_apply(base + h.page * MMSB_PAGE_SIZE, off, d + MMSB_DELTA_HDR + 4, len, h.op, h.type);
  return true;
}

// Each lane's delta d (nullptr: none) applied by the lane alone when it is
// one short run, the others by the whole warp, one after the other, as
// apply_kernel does; start: the warp's shared scratch.
__device__ void apply_lane_or_warp(uint8_t *base, size_t size, const uint8_t *d, uint32_t *start) {
  bool done = !d || apply_one_run(base, size, d);
  for (unsigned left = __ballot_sync(0xffffffffu, !done); left; left &= left - 1) {
    int l = __ffs(left) - 1;
    const uint8_t *dl = (const uint8_t *)__shfl_sync(0xffffffffu, (unsigned long long)d, l);
    apply_delta(base, size, dl, start);
    __syncwarp();
  }
}

// One delta a page (no group array), from device memory: a warp takes 32
// deltas, a lane each; those one lane cannot apply (whole pages, several
// or long runs) the warp then applies together, one after the other, as
// apply_kernel does.  Deltas of different pages may go in any order.
__global__ void apply_lanes_kernel(uint8_t *base, size_t size, const uint8_t *bytes,
                                   const uint32_t *offs, uint32_t n) {
  __shared__ uint32_t start[WARPS][RUN_CHUNK];
  unsigned warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  size_t k = ((size_t)blockIdx.x * WARPS + warp) * 32 + lane;
  if ((k - lane) >= n) return; // the whole warp
  const uint8_t *d = k < n ? bytes + offs[k] : nullptr;
  apply_lane_or_warp(base, size, d, start[warp]);
}

// Sparse epochs read in place (mapped host memory): a warp takes 32 deltas,
// a lane each, as apply_lanes_kernel does, but first copies their bytes
// (adjacent in the batch: from the first one's offset to the next warp's)
// into shared memory with one round of 4-byte reads, 128 bytes a warp's
// load: two PCIe round trips a warp (offsets, then bytes).  apply_kernel's
// warp a delta pulls each delta by itself, and the 13 100 warps of a 1e-4
// epoch read over PCIe waited longer than one copy of its 0.5 MB took.  A
// warp whose deltas span more than SPAN bytes (a whole page among them)
// pulls them one after the other.
constexpr uint32_t SPAN = 4096, SPAN_WORDS_A_LANE = SPAN / 4 / 32;

__global__ void apply_lanes_mapped_kernel(uint8_t *base, size_t size, const uint8_t *bytes,
                                          size_t blen, const uint32_t *offs, uint32_t n) {
  __shared__ uint32_t start[WARPS][RUN_CHUNK];
  __shared__ uint32_t span[WARPS][SPAN / 4];
  unsigned warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  size_t k0 = ((size_t)blockIdx.x * WARPS + warp) * 32, k = k0 + lane;
  if (k0 >= n) return; // the whole warp
  uint32_t off = k < n ? offs[k] : 0;
  uint32_t end = k0 + 32 < n ? offs[k0 + 32] : (uint32_t)blen; // one read for the warp
  uint32_t a0 = __shfl_sync(0xffffffffu, off, 0) & ~3u, words = (end - a0 + 3) / 4;
  if (words > SPAN / 4) { // uniform across the warp
    uint32_t cnt = n - k0 < 32 ? (uint32_t)(n - k0) : 32;
    for (uint32_t j = 0; j < cnt; j++) {
      uint32_t o = __shfl_sync(0xffffffffu, off, j);
      apply_delta(base, size, pull(bytes, blen, o, span[warp]), start[warp]);
      __syncwarp();
    }
    return;
  }
  // All loads first, then the stores: each load waited for the store before
  // it would be a round trip each (blen is a multiple of 4, end <= blen).
  const uint32_t *src = (const uint32_t *)(bytes + a0);
  uint32_t w[SPAN_WORDS_A_LANE];
#pragma unroll
  for (uint32_t j = 0; j < SPAN_WORDS_A_LANE; j++)
    if (lane + 32 * j < words) w[j] = src[lane + 32 * j];
#pragma unroll
  for (uint32_t j = 0; j < SPAN_WORDS_A_LANE; j++)
    if (lane + 32 * j < words) span[warp][lane + 32 * j] = w[j];
  __syncwarp();
  const uint8_t *d = k < n ? (const uint8_t *)span[warp] + (off - a0) : nullptr;
  apply_lane_or_warp(base, size, d, start[warp]);
}

// The 512 changed-granule bits of one page, by a block of 64 threads
// (thread t looks at granules t, t+64, ...): bits[j][w] holds granules
// j*64 + w*32 .. +31.  Bytes past the region's end compare equal.
__device__ void page_mask(const uint8_t *cur, const uint8_t *prev, size_t start, size_t plen,
                          uint32_t bits[8][2]) {
  unsigned t = threadIdx.x, warp = t >> 5, lane = t & 31;
  for (int j = 0; j < 8; j++) {
    size_t a = ((size_t)j * 64 + t) * 8;
    bool differs = false;
    if (a + 8 <= plen)
      differs = *(const uint64_t *)(cur + start + a) != *(const uint64_t *)(prev + start + a);
    else
      for (size_t k = a; k < plen; k++) differs |= cur[start + k] != prev[start + k];
    unsigned b = __ballot_sync(0xffffffffu, differs);
    if (lane == 0) bits[j][warp] = b;
  }
  __syncthreads();
}

// Pass 1: each page's number of changed granules, and whether it changed.
__global__ void diff_count(const uint8_t *cur, const uint8_t *prev, size_t size,
                           uint32_t *gcount, uint32_t *pflag) {
  __shared__ uint32_t bits[8][2];
  size_t page = blockIdx.x, start = page * MMSB_PAGE_SIZE;
  page_mask(cur, prev, start, mmsb_page_len(size, page), bits);
  if (threadIdx.x == 0) {
    uint32_t n = 0;
    for (int j = 0; j < 8; j++) n += __popc(bits[j][0]) + __popc(bits[j][1]);
    gcount[page] = n;
    pflag[page] = n != 0;
  }
}

// The totals after the scans: changed pages and changed granules.
__global__ void diff_totals(const uint32_t *gcount, const uint32_t *pflag, const uint32_t *goff,
                            const uint32_t *poff, size_t np, uint64_t *totals) {
  totals[0] = (uint64_t)poff[np - 1] + pflag[np - 1];
  totals[1] = (uint64_t)goff[np - 1] + gcount[np - 1];
}

// Pass 2, changed pages only: the mask at the page's slot, the changed
// granules at their places, and prev updated.
__global__ void diff_emit(const uint8_t *cur, uint8_t *prev, size_t size, const uint32_t *gcount,
                          const uint32_t *goff, const uint32_t *poff, mmsb_diff_page *pages,
                          uint64_t *data) {
  size_t page = blockIdx.x, start = page * MMSB_PAGE_SIZE;
  if (gcount[page] == 0) return; // uniform across the block
  __shared__ uint32_t bits[8][2];
  size_t plen = mmsb_page_len(size, page);
  page_mask(cur, prev, start, plen, bits);
  unsigned t = threadIdx.x;
  mmsb_diff_page *o = pages + poff[page];
  if (t < 8) o->mask[t] = (uint64_t)bits[t][0] | ((uint64_t)bits[t][1] << 32);
  if (t == 0) o->page = page;
  uint32_t before = 0; // changed granules of this page before word j
  for (int j = 0; j < 8; j++) {
    uint64_t word = (uint64_t)bits[j][0] | ((uint64_t)bits[j][1] << 32);
    if (word >> t & 1) {
      size_t a = ((size_t)j * 64 + t) * 8;
      uint64_t *dst = data + goff[page] + before + __popcll(word & ((1ull << t) - 1));
      if (a + 8 <= plen) {
        *dst = *(const uint64_t *)(cur + start + a);
        *(uint64_t *)(prev + start + a) = *dst;
      } else { // the region's last bytes
        uint64_t v = 0;
        for (size_t k = a; k < plen; k++) {
          v |= (uint64_t)cur[start + k] << (8 * (k - a));
          prev[start + k] = cur[start + k];
        }
        *dst = v;
      }
    }
    before += __popcll(word);
  }
}

// Staging bytes up to which batches are read in place (MMSB_ZERO_COPY;
// 0: always copied).
constexpr size_t ZERO_COPY_MAX = 256 << 10;

size_t zero_copy_max() {
  static size_t v = [] {
    long long n;
    return mmsb_env_number("MMSB_ZERO_COPY", 0, 1LL << 40, &n) ? (size_t)n : ZERO_COPY_MAX;
  }();
  return v;
}

// Whether an epoch's staging (need bytes; its deltas len bytes, n of them,
// one a page) is read in place: up to MMSB_ZERO_COPY bytes, and a sparse
// one (LANE_AVG bytes a delta at most, which apply_lanes_mapped_kernel
// reads a warp's at once) up to four times that: a 1e-4 epoch of a GiB.
bool read_in_place(size_t len, size_t n, size_t need) {
  size_t zc = zero_copy_max();
  return need <= zc || (len <= n * LANE_AVG && need / 4 < zc);
}

// How many CUDA devices the process can use (0 without a driver or GPU).
int c_devices(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError(); // no driver: not an error of the calls that follow
    return 0;
  }
  return n;
}

void c_close(void *p);

int c_open(int device, void **out) {
  int n = c_devices();
  if (device < 0 || device >= n)
    return mmsb_fail(MMSB_ENODEV, "CUDA device %d: the machine has %d", device, n);
  OnDevice on(device);
  Stream *s = new (std::nothrow) Stream();
  if (!s) return mmsb_fail(MMSB_ENOMEM, "mirror stream");
  s->device = device;
  int rc = cuda_err(cudaStreamCreateWithFlags(&s->s, cudaStreamNonBlocking), "stream");
  int uva = 0;
  if (!rc) rc = cuda_err(cudaDeviceGetAttribute(&uva, cudaDevAttrUnifiedAddressing, device), "attribute");
  s->uva = uva != 0;
  if (!rc) rc = cuda_err(cudaMalloc(&s->totals, 2 * sizeof(uint64_t)), "malloc");
  if (!rc) rc = cuda_err(cudaHostAlloc(&s->htotals, 2 * sizeof(uint64_t), cudaHostAllocDefault), "pinned");
  if (rc) {
    c_close(s); // what was made before the failure
    return rc;
  }
  *out = s;
  return MMSB_OK;
}

void c_close(void *p) {
  Stream *s = (Stream *)p;
  if (!s) return;
  OnDevice on(s->device);
  if (s->s) cudaStreamSynchronize(s->s);
  for (auto &st : s->stage) {
    cudaFreeHost(st.host);
    cudaFree(st.dev);
  }
  for (uint32_t *p : {s->gcount, s->pflag, s->goff, s->poff}) cudaFree(p);
  cudaFree(s->scan_tmp);
  cudaFree(s->totals);
  cudaFree(s->dpages);
  cudaFree(s->ddata);
  cudaFreeHost(s->htotals);
  cudaFreeHost(s->hpages);
  cudaFreeHost(s->hdata);
  if (s->s) cudaStreamDestroy(s->s);
  cudaGetLastError(); // a broken device's failures here are not the next call's
  delete s;
}

int c_alloc(void *p, size_t n, void **dptr) {
  OnDevice on(((Stream *)p)->device);
  return cuda_err(cudaMalloc(dptr, n ? n : 1), "malloc");
}

void c_free(void *p, void *dptr) {
  OnDevice on(((Stream *)p)->device);
  cudaFree(dptr);
}

// A copy on the stream, waited for.
int copy_sync(Stream *s, void *dst, const void *src, size_t n, cudaMemcpyKind kind,
              const char *what) {
  OnDevice on(s->device);
  int rc = cuda_err(cudaMemcpyAsync(dst, src, n, kind, s->s), what);
  return rc ? rc : cuda_err(cudaStreamSynchronize(s->s), what);
}

int c_upload(void *p, void *dst, const void *src, size_t n) {
  return copy_sync((Stream *)p, dst, src, n, cudaMemcpyHostToDevice, "upload");
}

int c_download(void *p, void *dst, const void *src, size_t n) {
  return copy_sync((Stream *)p, dst, src, n, cudaMemcpyDeviceToHost, "download");
}

int c_copy(void *p, void *dst, const void *src, size_t n) {
  Stream *s = (Stream *)p;
  OnDevice on(s->device);
  return cuda_err(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, s->s), "copy");
}

int c_wait(void *p, uint64_t e) {
  (void)e; // the stream is in order: everything queued so far covers e
  Stream *s = (Stream *)p;
  OnDevice on(s->device);
  uint64_t q = s->queued.load(std::memory_order_acquire);
  int rc = cuda_err(cudaStreamSynchronize(s->s), "wait");
  uint64_t d = s->done.load(std::memory_order_relaxed);
  while (!rc && d < q && !s->done.compare_exchange_weak(d, q, std::memory_order_acq_rel)) {
  } // everything numbered up to q is done
  return rc;
}

// Before the batch is written again: its copies must be done (in a
// program that waits for its mirrors, they are, and this costs nothing).
int c_settle(void *p) {
  Stream *s = (Stream *)p;
  return busy(s, s->batch_used) ? c_wait(p, 0) : MMSB_OK;
}

// The bus's batch in pinned memory (device.h, mmsb_mem): apply copies a
// region's deltas straight from it instead of into staging first (at 1e-3
// of a GiB that copy took 97 us of the commit on the H200's VM), and the
// fill stages only their offsets; a small epoch's kernel reads the bytes
// from it in place (in_place).  Portable and mapped: any device may copy
// or read from it.
void *pinned_alloc(size_t n) {
  void *p = nullptr;
  if (cudaHostAlloc(&p, n, cudaHostAllocPortable | cudaHostAllocMapped) != cudaSuccess) {
    cudaGetLastError(); // not sticky: the batch stays in malloc's memory
    return nullptr;
  }
  return p;
}

// A batch grows while its epoch's copies may still be in flight (derived
// deltas added after the fill sent the collected ones): every device is
// synchronized first.  Rare: a batch keeps its capacity.
void pinned_release(void *p) {
  int n = 0, cur = -1;
  cudaGetDevice(&cur);
  if (cudaGetDeviceCount(&n) == cudaSuccess)
    for (int d = 0; d < n; d++) {
      cudaSetDevice(d);
      cudaDeviceSynchronize();
    }
  if (cur >= 0) cudaSetDevice(cur);
  cudaFreeHost(p);
}

const mmsb_mem pinned_mem = {pinned_alloc, pinned_release};

// Stage st, for epoch `epoch`, with room for `need` bytes: its last epoch
// must be done with it (c_wait saw to that, or this does).
int stage_reserve(Stream *s, Stage &st, uint64_t epoch, size_t need) {
  int rc = busy(s, st.used) ? c_wait(s, epoch) : MMSB_OK;
  if (rc || need <= st.cap) return rc;
  cudaFreeHost(st.host);
  cudaFree(st.dev);
  st.host = st.dev = st.mapped = nullptr;
  size_t cap = need + need / 2;
  rc = cuda_err(cudaHostAlloc(&st.host, cap, cudaHostAllocMapped), "pinned staging");
  if (!rc) rc = cuda_err(cudaHostGetDevicePointer((void **)&st.mapped, st.host, 0), "mapped staging");
  if (!rc) rc = cuda_err(cudaMalloc(&st.dev, cap), "device staging");
  st.cap = rc ? 0 : cap;
  return rc;
}

// The apply kernel over n deltas: their bytes (blen of them, host memory
// when mapped), their offsets, and ng + 1 group starts unless group is
// NULL (one delta a page).  st: the stage that holds the offsets.
int launch(Stream *s, Stage &st, const uint8_t *bytes, size_t blen, bool mapped, void *dptr,
           size_t size, const uint32_t *offs, const uint32_t *group, uint32_t ng) {
  if (!group && blen <= (size_t)ng * LANE_AVG) {
    uint32_t blocks = (ng + WARPS * 32 - 1) / (WARPS * 32);
    if (mapped)
      apply_lanes_mapped_kernel<<<blocks, WARPS * 32, 0, s->s>>>((uint8_t *)dptr, size, bytes,
                                                                 blen, offs, ng);
    else
      apply_lanes_kernel<<<blocks, WARPS * 32, 0, s->s>>>((uint8_t *)dptr, size, bytes, offs, ng);
    __atomic_fetch_add(&mmsb_lane_launches, 1, __ATOMIC_RELAXED);
    if (mapped) __atomic_fetch_add(&mmsb_lane_mapped_launches, 1, __ATOMIC_RELAXED);
  } else {
    apply_kernel<<<(ng + WARPS - 1) / WARPS, WARPS * 32, 0, s->s>>>((uint8_t *)dptr, size, bytes,
                                                                    blen, mapped, offs, group, ng);
  }
  int rc = cuda_err(cudaGetLastError(), "apply kernel");
  queued(s, st, false); // the kernel reads the stage (host memory when mapped)
  return rc;
}

// The stage's bytes and offsets as the kernel addresses them.
int launch_stage(Stream *s, Stage &st, bool mapped, void *dptr, size_t size, size_t len, size_t n,
                 uint32_t ng, bool one_per_page) {
  size_t olen = mmsb_stage_offs_at(len);
  const uint8_t *src = mapped ? st.mapped : st.dev;
  const uint32_t *offs = (const uint32_t *)(src + olen);
  return launch(s, st, src, olen, mapped, dptr, size, offs, one_per_page ? nullptr : offs + n, ng);
}

// Whether the kernel may read a small epoch's bytes where they are, in the
// bus's pinned batch: with unified addressing the batch's host pointer is
// its device pointer too, and pull() reads 4-byte words, so the bytes
// must start 4-aligned and end on a word.  Saves copying them to staging
// (48 KB at 1e-5 of a GiB).
bool in_place(const Stream *s, bool pinned, const uint8_t *bytes, size_t len) {
  return pinned && s->uva && !((uintptr_t)bytes & 3) && !(len & 3);
}

// The kernel reading the bytes in place from the pinned batch (in_place)
// and their offsets (then group starts unless one_per_page) from mapped
// stage st: the next commit waits for it before writing the batch.
int launch_in_place(Stream *s, Stage &st, const uint8_t *bytes, size_t len, void *dptr,
                    size_t size, size_t n, uint32_t ng, bool one_per_page) {
  const uint32_t *offs = (const uint32_t *)(st.mapped + mmsb_stage_offs_at(len));
  int rc = launch(s, st, bytes, len, true, dptr, size, offs, one_per_page ? nullptr : offs + n, ng);
  s->batch_used = st.used;
  return rc;
}

// Apply of an epoch the fill staged (and sent): c_stage_*.
int apply_staged(Stream *s, Stage &st, void *dptr, size_t size, const uint8_t *bytes, size_t len,
                 size_t n, bool one_per_page, uint64_t epoch, bool pinned) {
  if (st.staged != epoch || st.staged_len != len || st.staged_n != n || !one_per_page)
    return mmsb_fail(MMSB_EINVAL, "epoch %llu was not staged", (unsigned long long)epoch);
  st.staged = 0;
  if (st.staged_inplace) { // the pieces staged offsets only
    if (in_place(s, pinned, bytes, len))
      return launch_in_place(s, st, bytes, len, dptr, size, n, (uint32_t)n, true);
    memcpy(st.host, bytes, len); // not aligned for the kernel's reads: staged after all
  }
  return launch_stage(s, st, st.staged_mapped, dptr, size, len, n, (uint32_t)n, true);
}

int c_apply(void *p, void *dptr, size_t size, const uint8_t *bytes, size_t len,
            const size_t *index, size_t base, size_t n, bool one_per_page, uint64_t epoch,
            int threads, bool staged, bool pinned) {
  Stream *s = (Stream *)p;
  OnDevice on(s->device);
  Stage &st = s->stage[epoch & 1];
  if (staged) return apply_staged(s, st, dptr, size, bytes, len, n, one_per_page, epoch, pinned);
  st.staged = 0;
  // bytes | offs | group starts (one group per page).  Read in place when
  // small (from the pinned batch itself when it can be); else copied, the
  // bytes straight from a pinned batch (direct).
  size_t olen = mmsb_stage_offs_at(len), most = olen + (2 * n + 1) * sizeof(uint32_t);
  bool mapped = one_per_page ? read_in_place(len, n, olen + n * sizeof(uint32_t))
                             : most <= zero_copy_max();
  bool direct = pinned && !mapped, inplace = mapped && in_place(s, pinned, bytes, len);
  int rc = stage_reserve(s, st, epoch, most);
  if (rc) return rc;
  uint32_t *offs = (uint32_t *)(st.host + olen);
  mmsb_parallel_stage(st.host, bytes, direct || inplace ? 0 : len, offs, index, base, n, threads);
  uint32_t *group = offs + n, ng = 0;
  uint64_t last = UINT64_MAX;
  for (size_t i = 0; i < n && !one_per_page; i++) { // one page, one group
    uint64_t pg;
    memcpy(&pg, bytes + offs[i] + 8, 8);
    if (pg != last) group[ng++] = (uint32_t)i;
    last = pg;
  }
  if (one_per_page) ng = (uint32_t)n; // groups of one: the kernel needs no group array
  else group[ng] = (uint32_t)n;
  if (inplace) return launch_in_place(s, st, bytes, len, dptr, size, n, ng, one_per_page);
  size_t need = olen + (n + (one_per_page ? 0 : ng + 1)) * sizeof(uint32_t), from = direct ? olen : 0;
  if (!mapped) {
    if (direct)
      rc = cuda_err(cudaMemcpyAsync(st.dev, bytes, len, cudaMemcpyHostToDevice, s->s), "send deltas");
    if (!rc)
      rc = cuda_err(cudaMemcpyAsync(st.dev + from, st.host + from, need - from, cudaMemcpyHostToDevice,
                                    s->s), "send offsets");
    queued(s, st, direct); // the copies read st.host (and the batch when direct)
  }
  return rc ? rc : launch_stage(s, st, mapped, dptr, size, len, n, ng, one_per_page);
}

// Staging during the fill (device.h): the stage of the epoch, laid out as
// c_apply lays it out; read in place when small enough, as there.
int c_stage_begin(void *p, uint64_t epoch, size_t len, size_t n, bool pinned) {
  Stream *s = (Stream *)p;
  OnDevice on(s->device);
  Stage &st = s->stage[epoch & 1];
  st.staged = 0;
  size_t need = mmsb_stage_offs_at(len) + n * sizeof(uint32_t);
  int rc = stage_reserve(s, st, epoch, need);
  if (rc) return rc;
  st.staged = epoch;
  st.staged_len = len;
  st.staged_n = n;
  st.staged_mapped = read_in_place(len, n, need);
  st.staged_direct = pinned && !st.staged_mapped; // pieces: their offsets only
  st.staged_inplace = pinned && st.staged_mapped && s->uva; // so too
  return MMSB_OK; // the sends number their copies
}

void c_stage_piece(void *p, uint64_t epoch, const uint8_t *src, size_t at, size_t len,
                   const size_t *index, size_t base, size_t d, size_t nd) {
  Stage &st = ((Stream *)p)->stage[epoch & 1];
  mmsb_stage_copy(st.host + at, src, st.staged_direct || st.staged_inplace ? 0 : len,
                  (uint32_t *)(st.host + mmsb_stage_offs_at(st.staged_len)) + d, index, base, nd);
}

int c_stage_send(void *p, uint64_t epoch, const uint8_t *src, size_t at, size_t len, size_t d,
                 size_t nd) {
  Stream *s = (Stream *)p;
  Stage &st = s->stage[epoch & 1];
  if (st.staged_mapped) return MMSB_OK; // the kernel reads it in place
  OnDevice on(s->device);
  size_t o = mmsb_stage_offs_at(st.staged_len) + d * sizeof(uint32_t);
  int rc = cuda_err(cudaMemcpyAsync(st.dev + at, st.staged_direct ? src : st.host + at, len,
                                    cudaMemcpyHostToDevice, s->s), "send deltas");
  if (!rc)
    rc = cuda_err(cudaMemcpyAsync(st.dev + o, st.host + o, nd * sizeof(uint32_t),
                                  cudaMemcpyHostToDevice, s->s), "send offsets");
  queued(s, st, st.staged_direct); // they read st.host (and the batch when direct)
  return rc;
}

// Grows a device buffer and its pinned host twin to n elements of T.
template <class T> int grow_pair(T **dev, T **host, size_t *cap, size_t n) {
  if (n <= *cap) return MMSB_OK;
  cudaFree(*dev);
  cudaFreeHost(*host);
  *dev = *host = nullptr;
  *cap = 0;
  size_t c = n + n / 2;
  int rc = cuda_err(cudaMalloc(dev, c * sizeof(T)), "diff buffer");
  if (!rc) rc = cuda_err(cudaHostAlloc(host, c * sizeof(T), cudaHostAllocDefault), "diff buffer");
  if (!rc) *cap = c;
  return rc;
}

// The per-page arrays and the scan's scratch for np pages.
int diff_setup(Stream *s, size_t np) {
  // Offsets are 32-bit granule counts (and CUB takes an int count): a diff
  // covers up to 2^32 granules, 32 GiB.
  if (np > (size_t)UINT32_MAX / (MMSB_PAGE_SIZE / 8))
    return mmsb_fail(MMSB_EINVAL, "diff of %zu pages: over the 32 GiB a diff covers", np);
  int rc = MMSB_OK;
  if (np > s->np_cap) {
    for (uint32_t **p : {&s->gcount, &s->pflag, &s->goff, &s->poff}) {
      cudaFree(*p);
      *p = nullptr;
    }
    s->np_cap = 0;
    for (uint32_t **p : {&s->gcount, &s->pflag, &s->goff, &s->poff})
      if (!rc) rc = cuda_err(cudaMalloc(p, np * sizeof(uint32_t)), "diff counts");
    if (rc) return rc;
    s->np_cap = np;
  }
  size_t need = 0;
  rc = cuda_err(cub::DeviceScan::ExclusiveSum(nullptr, need, s->gcount, s->goff, (int)np, s->s), "scan");
  if (!rc && need > s->scan_cap) {
    cudaFree(s->scan_tmp);
    s->scan_cap = 0;
    rc = cuda_err(cudaMalloc(&s->scan_tmp, need), "scan scratch");
    if (!rc) s->scan_cap = need;
  }
  return rc;
}

int c_diff(void *p, void *cur, void *prev, size_t size, mmsb_diff *out) {
  Stream *s = (Stream *)p;
  OnDevice on(s->device);
  size_t np = (size + MMSB_PAGE_SIZE - 1) / MMSB_PAGE_SIZE;
  *out = mmsb_diff{nullptr, 0, nullptr, 0};
  if (np == 0) return MMSB_OK;
  int rc = diff_setup(s, np);
  if (rc) return rc;
  diff_count<<<(unsigned)np, 64, 0, s->s>>>((const uint8_t *)cur, (const uint8_t *)prev, size,
                                             s->gcount, s->pflag);
  size_t tmp = s->scan_cap;
  rc = cuda_err(cub::DeviceScan::ExclusiveSum(s->scan_tmp, tmp, s->gcount, s->goff, (int)np, s->s), "scan");
  if (!rc) rc = cuda_err(cub::DeviceScan::ExclusiveSum(s->scan_tmp, tmp, s->pflag, s->poff, (int)np, s->s), "scan");
  if (rc) return rc;
  diff_totals<<<1, 1, 0, s->s>>>(s->gcount, s->pflag, s->goff, s->poff, np, s->totals);
  rc = cuda_err(cudaMemcpyAsync(s->htotals, s->totals, 2 * sizeof(uint64_t), cudaMemcpyDeviceToHost, s->s), "totals");
  if (!rc) rc = cuda_err(cudaStreamSynchronize(s->s), "diff");
  if (rc) return rc;
  size_t npages = s->htotals[0], ngran = s->htotals[1];
  if (npages == 0) return MMSB_OK;
  rc = grow_pair(&s->dpages, &s->hpages, &s->pages_cap, npages);
  if (!rc) rc = grow_pair(&s->ddata, &s->hdata, &s->data_cap, ngran);
  if (rc) return rc;
  diff_emit<<<(unsigned)np, 64, 0, s->s>>>((const uint8_t *)cur, (uint8_t *)prev, size, s->gcount,
                                            s->goff, s->poff, s->dpages, s->ddata);
  rc = cuda_err(cudaGetLastError(), "diff kernels");
  if (!rc) rc = cuda_err(cudaMemcpyAsync(s->hpages, s->dpages, npages * sizeof(mmsb_diff_page),
                                         cudaMemcpyDeviceToHost, s->s), "diff pages");
  if (!rc) rc = cuda_err(cudaMemcpyAsync(s->hdata, s->ddata, ngran * sizeof(uint64_t),
                                         cudaMemcpyDeviceToHost, s->s), "diff data");
  if (!rc) rc = cuda_err(cudaStreamSynchronize(s->s), "diff");
  if (rc) return rc;
  *out = mmsb_diff{s->hpages, npages, s->hdata, ngran};
  return MMSB_OK;
}

void *c_native(void *p) { return ((Stream *)p)->s; }

int c_enter(void *p) { return use_device(((Stream *)p)->device); }

const mmsb_dev_ops ops = {"cuda",        c_open,        c_close,     c_alloc,  c_free,
                          c_upload,      c_download,    c_copy,      c_apply,  c_wait,
                          c_diff,        c_native,      c_enter,     restore_device,
                          c_stage_begin, c_stage_piece, c_stage_send, &pinned_mem,
                          c_settle,      c_devices};

} // namespace

extern "C" const mmsb_dev_ops *mmsb_dev_cuda(void) { return &ops; }
