/* test_delta.c - the delta laws of DESIGN.md, checked on random deltas, and
 * decoding of truncated and garbage bytes. */
#include "check.h"
#include "internal.h"
#include "device.h"

#include <math.h>

static uint64_t seed;

typedef struct { uint8_t enc[MMSB_DELTA_MAX]; size_t len; mmsb_delta d; } tdelta;

/* A random delta of (op, type) on a page of plen bytes. */
static void random_delta(tdelta *t, int op, int type, size_t plen) {
  uint8_t mask[MMSB_PAGE_SIZE / 8] = {0}, values[MMSB_PAGE_SIZE];
  size_t es = (size_t)mmsb_type_size(type);
  int density = (int)rng_below(&seed, 4);
  for (size_t i = 0; i + es <= plen; i += es) {
    bool on = density == 3 ? true : rng_below(&seed, 8) < (uint64_t)density * 2;
    if (!on) continue;
    for (size_t k = 0; k < es; k++) mask[(i + k) >> 3] |= (uint8_t)(1u << ((i + k) & 7));
  }
  for (size_t i = 0; i < plen; i += es) {
    uint64_t v = rng_next(&seed);
    if (type == MMSB_T_F32) { float f = (float)(int)(v % 2001) / 8.0f - 100; memcpy(values + i, &f, 4); }
    else if (type == MMSB_T_F64) { double f = (double)(int64_t)(v % 200001) / 16.0 - 5000; memcpy(values + i, &f, 8); }
    else memcpy(values + i, &v, es);
  }
  CHECK_OK(mmsb_delta_encode(7, 3, op, type, mask, values, plen, t->enc, sizeof t->enc, &t->len));
  CHECK_OK(mmsb_delta_view(t->enc, t->len, &t->d));
}

static void random_page(uint8_t *s, size_t plen, int type) {
  for (size_t i = 0; i < plen; i++) s[i] = (uint8_t)rng_next(&seed);
  size_t es = (size_t)mmsb_type_size(type);
  if (type == MMSB_T_F32 || type == MMSB_T_F64)
    for (size_t i = 0; i + es <= plen; i += es) {
      double f = (double)(int)rng_below(&seed, 1000) - 500;
      if (type == MMSB_T_F32) { float g = (float)f; memcpy(s + i, &g, 4); }
      else memcpy(s + i, &f, 8);
    }
}

static bool pages_equal(const uint8_t *a, const uint8_t *b, size_t n, int op, int type) {
  if (!(op == MMSB_OP_ADD && (type == MMSB_T_F32 || type == MMSB_T_F64)))
    return memcmp(a, b, n) == 0;
  size_t es = (size_t)mmsb_type_size(type);
  for (size_t i = 0; i + es <= n; i += es) {
    double x, y;
    if (type == MMSB_T_F32) { float f, g; memcpy(&f, a + i, 4); memcpy(&g, b + i, 4); x = f; y = g; }
    else { memcpy(&x, a + i, 8); memcpy(&y, b + i, 8); }
    if (fabs(x - y) > 1e-4 * (fabs(x) + fabs(y) + 1)) return false;
  }
  return true;
}

static const int ops[][2] = {
  {MMSB_OP_ASSIGN, MMSB_T_BYTES},
  {MMSB_OP_ADD, MMSB_T_U32}, {MMSB_OP_ADD, MMSB_T_U64}, {MMSB_OP_ADD, MMSB_T_I64},
  {MMSB_OP_ADD, MMSB_T_F32}, {MMSB_OP_ADD, MMSB_T_F64},
  {MMSB_OP_MIN, MMSB_T_U32}, {MMSB_OP_MIN, MMSB_T_I64}, {MMSB_OP_MIN, MMSB_T_F64},
  {MMSB_OP_MAX, MMSB_T_U64}, {MMSB_OP_MAX, MMSB_T_I64}, {MMSB_OP_MAX, MMSB_T_F32},
  {MMSB_OP_OR, MMSB_T_U32}, {MMSB_OP_OR, MMSB_T_U64}, {MMSB_OP_XOR, MMSB_T_U64},
  {MMSB_OP_XOR, MMSB_T_I64},
};
#define NOPS (sizeof ops / sizeof ops[0])

/* apply(apply(s,a),b) == apply(s, compose(a,b)); empty delta is identity;
 * accumulating deltas commute. */
static void test_laws(int cases) {
  static tdelta a, b, c;
  uint8_t s[MMSB_PAGE_SIZE], s1[MMSB_PAGE_SIZE], s2[MMSB_PAGE_SIZE];
  int bad_compose = 0, bad_commute = 0, bad_identity = 0;
  for (int n = 0; n < cases; n++) {
    int op = ops[n % NOPS][0], type = ops[n % NOPS][1];
    size_t plen = rng_below(&seed, 4) ? MMSB_PAGE_SIZE : 8 * (1 + rng_below(&seed, 511));
    random_page(s, plen, type);
    random_delta(&a, op, type, plen);
    random_delta(&b, op, type, plen);
    memcpy(s1, s, plen);
    CHECK_OK(mmsb_delta_apply(&a.d, s1, plen));
    CHECK_OK(mmsb_delta_apply(&b.d, s1, plen));
    CHECK_OK(mmsb_delta_compose(&a.d, &b.d, c.enc, sizeof c.enc, &c.len));
    CHECK_OK(mmsb_delta_view(c.enc, c.len, &c.d));
    memcpy(s2, s, plen);
    CHECK_OK(mmsb_delta_apply(&c.d, s2, plen));
    bad_compose += !pages_equal(s1, s2, plen, op, type);
    /* identity */
    uint8_t empty[MMSB_DELTA_HDR];
    mmsb_delta e;
    mmsb_delta_write_header(empty, 7, 3, op, type, 0, 0, 0);
    CHECK_OK(mmsb_delta_view(empty, sizeof empty, &e));
    memcpy(s2, s, plen);
    CHECK_OK(mmsb_delta_apply(&e, s2, plen));
    bad_identity += memcmp(s, s2, plen) != 0;
    CHECK_OK(mmsb_delta_compose(&a.d, &e, c.enc, sizeof c.enc, &c.len));
    CHECK_OK(mmsb_delta_view(c.enc, c.len, &c.d));
    memcpy(s1, s, plen); memcpy(s2, s, plen);
    mmsb_delta_apply(&a.d, s1, plen);
    mmsb_delta_apply(&c.d, s2, plen);
    bad_identity += memcmp(s1, s2, plen) != 0;
    if (op != MMSB_OP_ASSIGN) {
      memcpy(s1, s, plen); memcpy(s2, s, plen);
      mmsb_delta_apply(&a.d, s1, plen); mmsb_delta_apply(&b.d, s1, plen);
      mmsb_delta_apply(&b.d, s2, plen); mmsb_delta_apply(&a.d, s2, plen);
      bad_commute += !pages_equal(s1, s2, plen, op, type);
    }
  }
  CHECK(bad_compose == 0);
  CHECK(bad_identity == 0);
  CHECK(bad_commute == 0);
  printf("laws: %d cases over %zu op/type pairs\n", cases, NOPS);
}

static void test_compose_refusals(void) {
  static tdelta a, b;
  random_delta(&a, MMSB_OP_ASSIGN, MMSB_T_BYTES, 4096);
  random_delta(&b, MMSB_OP_ADD, MMSB_T_U64, 4096);
  uint8_t out[MMSB_DELTA_MAX];
  size_t len;
  CHECK_FAILS(mmsb_delta_compose(&a.d, &b.d, out, sizeof out, &len), MMSB_EINVAL);
  CHECK_FAILS(mmsb_delta_compose(&a.d, NULL, out, sizeof out, &len), MMSB_EINVAL);
  uint8_t mask[512] = {0}, vals[4096] = {0};
  mask[0] = 0x3; /* 2 bytes: not whole u32 elements */
  CHECK_FAILS(mmsb_delta_encode(1, 0, MMSB_OP_ADD, MMSB_T_U32, mask, vals, 4096, out,
                                sizeof out, &len), MMSB_EINVAL);
  CHECK_FAILS(mmsb_delta_encode(1, 0, MMSB_OP_OR, MMSB_T_F32, mask, vals, 4096, out,
                                sizeof out, &len), MMSB_EINVAL);
  CHECK_FAILS(mmsb_delta_encode(1, 0, MMSB_OP_ASSIGN, MMSB_T_BYTES, mask, vals, 5000,
                                out, sizeof out, &len), MMSB_EINVAL);
  CHECK_FAILS(mmsb_delta_encode(1, 0, MMSB_OP_ASSIGN, MMSB_T_BYTES, mask, vals, 4096,
                                out, 10, &len), MMSB_ERANGE);
  /* A run past a short page is refused, and nothing is written. */
  uint8_t pg[100];
  memset(pg, 0xAB, sizeof pg);
  mask[0] = 0; mask[200] = 0xFF;
  CHECK_OK(mmsb_delta_encode(1, 0, MMSB_OP_ASSIGN, MMSB_T_BYTES, mask, vals, 4096, out,
                             sizeof out, &len));
  mmsb_delta d;
  CHECK_OK(mmsb_delta_view(out, len, &d));
  CHECK_FAILS(mmsb_delta_apply(&d, pg, sizeof pg), MMSB_ERANGE);
  CHECK(pg[0] == 0xAB && pg[99] == 0xAB);
}

/* A batch of random deltas, its bytes, and its decoding. */
static mmsb_batch *make_batch(int ndeltas) {
  mmsb_batch *b = calloc(1, sizeof *b);
  b->owned = true;
  CHECK_OK(mmsb_batch_begin(b, 42));
  static tdelta t;
  for (int i = 0; i < ndeltas; i++) {
    int k = (int)rng_below(&seed, NOPS);
    random_delta(&t, ops[k][0], ops[k][1], MMSB_PAGE_SIZE);
    uint64_t page = (uint64_t)i * 3;
    memcpy(t.enc + 8, &page, 8);
    CHECK_OK(mmsb_batch_append(b, t.enc, t.len));
  }
  mmsb_batch_finish(b);
  return b;
}

static void test_batch_roundtrip(void) {
  mmsb_batch *b = make_batch(20), *c = NULL;
  size_t len;
  const uint8_t *bytes = mmsb_batch_bytes(b, &len);
  CHECK_OK(mmsb_batch_decode(bytes, len, &c));
  CHECK(c && mmsb_batch_count(c) == 20 && mmsb_batch_epoch(c) == 42);
  for (size_t i = 0; c && i < 20; i++) {
    mmsb_delta x, y;
    CHECK_OK(mmsb_batch_delta(b, i, &x));
    CHECK_OK(mmsb_batch_delta(c, i, &y));
    CHECK(x.page == y.page && x.op == y.op && x.body_len == y.body_len &&
          memcmp(x.body, y.body, x.body_len) == 0);
  }
  mmsb_delta d;
  CHECK_FAILS(mmsb_batch_delta(c, 20, &d), MMSB_ERANGE);
  mmsb_batch_free(c);
  mmsb_batch_free(b);
}

/* Every truncation and random corruption of a valid batch decodes to a valid
 * batch or fails with MMSB_ECORRUPT; it never reads out of bounds (ASan). */
static void test_garbage(int cases) {
  mmsb_batch *b = make_batch(6), *c;
  size_t len;
  const uint8_t *bytes = mmsb_batch_bytes(b, &len);
  int corrupt = 0, ok = 0;
  for (size_t cut = 0; cut < len; cut++) {
    uint8_t *copy = malloc(cut ? cut : 1); /* exact size: ASan sees overreads */
    memcpy(copy, bytes, cut);
    int rc = mmsb_batch_decode(copy, cut, &c);
    corrupt += rc == MMSB_ECORRUPT;
    free(copy);
  }
  CHECK(corrupt == (int)len);
  uint8_t *copy = malloc(len);
  for (int n = 0; n < cases; n++) {
    memcpy(copy, bytes, len);
    int flips = 1 + (int)rng_below(&seed, 4);
    for (int f = 0; f < flips; f++) {
      size_t at = rng_below(&seed, 4) ? rng_below(&seed, 64 < len ? 64 : len) : rng_below(&seed, len);
      copy[at] ^= (uint8_t)(1u << rng_below(&seed, 8));
    }
    int rc = mmsb_batch_decode(copy, len, &c);
    CHECK(rc == MMSB_OK || rc == MMSB_ECORRUPT);
    if (rc == MMSB_OK) {
      ok++;
      uint8_t page[MMSB_PAGE_SIZE];
      for (size_t i = 0; i < mmsb_batch_count(c); i++) {
        mmsb_delta d;
        CHECK_OK(mmsb_batch_delta(c, i, &d));
        mmsb_delta_apply(&d, page, sizeof page);
      }
      mmsb_batch_free(c);
    }
  }
  free(copy);
  for (int n = 0; n < cases; n++) { /* pure noise */
    uint8_t noise[256];
    for (size_t i = 0; i < sizeof noise; i++) noise[i] = (uint8_t)rng_next(&seed);
    if (n & 1) memcpy(noise, bytes, MMSB_BATCH_HDR);
    int rc = mmsb_batch_decode(noise, rng_below(&seed, sizeof noise), &c);
    CHECK(rc == MMSB_ECORRUPT || rc == MMSB_OK);
    if (rc == MMSB_OK) mmsb_batch_free(c);
  }
  CHECK_FAILS(mmsb_batch_decode(NULL, 10, &c), MMSB_EINVAL);
  printf("garbage: %zu truncations refused; %d flipped batches, %d still valid\n",
         len, cases, ok);
  mmsb_batch_free(b);
}

/* Buffers whose memory comes from an allocator (the batch's, pinned when
 * the bus has a CUDA mirror): moving in and out of it and growing keep the
 * bytes, every block goes back to the allocator that gave it; a buffer
 * that must grow when its allocator is short grows in malloc's memory (a
 * lost device must not fail the commit as out of memory), and a move into
 * a short allocator leaves the buffer as it was. */
static int allocs, releases, refuse;
static void *counted_alloc(size_t n) {
  if (refuse) return NULL;
  allocs++;
  return malloc(n);
}
static void counted_release(void *p) {
  releases++;
  free(p);
}
static const mmsb_mem counted = {counted_alloc, counted_release};

static bool holds_pattern(const mmsb_buf *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (b->p[i] != (uint8_t)(i * 7)) return false;
  return true;
}

static void test_buf_memory(void) {
  mmsb_buf b = {0};
  CHECK_OK(mmsb_buf_reserve(&b, 100));
  for (size_t i = 0; i < 100; i++) b.p[i] = (uint8_t)(i * 7);
  b.len = 100;
  CHECK_OK(mmsb_buf_use(&b, &counted));
  CHECK(b.mem == &counted && allocs == 1 && releases == 0 && holds_pattern(&b, 100));
  CHECK_OK(mmsb_buf_reserve(&b, 1 << 20)); /* grows in the allocator's memory */
  CHECK(allocs == 2 && releases == 1 && b.cap >= 100 + (1 << 20) && holds_pattern(&b, 100));
  refuse = 1;
  CHECK_OK(mmsb_buf_reserve(&b, 4u << 20)); /* the allocator short: malloc's memory */
  CHECK(b.mem == NULL && releases == 2 && b.cap >= 100 + (4u << 20) && holds_pattern(&b, 100));
  uint8_t *p = b.p;
  CHECK_FAILS(mmsb_buf_use(&b, &counted), MMSB_ENOMEM);
  CHECK(b.p == p && b.mem == NULL && holds_pattern(&b, 100));
  refuse = 0;
  CHECK_OK(mmsb_buf_use(&b, &counted));
  mmsb_buf_free(&b);
  CHECK(b.p == NULL && b.len == 0 && b.mem == &counted && allocs == 3 && releases == 3);
  CHECK_OK(mmsb_buf_reserve(&b, 10)); /* a freed buffer keeps its allocator */
  CHECK(allocs == 4);
  mmsb_buf_free(&b);
  CHECK(releases == 4);
}

/* mmsb_run_apply, which copies assignments eight bytes a store where the
 * page offset is 8-aligned and the bytes 4-aligned, against a plain copy
 * (and an accumulation against the element-by-element path) for every
 * alignment of both and run lengths 0..40.  The GPU's apply kernels run
 * the same function.  (The accumulation goes element by element: it is
 * there to check that the word path is for assignments only.) */
static void test_run_apply(void) {
  _Alignas(8) uint8_t page[64], want[64], src[64 + 8]; /* offsets below give every alignment */
  for (uint32_t off = 0; off < 16; off++)
    for (uint32_t at = 0; at < 8; at++)
      for (uint32_t len = 0; len <= 40; len++) {
        for (size_t i = 0; i < sizeof page; i++) page[i] = (uint8_t)rng_next(&seed);
        for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)rng_next(&seed);
        memcpy(want, page, sizeof page);
        memcpy(want + off, src + at, len);
        mmsb_run_apply(page, off, src + at, len, MMSB_OP_ASSIGN, MMSB_T_BYTES);
        CHECK(!memcmp(page, want, sizeof page));
        uint32_t elems = len & ~3u;
        memcpy(want, page, sizeof page);
        for (uint32_t i = 0; i < elems; i += 4) {
          uint32_t a, b;
          memcpy(&a, want + off + i, 4);
          memcpy(&b, src + at + i, 4);
          a += b;
          memcpy(want + off + i, &a, 4);
        }
        mmsb_run_apply(page, off, src + at, elems, MMSB_OP_ADD, MMSB_T_U32);
        CHECK(!memcmp(page, want, sizeof page));
      }
}

int main(void) {
  seed = test_seed();
  test_buf_memory();
  int scale = test_scale();
  test_laws(20000 * scale);
  test_compose_refusals();
  test_batch_roundtrip();
  test_run_apply();
  test_garbage(5000 * scale);
  return check_done("test_delta");
}
