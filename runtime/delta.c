/*
 * delta.c - one page delta: encode, view (validating), apply, compose.
 * The byte format is in docs/format.md; deltas are read with memcpy so that
 * a body needs no alignment.
 */
#include "internal.h"

#include <string.h>

static inline uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

int mmsb_type_size(int type) {
  switch (type) {
  case MMSB_T_BYTES: return 1;
  case MMSB_T_U32: case MMSB_T_F32: return 4;
  case MMSB_T_U64: case MMSB_T_I64: case MMSB_T_F64: return 8;
  default: return 0;
  }
}

bool mmsb_op_valid(int op, int type) {
  if (op == MMSB_OP_ASSIGN) return type == MMSB_T_BYTES;
  if (op < MMSB_OP_ADD || op > MMSB_OP_XOR) return false;
  if (type < MMSB_T_U32 || type > MMSB_T_F64) return false;
  return !(op >= MMSB_OP_OR && (type == MMSB_T_F32 || type == MMSB_T_F64));
}

/* Checks a body against its header: runs in order, inside the page, whole
 * elements for accumulating ops, and exactly body_len bytes. */
static int check_body(const mmsb_delta *d) {
  int es = mmsb_type_size(d->type);
  if (d->whole_page) {
    if (d->op != MMSB_OP_ASSIGN || d->nruns != 0 || d->body_len == 0 ||
        d->body_len > MMSB_PAGE_SIZE)
      return mmsb_fail(MMSB_ECORRUPT, "bad whole-page delta");
    return MMSB_OK;
  }
  uint32_t pos = 0, prev_end = 0;
  for (uint32_t i = 0; i < d->nruns; i++) {
    if (d->body_len - pos < MMSB_RUN_HDR)
      return mmsb_fail(MMSB_ECORRUPT, "run %u header past the body", i);
    uint32_t off = rd16(d->body + pos), len = rd16(d->body + pos + 2);
    pos += MMSB_RUN_HDR;
    if (len == 0 || off + len > MMSB_PAGE_SIZE || (i && off < prev_end))
      return mmsb_fail(MMSB_ECORRUPT, "run %u [%u,+%u) out of order or page", i,
                       off, len);
    if (off % es || len % es)
      return mmsb_fail(MMSB_ECORRUPT, "run %u not whole elements", i);
    if (d->body_len - pos < len)
      return mmsb_fail(MMSB_ECORRUPT, "run %u bytes past the body", i);
    pos += len;
    prev_end = off + len;
  }
  if (pos != d->body_len)
    return mmsb_fail(MMSB_ECORRUPT, "delta body has %u trailing bytes",
                     d->body_len - pos);
  return MMSB_OK;
}

int mmsb_delta_view(const uint8_t *enc, size_t len, mmsb_delta *d) {
  if (!enc || !d) return mmsb_fail(MMSB_EINVAL, "NULL delta");
  if (len < MMSB_DELTA_HDR) return mmsb_fail(MMSB_ECORRUPT, "delta shorter than its header");
  d->region_id = rd32(enc);
  d->op = enc[4];
  d->type = enc[5];
  if (enc[6] > MMSB_FORM_PAGE || enc[7] != 0)
    return mmsb_fail(MMSB_ECORRUPT, "bad delta form %u", enc[6]);
  d->whole_page = enc[6] == MMSB_FORM_PAGE;
  d->page = rd64(enc + 8);
  d->nruns = rd32(enc + 16);
  d->body_len = rd32(enc + 20);
  d->body = enc + MMSB_DELTA_HDR;
  if (!mmsb_op_valid(d->op, d->type))
    return mmsb_fail(MMSB_ECORRUPT, "bad op %u / type %u", d->op, d->type);
  if (d->body_len > len - MMSB_DELTA_HDR)
    return mmsb_fail(MMSB_ECORRUPT, "delta body of %u bytes past the end", d->body_len);
  if (d->nruns > d->body_len / (MMSB_RUN_HDR + 1) + 1)
    return mmsb_fail(MMSB_ECORRUPT, "delta claims %u runs", d->nruns);
  return check_body(d);
}

int mmsb_delta_next_run(const mmsb_delta *d, uint32_t *cursor, mmsb_run *run) {
  if (!d || !cursor || !run) return 0;
  if (d->whole_page) {
    if (*cursor != 0) return 0;
    *run = (mmsb_run){0, d->body_len, d->body};
    *cursor = d->body_len;
    return 1;
  }
  if (*cursor + MMSB_RUN_HDR > d->body_len) return 0;
  run->offset = rd16(d->body + *cursor);
  run->length = rd16(d->body + *cursor + 2);
  run->bytes = d->body + *cursor + MMSB_RUN_HDR;
  *cursor += MMSB_RUN_HDR + run->length;
  return 1;
}

/* dst = dst op src, element by element: the same per-element code as the
 * mirror kernels (include/mmsb/page_apply.h), so host and device agree. */
void mmsb_accumulate_bytes(uint8_t *dst, const uint8_t *src, size_t bytes,
                           int op, int type) {
  mmsb_run_apply_part(dst, 0, src, 0, (uint32_t)bytes, op, type);
}

int mmsb_delta_check_runs(const mmsb_delta *d, size_t page_len) {
  uint32_t cur = 0;
  mmsb_run r;
  while (mmsb_delta_next_run(d, &cur, &r))
    if (r.offset + (size_t)r.length > page_len)
      return mmsb_fail(MMSB_ERANGE, "run [%u,+%u) past a page of %zu bytes",
                       r.offset, r.length, page_len);
  return MMSB_OK;
}

void mmsb_delta_apply_trusted(const mmsb_delta *d, uint8_t *page) {
  uint32_t cur = 0;
  mmsb_run r;
  while (mmsb_delta_next_run(d, &cur, &r)) {
    if (d->op == MMSB_OP_ASSIGN) memcpy(page + r.offset, r.bytes, r.length);
    else mmsb_accumulate_bytes(page + r.offset, r.bytes, r.length, d->op, d->type);
  }
}

int mmsb_delta_apply(const mmsb_delta *d, void *page, size_t page_len) {
  if (!d || !page) return mmsb_fail(MMSB_EINVAL, "NULL delta or page");
  int rc = mmsb_delta_check_runs(d, page_len);
  if (!rc) mmsb_delta_apply_trusted(d, page);
  return rc;
}

static inline bool mask_get(const uint8_t *m, size_t i) { return m[i >> 3] >> (i & 7) & 1; }

/* Encodes runs of set mask bits; `complete` says values holds every byte
 * of the page, so that the whole-page form may be used. */
static int encode(uint32_t region, uint64_t page, int op, int type,
                  const uint8_t *mask, const uint8_t *values, size_t page_len,
                  bool complete, uint8_t *out, size_t cap, size_t *out_len) {
  if (!mmsb_op_valid(op, type)) return mmsb_fail(MMSB_EINVAL, "bad op/type");
  if (page_len == 0 || page_len > MMSB_PAGE_SIZE)
    return mmsb_fail(MMSB_EINVAL, "page length %zu", page_len);
  size_t es = (size_t)mmsb_type_size(type), body = 0, nruns = 0, covered = 0;
  for (size_t i = 0; i < page_len;) {
    if (!mask_get(mask, i)) { i++; continue; }
    size_t j = i;
    while (j < page_len && mask_get(mask, j)) j++;
    if (i % es || (j - i) % es)
      return mmsb_fail(MMSB_EINVAL, "mask run [%zu,%zu) is not whole elements", i, j);
    body += MMSB_RUN_HDR + (j - i);
    covered += j - i;
    nruns++;
    i = j;
  }
  bool whole = op == MMSB_OP_ASSIGN && (complete || covered == page_len) &&
               nruns > 0 && body >= page_len;
  size_t total = MMSB_DELTA_HDR + (whole ? page_len : body);
  if (total > cap) return mmsb_fail(MMSB_ERANGE, "delta of %zu bytes > buffer %zu", total, cap);
  mmsb_delta_write_header(out, region, page, op, type, whole,
                          whole ? 0 : (uint32_t)nruns,
                          (uint32_t)(whole ? page_len : body));
  uint8_t *o = out + MMSB_DELTA_HDR;
  if (whole) {
    memcpy(o, values, page_len);
  } else {
    for (size_t i = 0; i < page_len;) {
      if (!mask_get(mask, i)) { i++; continue; }
      size_t j = i;
      while (j < page_len && mask_get(mask, j)) j++;
      mmsb_run_write_header(o, (uint16_t)i, (uint16_t)(j - i));
      memcpy(o + MMSB_RUN_HDR, values + i, j - i);
      o += MMSB_RUN_HDR + (j - i);
      i = j;
    }
  }
  *out_len = total;
  return MMSB_OK;
}

int mmsb_delta_encode(uint32_t region, uint64_t page, int op, int type,
                      const uint8_t mask[MMSB_PAGE_SIZE / 8],
                      const uint8_t *values, size_t page_len, uint8_t *out,
                      size_t cap, size_t *out_len) {
  if (!mask || !values || !out || !out_len) return mmsb_fail(MMSB_EINVAL, "NULL argument");
  return encode(region, page, op, type, mask, values, page_len, true, out, cap,
                out_len);
}

void mmsb_overlay(uint8_t *mask, uint8_t *values, size_t at, const uint8_t *src, size_t len,
                  int op, int type) {
  size_t es = (size_t)mmsb_type_size(type);
  for (size_t i = 0; i < len; i += es, at += es) {
    if (op != MMSB_OP_ASSIGN && mask_get(mask, at))
      mmsb_accumulate_bytes(values + at, src + i, es, op, type);
    else
      memcpy(values + at, src + i, es);
    for (size_t k = 0; k < es; k++) mask[(at + k) >> 3] |= (uint8_t)(1u << ((at + k) & 7));
  }
}

/* Overlays delta d on (mask, values); returns the page extent it reached. */
static size_t overlay(const mmsb_delta *d, uint8_t *mask, uint8_t *values) {
  size_t extent = 0;
  uint32_t cur = 0;
  mmsb_run r;
  while (mmsb_delta_next_run(d, &cur, &r)) {
    mmsb_overlay(mask, values, r.offset, r.bytes, r.length, d->op, d->type);
    if (r.offset + (size_t)r.length > extent) extent = r.offset + r.length;
  }
  return extent;
}

int mmsb_delta_compose(const mmsb_delta *a, const mmsb_delta *b, uint8_t *out,
                       size_t cap, size_t *out_len) {
  if (!a || !b || !out || !out_len) return mmsb_fail(MMSB_EINVAL, "NULL argument");
  if (a->region_id != b->region_id || a->page != b->page)
    return mmsb_fail(MMSB_EINVAL, "compose: deltas of different pages");
  if (a->op != b->op || a->type != b->type)
    return mmsb_fail(MMSB_EINVAL, "compose: op %u/%u and %u/%u differ", a->op,
                     a->type, b->op, b->type);
  uint8_t mask[MMSB_PAGE_SIZE / 8] = {0};
  uint8_t values[MMSB_PAGE_SIZE];
  size_t ea = overlay(a, mask, values), eb = overlay(b, mask, values);
  size_t extent = ea > eb ? ea : eb;
  if (extent == 0) { /* two empty deltas compose to an empty one */
    if (cap < MMSB_DELTA_HDR) return mmsb_fail(MMSB_ERANGE, "buffer too small");
    mmsb_delta_write_header(out, a->region_id, a->page, a->op, a->type, 0, 0, 0);
    *out_len = MMSB_DELTA_HDR;
    return MMSB_OK;
  }
  return encode(a->region_id, a->page, a->op, a->type, mask, values, extent,
                false, out, cap, out_len);
}
