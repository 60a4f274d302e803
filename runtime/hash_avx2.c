/* hash_avx2.c - XXH3 built with -mavx2 (see hash.h). */
#include "hash.h"
#define MMSB_HASH_FN mmsb_xxh3_parts_avx2
#include "hash_impl.h"
