/*
 * nameidx.c - a name -> object index (regions of a bus, nodes of a graph):
 * open addressing, linear probing, tombstones; the object holds its name
 * at a fixed offset.  Lookups stay O(1) with a million names.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define TOMBSTONE ((void *)1)

static uint32_t name_hash(const char *s) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
  return h;
}

static const char *name_of(const mmsb_nameidx *x, const void *obj) {
  return (const char *)obj + x->name_off;
}

void *mmsb_nameidx_find(const mmsb_nameidx *x, const char *name) {
  if (!x->cap) return NULL;
  for (uint32_t i = name_hash(name) & (x->cap - 1);; i = (i + 1) & (x->cap - 1)) {
    void *o = x->slots[i];
    if (!o) return NULL;
    if (o != TOMBSTONE && strcmp(name_of(x, o), name) == 0) return o;
  }
}

static int grow(mmsb_nameidx *x) {
  uint32_t old_cap = x->cap;
  void **old = x->slots;
  uint32_t cap = old_cap ? old_cap * 2 : 64;
  x->slots = calloc(cap, sizeof *x->slots);
  if (!x->slots) {
    x->slots = old;
    return mmsb_fail(MMSB_ENOMEM, "name index");
  }
  x->cap = cap;
  x->used = 0;
  for (uint32_t i = 0; i < old_cap; i++)
    if (old[i] && old[i] != TOMBSTONE) mmsb_nameidx_insert(x, old[i]);
  free(old);
  return MMSB_OK;
}

int mmsb_nameidx_insert(mmsb_nameidx *x, void *obj) {
  if ((x->used + 1) * 4 >= x->cap * 3) {
    int rc = grow(x);
    if (rc) return rc;
  }
  uint32_t i = name_hash(name_of(x, obj)) & (x->cap - 1);
  while (x->slots[i] && x->slots[i] != TOMBSTONE) i = (i + 1) & (x->cap - 1);
  if (!x->slots[i]) x->used++;
  x->slots[i] = obj;
  return MMSB_OK;
}

void mmsb_nameidx_remove(mmsb_nameidx *x, void *obj) {
  if (!x->cap) return;
  for (uint32_t i = name_hash(name_of(x, obj)) & (x->cap - 1); x->slots[i];
       i = (i + 1) & (x->cap - 1))
    if (x->slots[i] == obj) {
      x->slots[i] = TOMBSTONE;
      return;
    }
}

void mmsb_nameidx_free(mmsb_nameidx *x) {
  free(x->slots);
  x->slots = NULL;
  x->cap = x->used = 0;
}
