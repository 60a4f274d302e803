/*
 * window.c - the tracked address ranges and their dirty bitmaps.
 *
 * Each window has three bitmaps, reserved up front with MAP_NORESERVE so
 * that they cost nothing until touched:
 *   gran    one bit per 8-byte granule (a page's 512 bits are one cache line)
 *   pages   one bit per 4 KiB page
 *   summary one bit per 64 pages
 * A commit walks summary -> pages -> gran, so its cost follows the number of
 * dirty pages, not the region size.  Stores do not write the bitmaps: they
 * append to their thread's mark log (marklog.c), which is folded in here
 * under mmsb_mark_lock, so every bitmap write is a plain one.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

__mmsb_window __mmsb_windows[MMSB_NWINDOWS];
const int __mmsb_abi_version_1 = MMSB_ABI_VERSION;
mmsb_win_maps mmsb_maps[MMSB_NWINDOWS];
pthread_mutex_t mmsb_mark_lock = PTHREAD_MUTEX_INITIALIZER;

#define HUGE_MIN ((size_t)2 << 20) /* regions this large get huge pages */

static pthread_mutex_t arena_lock = PTHREAD_MUTEX_INITIALIZER;
static uintptr_t arena_next;         /* bump pointer, offset in window 0 */
typedef struct hole { uintptr_t off; size_t size; } hole;

void mmsb_huge_pages(void *p, size_t n) {
  if (!p || n < HUGE_MIN) return;
  uintptr_t lo = ((uintptr_t)p + HUGE_MIN - 1) & ~(uintptr_t)(HUGE_MIN - 1);
  uintptr_t hi = ((uintptr_t)p + n) & ~(uintptr_t)(HUGE_MIN - 1);
  if (hi > lo) madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
}

static void *reserve(size_t n, int prot) {
  void *p = mmap(NULL, n, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

static uint64_t *reserve_map(size_t bits) {
  size_t n = ((bits + 63) / 64) * 8;
  uint64_t *p = reserve(n, PROT_READ | PROT_WRITE);
  mmsb_huge_pages(p, n); /* marks land at random places in a large granule map */
  return p;
}

/* Sets up the bitmaps of window w over [lo, lo+size). */
static int window_setup(int w, uintptr_t lo, size_t size) {
  size_t npages = size >> PAGE_SHIFT;
  uint64_t *g = reserve_map(size >> GRAN_SHIFT), *pg = reserve_map(npages);
  uint64_t *s = reserve_map((npages + 63) / 64);
  if (!g || !pg || !s)
    return mmsb_fail(MMSB_ENOMEM, "cannot reserve dirty bitmaps for %zu bytes", size);
  mmsb_maps[w] = (mmsb_win_maps){g, pg, s};
  __mmsb_windows[w].lo = lo;
  atomic_thread_fence(memory_order_release);
  __mmsb_windows[w].size = size;
  return MMSB_OK;
}

/* Reserves the arena: 4 TiB of address space, halved until the system
 * agrees (sanitizers and overcommit limits allow less). */
int mmsb_arena_init(void) {
  pthread_mutex_lock(&arena_lock);
  int rc = MMSB_OK;
  if (__mmsb_windows[0].size == 0) {
    size_t size = (size_t)4 << 40;
    void *p = NULL;
    for (; size >= ((size_t)1 << 34) && !(p = reserve(size, PROT_NONE)); size >>= 1) {}
    if (!p)
      rc = mmsb_fail(MMSB_ENOMEM, "cannot reserve the region arena");
    else if ((rc = window_setup(0, (uintptr_t)p, size)) != MMSB_OK)
      munmap(p, size);
  }
  pthread_mutex_unlock(&arena_lock);
  return rc;
}

/* The arena's free blocks: sorted by offset, adjacent ones merged, and one
 * that ends at arena_next goes back to the bump pointer.  Without merging,
 * a program that made and dropped a region a little larger each time left
 * a hole each time that the next could not use, and ran out of the
 * arena's 4 TiB after ~4 000 rounds of 1 GiB. */
static hole *holes;
static size_t nholes, cap_holes;

/* Where a block of `size` bytes goes in [off, off + len) (a large one on a
 * huge page boundary); UINTPTR_MAX where it does not fit. */
static uintptr_t fit(uintptr_t off, size_t len, size_t size) {
  uintptr_t at = off;
  if (size >= HUGE_MIN) {
    uintptr_t lo = __mmsb_windows[0].lo;
    at = ((lo + off + HUGE_MIN - 1) & ~(uintptr_t)(HUGE_MIN - 1)) - lo;
  }
  return at - off <= len && size <= len - (at - off) ? at : UINTPTR_MAX;
}

/* Puts h at index i; false (the block stays unused) when memory is short. */
static bool hole_insert(size_t i, hole h) {
  hole *t = mmsb_grow(holes, &cap_holes, nholes + 1, sizeof *t);
  if (!t) return false;
  holes = t;
  memmove(&holes[i + 1], &holes[i], (nholes - i) * sizeof *holes);
  holes[i] = h;
  nholes++;
  return true;
}

static void hole_remove(size_t i) {
  memmove(&holes[i], &holes[i + 1], (nholes - i - 1) * sizeof *holes);
  nholes--;
}

/* Returns [off, off + size) to the free blocks, merged with its
 * neighbours, or to the bump pointer. */
static void give_back(uintptr_t off, size_t size) {
  size_t i = 0, n = nholes;
  while (n) { /* i: the first hole above off */
    size_t half = n / 2;
    if (holes[i + half].off < off) { i += half + 1; n -= half + 1; }
    else n = half;
  }
  hole h = {off, size};
  if (i > 0 && holes[i - 1].off + holes[i - 1].size == off) {
    h.off = holes[--i].off;
    h.size += holes[i].size;
    hole_remove(i);
  }
  if (i < nholes && h.off + h.size == holes[i].off) {
    h.size += holes[i].size;
    hole_remove(i);
  }
  if (h.off + h.size == arena_next) arena_next = h.off;
  else hole_insert(i, h);
}

/* Takes a block of `size` bytes: the lowest free block it fits in (what is
 * left of that block before and after stays free), else the bump pointer
 * (the gap a huge page boundary leaves becomes a free block). */
static uintptr_t take_block(size_t size) {
  for (size_t i = 0; i < nholes; i++) {
    hole h = holes[i];
    uintptr_t at = fit(h.off, h.size, size);
    if (at == UINTPTR_MAX) continue;
    hole_remove(i);
    if (at + size < h.off + h.size) give_back(at + size, h.off + h.size - (at + size));
    if (at > h.off) give_back(h.off, at - h.off);
    return at;
  }
  uintptr_t old = arena_next, at = fit(old, __mmsb_windows[0].size - old, size);
  if (at == UINTPTR_MAX) return at;
  arena_next = at + size;
  if (at > old) give_back(old, at - old);
  return at;
}

int mmsb_arena_alloc(size_t size, void **out) {
  int rc = mmsb_arena_init();
  if (rc) return rc;
  size = (size + MMSB_PAGE_SIZE - 1) & ~(size_t)(MMSB_PAGE_SIZE - 1);
  /* Blocks are adjacent, with no guard page: the kernel merges adjacent
   * read-write mappings into one, so a program with many small regions
   * does not run into vm.max_map_count (65530 mappings). */
  pthread_mutex_lock(&arena_lock);
  uintptr_t off = take_block(size);
  pthread_mutex_unlock(&arena_lock);
  if (off == UINTPTR_MAX)
    return mmsb_fail(MMSB_ENOMEM, "region arena exhausted (%zu bytes asked)", size);
  void *p = (void *)(__mmsb_windows[0].lo + off);
  if (mprotect(p, size, PROT_READ | PROT_WRITE) != 0) {
    int e = errno;
    mmsb_arena_free(p, size);
    return mmsb_fail(MMSB_ENOMEM, "mprotect of %zu bytes: %s", size, strerror(e));
  }
  mmsb_huge_pages(p, size); /* 1e-4 of 1 GiB dirty: collection 1.5x faster */
  *out = p;
  return MMSB_OK;
}

/* Returns the block to the arena: pages dropped, bitmaps cleared. */
void mmsb_arena_free(void *p, size_t size) {
  size = (size + MMSB_PAGE_SIZE - 1) & ~(size_t)(MMSB_PAGE_SIZE - 1);
  uintptr_t off = (uintptr_t)p - __mmsb_windows[0].lo;
  mmap(p, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
       -1, 0);
  mmsb_shadow_clear(0, off, size);
  pthread_mutex_lock(&arena_lock);
  give_back(off, size);
  pthread_mutex_unlock(&arena_lock);
}

int mmsb_window_of(uintptr_t p, size_t n) {
  for (int w = 0; w < MMSB_NWINDOWS; w++) {
    uintptr_t off = p - __mmsb_windows[w].lo;
    if (off < __mmsb_windows[w].size && n <= __mmsb_windows[w].size - off)
      return w;
  }
  return -1;
}

/* Sets bits [a, b] of a bitmap. */
static void set_bits(uint64_t *m, size_t a, size_t b) {
  size_t wa = a >> 6, wb = b >> 6;
  uint64_t lo = ~(uint64_t)0 << (a & 63), hi = ~(uint64_t)0 >> (63 - (b & 63));
  if (wa == wb) { m[wa] |= lo & hi; return; }
  m[wa] |= lo;
  for (size_t i = wa + 1; i < wb; i++) m[i] = ~(uint64_t)0;
  m[wb] |= hi;
}

uint64_t mmsb_bitmap_gen;

void mmsb_bits_set(int w, uintptr_t off, size_t n) {
  mmsb_win_maps *m = &mmsb_maps[w];
  mmsb_bitmap_gen++;
  size_t last = off + n - 1;
  set_bits(m->gran, off >> GRAN_SHIFT, last >> GRAN_SHIFT);
  set_bits(m->pages, off >> PAGE_SHIFT, last >> PAGE_SHIFT);
  set_bits(m->summary, off >> (PAGE_SHIFT + 6), last >> (PAGE_SHIFT + 6));
}

/* Touching the granule map of a new region now keeps first-touch page
 * faults out of commits. */
void mmsb_shadow_prefault(int w, uintptr_t off, size_t len) {
  volatile uint8_t *g = (uint8_t *)mmsb_maps[w].gran + (off >> (GRAN_SHIFT + 3));
  size_t n = len >> (GRAN_SHIFT + 3);
  for (size_t i = 0; i < n; i += MMSB_PAGE_SIZE) g[i] = 0;
}

/* Zeroes n bytes of a bitmap.  Whole pages of a large span go back to the
 * kernel instead (the maps are private anonymous memory, so they read as
 * zeros again): the granule map of a 256 GiB region is 4 GiB, which a
 * memset wrote and kept resident at every destroy (and a corrupt log's
 * region record of a few bytes could ask for one).  Only pages wholly
 * inside the span are dropped, so no other region's bits are lost. */
static void zero_map(uint8_t *p, size_t n) {
  uintptr_t a = ((uintptr_t)p + MMSB_PAGE_SIZE - 1) & ~(uintptr_t)(MMSB_PAGE_SIZE - 1);
  uintptr_t b = ((uintptr_t)p + n) & ~(uintptr_t)(MMSB_PAGE_SIZE - 1);
  if (b <= a || b - a < ((size_t)1 << 20) || madvise((void *)a, b - a, MADV_DONTNEED)) {
    memset(p, 0, n);
    return;
  }
  memset(p, 0, a - (uintptr_t)p);
  memset((void *)b, 0, (uintptr_t)p + n - b);
}

/* Clears bits [a, b) of a bitmap. */
static void clear_bits(uint64_t *m, size_t a, size_t b) {
  for (; a < b && (a & 63); a++) m[a >> 6] &= ~((uint64_t)1 << (a & 63));
  size_t whole = (b - a) >> 6; /* 0 when a reached b above */
  if (a < b) zero_map((uint8_t *)&m[a >> 6], whole * 8);
  for (a += whole << 6; a < b; a++) m[a >> 6] &= ~((uint64_t)1 << (a & 63));
}

void mmsb_shadow_clear(int w, uintptr_t off, size_t len) {
  /* Entries for this range may still sit in other threads' logs; folded
   * later they only mark bytes that a later region here will send unchanged
   * (a mark too many is harmless, a missed one is not). */
  pthread_mutex_lock(&mmsb_mark_lock);
  zero_map((uint8_t *)mmsb_maps[w].gran + (off >> (GRAN_SHIFT + 3)), len >> (GRAN_SHIFT + 3));
  clear_bits(mmsb_maps[w].pages, off >> PAGE_SHIFT, (off + len) >> PAGE_SHIFT);
  /* Summary bits are a hint: a stale one costs a look at one zero word. */
  pthread_mutex_unlock(&mmsb_mark_lock);
}

/* ---- window 1: MMSB_STATE globals ---- */

/* Window 1 is the hull of every state global registered; the bitmaps are
 * set up again (and dirty pages carried over) when a global widens it.
 * Globals register from constructors, before code stores to them; old
 * bitmaps are not freed.  Globals that are not state but lie inside the
 * hull may collect marks through unknown pointers: those marks belong to
 * no region and are never sent. */
int mmsb_static_window_add(uintptr_t start, uintptr_t stop) {
  start &= ~(uintptr_t)(MMSB_PAGE_SIZE - 1);
  stop = (stop + MMSB_PAGE_SIZE - 1) & ~(uintptr_t)(MMSB_PAGE_SIZE - 1);
  if (stop <= start) return MMSB_OK;
  pthread_mutex_lock(&mmsb_mark_lock);
  __mmsb_window *w = &__mmsb_windows[1];
  int rc = MMSB_OK;
  if (w->size == 0) {
    rc = window_setup(1, start, stop - start);
  } else if (start < w->lo || stop > w->lo + w->size) {
    if (start > w->lo) start = w->lo;
    if (stop < w->lo + w->size) stop = w->lo + w->size;
    if (stop - start > ((size_t)1 << 40)) {
      rc = mmsb_fail(MMSB_ENOMEM, "MMSB_STATE globals span more than 1 TiB");
    } else {
      __mmsb_window old = *w;
      mmsb_win_maps oldm = mmsb_maps[1];
      rc = window_setup(1, start, stop - start);
      if (rc == MMSB_OK) {
        size_t d = old.lo - start;
        for (size_t pg = 0; pg < old.size >> PAGE_SHIFT; pg++)
          if (oldm.pages[pg >> 6] >> (pg & 63) & 1)
            mmsb_bits_set(1, d + (pg << PAGE_SHIFT), MMSB_PAGE_SIZE);
      }
    }
  }
  pthread_mutex_unlock(&mmsb_mark_lock);
  return rc;
}
