/*
 * sort_entries.c - mark log entries sorted by granule, for the collection
 * of an epoch from the logs (collect_logs.c: a bucket at a time;
 * collect_tiny.c: a small epoch at once).
 */
#include "internal.h"

#include <string.h>

enum {
  INSERTION_MAX = 32,  /* groups this small sort by insertion */
  GROUP_BITS_MIN = 8,  /* entries sort in 2^8 .. 2^12 groups first, */
  GROUP_BITS_MAX = 12  /* ~3/4 of an entry a group at most */
};

/* The granule of entry x counted from base. */
static inline uintptr_t key_of(uint64_t x, uintptr_t base) {
  return (mmsb_log_entry_addr(x) - base) >> GRAN_SHIFT;
}

/* Insertion sort of src[0..n) into dst (which may be src). */
static void insert_sorted(uint64_t *dst, const uint64_t *src, size_t n, uintptr_t base) {
  for (size_t i = 0; i < n; i++) {
    uint64_t x = src[i];
    uintptr_t k = key_of(x, base);
    size_t j = i;
    for (; j > 0 && key_of(dst[j - 1], base) > k; j--) dst[j] = dst[j - 1];
    dst[j] = x;
  }
}

/* x with its address in the top bits and its length below: entries
 * compare by address as integers, so that the pass below picks the lesser
 * of two with a conditional move instead of a branch. */
enum { LEN_BITS = 64 - MMSB_LOG_LEN_SHIFT };
static inline uint64_t addr_first(uint64_t x) { return x << LEN_BITS | x >> MMSB_LOG_LEN_SHIFT; }
static inline uint64_t entry_of(uint64_t y) { return y >> LEN_BITS | y << MMSB_LOG_LEN_SHIFT; }

/* Sorts src[0..n) (n >= 1), in groups whose every entry is below every
 * entry of the groups after it, each of at most INSERTION_MAX entries,
 * into dst by address.  An insertion sort, but the common step is taken
 * without branching: each entry and the greater of those before it swap
 * or not by a min and a max, and only an entry below the two before it
 * (the third of a group, or later, out of order) moves by a loop.  The
 * groups of a small epoch hold one or two entries mostly, and half the
 * pairs are out of order: a branch there mispredicted so often that the
 * pass took half the sort (1 341 entries, CPU machine, a harness's
 * medians: 9 000 -> 4 300-5 600 cycles; the sort 5.7-7.2 -> 4.1-5.5 us).
 * Entries of one address keep no order: collection merges them alike in
 * any. */
static void insert_groups(uint64_t *dst, const uint64_t *src, size_t n) {
  uint64_t hi = addr_first(src[0]), lo_before = 0; /* dst[i - 1] and dst[i - 2] */
  dst[0] = src[0];
  for (size_t i = 1; i < n; i++) {
    uint64_t x = addr_first(src[i]);
    uint64_t lo = hi < x ? hi : x;
    hi = hi < x ? x : hi;
    dst[i - 1] = entry_of(lo);
    dst[i] = entry_of(hi);
    if (__builtin_expect(lo_before > lo, 0)) { /* x goes further back */
      size_t j = i - 1;
      for (; j > 0 && addr_first(dst[j - 1]) > x; j--) dst[j] = dst[j - 1];
      dst[j] = src[i];
      lo = addr_first(dst[i - 1]);
    }
    lo_before = lo;
  }
}

/* LSD radix sort of a[0..n) by the low `bits` bits of the key, 8 a pass,
 * through t; the result is in a. */
static void radix_lsd(uint64_t *a, uint64_t *t, size_t n, uintptr_t base, unsigned bits) {
  uint64_t *src = a, *dst = t;
  for (unsigned shift = 0; shift < bits; shift += 8) {
    uint32_t count[256] = {0};
    for (size_t i = 0; i < n; i++) count[(key_of(src[i], base) >> shift) & 255]++;
    for (uint32_t k = 0, at = 0; k < 256; k++) {
      uint32_t c = count[k];
      count[k] = at;
      at += c;
    }
    for (size_t i = 0; i < n; i++) dst[count[(key_of(src[i], base) >> shift) & 255]++] = src[i];
    uint64_t *x = src;
    src = dst;
    dst = x;
  }
  if (src != a) memcpy(a, src, n * sizeof *a);
}

/* Sorts e[0..n) by granule (keys below 2^bits; n at most BUCKET_MAX),
 * through tmp.  One counting pass on the key's top bits puts the entries
 * in 2^gb groups, gb the fewest bits (8 to 12) that give at most 3/4 of an
 * entry a group; when every group is then small, one insertion pass over
 * them all (insert_groups) copies them back in order, each entry moving
 * within its group at most.  A large group is sorted by LSD radix on the
 * rest of the key.  A bucket too large for 2^12 groups (a one-thread epoch
 * of over 3 072 entries) takes an LSD radix sort on the whole key.  For a
 * bucket of 128 entries over 2^17 granules, the full LSD radix took three
 * passes of a count array (1.08 -> 0.70 ms for 1024 such buckets on the
 * CPU machine); for the single bucket of a 1e-5 epoch (1 342 entries over
 * 2^27 granules), four.  An insertion sort per group was slower, branching
 * unpredictably on the groups' sizes. */
void mmsb_sort_entries(uint64_t *e, uint64_t *tmp, size_t n, uintptr_t base, unsigned bits) {
  if (n <= INSERTION_MAX) {
    insert_sorted(e, e, n, base);
    return;
  }
  unsigned gb = GROUP_BITS_MIN;
  while (gb <= GROUP_BITS_MAX && n > ((size_t)3 << gb) / 4) gb++;
  if (gb > GROUP_BITS_MAX) {
    radix_lsd(e, tmp, n, base, bits);
    return;
  }
  unsigned top = bits > gb ? bits - gb : 0;
  size_t ng = (size_t)1 << gb;
  uint32_t at[((size_t)1 << GROUP_BITS_MAX) + 1], most = 0;
  memset(at, 0, (ng + 1) * sizeof *at);
  for (size_t i = 0; i < n; i++) at[(key_of(e[i], base) >> top) + 1]++;
  for (size_t k = 0; k < ng; k++) {
    most = at[k + 1] > most ? at[k + 1] : most;
    at[k + 1] += at[k];
  }
  for (size_t i = 0; i < n; i++) tmp[at[key_of(e[i], base) >> top]++] = e[i];
  if (most <= INSERTION_MAX) { /* at[k] is now group k's end */
    insert_groups(e, tmp, n);
    return;
  }
  for (size_t k = 0, g = 0; k < ng; g = at[k++]) {
    uint32_t m = at[k] - (uint32_t)g;
    if (m <= INSERTION_MAX) {
      insert_sorted(e + g, tmp + g, m, base);
    } else {
      radix_lsd(tmp + g, e + g, m, base, top);
      memcpy(e + g, tmp + g, m * sizeof *e);
    }
  }
}
