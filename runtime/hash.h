/* hash.h - XXH3-64 for the log's checksums and the state digest, using AVX2
 * where the CPU has it (xxhash picks its vector width at compile time, so
 * hash_avx2.c is built with -mavx2 and chosen at run time). */
#ifndef MMSB_HASH_H
#define MMSB_HASH_H

#include <stddef.h>
#include <stdint.h>

/* XXH3-64 of the concatenation of n parts (p[i], len[i]). */
uint64_t mmsb_xxh3_parts(const void *const *p, const size_t *len, int n);
uint64_t mmsb_xxh3(const void *p, size_t n);

/* The implementations behind them (hash.c, hash_avx2.c). */
uint64_t mmsb_xxh3_parts_generic(const void *const *p, const size_t *len, int n);
uint64_t mmsb_xxh3_parts_avx2(const void *const *p, const size_t *len, int n);

#endif
