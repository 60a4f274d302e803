/*
 * device_host.c - the host backend of mirrors: "device" memory is host
 * memory and the kernels' per-page code (page_apply.h) runs on the CPU, so
 * a machine without a GPU runs, and CI tests, the same logic.
 */
#include "internal.h"
#include "device.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* The host "stream": the diff's output arrays, reused, and staging (the
 * CUDA backend's layout: bytes, then 32-bit offsets) for staged epochs.
 * mu orders what a CUDA stream orders: an apply or a diff (on the
 * committing thread) against a copy such as mmsb_mirror_download (on any
 * thread), which then sees the copy between epochs, never halfway. */
typedef struct host_stream {
  pthread_mutex_t mu;
  mmsb_diff_page *pages;
  uint64_t *data;
  size_t cap_pages, cap_data;
  uint8_t *stage;
  size_t cap_stage, stage_len, stage_n;
  uint64_t stage_epoch;
} host_stream;

static int h_open(int device, void **stream) {
  (void)device;
  host_stream *h = calloc(1, sizeof(host_stream));
  if (!h) return mmsb_fail(MMSB_ENOMEM, "host mirror stream");
  pthread_mutex_init(&h->mu, NULL);
  *stream = h;
  return MMSB_OK;
}
static void h_close(void *stream) {
  host_stream *h = stream;
  if (!h) return;
  free(h->pages);
  free(h->data);
  free(h->stage);
  pthread_mutex_destroy(&h->mu);
  free(h);
}
/* A large copy gets huge pages, as regions do: deltas land on pages all
 * over it. */
static int h_alloc(void *s, size_t n, void **p) {
  (void)s;
  *p = calloc(1, n ? n : 1);
  if (!*p) return mmsb_fail(MMSB_ENOMEM, "host mirror of %zu bytes", n);
  mmsb_huge_pages(*p, n);
  return MMSB_OK;
}
static void h_free(void *s, void *p) {
  (void)s;
  free(p);
}
static int h_copy(void *s, void *dst, const void *src, size_t n) {
  host_stream *h = s;
  pthread_mutex_lock(&h->mu);
  memcpy(dst, src, n);
  pthread_mutex_unlock(&h->mu);
  return MMSB_OK;
}

/* The kernel's work for one delta, done by one "block": whole pages and
 * runs, assign or accumulate. */
static void apply_one(uint8_t *base, size_t size, const uint8_t *d) {
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
    if (off + (size_t)len <= plen) mmsb_run_apply(pg, off, b + at + 4, len, h.op, h.type);
    at += 4u + len;
  }
}

/* Delta i of an apply: at src + offs[i] (staging), or src + index[i] -
 * base (the batch); and the copy they go to. */
typedef struct delta_list {
  const uint8_t *src;
  const uint32_t *offs;
  const size_t *index;
  size_t base;
  uint8_t *dptr;
  size_t size, n;
} delta_list;

static const uint8_t *delta_at(const delta_list *l, size_t i) {
  return l->src + (l->offs ? l->offs[i] : l->index[i] - l->base);
}

/* Applies deltas [i0, i1) in order, each one's first written line fetched
 * AHEAD deltas before: a sparse epoch's deltas land on lines all over the
 * copy, and one miss after the other took ~60 ns a delta (CPU machine,
 * 1e-4 of a GiB). */
enum { AHEAD = 16 };
static void apply_range(const delta_list *l, size_t i0, size_t i1) {
  for (size_t i = i0; i < i1; i++) {
    if (i + AHEAD < i1) {
      const uint8_t *d = delta_at(l, i + AHEAD);
      mmsb_dhdr h;
      mmsb_dhdr_read(d, &h);
      uint16_t off = 0; /* its first run's, or the page's start */
      if (h.form != MMSB_FORM_PAGE) memcpy(&off, d + MMSB_DELTA_HDR, 2);
      size_t at = h.page * MMSB_PAGE_SIZE + off;
      if (at < l->size) __builtin_prefetch(l->dptr + at, 1);
    }
    apply_one(l->dptr, l->size, delta_at(l, i));
  }
}

static void apply_part(void *ctx, int part, int nparts) {
  const delta_list *l = ctx;
  size_t lo, hi;
  mmsb_part_range(l->n, part, nparts, &lo, &hi);
  apply_range(l, lo, hi);
}

/* All of l's deltas: on up to `threads` of the pool's threads when no two
 * share a page (then in any order), in parts of APPLY_PART deltas at
 * least; in order on this thread otherwise. */
enum { APPLY_PART = 4096 };
static void apply_list(const delta_list *l, bool one_per_page, int threads) {
  size_t parts = one_per_page ? l->n / APPLY_PART : 1;
  if (parts > (size_t)threads) parts = (size_t)threads;
  if (parts <= 1) apply_range(l, 0, l->n);
  else mmsb_pool_run((int)parts, threads, apply_part, (void *)l);
}

/* A staged epoch is applied from the staging, through its offsets, as the
 * CUDA kernel reads it: CI tests what the threads staged. */
static int apply_epoch(void *s, void *dptr, size_t size, const uint8_t *bytes, size_t len,
                       const size_t *index, size_t base, size_t n, bool one_per_page,
                       uint64_t epoch, int threads, bool staged, bool pinned) {
  host_stream *h = s;
  (void)pinned;
  if (staged && h->stage_epoch == epoch && h->stage_len == len && h->stage_n == n) {
    delta_list l = {h->stage, (const uint32_t *)(h->stage + mmsb_stage_offs_at(len)), NULL, 0,
                    dptr, size, n};
    apply_list(&l, one_per_page, threads);
    return MMSB_OK;
  }
  if (staged) return mmsb_fail(MMSB_EINVAL, "epoch %llu was not staged", (unsigned long long)epoch);
  delta_list l = {bytes, NULL, index, base, dptr, size, n};
  apply_list(&l, one_per_page, threads);
  return MMSB_OK;
}

static int h_stage_begin(void *s, uint64_t epoch, size_t len, size_t n, bool pinned) {
  host_stream *h = s;
  (void)pinned;
  size_t need = mmsb_stage_offs_at(len) + n * sizeof(uint32_t);
  uint8_t *t = mmsb_grow(h->stage, &h->cap_stage, need, 1);
  if (!t) return mmsb_fail(MMSB_ENOMEM, "host staging of %zu bytes", need);
  h->stage = t;
  h->stage_epoch = epoch;
  h->stage_len = len;
  h->stage_n = n;
  return MMSB_OK;
}

static void h_stage_piece(void *s, uint64_t epoch, const uint8_t *src, size_t at, size_t len,
                          const size_t *index, size_t base, size_t d, size_t nd) {
  host_stream *h = s;
  (void)epoch;
  uint32_t *offs = (uint32_t *)(h->stage + mmsb_stage_offs_at(h->stage_len));
  mmsb_stage_copy(h->stage + at, src, len, offs + d, index, base, nd);
}

static int h_stage_send(void *s, uint64_t epoch, const uint8_t *src, size_t at, size_t len,
                        size_t d, size_t nd) {
  (void)s, (void)epoch, (void)src, (void)at, (void)len, (void)d, (void)nd; /* the staging is the "device" */
  return MMSB_OK;
}
static int h_wait(void *s, uint64_t e) { (void)s; (void)e; return MMSB_OK; }

/* The diff kernels' work on the CPU: the changed granules of each page,
 * appended in order; prev takes the new bytes. */
static int diff_pages(void *s, void *cur, void *prev, size_t size, mmsb_diff *out) {
  host_stream *h = s;
  uint8_t *c = cur, *p = prev;
  size_t np = (size + MMSB_PAGE_SIZE - 1) / MMSB_PAGE_SIZE, npg = 0, ng = 0;
  for (size_t pg = 0; pg < np; pg++) {
    size_t start = pg * MMSB_PAGE_SIZE, plen = mmsb_page_len(size, pg);
    if (memcmp(c + start, p + start, plen) == 0) continue;
    mmsb_diff_page *tp = mmsb_grow(h->pages, &h->cap_pages, npg + 1, sizeof *tp);
    if (tp) h->pages = tp;
    uint64_t *td = tp ? mmsb_grow(h->data, &h->cap_data, ng + 512, sizeof *td) : NULL;
    if (!td) return mmsb_fail(MMSB_ENOMEM, "diff of %zu bytes", size);
    h->data = td;
    mmsb_diff_page *d = &h->pages[npg++];
    memset(d, 0, sizeof *d);
    d->page = pg;
    for (size_t g = 0; g * 8 < plen; g++) {
      size_t a = start + g * 8, l = plen - g * 8 < 8 ? plen - g * 8 : 8;
      if (!memcmp(c + a, p + a, l)) continue;
      d->mask[g >> 6] |= (uint64_t)1 << (g & 63);
      h->data[ng] = 0;
      memcpy(&h->data[ng++], c + a, l);
      memcpy(p + a, c + a, l);
    }
  }
  *out = (mmsb_diff){h->pages, npg, h->data, ng};
  return MMSB_OK;
}

static void *h_native(void *s) { (void)s; return NULL; }
static int h_enter(void *s) { (void)s; return -1; }
static void h_leave(int token) { (void)token; }

/* apply and diff under the stream's mu (host_stream says why). */
static int h_apply(void *s, void *dptr, size_t size, const uint8_t *bytes, size_t len,
                   const size_t *index, size_t base, size_t n, bool one_per_page,
                   uint64_t epoch, int threads, bool staged, bool pinned) {
  host_stream *h = s;
  pthread_mutex_lock(&h->mu);
  int rc = apply_epoch(s, dptr, size, bytes, len, index, base, n, one_per_page, epoch, threads,
                       staged, pinned);
  pthread_mutex_unlock(&h->mu);
  return rc;
}
static int h_diff(void *s, void *cur, void *prev, size_t size, mmsb_diff *out) {
  host_stream *h = s;
  pthread_mutex_lock(&h->mu);
  int rc = diff_pages(s, cur, prev, size, out);
  pthread_mutex_unlock(&h->mu);
  return rc;
}

const mmsb_dev_ops mmsb_dev_host = {"host",   h_open,        h_close,       h_alloc,
                                    h_free,   h_copy,        h_copy,        h_copy,
                                    h_apply,  h_wait,        h_diff,        h_native,
                                    h_enter,  h_leave,       h_stage_begin, h_stage_piece,
                                    h_stage_send, NULL,      NULL,          NULL};

#ifndef MMSB_HAVE_CUDA
const mmsb_dev_ops *mmsb_dev_cuda(void) { return NULL; }
#endif
