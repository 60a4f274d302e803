/*
 * page_apply.h - applying one encoded delta to one page, written once for
 * the host and for CUDA kernels (docs/format.md).  The host backend of
 * mirrors and the device kernels run this same code, so CI tests the
 * logic that runs on the GPU.
 *
 * Functions take the delta header fields already read and trust the body:
 * batches are validated (mmsb_batch_decode or the commit that made them)
 * before they are staged.
 */
#ifndef MMSB_PAGE_APPLY_H
#define MMSB_PAGE_APPLY_H

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define MMSB_HD __host__ __device__ __forceinline__
#else
#define MMSB_HD static inline
#endif

/* The fields of one encoded delta's header (docs/format.md). */
typedef struct mmsb_dhdr {
  uint8_t op, type, form;
  uint64_t page;
  uint32_t nruns, body;
} mmsb_dhdr;

MMSB_HD void mmsb_dhdr_read(const uint8_t *d, mmsb_dhdr *h) {
  h->op = d[4];
  h->type = d[5];
  h->form = d[6];
  memcpy(&h->page, d + 8, 8);
  memcpy(&h->nruns, d + 16, 4);
  memcpy(&h->body, d + 20, 4);
}

/* Bytes of page `page` in a region of `size` bytes (the last may be short). */
MMSB_HD uint32_t mmsb_page_len(size_t size, uint64_t page) {
  size_t left = size - (size_t)page * 4096;
  return left < 4096 ? (uint32_t)left : 4096u;
}

/* Floating-point ADD with the same bits on the host and the GPU (U: the
 * type's bits, INF: +infinity's bits, QUIET: the quiet bit).  The GPU's
 * add returns one canonical NaN, x86 keeps a NaN operand's payload (and
 * makes inf - inf its own negative NaN), so a mirror differed from its
 * region where an accumulation met a NaN.  Here a NaN operand (dst's
 * first) is kept, quieted, and a NaN made by the add is the positive
 * quiet NaN with no payload. */
#define MMSB_FADD(T, U, INF, QUIET)                                           \
  {                                                                           \
    U x, y;                                                                   \
    T a, b;                                                                   \
    memcpy(&x, dst, sizeof x);                                                \
    memcpy(&y, src, sizeof y);                                                \
    if ((U)(x << 1) > (U)((U)(INF) << 1)) {                                   \
      x |= (U)(QUIET);                                                        \
    } else if ((U)(y << 1) > (U)((U)(INF) << 1)) {                            \
      x = y | (U)(QUIET);                                                     \
    } else {                                                                  \
      memcpy(&a, &x, sizeof a);                                               \
      memcpy(&b, &y, sizeof b);                                               \
      a = (T)(a + b);                                                         \
      memcpy(&x, &a, sizeof x);                                               \
      if ((U)(x << 1) > (U)((U)(INF) << 1)) x = (U)(INF) | (U)(QUIET);        \
    }                                                                         \
    memcpy(dst, &x, sizeof x);                                                \
  }

/* dst[i] op= src[i] for one element of `type` (enum mmsb_type). */
MMSB_HD void mmsb_acc_elem(uint8_t *dst, const uint8_t *src, int op, int type) {
  if (op == 1 && type == 4) {
    MMSB_FADD(float, uint32_t, 0x7f800000u, 0x00400000u)
    return;
  }
  if (op == 1 && type == 5) {
    MMSB_FADD(double, uint64_t, 0x7ff0000000000000ull, 0x0008000000000000ull)
    return;
  }
#define MMSB_ACC_CASE(T)                                                      \
  {                                                                           \
    T a, b, r;                                                                \
    memcpy(&a, dst, sizeof(T));                                               \
    memcpy(&b, src, sizeof(T));                                               \
    switch (op) {                                                             \
    case 1: r = (T)(a + b); break;                                            \
    case 2: r = b < a ? b : a; break;                                         \
    case 3: r = b > a ? b : a; break;                                         \
    default: r = a; break;                                                    \
    }                                                                         \
    memcpy(dst, &r, sizeof(T));                                               \
  }
  if (type == 1 || type == 2 || type == 3) { /* integers: OR, XOR; i64 ADD wraps */
    if (op == 4 || op == 5 || (op == 1 && type == 3)) {
      if (type == 1) {
        uint32_t a, b;
        memcpy(&a, dst, 4);
        memcpy(&b, src, 4);
        a = op == 4 ? (a | b) : op == 5 ? (a ^ b) : a + b;
        memcpy(dst, &a, 4);
      } else {
        uint64_t a, b;
        memcpy(&a, dst, 8);
        memcpy(&b, src, 8);
        a = op == 4 ? (a | b) : op == 5 ? (a ^ b) : a + b;
        memcpy(dst, &a, 8);
      }
      return;
    }
  }
  switch (type) {
  case 1: MMSB_ACC_CASE(uint32_t) break;
  case 2: MMSB_ACC_CASE(uint64_t) break;
  case 3: MMSB_ACC_CASE(int64_t) break;
  case 4: MMSB_ACC_CASE(float) break;
  case 5: MMSB_ACC_CASE(double) break;
  default: break;
  }
#undef MMSB_ACC_CASE
}
#undef MMSB_FADD

MMSB_HD int mmsb_elem_size(int type) {
  return type == 1 || type == 4 ? 4 : type == 0 ? 1 : 8;
}

/* Applies bytes [lo, hi) of one run (offset off in the page) with `op`;
 * lo and hi are element-aligned.  A device thread calls it on its share. */
MMSB_HD void mmsb_run_apply_part(uint8_t *page, uint32_t off, const uint8_t *bytes,
                                 uint32_t lo, uint32_t hi, int op, int type) {
  if (op == 0) {
    for (uint32_t i = lo; i < hi; i++) page[off + i] = bytes[i];
    return;
  }
  uint32_t es = (uint32_t)mmsb_elem_size(type);
  for (uint32_t i = lo; i + es <= hi; i += es) mmsb_acc_elem(page + off + i, bytes + i, op, type);
}

/* Eight bytes from p, which is 4-aligned, and eight to p, 8-aligned.  Two
 * targets, one meaning: a device compiler, told nothing of alignment,
 * copies a memcpy byte by byte, so the device reads two words and stores
 * one; on the host memcpy is one unaligned-safe move and keeps C's
 * aliasing rules.  Little-endian both (x86-64 and NVIDIA GPUs). */
MMSB_HD uint64_t mmsb_load8_a4(const uint8_t *p) {
#ifdef __CUDA_ARCH__
  const uint32_t *w = (const uint32_t *)p;
  return (uint64_t)w[0] | (uint64_t)w[1] << 32;
#else
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
#endif
}

MMSB_HD void mmsb_store8_a8(uint8_t *p, uint64_t v) {
#ifdef __CUDA_ARCH__
  *(uint64_t *)p = v;
#else
  memcpy(p, &v, 8);
#endif
}

/* Applies a whole run of len bytes at offset off of the page.  An
 * assignment whose page offset is 8-aligned and whose bytes are 4-aligned
 * (the words a program stored; deltas are not padded, so a run after an
 * odd-length one is not) is copied eight bytes a store: byte by byte, an
 * 8-byte run was eight partial writes to one line of the mirror, and
 * bounded the GPU's apply kernel (docs/performance.md, tenth session).
 * Accumulations go element by element. */
MMSB_HD void mmsb_run_apply(uint8_t *page, uint32_t off, const uint8_t *bytes, uint32_t len,
                            int op, int type) {
  uint32_t i = 0;
  if (op == 0 && !((uintptr_t)(page + off) & 7) && !((uintptr_t)bytes & 3))
    for (; i + 8 <= len; i += 8) mmsb_store8_a8(page + off + i, mmsb_load8_a4(bytes + i));
  mmsb_run_apply_part(page, off, bytes, i, len, op, type);
}

#endif
