/*
 * bench.h - the output contract of DESIGN.md for every benchmark: a table
 * for people and, with --json, one object {"bench": NAME, "results": [...]}
 * whose metric names carry their unit.
 */
#ifndef MMSB_BENCH_H
#define MMSB_BENCH_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double bench_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static inline uint64_t bench_rng(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static inline int bench_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static inline double bench_median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One result row: a case name and up to 16 metrics; NAN prints as null. */
#define BENCH_MAX_METRICS 16
typedef struct bench_row {
  char name[96];
  int n;
  const char *key[BENCH_MAX_METRICS];
  double val[BENCH_MAX_METRICS];
  char note[96];
} bench_row;

typedef struct bench_out {
  const char *bench;
  int json;
  bench_row rows[128];
  int nrows;
} bench_out;

static inline void bench_init(bench_out *o, const char *name, int argc, char **argv) {
  memset(o, 0, sizeof *o);
  o->bench = name;
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--json")) o->json = 1;
}

static inline bench_row *bench_add(bench_out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
#include <stdarg.h>
static inline bench_row *bench_add(bench_out *o, const char *fmt, ...) {
  bench_row *r = &o->rows[o->nrows < 127 ? o->nrows++ : 127];
  memset(r, 0, sizeof *r);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->name, sizeof r->name, fmt, ap);
  va_end(ap);
  return r;
}

static inline void bench_metric(bench_row *r, const char *key, double v) {
  if (r->n < BENCH_MAX_METRICS) {
    r->key[r->n] = key;
    r->val[r->n++] = v;
  }
}

static inline void bench_print(const bench_out *o) {
  if (o->json) {
    printf("{\"bench\": \"%s\", \"results\": [", o->bench);
    for (int i = 0; i < o->nrows; i++) {
      const bench_row *r = &o->rows[i];
      printf("%s\n  {\"case\": \"%s\"", i ? "," : "", r->name);
      for (int k = 0; k < r->n; k++) {
        if (isnan(r->val[k])) printf(", \"%s\": null", r->key[k]);
        else printf(", \"%s\": %.6g", r->key[k], r->val[k]);
      }
      if (r->note[0]) printf(", \"note\": \"%s\"", r->note);
      printf("}");
    }
    printf("\n]}\n");
    return;
  }
  printf("%s\n", o->bench);
  for (int i = 0; i < o->nrows; i++) {
    const bench_row *r = &o->rows[i];
    printf("  %-40s", r->name);
    for (int k = 0; k < r->n; k++) {
      if (isnan(r->val[k])) printf("  %s=-", r->key[k]);
      else printf("  %s=%.4g", r->key[k], r->val[k]);
    }
    if (r->note[0]) printf("  (%s)", r->note);
    printf("\n");
  }
}

#endif
