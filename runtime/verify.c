/*
 * verify.c - MMSB_VERIFY: proof that no store was missed.
 *
 * Each region keeps a private copy of its bytes as of the last commit.  At a
 * commit the batch is applied to the copies; any byte where copy and region
 * still differ was changed by a store that no delta covers.  Those bytes are
 * reported (region, offset, address) and counted, then the copy is brought
 * up to date so that each miss is reported once.  This costs a full compare
 * per commit: it is a checking mode, not a production one.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int mmsb_verify_region_init(mmsb_region *r) {
  if (!r->bus->cfg.verify) return MMSB_OK;
  r->shadow_copy = malloc(r->size);
  if (!r->shadow_copy)
    return mmsb_fail(MMSB_ENOMEM, "verify copy of region '%s'", r->name);
  memcpy(r->shadow_copy, r->data, r->size);
  return MMSB_OK;
}

static void apply_to_copies(mmsb_bus *bus, const mmsb_batch *b) {
  for (size_t i = 0; i < b->count; i++) {
    mmsb_delta d;
    mmsb_batch_delta_trusted(b, i, &d);
    mmsb_region *r = mmsb_region_by_id(bus, d.region_id);
    if (!r || !r->shadow_copy) continue;
    size_t start = (size_t)d.page * MMSB_PAGE_SIZE;
    if (start >= r->size) continue;
    mmsb_delta_apply_trusted(&d, r->shadow_copy + start); /* made by this commit */
  }
}

/* Reports and resyncs the differing bytes of one region; returns the count. */
static uint64_t check_region(mmsb_bus *bus, mmsb_region *r, unsigned *reported) {
  uint64_t bad = 0;
  for (size_t off = 0; off < r->size;) {
    size_t chunk = r->size - off < 65536 ? r->size - off : 65536;
    if (memcmp(r->shadow_copy + off, r->data + off, chunk) == 0) {
      off += chunk;
      continue;
    }
    for (size_t end = off + chunk; off < end; off++) {
      if (r->shadow_copy[off] == r->data[off]) continue;
      size_t run = off;
      while (run < end && r->shadow_copy[run] != r->data[run]) run++;
      if ((*reported)++ < 16)
        fprintf(stderr, "mmsb: verify: epoch %llu: region '%s' offset %zu "
                "(address %p): %zu changed byte(s) not covered by any delta\n",
                (unsigned long long)(atomic_load(&bus->epoch) + 1), r->name, off,
                (void *)(r->data + off), run - off);
      memcpy(r->shadow_copy + off, r->data + off, run - off);
      bad += run - off;
      off = run - 1;
    }
  }
  return bad;
}

uint64_t mmsb_verify_commit(mmsb_bus *bus, const mmsb_batch *b) {
  apply_to_copies(bus, b);
  uint64_t bad = 0;
  unsigned reported = 0;
  for (uint32_t i = 0; i < bus->nregions; i++) {
    mmsb_region *r = bus->regions[i];
    if (r && r->shadow_copy) bad += check_region(bus, r, &reported);
  }
  return bad;
}

uint64_t mmsb_verify_last(const mmsb_bus *bus) {
  if (!bus) bus = mmsb_default_bus();
  return bus->verify_last;
}
