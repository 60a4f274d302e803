/* hash.c - XXH3 with the widest vectors the CPU has (see hash.h). */
#include "hash.h"
#define MMSB_HASH_FN mmsb_xxh3_parts_generic
#include "hash_impl.h"

typedef uint64_t (*parts_fn)(const void *const *, const size_t *, int);

static parts_fn pick(void) {
#if defined(__x86_64__) && defined(MMSB_HAVE_AVX2_TU)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) return mmsb_xxh3_parts_avx2;
#endif
  return mmsb_xxh3_parts_generic;
}

uint64_t mmsb_xxh3_parts(const void *const *p, const size_t *len, int n) {
  static parts_fn fn; /* a benign race: every thread picks the same one */
  if (!fn) fn = pick();
  return fn(p, len, n);
}

uint64_t mmsb_xxh3(const void *p, size_t n) { return mmsb_xxh3_parts(&p, &n, 1); }
