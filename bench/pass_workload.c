/*
 * pass_workload.c - the workloads of bench/pass_overhead, compiled twice
 * into one benchmark: with -DVARIANT=_plain by clang alone and with
 * -DVARIANT=_mmsb by clang with the MMSB pass (checked mode).
 */
#include <mmsb/mmsb.h>

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define V(name) CAT(name, VARIANT)

#define BIG_WORDS ((size_t)1 << 27)   /* 1 GiB of u64 */
#define DENSE_WORDS ((size_t)8 << 20) /* 64 MiB of u64 */

MMSB_STATE uint64_t V(big)[BIG_WORDS];
MMSB_STATE uint64_t V(dense)[DENSE_WORDS];

/* (a) random 8-byte stores into 1 GiB of state */
void V(wl_random)(const uint64_t *idx, size_t n, uint64_t v) {
  for (size_t i = 0; i < n; i++) V(big)[idx[i]] = v + i;
}

/* (b) a dense loop a[i] = f(i) over 64 MiB of state */
void V(wl_dense)(uint64_t k) {
  for (size_t i = 0; i < DENSE_WORDS; i++) V(dense)[i] = i * k + (i >> 3);
}

/* (c) pointer-heavy code with no tracked state: a binary search tree on the
 * heap, inserts and in-place updates through pointers of unknown origin. */
struct node { struct node *l, *r; uint64_t key, val, hits; };

struct node *V(wl_tree)(struct node *pool, size_t n, uint64_t seed) {
  struct node *root = &pool[0];
  root->l = root->r = NULL;
  root->key = seed % 1000003;
  root->val = root->hits = 0;
  for (size_t i = 1; i < n; i++) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    uint64_t key = (seed >> 17) % 1000003;
    struct node *c = root, **link = &root;
    while (c) {
      c->hits++;
      if (key == c->key) { c->val += i; break; }
      link = key < c->key ? &c->l : &c->r;
      c = *link;
    }
    if (!c) {
      struct node *m = &pool[i];
      m->l = m->r = NULL;
      m->key = key;
      m->val = i;
      m->hits = 0;
      *link = m;
    }
  }
  return root;
}
