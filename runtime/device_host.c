/*
 * device_host.c - the host backend of mirrors: "device" memory is host
 * memory and the kernels' per-page code (page_apply.h) runs on the CPU, so
 * a machine without a GPU runs, and CI tests, the same logic.
 */
#include "internal.h"
#include "device.h"
#include "mmsb/page_apply.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static int h_open(int device, void **stream) {
  (void)device;
  *stream = NULL;
  return MMSB_OK;
}
static void h_close(void *stream) { (void)stream; }
static int h_alloc(size_t n, void **p) {
  *p = calloc(1, n ? n : 1);
  return *p ? MMSB_OK : mmsb_fail(MMSB_ENOMEM, "host mirror of %zu bytes", n);
}
static void h_free(void *p) { free(p); }
static int h_copy(void *s, void *dst, const void *src, size_t n) {
  (void)s;
  memcpy(dst, src, n);
  return MMSB_OK;
}

/* The kernel's work for one delta, done by one "block": whole pages and
 * runs, assign or accumulate. */
void mmsb_apply_one(uint8_t *base, size_t size, const uint8_t *d) {
  mmsb_dhdr h;
  mmsb_dhdr_read(d, &h);
  uint8_t *pg = base + h.page * MMSB_PAGE_SIZE;
  uint32_t plen = mmsb_page_len(size, h.page);
  const uint8_t *b = d + MMSB_DELTA_HDR;
  if (h.form == MMSB_FORM_PAGE) {
    mmsb_run_apply_part(pg, 0, b, 0, h.body <= plen ? h.body : plen, 0, 0);
    return;
  }
  for (uint32_t r = 0, at = 0; r < h.nruns; r++) {
    uint16_t off, len;
    memcpy(&off, b + at, 2);
    memcpy(&len, b + at + 2, 2);
    if (off + (size_t)len <= plen) mmsb_run_apply_part(pg, off, b + at + 4, 0, len, h.op, h.type);
    at += 4u + len;
  }
}

static int h_apply(void *s, void *dptr, size_t size, const uint8_t *bytes, size_t len,
                   const uint32_t *offs, size_t n, uint64_t epoch) {
  (void)s;
  (void)len;
  (void)epoch;
  for (size_t i = 0; i < n; i++) mmsb_apply_one(dptr, size, bytes + offs[i]);
  return MMSB_OK;
}
static int h_wait(void *s, uint64_t e) { (void)s; (void)e; return MMSB_OK; }

static int h_diff(void *s, void *cur, void *prev, size_t size, mmsb_dirty_page **out,
                  size_t *n) {
  (void)s;
  uint8_t *c = cur, *p = prev;
  size_t np = (size + MMSB_PAGE_SIZE - 1) / MMSB_PAGE_SIZE, k = 0;
  mmsb_dirty_page *list = NULL;
  for (size_t pg = 0; pg < np; pg++) {
    size_t start = pg * MMSB_PAGE_SIZE, plen = size - start < MMSB_PAGE_SIZE ? size - start : MMSB_PAGE_SIZE;
    if (memcmp(c + start, p + start, plen) == 0) continue;
    mmsb_dirty_page d;
    memset(&d, 0, offsetof(mmsb_dirty_page, data));
    d.page = pg;
    for (size_t g = 0; g * 8 < plen; g++) {
      size_t a = start + g * 8, l = plen - g * 8 < 8 ? plen - g * 8 : 8;
      if (memcmp(c + a, p + a, l)) d.mask[g >> 6] |= (uint64_t)1 << (g & 63);
    }
    mmsb_dirty_page *t = realloc(list, (k + 1) * sizeof *t);
    if (!t) { free(list); return mmsb_fail(MMSB_ENOMEM, "diff"); }
    list = t;
    memcpy(d.data, c + start, plen);
    list[k++] = d;
    memcpy(p + start, c + start, plen);
  }
  *out = list;
  *n = k;
  return MMSB_OK;
}

static void *h_native(void *s) { (void)s; return NULL; }

const mmsb_dev_ops mmsb_dev_host = {"host", h_open, h_close, h_alloc, h_free, h_copy,
                                    h_copy, h_copy, h_apply, h_wait, h_diff, h_native};

#ifndef MMSB_HAVE_CUDA
const mmsb_dev_ops *mmsb_dev_cuda(void) { return NULL; }
#endif
