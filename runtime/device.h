/*
 * device.h - the backend interface of device mirrors: the host backend
 * (device_host.c) and the CUDA backend (cuda/backend.cu) implement it.
 */
#ifndef MMSB_DEVICE_H
#define MMSB_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One page found changed by a diff: its index and its 512 granule bits. */
typedef struct mmsb_dirty_page {
  uint64_t page;
  uint64_t mask[8];
  uint8_t data[4096];  /* the page's new bytes */
} mmsb_dirty_page;

typedef struct mmsb_dev_ops {
  const char *name;
  /* Makes a stream (and what the backend keeps per mirror) on device d. */
  int (*open)(int device, void **stream);
  void (*close)(void *stream);
  int (*alloc)(size_t n, void **dptr);
  void (*free)(void *dptr);
  int (*upload)(void *stream, void *dptr, const void *src, size_t n);
  int (*download)(void *stream, void *dst, const void *dptr, size_t n);
  int (*copy)(void *stream, void *dst, const void *src, size_t n);
  /* Applies `n` deltas, bytes[offs[i]...], to the copy at dptr of a region
   * of `size` bytes, in order: offs is sorted by page (stably), and deltas
   * of one page are applied one after the other (an accumulation after the
   * ASSIGN it follows).  Asynchronous on the stream. */
  int (*apply)(void *stream, void *dptr, size_t size, const uint8_t *bytes, size_t len,
               const uint32_t *offs, size_t n, uint64_t epoch);
  /* Blocks until the work queued up to epoch e is done. */
  int (*wait)(void *stream, uint64_t epoch);
  /* Compares cur with prev (size bytes) and returns the pages that differ,
   * with their changed granules; *out is malloc'ed; prev is then updated. */
  int (*diff)(void *stream, void *cur, void *prev, size_t size, mmsb_dirty_page **out,
              size_t *n);
  /* The cudaStream_t that user kernels of GPU nodes are launched on. */
  void *(*native)(void *stream);
} mmsb_dev_ops;

extern const mmsb_dev_ops mmsb_dev_host;
/* NULL where the build has no CUDA. */
const mmsb_dev_ops *mmsb_dev_cuda(void);

#ifdef __cplusplus
}
#endif
#endif
