/* test_graph.c - the propagation graph: chains, diamonds, fan-out, cutoff,
 * cycles, failures, libffi signatures, replay of derived state, and random
 * DAGs checked against a from-scratch recomputation. */
#include "check.h"

#include <math.h>
#include <unistd.h>

#define W 64 /* u64 words per region */
static uint64_t seed;
static int runs[64];

/* ---- a callback node: out[k] = sum of inputs[k] * (j+1), clamped ---- */
typedef struct cnode {
  int id;
  int nin;
  uint64_t *in[8];
  uint64_t *out;
  uint64_t clamp; /* 0: none; else out = min(sum, clamp) (causes cutoffs) */
  int fail;
} cnode;

static void compute(const cnode *c, uint64_t *dst) {
  for (int k = 0; k < W; k++) {
    uint64_t s = (uint64_t)k;
    for (int j = 0; j < c->nin; j++) s += c->in[j][k] * (uint64_t)(j + 1);
    dst[k] = c->clamp && s > c->clamp ? c->clamp : s;
  }
}

static int cnode_fn(void *ctx) {
  cnode *c = ctx;
  __atomic_fetch_add(&runs[c->id], 1, __ATOMIC_RELAXED); /* nodes of one height run in parallel */
  if (c->fail == 2) mmsb_mirror_wait(NULL, 1); /* a failure with a detail, then its own */
  if (c->fail) return 1;
  compute(c, c->out);
  return 0;
}

static mmsb_region *mkreg(mmsb_bus *bus, const char *fmt, int i) {
  char name[32];
  snprintf(name, sizeof name, fmt, i);
  mmsb_region *r = NULL;
  CHECK_OK(mmsb_region_create(bus, name, W * 8, 0, &r));
  return r;
}

/* a -> n1 -> b -> n2 -> c, and a diamond: a -> n3 -> d, a -> n4 -> e,
 * {d, e} -> n5 -> f.  Each node runs once per epoch. */
static void test_shapes(void) {
  mmsb_bus *bus;
  CHECK_OK(mmsb_bus_open(NULL, &bus));
  mmsb_region *r[6];
  for (int i = 0; i < 6; i++) r[i] = mkreg(bus, "s%d", i);
  static cnode c[6];
  mmsb_node *n[6];
  int edges[6][3] = {{0, -1, 1}, {1, -1, 2}, {0, -1, 3}, {0, -1, 4}, {3, 4, 5}};
  memset(runs, 0, sizeof runs);
  for (int i = 0; i < 5; i++) {
    c[i] = (cnode){.id = i, .out = mmsb_region_data(r[edges[i][2]])};
    char name[8];
    snprintf(name, sizeof name, "n%d", i);
    CHECK_OK(mmsb_node_create(bus, name, cnode_fn, &c[i], &n[i]));
    for (int j = 0; j < 2; j++)
      if (edges[i][j] >= 0) {
        c[i].in[c[i].nin++] = mmsb_region_data(r[edges[i][j]]);
        CHECK_OK(mmsb_node_input(n[i], r[edges[i][j]]));
      }
    CHECK_OK(mmsb_node_output(n[i], r[edges[i][2]], i == 4 ? MMSB_DETECT_WHOLE : MMSB_DETECT_DIFF));
  }
  uint64_t *a = mmsb_region_data(r[0]);
  a[3] = 5;
  mmsb_touch(&a[3], 8);
  CHECK_OK(mmsb_commit(bus, NULL));
  for (int i = 0; i < 5; i++) CHECK(runs[i] == 1);
  uint64_t want[W];
  compute(&c[4], want);
  CHECK(memcmp(want, mmsb_region_data(r[5]), sizeof want) == 0);
  CHECK(((uint64_t *)mmsb_region_data(r[2]))[3] == 3 + (3 + 5)); /* chain */
  /* the batch holds derived deltas of the same epoch */
  CHECK(mmsb_batch_count(mmsb_last_batch(bus)) == 6);
  /* nothing changed: nobody runs */
  CHECK_OK(mmsb_commit(bus, NULL));
  for (int i = 0; i < 5; i++) CHECK(runs[i] == 1);
  /* cycles are refused, with the cycle named */
  CHECK_FAILS(mmsb_node_input(n[0], r[2]), MMSB_ECYCLE);
  CHECK(strstr(mmsb_last_error(), "n0 -> n1 -> n0") != NULL);
  CHECK_FAILS(mmsb_node_output(n[1], r[2], MMSB_DETECT_DIFF), MMSB_EEXIST);
  CHECK_FAILS(mmsb_node_output(n[1], r[1], MMSB_DETECT_DIFF), MMSB_EEXIST);
  /* a failing node: the commit names it and seals nothing; the detail the
   * node left, if any, follows, and an older failure's is not taken for it */
  c[2].fail = 1;
  a[4] = 1;
  mmsb_touch(&a[4], 8);
  mmsb_epoch_t e0 = mmsb_epoch(bus);
  CHECK_FAILS(mmsb_mirror_wait(NULL, 1), MMSB_EINVAL);
  CHECK_FAILS(mmsb_commit(bus, NULL), MMSB_ENODE);
  CHECK(strstr(mmsb_last_error(), "'n2'") != NULL && mmsb_epoch(bus) == e0);
  CHECK(strstr(mmsb_last_error(), "mirror is NULL") == NULL);
  c[2].fail = 2;
  CHECK_FAILS(mmsb_commit(bus, NULL), MMSB_ENODE);
  CHECK(strstr(mmsb_last_error(), "'n2'") && strstr(mmsb_last_error(), ": mirror is NULL"));
  c[2].fail = 0;
  CHECK_OK(mmsb_commit(bus, NULL)); /* the stores come back in the next epoch */
  compute(&c[4], want);
  CHECK(memcmp(want, mmsb_region_data(r[5]), sizeof want) == 0);
  /* a region a node reads or writes cannot go while the node is there */
  CHECK_FAILS(mmsb_region_destroy(r[5]), MMSB_EBUSY);
  CHECK(strstr(mmsb_last_error(), "the output of node 'n4'"));
  CHECK_OK(mmsb_node_remove(n[4]));
  CHECK_OK(mmsb_region_destroy(r[5]));
  char *dot = NULL;
  size_t dlen = 0;
  FILE *f = open_memstream(&dot, &dlen);
  CHECK_OK(mmsb_graph_dot(bus, f));
  fclose(f);
  CHECK(dot && strstr(dot, "\"r:s0\" -> \"n:n0\"") && !strstr(dot, "n:n4"));
  free(dot);
  CHECK_OK(mmsb_bus_close(bus));
}

/* Cutoff: a clamped node whose output does not change stops propagation. */
static void test_cutoff(void) {
  mmsb_bus *bus;
  CHECK_OK(mmsb_bus_open(NULL, &bus));
  mmsb_region *a = mkreg(bus, "a%d", 0), *b = mkreg(bus, "b%d", 0), *c = mkreg(bus, "c%d", 0);
  static cnode n1, n2;
  n1 = (cnode){.id = 10, .nin = 1, .in = {mmsb_region_data(a)}, .out = mmsb_region_data(b), .clamp = 100};
  n2 = (cnode){.id = 11, .nin = 1, .in = {mmsb_region_data(b)}, .out = mmsb_region_data(c)};
  mmsb_node *x, *y;
  CHECK_OK(mmsb_node_create(bus, "clamp", cnode_fn, &n1, &x));
  CHECK_OK(mmsb_node_input(x, a));
  CHECK_OK(mmsb_node_output(x, b, MMSB_DETECT_DIFF));
  CHECK_OK(mmsb_node_create(bus, "after", cnode_fn, &n2, &y));
  CHECK_OK(mmsb_node_input(y, b));
  CHECK_OK(mmsb_node_output(y, c, MMSB_DETECT_DIFF));
  memset(runs, 0, sizeof runs);
  uint64_t *pa = mmsb_region_data(a);
  pa[0] = 500;
  mmsb_touch(pa, 8);
  CHECK_OK(mmsb_commit(bus, NULL));
  CHECK(runs[10] == 1 && runs[11] == 1);
  pa[0] = 900; /* still clamped to 100: b does not change */
  mmsb_touch(pa, 8);
  CHECK_OK(mmsb_commit(bus, NULL));
  CHECK(runs[10] == 2 && runs[11] == 1);
  CHECK_OK(mmsb_bus_close(bus));
}

/* ---- libffi: existing functions with every argument type ---- */
int ffi_many(uint64_t *out, const uint64_t *in, size_t n, int8_t a, uint8_t b, int16_t c,
             uint16_t d, int32_t e, uint32_t f, int64_t g, uint64_t h, float x, double y,
             void *p) {
  out[0] = in[0] + (uint64_t)(int64_t)a + b + (uint64_t)(int64_t)c + d + (uint64_t)(int64_t)e + f +
           (uint64_t)g + h;
  out[1] = (uint64_t)(x * 4) + (uint64_t)(y * 8);
  out[2] = (uint64_t)n;
  out[3] = p == (void *)0x1234 ? 1 : 0;
  return 0;
}

void ffi_fails_not(uint64_t *out, const uint64_t *in) { out[0] = in[0] * 2; }
int ffi_fails(uint64_t *out) { (void)out; return -1; }

static void test_ffi(void) {
  mmsb_bus *bus;
  CHECK_OK(mmsb_bus_open(NULL, &bus));
  mmsb_region *in = mkreg(bus, "in%d", 0), *out = mkreg(bus, "out%d", 0), *o2 = mkreg(bus, "o%d", 2);
  mmsb_arg args[] = {
    {MMSB_ARG_OUT, out, {0}}, {MMSB_ARG_IN, in, {0}}, {MMSB_ARG_SIZE, in, {0}},
    {MMSB_ARG_I8, NULL, {.i = -1}}, {MMSB_ARG_U8, NULL, {.u = 200}}, {MMSB_ARG_I16, NULL, {.i = -300}},
    {MMSB_ARG_U16, NULL, {.u = 60000}}, {MMSB_ARG_I32, NULL, {.i = -70000}},
    {MMSB_ARG_U32, NULL, {.u = 4000000000u}}, {MMSB_ARG_I64, NULL, {.i = -5}},
    {MMSB_ARG_U64, NULL, {.u = 1ull << 40}}, {MMSB_ARG_F32, NULL, {.f = 2.5}},
    {MMSB_ARG_F64, NULL, {.f = 0.25}}, {MMSB_ARG_PTR, NULL, {.p = (void *)0x1234}},
  };
  mmsb_node *n;
  CHECK_OK(mmsb_node_create_sym(bus, "many", "ffi_many", 1, args, 14, &n));
  mmsb_arg a2[] = {{MMSB_ARG_OUT, o2, {0}}, {MMSB_ARG_IN, in, {0}}};
  mmsb_node *m;
  CHECK_OK(mmsb_node_create_ffi(bus, "twice", (void (*)(void))ffi_fails_not, 0, a2, 2, &m));
  uint64_t *pi = mmsb_region_data(in);
  pi[0] = 10;
  mmsb_touch(pi, 8);
  CHECK_OK(mmsb_commit(bus, NULL));
  uint64_t *po = mmsb_region_data(out);
  uint64_t want = 10 + (uint64_t)-1 + 200 + (uint64_t)-300 + 60000 + (uint64_t)-70000 + 4000000000u +
                  (uint64_t)-5 + (1ull << 40);
  CHECK(po[0] == want && po[1] == 10 + 2 && po[2] == W * 8 && po[3] == 1);
  CHECK(((uint64_t *)mmsb_region_data(o2))[0] == 20);
  mmsb_node *bad;
  CHECK_FAILS(mmsb_node_create_sym(bus, "nosuch", "no_such_symbol_xyz", 0, NULL, 0, &bad), MMSB_ENOTFOUND);
  mmsb_arg a3[] = {{MMSB_ARG_OUT, out, {0}}};
  CHECK_FAILS(mmsb_node_create_sym(bus, "dup", "ffi_fails", 1, a3, 1, &bad), MMSB_EEXIST);
  mmsb_arg a4[] = {{99, NULL, {0}}};
  CHECK_FAILS(mmsb_node_create_ffi(bus, "badkind", (void (*)(void))ffi_fails, 1, a4, 1, &bad), MMSB_EINVAL);
  CHECK_FAILS(mmsb_node_create(bus, "many", cnode_fn, NULL, &bad), MMSB_EEXIST);
  CHECK_OK(mmsb_bus_close(bus));
}

/* Derived state comes back from the log without running any node. */
static void test_replay_derived(void) {
  char dir[128];
  snprintf(dir, sizeof dir, "/tmp/mmsb-test-graph-%d", (int)getpid());
  mmsb_config cfg;
  mmsb_config_init(&cfg);
  cfg.dir = dir;
  cfg.sync = MMSB_SYNC_NONE;
  mmsb_bus *bus;
  CHECK_OK(mmsb_bus_open(&cfg, &bus));
  mmsb_region *a = mkreg(bus, "src%d", 0), *b = mkreg(bus, "dst%d", 0);
  static cnode c;
  c = (cnode){.id = 20, .nin = 1, .in = {mmsb_region_data(a)}, .out = mmsb_region_data(b)};
  mmsb_node *n;
  CHECK_OK(mmsb_node_create(bus, "derive", cnode_fn, &c, &n));
  CHECK_OK(mmsb_node_input(n, a));
  CHECK_OK(mmsb_node_output(n, b, MMSB_DETECT_DIFF));
  uint64_t *pa = mmsb_region_data(a);
  for (int e = 0; e < 5; e++) {
    pa[e] = (uint64_t)e * 7 + 1;
    mmsb_touch(&pa[e], 8);
    CHECK_OK(mmsb_commit(bus, NULL));
  }
  uint64_t want[W];
  memcpy(want, mmsb_region_data(b), sizeof want);
  CHECK_OK(mmsb_bus_close(bus));
  mmsb_bus *v;
  CHECK_OK(mmsb_replay(dir, 0, &v));
  mmsb_region *rb;
  CHECK_OK(mmsb_region_find(v, "dst0", &rb));
  CHECK(memcmp(mmsb_region_data(rb), want, sizeof want) == 0);
  mmsb_bus_close(v);
  char cmd[200];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd)) {}
}

/* Node "d<i>" running c; connect() adds an input to both node and c. */
static mmsb_node *dnode(mmsb_bus *bus, int i, cnode *c) {
  mmsb_node *n = NULL;
  char name[16];
  snprintf(name, sizeof name, "d%d", i);
  CHECK_OK(mmsb_node_create(bus, name, cnode_fn, c, &n));
  return n;
}

static void connect(mmsb_node *n, cnode *c, mmsb_region *r) {
  c->in[c->nin++] = mmsb_region_data(r);
  CHECK_OK(mmsb_node_input(n, r));
}

/* Random DAGs, random input changes, against a recomputation. */
static void test_random_dags(int rounds) {
  int bad = 0;
  for (int round = 0; round < rounds; round++) {
    mmsb_bus *bus;
    CHECK_OK(mmsb_bus_open(NULL, &bus));
    enum { NS = 4, NN = 24 };
    mmsb_region *src[NS], *dst[NN];
    static cnode c[NN];
    for (int i = 0; i < NS; i++) src[i] = mkreg(bus, "src%d", i);
    for (int i = 0; i < NN; i++) {
      dst[i] = mkreg(bus, "dst%d", i);
      c[i] = (cnode){.id = 30 + i % 30, .out = mmsb_region_data(dst[i]),
                     .clamp = rng_below(&seed, 3) == 0 ? 1000 + rng_below(&seed, 5000) : 0};
      mmsb_node *n = dnode(bus, i, &c[i]);
      int k = 1 + (int)rng_below(&seed, 3);
      for (int j = 0; j < k; j++) {
        int from = (int)rng_below(&seed, (uint64_t)(NS + i));
        connect(n, &c[i], from < NS ? src[from] : dst[from - NS]);
      }
      CHECK_OK(mmsb_node_output(n, dst[i], rng_below(&seed, 2) ? MMSB_DETECT_DIFF : MMSB_DETECT_WHOLE));
    }
    for (int e = 0; e < 20; e++) {
      int changes = (int)rng_below(&seed, 4);
      for (int k = 0; k < changes; k++) {
        uint64_t *p = mmsb_region_data(src[rng_below(&seed, NS)]);
        int w = (int)rng_below(&seed, W);
        p[w] = rng_below(&seed, 100);
        mmsb_touch(&p[w], 8);
      }
      CHECK_OK(mmsb_commit(bus, NULL));
      for (int i = 0; i < NN; i++) { /* from scratch, in index (topological) order */
        uint64_t want[W];
        compute(&c[i], want);
        bad += memcmp(want, mmsb_region_data(dst[i]), sizeof want) != 0;
      }
    }
    CHECK_OK(mmsb_bus_close(bus));
  }
  CHECK(bad == 0);
  printf("random dags: %d rounds, %d mismatches\n", rounds, bad);
}

/* The same DAG and input changes on 1, 2, 3 and 8 threads: every epoch's
 * batch must be byte-identical to the serial one. */
static uint64_t run_with_threads(int threads, uint64_t s0) {
  mmsb_config cfg;
  mmsb_config_init(&cfg);
  cfg.threads = threads;
  mmsb_bus *bus;
  CHECK_OK(mmsb_bus_open(&cfg, &bus));
  enum { NS = 6, NN = 48 };
  mmsb_region *src[NS], *dst[NN];
  cnode *c = calloc(NN, sizeof *c);
  uint64_t s = s0, h = 1469598103934665603ull;
  for (int i = 0; i < NS; i++) src[i] = mkreg(bus, "src%d", i);
  for (int i = 0; i < NN; i++) {
    dst[i] = mkreg(bus, "dst%d", i);
    c[i] = (cnode){.id = 0, .out = mmsb_region_data(dst[i]), .clamp = rng_below(&s, 4) == 0 ? 3000 : 0};
    mmsb_node *n = dnode(bus, i, &c[i]);
    int k = 1 + (int)rng_below(&s, 2);
    for (int j = 0; j < k; j++) {
      /* mostly sources: wide levels of independent nodes */
      int from = rng_below(&s, 4) ? (int)rng_below(&s, NS) : NS + (int)rng_below(&s, (uint64_t)(i ? i : 1));
      connect(n, &c[i], from < NS || i == 0 ? src[from % NS] : dst[from - NS]);
    }
    CHECK_OK(mmsb_node_output(n, dst[i], MMSB_DETECT_DIFF));
  }
  for (int e = 0; e < 15; e++) {
    for (int k = 0; k < 3; k++) {
      uint64_t *p = mmsb_region_data(src[rng_below(&s, NS)]);
      int w = (int)rng_below(&s, W);
      p[w] = rng_below(&s, 100);
      mmsb_touch(&p[w], 8);
    }
    CHECK_OK(mmsb_commit(bus, NULL));
    size_t len;
    const uint8_t *b = mmsb_batch_bytes(mmsb_last_batch(bus), &len);
    for (size_t i = 0; i < len; i++) h = (h ^ b[i]) * 1099511628211ull;
  }
  CHECK_OK(mmsb_bus_close(bus));
  free(c);
  return h;
}

static void test_threads_deterministic(void) {
  uint64_t base = run_with_threads(1, 99);
  int same = 0;
  static const int ts[] = {2, 3, 8};
  for (int i = 0; i < 3; i++) same += run_with_threads(ts[i], 99) == base;
  CHECK(same == 3);
  printf("threads 1, 2, 3, 8: %d of 3 runs byte-identical to the serial batches\n", same);
}

/* What a node or a subscriber may not do inside its bus's commit, which
 * is walking the graph, the sinks and the mirrors: commit again, close the
 * bus, change the graph or the sinks.  Each is MMSB_EBUSY, on the pool's
 * threads too, and the commit around it goes on; the same calls work after
 * it returns.  A commit of another bus is allowed. */
static mmsb_bus *in_bus, *other_bus;
static mmsb_node *in_node;
static int in_refused, in_other, in_looked, in_looked_busy;
/* A call that takes the bus's lock: fine on the committing thread, which
 * holds it; MMSB_EBUSY on a pool thread, which would wait for ever. */
static void look_up(void) {
  mmsb_region *r;
  int rc = mmsb_region_find(in_bus, "ia0", &r);
  __atomic_fetch_add(&in_looked, rc == MMSB_OK || rc == MMSB_EBUSY, __ATOMIC_RELAXED);
  __atomic_fetch_add(&in_looked_busy, rc == MMSB_EBUSY, __ATOMIC_RELAXED);
}
static int inside_sub(void *ctx, const mmsb_batch *b);
static int try_inside(void) {
  mmsb_node *x;
  unsigned id;
  look_up();
  int busy = mmsb_commit(in_bus, NULL) == MMSB_EBUSY;
  busy += mmsb_bus_close(in_bus) == MMSB_EBUSY;
  busy += mmsb_node_remove(in_node) == MMSB_EBUSY;
  busy += mmsb_node_create(in_bus, "late", cnode_fn, NULL, &x) == MMSB_EBUSY;
  busy += mmsb_subscribe(in_bus, inside_sub, NULL, &id) == MMSB_EBUSY;
  busy += mmsb_unsubscribe(in_bus, 1) == MMSB_EBUSY;
  __atomic_fetch_add(&in_refused, busy, __ATOMIC_RELAXED);
  __atomic_fetch_add(&in_other, mmsb_commit(other_bus, NULL) == MMSB_OK, __ATOMIC_RELAXED);
  return 0;
}
static int inside_node(void *ctx) {
  (void)ctx;
  return try_inside();
}
static int inside_sub(void *ctx, const mmsb_batch *b) {
  (void)ctx;
  (void)b;
  return try_inside();
}

static void test_inside_commit(void) {
  mmsb_config cfg;
  mmsb_config_init(&cfg);
  cfg.threads = 4; /* the nodes of one height on the pool */
  CHECK_OK(mmsb_bus_open(&cfg, &in_bus));
  CHECK_OK(mmsb_bus_open(NULL, &other_bus));
  mmsb_region *a = mkreg(in_bus, "ia%d", 0);
  mmsb_node *n[8];
  for (int i = 0; i < 8; i++) {
    char name[8];
    snprintf(name, sizeof name, "in%d", i);
    CHECK_OK(mmsb_node_create(in_bus, name, inside_node, NULL, &n[i]));
    CHECK_OK(mmsb_node_input(n[i], a));
    CHECK_OK(mmsb_node_output(n[i], mkreg(in_bus, "io%d", i), MMSB_DETECT_DIFF));
  }
  in_node = n[0];
  unsigned id;
  CHECK_OK(mmsb_subscribe(in_bus, inside_sub, NULL, &id));
  uint64_t *d = mmsb_region_data(a);
  d[0] = 1;
  mmsb_touch(d, 8);
  mmsb_epoch_t e0 = mmsb_epoch(in_bus);
  CHECK_OK(mmsb_commit(in_bus, NULL));
  CHECK(mmsb_epoch(in_bus) == e0 + 1);
  CHECK(in_refused == 9 * 6 && in_other == 9); /* eight nodes and the subscriber */
  CHECK(in_looked == 9 && in_looked_busy < 9); /* the subscriber runs on the committing thread */
  printf("inside a commit: %d refusals, %d of 9 lookups refused on pool threads\n", in_refused,
         in_looked_busy);
  CHECK_OK(mmsb_unsubscribe(in_bus, id));
  CHECK_OK(mmsb_node_remove(in_node)); /* after the commit: fine */
  CHECK_OK(mmsb_bus_close(other_bus));
  CHECK_OK(mmsb_bus_close(in_bus));
}

int main(void) {
  seed = test_seed();
  test_inside_commit();
  test_threads_deterministic();
  test_shapes();
  test_cutoff();
  test_ffi();
  test_replay_derived();
  test_random_dags(20 * test_scale());
  return check_done("test_graph");
}
