/* hash_impl.h - the body of mmsb_xxh3_parts_<SUFFIX>, included by hash.c
 * and hash_avx2.c with different compiler flags. */
#include <xxhash.h>

uint64_t MMSB_HASH_FN(const void *const *p, const size_t *len, int n) {
  if (n == 1) return XXH3_64bits(p[0], len[0]);
  XXH3_state_t st;
  XXH3_64bits_reset(&st);
  for (int i = 0; i < n; i++) XXH3_64bits_update(&st, p[i], len[i]);
  return XXH3_64bits_digest(&st);
}
