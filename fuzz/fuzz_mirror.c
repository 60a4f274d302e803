/*
 * fuzz_mirror.c - random programs of the mirror API.  The input is a
 * sequence of operations: stores (some of thousands of scattered words,
 * so that epochs are collected the general way too), accumulations of
 * every op and type, a copying node, a GPU node copying between mirrors
 * (into two outputs, one of them the copying node's input),
 * mirrors and regions made and destroyed, commits.  After every commit
 * each mirror must equal its region byte for byte, and the GPU node's copy
 * must be in its output when it ran.  Calls that the API refuses
 * (destroying a region that has a mirror, accumulating past a region's
 * end) must be refused, and the bus must go on.  The mirrors are on MMSB_DEVICE's backend: the host backend in the
 * fuzzing build, the CUDA one where the replay runs on a GPU machine
 * (ctest's fuzz_mirror_gpu: MMSB_DEVICE=0, and exit 77 without a GPU).
 */
#include <mmsb/mmsb.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NREG = 4 };
static const size_t sizes[NREG] = {3 * 4096 + 100, 4096, 64, 40000};

typedef struct prog {
  const uint8_t *p, *end;
  mmsb_bus *bus;
  mmsb_region *r[NREG];
  mmsb_mirror *m[NREG];
  mmsb_node *copy; /* r[0] -> r[1]'s first bytes */
  mmsb_node *gpu;  /* r[2]'s mirror -> r[3]'s at gpu_off, and r[0]'s */
  size_t gpu_off;
  bool r2_changed; /* since the last commit: the GPU node runs */
  uint8_t back[40000];
} prog;

static uint32_t take(prog *g, int bytes) {
  uint32_t v = 0;
  for (int i = 0; i < bytes && g->p < g->end; i++) v = v << 8 | *g->p++;
  return v;
}

static void fail(const char *what, int k) {
  fprintf(stderr, "fuzz_mirror: %s (region %d): %s\n", what, k, mmsb_last_error());
  abort();
}

static int copy_node(void *ctx) {
  prog *g = ctx;
  memcpy(mmsb_region_data(g->r[1]), mmsb_region_data(g->r[0]), 64);
  return 0;
}

/* Makes r[k]'s mirror, which uploads the region as it is now. */
static void make_mirror(prog *g, int k) {
  if (mmsb_mirror_create(g->r[k], -1, &g->m[k])) fail("mirror create", k);
  static bool said; /* which backend this run tests, once */
  const char *backend = mmsb_mirror_backend(g->m[k]);
  if (!said) fprintf(stderr, "fuzz_mirror: %s mirrors\n", backend);
  said = true;
  if (getenv("MMSB_FUZZ_GPU") && strcmp(backend, "cuda")) {
    fprintf(stderr, "fuzz_mirror: MMSB_FUZZ_GPU set and no GPU: skipped\n");
    exit(77); /* ctest's fuzz_mirror_gpu: skipped where there is no GPU */
  }
}

/* Where the GPU node's second output, r[0], gets r[2]'s first 8 bytes
 * (r[0] feeds the CPU node: a GPU node feeding a CPU node). */
static size_t gpu_off0(const prog *g) { return g->gpu_off % (sizes[0] - 8); }

/* The GPU node's launch: r[2]'s 64 bytes into r[3] at gpu_off and its
 * first 8 into r[0], copied on the device (cudaMemcpyAsync, a weak
 * reference: present in CUDA builds, whose runtime libmmsb carries) or,
 * on the host backend, by the CPU. */
extern int cudaMemcpyAsync(void *dst, const void *src, size_t n, int kind, void *stream)
    __attribute__((weak));
static int gpu_copy(void *ctx, void *stream, void *const *in, void *const *out) {
  prog *g = ctx;
  uint8_t *dst = (uint8_t *)out[0] + g->gpu_off, *dst0 = (uint8_t *)out[1] + gpu_off0(g);
  if (strcmp(mmsb_mirror_backend(g->m[3]), "cuda")) {
    memcpy(dst, in[0], 64);
    memcpy(dst0, in[0], 8);
    return 0;
  }
  if (!cudaMemcpyAsync) return -1;
  int rc = cudaMemcpyAsync(dst, in[0], 64, 3 /* device to device */, stream);
  return rc ? rc : cudaMemcpyAsync(dst0, in[0], 8, 3, stream);
}

/* Makes the GPU node (and the mirrors it needs), or removes it. */
static void toggle_gpu_node(prog *g) {
  if (g->gpu) {
    if (mmsb_node_remove(g->gpu)) fail("gpu node remove", 3);
    g->gpu = NULL;
    return;
  }
  for (int k = 0; k < NREG; k++)
    if (k != 1 && !g->m[k]) make_mirror(g, k);
  g->gpu_off = take(g, 2) % (sizes[3] - 64);
  mmsb_mirror *out[2] = {g->m[3], g->m[0]};
  if (mmsb_gpu_node_create(g->bus, "gpu", gpu_copy, g, &g->m[2], 1, out, 2, &g->gpu))
    fail("gpu node", 3);
}

/* After a commit in which the GPU node ran: its copies are in r[3] and
 * r[0]. */
static void check_gpu_copy(prog *g) {
  const uint8_t *src = mmsb_region_data(g->r[2]);
  if (g->gpu && g->r2_changed &&
      (memcmp((uint8_t *)mmsb_region_data(g->r[3]) + g->gpu_off, src, 64) ||
       memcmp((uint8_t *)mmsb_region_data(g->r[0]) + gpu_off0(g), src, 8)))
    fail("the GPU node's copy is not in its outputs", 3);
  g->r2_changed = false;
}

static void check_mirrors(prog *g, mmsb_epoch_t e) {
  for (int k = 0; k < NREG; k++) {
    if (!g->m[k]) continue;
    if (mmsb_mirror_wait(g->m[k], e) || mmsb_mirror_download(g->m[k], g->back)) fail("wait", k);
    const uint8_t *d = mmsb_region_data(g->r[k]);
    if (!memcmp(g->back, d, sizes[k])) continue;
    for (size_t i = 0; i < sizes[k]; i++) /* where, for the report */
      if (g->back[i] != d[i]) {
        fprintf(stderr, "fuzz_mirror: epoch %llu, byte %zu: mirror %#x, region %#x\n",
                (unsigned long long)e, i, g->back[i], d[i]);
        fail("mirror differs", k);
      }
  }
}

static void store(prog *g, int k) {
  uint8_t *d = mmsb_region_data(g->r[k]);
  size_t off = take(g, 2) % sizes[k], len = 1 + take(g, 1) % 64;
  if (take(g, 1) == 0) len = 1 + take(g, 2) % 9000; /* now and then a long one */
  if (len > sizes[k] - off) len = sizes[k] - off;
  uint8_t v = (uint8_t)take(g, 1);
  for (size_t i = 0; i < len; i++) d[off + i] = (uint8_t)(v + i * 31);
  if (mmsb_touch(d + off, len)) fail("touch", k);
}

/* Many scattered 8-byte stores (up to 8 160): an epoch of 4 096 entries
 * or more is collected the general way, on the pool when the bus has
 * threads for it. */
static void scatter(prog *g, int k) {
  uint64_t *w = mmsb_region_data(g->r[k]);
  size_t words = sizes[k] / 8, n = 32 * (size_t)take(g, 1);
  uint32_t x = take(g, 4) | 1;
  for (size_t i = 0; i < n && words; i++) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5; /* xorshift32 */
    w[x % words] += i;
    if (mmsb_touch(&w[x % words], 8)) fail("touch", k);
  }
}

/* Queues an accumulation; whether it was taken. */
static bool accumulate(prog *g, int k) {
  static const int types[] = {MMSB_T_U32, MMSB_T_U64, MMSB_T_I64, MMSB_T_F32, MMSB_T_F64};
  int op = 1 + (int)take(g, 1) % 5, type = types[take(g, 1) % 5];
  size_t es = type == MMSB_T_U32 || type == MMSB_T_F32 ? 4 : 8;
  size_t count = 1 + take(g, 1) % 16, off = es * (take(g, 2) % (sizes[k] / es + 2));
  uint64_t vals[16];
  for (size_t i = 0; i < count; i++) vals[i] = (uint64_t)take(g, 4) << 32 | take(g, 4);
  int rc = mmsb_accumulate(g->r[k], off, op, type, vals, count);
  bool fits = off + count * es <= sizes[k];
  bool floaty = type == MMSB_T_F32 || type == MMSB_T_F64;
  bool valid = fits && !(floaty && (op == MMSB_OP_OR || op == MMSB_OP_XOR));
  if ((rc == MMSB_OK) != valid) fail(rc ? "accumulate refused" : "accumulate taken", k);
  return rc == MMSB_OK;
}

static void make_region(prog *g, int k) {
  char name[8];
  snprintf(name, sizeof name, "r%d", k);
  if (mmsb_region_create(g->bus, name, sizes[k], 0, &g->r[k])) fail("region", k);
}

/* Makes r[k]'s mirror or destroys it (refused while the GPU node holds it). */
static void toggle_mirror(prog *g, int k) {
  if (g->gpu && k != 1) { /* held by the GPU node */
    if (mmsb_mirror_destroy(g->m[k]) != MMSB_EBUSY) fail("mirror destroy not refused", k);
  } else if (g->m[k]) {
    if (mmsb_mirror_destroy(g->m[k])) fail("mirror destroy", k);
    g->m[k] = NULL;
  } else {
    make_mirror(g, k);
  }
}

/* A region with a mirror or a node stays (refused); one without is made
 * again. */
static void remake_region(prog *g, int k) {
  if (g->m[k] || (g->copy && k < 2)) {
    if (mmsb_region_destroy(g->r[k]) != MMSB_EBUSY) fail("destroy not refused", k);
    return;
  }
  if (mmsb_region_destroy(g->r[k])) fail("destroy", k);
  make_region(g, k);
}

static void toggle_cpu_node(prog *g) {
  if (g->copy) {
    if (mmsb_node_remove(g->copy)) fail("node remove", 1);
    g->copy = NULL;
  } else if (mmsb_node_create(g->bus, "copy", copy_node, g, &g->copy) ||
             mmsb_node_input(g->copy, g->r[0]) ||
             mmsb_node_output(g->copy, g->r[1], MMSB_DETECT_DIFF)) {
    fail("node", 1);
  }
}

static void step(prog *g) {
  int k = (int)take(g, 1) % NREG;
  bool gpu_out = g->gpu && (k == 3 || k == 0); /* the GPU node's outputs */
  uint32_t op = take(g, 1);
  switch (op % 9) { /* (op bytes keep their meaning: the corpus stays valid) */
  case 0: case 1: case 2: /* a store; 6 op bytes of 256, many scattered ones */
    if (gpu_out) break;
    if (op >= 243) scatter(g, k);
    else store(g, k);
    g->r2_changed |= k == 2;
    break;
  case 3:
    if (!gpu_out) g->r2_changed |= accumulate(g, k) && k == 2;
    break;
  case 4: {
    mmsb_epoch_t e;
    if (mmsb_commit(g->bus, &e)) fail("commit", k);
    check_mirrors(g, e);
    check_gpu_copy(g);
    break;
  }
  case 5: toggle_mirror(g, k); break;
  case 6: remake_region(g, k); break;
  case 7: toggle_cpu_node(g); break;
  case 8: toggle_gpu_node(g); break;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static prog g;
  memset(&g, 0, sizeof g);
  g.p = data;
  g.end = data + size;
  if (mmsb_bus_open(NULL, &g.bus)) fail("bus", -1);
  for (int k = 0; k < NREG; k++) make_region(&g, k);
  for (int n = 0; g.p < g.end && n < 4000; n++) step(&g);
  mmsb_epoch_t e;
  if (mmsb_commit(g.bus, &e)) fail("last commit", -1);
  check_mirrors(&g, e);
  check_gpu_copy(&g);
  if (mmsb_bus_close(g.bus)) fail("close", -1);
  return 0;
}
