/*
 * propagate - the propagation graph's overhead per node, through a plain
 * callback and through libffi, on a chain (one input change runs every
 * node) and on a wide tree (one source, N leaves; then every input of N
 * independent nodes changed).  Nodes are trivial (out = in + 1), so the
 * figure is the scheduling, call, change detection and delta cost.
 */
#include "bench.h"
#include "mmsb/mmsb.h"

static int cb(void *ctx) {
  uint64_t **io = ctx;
  io[1][0] = io[0][0] + 1;
  return 0;
}

void bench_add_one(uint64_t *out, const uint64_t *in) { out[0] = in[0] + 1; }

typedef struct { uint64_t *io[2]; } pair;

static mmsb_region *reg(mmsb_bus *bus, const char *p, size_t i) {
  char name[48];
  snprintf(name, sizeof name, "%s%zu", p, i);
  mmsb_region *r;
  if (mmsb_region_create(bus, name, 8, 0, &r)) {
    fprintf(stderr, "propagate: %s\n", mmsb_last_error());
    exit(1);
  }
  return r;
}

static void node(mmsb_bus *bus, size_t i, mmsb_region *in, mmsb_region *out, int ffi, pair *pairs) {
  char name[48];
  snprintf(name, sizeof name, "n%zu", i);
  mmsb_node *n;
  if (ffi) {
    mmsb_arg a[2] = {{MMSB_ARG_OUT, out, {0}}, {MMSB_ARG_IN, in, {0}}};
    mmsb_node_create_ffi(bus, name, (void (*)(void))bench_add_one, 0, a, 2, &n);
  } else {
    pairs[i].io[0] = mmsb_region_data(in);
    pairs[i].io[1] = mmsb_region_data(out);
    mmsb_node_create(bus, name, cb, pairs[i].io, &n);
    mmsb_node_input(n, in);
    mmsb_node_output(n, out, MMSB_DETECT_DIFF);
  }
}

/* shape 0: chain; 1: one source fanning out; 2: n sources, n nodes, all change */
static void run(bench_out *o, int shape, size_t n, int ffi) {
  mmsb_bus *bus;
  mmsb_bus_open(NULL, &bus);
  pair *pairs = calloc(n, sizeof *pairs);
  mmsb_region **src = malloc((shape == 2 ? n : 1) * sizeof *src);
  for (size_t i = 0; i < (shape == 2 ? n : 1); i++) src[i] = reg(bus, "s", i);
  mmsb_region *prev = src[0];
  for (size_t i = 0; i < n; i++) {
    mmsb_region *out = reg(bus, "d", i);
    node(bus, i, shape == 0 ? prev : shape == 1 ? src[0] : src[i], out, ffi, pairs);
    prev = out;
  }
  mmsb_commit(bus, NULL); /* first run of every node */
  double t[5];
  for (int r = 0; r < 5; r++) {
    for (size_t i = 0; i < (shape == 2 ? n : 1); i++) {
      uint64_t *p = mmsb_region_data(src[i]);
      p[0] += 1;
      mmsb_touch(p, 8);
    }
    double t0 = bench_now_ms();
    mmsb_commit(bus, NULL);
    t[r] = bench_now_ms() - t0;
  }
  double m = bench_median(t, 5);
  static const char *shapes[] = {"chain", "fan-out from one input", "independent, all inputs change"};
  bench_row *row = bench_add(o, "%s %zu nodes, %s", shapes[shape], n, ffi ? "libffi" : "callback");
  bench_metric(row, "commit_ms", m);
  bench_metric(row, "ns_per_node", m * 1e6 / (double)n);
  mmsb_bus_close(bus);
  free(pairs);
  free(src);
}

int main(int argc, char **argv) {
  bench_out o;
  bench_init(&o, "propagate", argc, argv);
  size_t n = 100000;
  for (int i = 1; i < argc; i++)
    if (!strncmp(argv[i], "--nodes=", 8)) n = strtoull(argv[i] + 8, NULL, 10);
  for (int ffi = 0; ffi < 2; ffi++)
    for (int shape = 0; shape < 3; shape++) run(&o, shape, n, ffi);
  bench_print(&o);
  return 0;
}
