/*
 * digest.c - the state digest, kept up to date from dirty pages only.
 *
 * A page's contribution is M(H(bytes) ^ k) XOR M(H(zeros of the same
 * length) ^ k), with H = XXH3-64, k = (region id << 40) ^ page index and M
 * a bijective 64-bit mixer, so that a zero page contributes 0 and a new
 * region's digest is 0 without hashing it; H of a zero page is computed
 * once per length, so a dirty page costs one hash.  A
 * region's digest is the XOR of its pages' contributions, the bus digest
 * the XOR of its regions'.  A commit rehashes only the pages its batch
 * touches: digest ^= old contribution ^ new one.  Replay does the same and
 * compares with the digest each log record carries.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "hash.h"

static const uint8_t zero_page[MMSB_PAGE_SIZE];

/* splitmix64's finalizer: a bijection that spreads every input bit. */
static inline uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t mmsb_page_contrib(const mmsb_region *r, size_t page) {
  static _Atomic uint64_t zero_full; /* H of a whole zero page; 0 until computed */
  uint64_t k = ((uint64_t)r->id << 40) ^ page;
  size_t n = mmsb_region_page_len(r, page);
  uint64_t z = n == MMSB_PAGE_SIZE ? zero_full : mmsb_xxh3(zero_page, n);
  if (n == MMSB_PAGE_SIZE && !z) z = zero_full = mmsb_xxh3(zero_page, n);
  return mix(mmsb_xxh3(r->data + page * MMSB_PAGE_SIZE, n) ^ k) ^ mix(z ^ k);
}

/* The contribution array lives in lazily zeroed memory: a fresh region's
 * pages all contribute 0.  A region with bytes already (a global's
 * initializer, a recovered region) is hashed in full. */
int mmsb_digest_region_init(mmsb_region *r) {
  if (r->page_c) return MMSB_OK;
  size_t np = r->map_size / MMSB_PAGE_SIZE, bytes = np * sizeof(uint64_t);
  void *p = mmap(NULL, bytes ? bytes : 8, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return mmsb_fail(MMSB_ENOMEM, "digest of region '%s'", r->name);
  r->page_c = p;
  r->digest = 0;
  for (size_t pg = 0; pg < np && r->owned == false; pg++) {
    r->page_c[pg] = mmsb_page_contrib(r, pg);
    r->digest ^= r->page_c[pg];
  }
  return MMSB_OK;
}

/* Recomputes every page (after recovery wrote a region's bytes). */
void mmsb_digest_region_rehash(mmsb_region *r) {
  r->digest = 0;
  for (size_t pg = 0; pg < r->map_size / MMSB_PAGE_SIZE; pg++) {
    r->page_c[pg] = mmsb_page_contrib(r, pg);
    r->digest ^= r->page_c[pg];
  }
}

static int push(mmsb_digest_delta *dd, mmsb_region *r, uint64_t pg, uint64_t c) {
  if (dd->n == dd->cap) {
    size_t cap = dd->cap ? dd->cap * 2 : 256;
    mmsb_region **rs = realloc(dd->regions, cap * sizeof *rs);
    if (rs) dd->regions = rs;
    uint64_t *ps = realloc(dd->pages, cap * sizeof *ps);
    if (ps) dd->pages = ps;
    uint64_t *cs = realloc(dd->contrib, cap * sizeof *cs);
    if (cs) dd->contrib = cs;
    if (!rs || !ps || !cs) return mmsb_fail(MMSB_ENOMEM, "digest delta");
    dd->cap = cap;
  }
  dd->regions[dd->n] = r;
  dd->pages[dd->n] = pg;
  dd->contrib[dd->n++] = c;
  return MMSB_OK;
}

int mmsb_digest_compute(mmsb_bus *bus, const mmsb_batch *b, mmsb_digest_delta *dd) {
  dd->n = 0;
  uint64_t digest = mmsb_digest(bus);
  uint32_t last_r = 0;
  uint64_t last_p = UINT64_MAX;
  for (size_t i = 0; i < b->count; i++) {
    mmsb_delta d;
    mmsb_batch_delta_trusted(b, i, &d); /* made by commit, or decoded */
    int rc;
    if (d.region_id == last_r && d.page == last_p) continue; /* same page */
    last_r = d.region_id;
    last_p = d.page;
    mmsb_region *r = mmsb_region_by_id(bus, d.region_id);
    if (!r || !r->page_c || d.page >= r->map_size / MMSB_PAGE_SIZE) continue;
    uint64_t c = mmsb_page_contrib(r, d.page);
    digest ^= r->page_c[d.page] ^ c;
    if ((rc = push(dd, r, d.page, c))) return rc;
  }
  dd->digest = digest;
  return MMSB_OK;
}

void mmsb_digest_apply(mmsb_digest_delta *dd) {
  for (size_t i = 0; i < dd->n; i++) {
    mmsb_region *r = dd->regions[i];
    r->digest ^= r->page_c[dd->pages[i]] ^ dd->contrib[i];
    r->page_c[dd->pages[i]] = dd->contrib[i];
  }
  dd->n = 0;
}

void mmsb_digest_free(mmsb_digest_delta *dd) {
  free(dd->regions);
  free(dd->pages);
  free(dd->contrib);
  memset(dd, 0, sizeof *dd);
}

uint64_t mmsb_digest(const mmsb_bus *bus) {
  if (!bus) bus = mmsb_default_bus();
  uint64_t d = 0;
  for (uint32_t i = 0; i < bus->nregions; i++) {
    const mmsb_region *r = bus->regions[i];
    if (!r) continue;
    if (r->page_c) {
      d ^= r->digest;
    } else { /* an in-memory bus keeps no contributions: hash it all */
      for (size_t pg = 0; pg < r->map_size / MMSB_PAGE_SIZE; pg++)
        d ^= mmsb_page_contrib(r, pg);
    }
  }
  return d;
}
