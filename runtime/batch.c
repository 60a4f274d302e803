/*
 * batch.c - all deltas of one epoch as one byte buffer (docs/format.md),
 * with an index of where each delta starts.  The bytes are what the log,
 * the wire and the GPU staging buffers carry; the index is rebuilt (and
 * every length checked) when a batch is decoded from untrusted bytes.
 */
#include "internal.h"
#include "device.h"

#include <stdlib.h>
#include <string.h>

/* Room for `need` elements of `elem` bytes in arr, whose capacity *cap
 * doubles (from 16); returns the (maybe moved) array, or NULL with arr
 * untouched when memory is short.  One helper for every growing table. */
void *mmsb_grow(void *arr, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap && arr) return arr; /* need 0 of nothing yet: not NULL */
  size_t c = *cap ? *cap : 16;
  while (c < need) {
    if (c > SIZE_MAX / 2 / elem) return NULL;
    c *= 2;
  }
  void *t = realloc(arr, c * elem);
  if (t) *cap = c;
  return t;
}

/* b's bytes in `cap` bytes from mem (NULL: realloc); false when short. */
static bool move_to(mmsb_buf *b, const mmsb_mem *mem, size_t cap) {
  uint8_t *p;
  if (mem || b->mem) {
    p = mem ? mem->alloc(cap) : malloc(cap);
    if (!p) return false;
    if (b->len) memcpy(p, b->p, b->len);
    if (b->p) {
      if (b->mem) b->mem->release(b->p);
      else free(b->p);
    }
  } else {
    p = realloc(b->p, cap);
    if (!p) return false;
  }
  b->p = p;
  b->cap = cap;
  b->mem = mem;
  return true;
}

int mmsb_buf_reserve(mmsb_buf *b, size_t extra) {
  if (extra > SIZE_MAX / 2 - b->len) return mmsb_fail(MMSB_ENOMEM, "buffer overflow");
  if (b->len + extra <= b->cap) return MMSB_OK;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + extra) cap *= 2;
  /* When b's memory has none left (pinned memory runs out, or the device
   * that gives it failed), malloc's does: a batch need not be pinned (its
   * mirrors then stage from it), and the commit goes on. */
  if (move_to(b, b->mem, cap) || (b->mem && move_to(b, NULL, cap))) return MMSB_OK;
  return mmsb_fail(MMSB_ENOMEM, "buffer of %zu bytes", cap);
}

int mmsb_buf_use(mmsb_buf *b, const mmsb_mem *mem) {
  if (b->mem == mem) return MMSB_OK;
  if (!b->p) {
    b->mem = mem;
    return MMSB_OK;
  }
  return move_to(b, mem, b->cap) ? MMSB_OK : mmsb_fail(MMSB_ENOMEM, "buffer of %zu bytes", b->cap);
}

void mmsb_buf_free(mmsb_buf *b) {
  const mmsb_mem *mem = b->mem;
  if (mem && b->p) mem->release(b->p);
  else free(b->p);
  *b = (mmsb_buf){0};
  b->mem = mem;
}

static int index_push(mmsb_batch *b, size_t off) {
  size_t *ix = mmsb_grow(b->index, &b->index_cap, b->count + 1, sizeof *ix);
  if (!ix) return mmsb_fail(MMSB_ENOMEM, "batch index");
  b->index = ix;
  b->index[b->count++] = off;
  return MMSB_OK;
}

int mmsb_batch_begin(mmsb_batch *b, mmsb_epoch_t epoch) {
  b->bytes.len = 0;
  b->count = b->ordered = 0;
  b->runs = b->whole = 0;
  int rc = mmsb_buf_reserve(&b->bytes, MMSB_BATCH_HDR);
  if (rc) return rc;
  uint8_t *h = b->bytes.p;
  uint32_t magic = MMSB_BATCH_MAGIC, zero = 0;
  uint16_t ver = MMSB_BATCH_VERSION, hs = MMSB_BATCH_HDR;
  memcpy(h, &magic, 4);
  memcpy(h + 4, &ver, 2);
  memcpy(h + 6, &hs, 2);
  memcpy(h + 8, &epoch, 8);
  memcpy(h + 16, &zero, 4);
  memcpy(h + 20, &zero, 4);
  b->bytes.len = MMSB_BATCH_HDR;
  return MMSB_OK;
}

uint8_t *mmsb_batch_reserve(mmsb_batch *b, size_t max) {
  if (mmsb_buf_reserve(&b->bytes, max)) return NULL;
  return b->bytes.p + b->bytes.len;
}

int mmsb_batch_commit_reserved(mmsb_batch *b, size_t len) {
  int rc = index_push(b, b->bytes.len);
  if (rc) return rc;
  b->bytes.len += len;
  return MMSB_OK;
}

int mmsb_batch_reserve_many(mmsb_batch *b, size_t n, size_t bytes) {
  int rc = mmsb_buf_reserve(&b->bytes, bytes);
  if (rc) return rc;
  size_t *ix = mmsb_grow(b->index, &b->index_cap, b->count + n, sizeof *ix);
  if (!ix) return mmsb_fail(MMSB_ENOMEM, "batch index");
  b->index = ix;
  return MMSB_OK;
}

void mmsb_batch_commit_many(mmsb_batch *b, size_t n, size_t bytes) {
  b->count += n;
  b->bytes.len += bytes;
}

int mmsb_batch_append(mmsb_batch *b, const uint8_t *enc, size_t len) {
  uint8_t *p = mmsb_batch_reserve(b, len);
  if (!p) return MMSB_ENOMEM;
  memcpy(p, enc, len);
  return mmsb_batch_commit_reserved(b, len);
}

/* Writes the delta count into the header. */
void mmsb_batch_finish(mmsb_batch *b) {
  uint32_t n = (uint32_t)b->count;
  memcpy(b->bytes.p + 16, &n, 4);
}

void mmsb_batch_reset(mmsb_batch *b) {
  mmsb_buf_free(&b->bytes);
  mmsb_buf_free(&b->spare);
  free(b->index);
  b->index = NULL;
  b->count = b->index_cap = 0;
}

/* Checks b's bytes (header, every delta, order) and builds its index. */
static int validate(mmsb_batch *b) {
  const uint8_t *p = b->bytes.p;
  size_t len = b->bytes.len;
  if (len < MMSB_BATCH_HDR) return mmsb_fail(MMSB_ECORRUPT, "batch shorter than its header");
  uint32_t magic, n, flags;
  uint16_t ver, hs;
  memcpy(&magic, p, 4);
  memcpy(&ver, p + 4, 2);
  memcpy(&hs, p + 6, 2);
  memcpy(&n, p + 16, 4);
  memcpy(&flags, p + 20, 4);
  if (magic != MMSB_BATCH_MAGIC) return mmsb_fail(MMSB_ECORRUPT, "not a batch (magic)");
  if (ver != MMSB_BATCH_VERSION)
    return mmsb_fail(MMSB_ECORRUPT, "batch version %u (this build reads %u)", ver,
                     MMSB_BATCH_VERSION);
  if (hs != MMSB_BATCH_HDR || flags != 0) return mmsb_fail(MMSB_ECORRUPT, "bad batch header");
  if (n > (len - MMSB_BATCH_HDR) / MMSB_DELTA_HDR)
    return mmsb_fail(MMSB_ECORRUPT, "batch claims %u deltas in %zu bytes", n, len);
  size_t pos = MMSB_BATCH_HDR;
  uint32_t prev_region = 0;
  uint64_t prev_page = 0;
  int rc;
  for (uint32_t i = 0; i < n; i++) {
    mmsb_delta d;
    if ((rc = mmsb_delta_view(p + pos, len - pos, &d)))
      return mmsb_fail(rc, "delta %u at byte %zu: %s", i, pos, mmsb_last_error());
    if (i && (d.region_id < prev_region || (d.region_id == prev_region && d.page < prev_page)))
      return mmsb_fail(MMSB_ECORRUPT, "delta %u out of (region, page) order", i);
    prev_region = d.region_id;
    prev_page = d.page;
    if ((rc = index_push(b, pos))) return rc;
    pos += MMSB_DELTA_HDR + d.body_len;
  }
  if (pos != len) return mmsb_fail(MMSB_ECORRUPT, "batch has %zu trailing bytes", len - pos);
  return MMSB_OK;
}

int mmsb_batch_decode(const void *bytes, size_t len, mmsb_batch **out) {
  if (!bytes || !out) return mmsb_fail(MMSB_EINVAL, "NULL argument");
  *out = NULL;
  mmsb_batch *b = calloc(1, sizeof *b);
  if (!b) return mmsb_fail(MMSB_ENOMEM, "batch");
  b->owned = true;
  int rc = mmsb_buf_reserve(&b->bytes, len ? len : 1);
  if (!rc) {
    memcpy(b->bytes.p, bytes, len);
    b->bytes.len = len;
    rc = validate(b);
  }
  if (rc) {
    mmsb_batch_free(b);
    return rc;
  }
  *out = b;
  return MMSB_OK;
}

/* Validates bytes in place (no copy): b refers to them until
 * mmsb_batch_view_free.  Replay reads the mapped log this way. */
int mmsb_batch_view(const void *bytes, size_t len, mmsb_batch *b) {
  memset(b, 0, sizeof *b);
  b->bytes.p = (uint8_t *)bytes;
  b->bytes.len = len;
  int rc = validate(b);
  if (rc) mmsb_batch_view_free(b);
  return rc;
}

void mmsb_batch_view_free(mmsb_batch *b) {
  free(b->index);
  memset(b, 0, sizeof *b);
}

void mmsb_batch_free(mmsb_batch *b) {
  if (!b || !b->owned) return;
  mmsb_batch_reset(b);
  free(b);
}

mmsb_epoch_t mmsb_batch_epoch(const mmsb_batch *b) {
  mmsb_epoch_t e = 0;
  if (b && b->bytes.len >= MMSB_BATCH_HDR) memcpy(&e, b->bytes.p + 8, 8);
  return e;
}

size_t mmsb_batch_count(const mmsb_batch *b) { return b ? b->count : 0; }

int mmsb_batch_delta(const mmsb_batch *b, size_t i, mmsb_delta *out) {
  if (!b || !out) return mmsb_fail(MMSB_EINVAL, "NULL argument");
  if (i >= b->count) return mmsb_fail(MMSB_ERANGE, "delta %zu of %zu", i, b->count);
  /* Deltas in a batch were validated when made or decoded. */
  return mmsb_delta_view(b->bytes.p + b->index[i], b->bytes.len - b->index[i], out);
}

/* The i-th delta of a batch this runtime made or already validated: the
 * header is read, the body not checked again (hot paths: stats, digest). */
void mmsb_batch_delta_trusted(const mmsb_batch *b, size_t i, mmsb_delta *d) {
  const uint8_t *p = b->bytes.p + b->index[i];
  memcpy(&d->region_id, p, 4);
  d->op = p[4];
  d->type = p[5];
  d->whole_page = p[6] == MMSB_FORM_PAGE;
  memcpy(&d->page, p + 8, 8);
  memcpy(&d->nruns, p + 16, 4);
  memcpy(&d->body_len, p + 20, 4);
  d->body = p + MMSB_DELTA_HDR;
}

const uint8_t *mmsb_batch_bytes(const mmsb_batch *b, size_t *len) {
  if (!b) return NULL;
  if (len) *len = b->bytes.len;
  return b->bytes.p;
}

/* Finds where delta i lands in bus: its page and the page's length; with
 * check, also that its runs fit that page. */
static int resolve(const mmsb_batch *b, size_t i, mmsb_bus *bus, bool check, mmsb_delta *d,
                   uint8_t **page, size_t *plen) {
  /* A batch is validated when decoded or made by commit: no need to again. */
  mmsb_batch_delta_trusted(b, i, d);
  mmsb_region *r = mmsb_region_by_id(bus, d->region_id);
  if (!r) return mmsb_fail(MMSB_ENOTFOUND, "delta %zu: no region id %u", i, d->region_id);
  if (d->page >= r->map_size / MMSB_PAGE_SIZE)
    return mmsb_fail(MMSB_ERANGE, "delta %zu: page %llu past region '%s'", i,
                     (unsigned long long)d->page, r->name);
  *plen = mmsb_region_page_len(r, d->page);
  *page = r->data + (size_t)d->page * MMSB_PAGE_SIZE;
  if (check && mmsb_delta_check_runs(d, *plen))
    return mmsb_fail(MMSB_ERANGE, "delta %zu: run past the end of region '%s'", i, r->name);
  return MMSB_OK;
}

/* Checks every delta before applying any, so a bad batch changes nothing;
 * the second pass applies what the first checked. */
int mmsb_batch_apply(const mmsb_batch *b, mmsb_bus *bus) {
  if (!b || !bus) return mmsb_fail(MMSB_EINVAL, "NULL argument");
  mmsb_delta d;
  uint8_t *page;
  size_t plen;
  for (size_t i = 0; i < b->count; i++) {
    int rc = resolve(b, i, bus, true, &d, &page, &plen);
    if (rc) return rc;
  }
  for (size_t i = 0; i < b->count; i++) {
    resolve(b, i, bus, false, &d, &page, &plen);
    mmsb_delta_apply_trusted(&d, page);
  }
  return MMSB_OK;
}

/* Puts the deltas in (region, page) order, stably, so that deltas of one
 * page keep the order they were appended in (ASSIGN before accumulations).
 * The sorted bytes go to the spare buffer, which then swaps with the
 * batch's: neither is freed, so the next commit reuses both. */
static int by_region_page(const void *pa, const void *pb, void *ctx) {
  const uint8_t *bytes = ctx;
  size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
  uint32_t ra, rb;
  uint64_t ga, gb;
  memcpy(&ra, bytes + a, 4);
  memcpy(&rb, bytes + b, 4);
  memcpy(&ga, bytes + a + 8, 8);
  memcpy(&gb, bytes + b + 8, 8);
  if (ra != rb) return ra < rb ? -1 : 1;
  if (ga != gb) return ga < gb ? -1 : 1;
  return a < b ? -1 : a > b; /* offsets grow with append order: stable */
}

int mmsb_batch_sort(mmsb_batch *b) {
  mmsb_buf *out = &b->spare;
  out->len = 0;
  int rc = mmsb_buf_reserve(out, b->bytes.len);
  if (rc) return rc;
  if (b->count) /* (no index yet before a bus's first delta) */
    qsort_r(b->index, b->count, sizeof *b->index, by_region_page, b->bytes.p);
  b->ordered = 0; /* derived and accumulated deltas are among them now: */
  b->runs = b->whole = 0; /* every delta is counted from its header */
  memcpy(out->p, b->bytes.p, MMSB_BATCH_HDR);
  out->len = MMSB_BATCH_HDR;
  for (size_t i = 0; i < b->count; i++) {
    uint32_t body;
    memcpy(&body, b->bytes.p + b->index[i] + 20, 4);
    size_t len = MMSB_DELTA_HDR + body;
    memcpy(out->p + out->len, b->bytes.p + b->index[i], len);
    b->index[i] = out->len;
    out->len += len;
  }
  mmsb_buf t = b->bytes;
  b->bytes = *out;
  *out = t;
  return MMSB_OK;
}
