/*
 * device.h - the backend interface of device mirrors: the host backend
 * (device_host.c) and the CUDA backend (cuda/backend.cu) implement it.
 */
#ifndef MMSB_DEVICE_H
#define MMSB_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Where a staged epoch's 32-bit offsets start: after its len bytes,
 * 16-aligned.  The layout of both backends' staging (bytes, then offsets),
 * so that the host backend applies what it staged as the kernel reads it. */
static inline size_t mmsb_stage_offs_at(size_t len) { return (len + 15) & ~(size_t)15; }

/* Where a buffer's memory comes from (mmsb_buf; NULL: malloc, realloc,
 * free).  The bus's batch takes the CUDA backend's pinned memory once the
 * bus has a CUDA mirror (mirror.c), so the GPU copies deltas straight from
 * the batch. */
typedef struct mmsb_mem {
  void *(*alloc)(size_t n); /* NULL when short */
  void (*release)(void *p);
} mmsb_mem;

/* What a diff found changed: each changed page's index and 512 granule
 * bits, and the new bytes of the changed granules only, page after page, in
 * granule order (popcount(mask) granules of 8 bytes for each page; bytes of
 * a last granule past the region's end are 0).  The backend owns the
 * arrays; they stay valid until the next diff or close on that stream. */
typedef struct mmsb_diff_page {
  uint64_t page;
  uint64_t mask[8];
} mmsb_diff_page;
typedef struct mmsb_diff {
  const mmsb_diff_page *pages;
  size_t npages;
  const uint64_t *data;
  size_t ngran;
} mmsb_diff;

typedef struct mmsb_dev_ops {
  const char *name;
  /* Makes a stream (and what the backend keeps per mirror) on device d. */
  int (*open)(int device, void **stream);
  void (*close)(void *stream);
  int (*alloc)(void *stream, size_t n, void **dptr); /* on the stream's device */
  void (*free)(void *stream, void *dptr);
  int (*upload)(void *stream, void *dptr, const void *src, size_t n);
  int (*download)(void *stream, void *dst, const void *dptr, size_t n);
  int (*copy)(void *stream, void *dst, const void *src, size_t n);
  /* Applies `n` deltas to the copy at dptr of a region of `size` bytes, in
   * order: delta i starts at bytes + (index[i] - base), inside bytes[0,
   * len) (index: offsets in the batch, such as the batch's own index, and
   * base: where bytes starts in it).  index is sorted by page (stably), and
   * deltas of one page are applied one after the other (an accumulation
   * after the ASSIGN it follows); one_per_page: no two deltas share a page.
   * Asynchronous on the stream; the host work (packing into staging) may
   * use up to `threads` threads of the runtime's pool.  staged: these very
   * deltas (len bytes, n of them, one a page) were staged for this epoch by
   * stage_begin, stage_piece and stage_send; apply only launches.  pinned:
   * bytes are host_mem's memory, and may be copied to the device from
   * where they are, until settle. */
  int (*apply)(void *stream, void *dptr, size_t size, const uint8_t *bytes, size_t len,
               const size_t *index, size_t base, size_t n, bool one_per_page, uint64_t epoch,
               int threads, bool staged, bool pinned);
  /* Blocks until the work queued up to epoch e is done. */
  int (*wait)(void *stream, uint64_t epoch);
  /* Compares cur with prev (size bytes), fills *out with the changed
   * granules, and updates prev to cur. */
  int (*diff)(void *stream, void *cur, void *prev, size_t size, mmsb_diff *out);
  /* The cudaStream_t that user kernels of GPU nodes are launched on. */
  void *(*native)(void *stream);
  /* Makes the stream's device the calling thread's current one, until
   * leave(the token enter returned): user kernels launch there.  Every
   * other call sets the device for itself and restores the caller's. */
  int (*enter)(void *stream);
  void (*leave)(int token);
  /* Staging during the fill.  When commit fills an epoch on several
   * threads, each thread copies its piece of a mirrored region's deltas
   * into the stream's staging as soon as it has written them (they are in
   * its cache), and each run of pieces goes to the device once all of its
   * pieces are there (sent by the committing thread: CUDA calls from many
   * threads at once were 20-200 times slower), while other threads still
   * fill: the transfer overlaps the fill, and apply only launches.
   * stage_begin: the region's deltas of epoch e will be len bytes and n
   * deltas (non-zero: the stream cannot stage them); pinned as for apply:
   * then only their offsets may be staged, the bytes sent from src. */
  int (*stage_begin)(void *stream, uint64_t epoch, size_t len, size_t n, bool pinned);
  /* Stages bytes [at, at + len) of them, from src, and the offsets of
   * deltas [d, d + nd): index[i] - base.  Any thread, any order; pieces
   * do not overlap. */
  void (*stage_piece)(void *stream, uint64_t epoch, const uint8_t *src, size_t at, size_t len,
                      const size_t *index, size_t base, size_t d, size_t nd);
  /* Sends bytes [at, at + len) (src: where they are in the batch) and the
   * offsets of deltas [d, d + nd), whose pieces are all staged, to the
   * device.  One thread. */
  int (*stage_send)(void *stream, uint64_t epoch, const uint8_t *src, size_t at, size_t len,
                    size_t d, size_t nd);
  /* Memory for the bus's batch that apply can copy from directly (NULL:
   * none), and the wait, before the batch is written again, for copies
   * that may still read it. */
  const mmsb_mem *host_mem;
  int (*settle)(void *stream);
  /* The devices the process can use (NULL: the host backend's one). */
  int (*devices)(void);
} mmsb_dev_ops;

extern const mmsb_dev_ops mmsb_dev_host;
/* NULL where the build has no CUDA. */
const mmsb_dev_ops *mmsb_dev_cuda(void);

#ifdef __cplusplus
}
#endif
#endif
