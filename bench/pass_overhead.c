/*
 * pass_overhead - what the pass costs a program, against the same source
 * compiled without it, in one run:
 *   (a) random 8-byte stores into a 1 GiB MMSB_STATE array
 *   (b) a dense loop a[i] = f(i) over 64 MiB of state (loop range marks)
 *   (c) pointer-heavy code with no tracked state (every store range-checked)
 *   compile time of a generated 100k-line translation unit
 * The workloads are bench/pass_workload.c, built by clang with and without
 * the plugin (-DVARIANT=_mmsb / _plain).
 */
#include "bench.h"
#include "mmsb/mmsb.h"

#include <sys/wait.h>

struct node;
#define DECL(v)                                                             \
  extern uint64_t big##v[];                                                 \
  extern uint64_t dense##v[];                                               \
  void wl_random##v(const uint64_t *idx, size_t n, uint64_t val);           \
  void wl_dense##v(uint64_t k);                                             \
  struct node *wl_tree##v(struct node *pool, size_t n, uint64_t seed);
DECL(_plain)
DECL(_mmsb)

#define BIG ((size_t)1 << 30)
#define REPS 5

static double ratio_row(bench_out *o, const char *name, double *plain, double *mmsb,
                        const char *unit_key, double per) {
  double p = bench_median(plain, REPS), m = bench_median(mmsb, REPS);
  bench_row *r = bench_add(o, "%s", name);
  bench_metric(r, "plain_ms", p);
  bench_metric(r, "mmsb_ms", m);
  if (unit_key) {
    bench_metric(r, unit_key, m * 1e6 / per);
  }
  bench_metric(r, "x_vs_plain", m / p);
  return m / p;
}

static double compile_ms(const char *cmd) {
  double t0 = bench_now_ms();
  int rc = system(cmd);
  if (rc != 0) return NAN;
  return bench_now_ms() - t0;
}

int main(int argc, char **argv) {
  bench_out o;
  bench_init(&o, "pass_overhead", argc, argv);
  memset(big_plain, 0, BIG);
  memset(big_mmsb, 0, BIG);
  memset(dense_plain, 0, 64u << 20);
  memset(dense_mmsb, 0, 64u << 20);
  mmsb_commit(NULL, NULL);

  size_t n = (size_t)4 << 20;
  uint64_t *idx = malloc(n * sizeof *idx), seed = 7;
  for (size_t i = 0; i < n; i++) idx[i] = bench_rng(&seed) % (BIG / 8);
  double p[REPS], m[REPS];
  for (int r = 0; r < REPS; r++) {
    double t0 = bench_now_ms();
    wl_random_plain(idx, n, (uint64_t)r);
    p[r] = bench_now_ms() - t0;
    t0 = bench_now_ms();
    wl_random_mmsb(idx, n, (uint64_t)r);
    m[r] = bench_now_ms() - t0;
    mmsb_commit(NULL, NULL);
  }
  ratio_row(&o, "(a) random 8B stores, 1GiB state", p, m, "ns_per_store", (double)n);

  for (int r = 0; r < REPS; r++) {
    double t0 = bench_now_ms();
    wl_dense_plain((uint64_t)r + 3);
    p[r] = bench_now_ms() - t0;
    t0 = bench_now_ms();
    wl_dense_mmsb((uint64_t)r + 3);
    m[r] = bench_now_ms() - t0;
    mmsb_commit(NULL, NULL);
  }
  ratio_row(&o, "(b) dense loop, 64MiB state", p, m, "ns_per_store", (double)(8u << 20));

  size_t nodes = (size_t)1 << 20;
  void *pool = calloc(nodes, 64);
  for (int r = 0; r < REPS; r++) {
    double t0 = bench_now_ms();
    wl_tree_plain(pool, nodes, (uint64_t)r + 1);
    p[r] = bench_now_ms() - t0;
    t0 = bench_now_ms();
    wl_tree_mmsb(pool, nodes, (uint64_t)r + 1);
    m[r] = bench_now_ms() - t0;
  }
  ratio_row(&o, "(c) pointer-heavy, no state (checked)", p, m, NULL, 1);

  char plain_cmd[2048], mmsb_cmd[2048];
  snprintf(plain_cmd, sizeof plain_cmd, "%s -O2 -I%s -c %s -o /dev/null",
           MMSB_BENCH_CLANG, MMSB_BENCH_INC, MMSB_BENCH_TU);
  snprintf(mmsb_cmd, sizeof mmsb_cmd, "%s -O2 -fpass-plugin=%s -I%s -c %s -o /dev/null",
           MMSB_BENCH_CLANG, MMSB_BENCH_PLUGIN, MMSB_BENCH_INC, MMSB_BENCH_TU);
  double cp[2], cm[2];
  for (int r = 0; r < 2; r++) {
    cp[r] = compile_ms(plain_cmd);
    cm[r] = compile_ms(mmsb_cmd);
  }
  double a = bench_median(cp, 2), b = bench_median(cm, 2);
  bench_row *row = bench_add(&o, "compile 100k-line TU -O2");
  bench_metric(row, "plain_ms", a);
  bench_metric(row, "mmsb_ms", b);
  bench_metric(row, "x_vs_plain", b / a);
  bench_print(&o);
  free(idx);
  free(pool);
  return 0;
}
