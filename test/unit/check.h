/* check.h - the unit tests' assertions and seeded random numbers. */
#ifndef MMSB_TEST_CHECK_H
#define MMSB_TEST_CHECK_H

#include "mmsb/mmsb.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failures;
static int check_count;

#define CHECK(cond)                                                           \
  do {                                                                        \
    check_count++;                                                            \
    if (!(cond)) {                                                            \
      check_failures++;                                                       \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, \
              __LINE__, #cond, mmsb_last_error());                            \
    }                                                                         \
  } while (0)

#define CHECK_RC(expr, want)                                                  \
  do {                                                                        \
    int _rc = (expr);                                                         \
    check_count++;                                                            \
    if (_rc != (want)) {                                                      \
      check_failures++;                                                       \
      fprintf(stderr, "%s:%d: %s returned %d (%s), want %d (%s); %s\n",       \
              __FILE__, __LINE__, #expr, _rc, mmsb_strerror(_rc), (want),     \
              mmsb_strerror(want), mmsb_last_error());                        \
    }                                                                         \
  } while (0)

#define CHECK_OK(expr) CHECK_RC(expr, MMSB_OK)

/* A failure with a status also leaves a message. */
#define CHECK_FAILS(expr, want)                                               \
  do {                                                                        \
    CHECK_RC(expr, want);                                                     \
    CHECK(mmsb_last_error()[0] != 0);                                         \
  } while (0)

static inline int check_done(const char *name) {
  printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
  return check_failures ? 1 : 0;
}

/* splitmix64: small, seedable, good enough for property tests. */
static inline uint64_t rng_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static inline uint64_t rng_below(uint64_t *s, uint64_t n) { return n ? rng_next(s) % n : 0; }

/* The seed: MMSB_SEED if set, else a fixed one, printed so a failure can be
 * reproduced. */
static inline uint64_t test_seed(void) {
  const char *v = getenv("MMSB_SEED");
  uint64_t s = v ? strtoull(v, NULL, 0) : 0x5eed1234ull;
  printf("seed 0x%" PRIx64 "\n", s);
  return s;
}

/* MMSB_TEST_SCALE multiplies iteration counts (longer runs by hand). */
static inline int test_scale(void) {
  const char *v = getenv("MMSB_TEST_SCALE");
  int n = v ? atoi(v) : 1;
  return n > 0 ? n : 1;
}

#endif
