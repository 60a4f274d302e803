/*
 * window.c - the tracked address ranges and their dirty bitmaps.
 *
 * Dirty state is three bitmaps per window, all reserved up front with
 * MAP_NORESERVE so that they cost nothing until touched:
 *   gran    one bit per 8-byte granule (a page's 512 bits are one cache line)
 *   pages   one bit per 4 KiB page, set when a granule of it is first marked
 *   summary one bit per 64 pages
 * A commit walks summary -> pages -> gran, so its cost follows the number of
 * dirty pages, not the region size.  Writers only ever set bits with relaxed
 * atomic ORs, and test before they OR, so a granule already dirty costs one
 * load.  Commit clears bits while writers are quiescent.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

__mmsb_window __mmsb_windows[MMSB_NWINDOWS];
const int __mmsb_abi_version_1 = MMSB_ABI_VERSION;
mmsb_win_meta mmsb_win_meta_[MMSB_NWINDOWS];

static pthread_mutex_t arena_lock = PTHREAD_MUTEX_INITIALIZER;
static uintptr_t arena_next;         /* bump pointer, offset in window 0 */
typedef struct hole { uintptr_t off; size_t size; } hole;
static hole holes[256];              /* freed blocks, reused first-fit */
static int nholes;

/* Striped counter of stores outside every window: one cache line per slot so
 * that threads do not contend on it. */
static struct { _Atomic uint64_t n; char pad[56]; } outside[16];

static void *reserve(size_t n) {
  void *p = mmap(NULL, n, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

static void *reserve_rw(size_t n) {
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

/* Sets up the bitmaps of window w over [lo, lo+size). */
static int window_setup(int w, uintptr_t lo, size_t size) {
  size_t npages = size >> PAGE_SHIFT;
  size_t gran_bytes = size / MMSB_GRANULE / 8;
  size_t page_bytes = (npages + 63) / 64 * 8;
  size_t sum_bytes = ((npages + 63) / 64 + 63) / 64 * 8;
  uint64_t *g = reserve_rw(gran_bytes);
  uint64_t *pg = reserve_rw(page_bytes);
  uint64_t *s = reserve_rw(sum_bytes);
  if (!g || !pg || !s) {
    if (g) munmap(g, gran_bytes);
    if (pg) munmap(pg, page_bytes);
    if (s) munmap(s, sum_bytes);
    return mmsb_fail(MMSB_ENOMEM, "cannot reserve dirty bitmaps for %zu bytes",
                     size);
  }
  mmsb_win_meta_[w].pages = pg;
  mmsb_win_meta_[w].summary = s;
  __mmsb_windows[w].gran = g;
  __mmsb_windows[w].lo = lo;
  atomic_thread_fence(memory_order_release);
  __mmsb_windows[w].size = size;
  return MMSB_OK;
}

/* Reserves the arena: 4 TiB of address space, halved until the system
 * agrees (sanitizers and overcommit limits reserve less). */
int mmsb_arena_init(void) {
  pthread_mutex_lock(&arena_lock);
  int rc = MMSB_OK;
  if (__mmsb_windows[0].size == 0) {
    size_t size = (size_t)4 << 40;
    void *p = NULL;
    for (; size >= ((size_t)1 << 34) && !(p = reserve(size)); size >>= 1) {}
    if (!p)
      rc = mmsb_fail(MMSB_ENOMEM, "cannot reserve the region arena");
    else if ((rc = window_setup(0, (uintptr_t)p, size)) != MMSB_OK)
      munmap(p, size);
    else
      mmsb_win_meta_[0].reserved = size;
  }
  pthread_mutex_unlock(&arena_lock);
  return rc;
}

int mmsb_arena_alloc(size_t size, void **out) {
  int rc = mmsb_arena_init();
  if (rc) return rc;
  size = (size + MMSB_PAGE_SIZE - 1) & ~(size_t)(MMSB_PAGE_SIZE - 1);
  pthread_mutex_lock(&arena_lock);
  uintptr_t off = UINTPTR_MAX;
  for (int i = 0; i < nholes; i++) {
    if (holes[i].size >= size) {
      off = holes[i].off;
      holes[i].off += size;
      holes[i].size -= size;
      if (holes[i].size == 0) holes[i] = holes[--nholes];
      break;
    }
  }
  /* A guard page between blocks keeps one region's overrun out of another. */
  if (off == UINTPTR_MAX && arena_next + size + MMSB_PAGE_SIZE <= __mmsb_windows[0].size) {
    off = arena_next;
    arena_next += size + MMSB_PAGE_SIZE;
  }
  pthread_mutex_unlock(&arena_lock);
  if (off == UINTPTR_MAX)
    return mmsb_fail(MMSB_ENOMEM, "region arena exhausted (%zu bytes asked)", size);
  void *p = (void *)(__mmsb_windows[0].lo + off);
  if (mprotect(p, size, PROT_READ | PROT_WRITE) != 0) {
    mmsb_arena_free(p, size);
    return mmsb_fail(MMSB_ENOMEM, "mprotect of %zu bytes: %s", size, strerror(errno));
  }
  *out = p;
  return MMSB_OK;
}

/* Returns the block to the arena: pages dropped, shadow cleared. */
void mmsb_arena_free(void *p, size_t size) {
  size = (size + MMSB_PAGE_SIZE - 1) & ~(size_t)(MMSB_PAGE_SIZE - 1);
  uintptr_t off = (uintptr_t)p - __mmsb_windows[0].lo;
  mmap(p, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
       -1, 0);
  mmsb_shadow_clear(0, off, size);
  pthread_mutex_lock(&arena_lock);
  if (nholes < (int)(sizeof holes / sizeof holes[0]))
    holes[nholes++] = (hole){off, size};
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

static inline void set_bit(uint64_t *words, size_t bit) {
  _Atomic uint64_t *w = (_Atomic uint64_t *)&words[bit >> 6];
  uint64_t m = (uint64_t)1 << (bit & 63);
  if (!(atomic_load_explicit(w, memory_order_relaxed) & m))
    atomic_fetch_or_explicit(w, m, memory_order_relaxed);
}

/* Sets granule bits [g0, g1] in window w; returns true if any was clear. */
static inline bool set_grans(uint64_t *gran, size_t g0, size_t g1) {
  bool fresh = false;
  for (size_t wi = g0 >> 6; wi <= (g1 >> 6); wi++) {
    unsigned lo = wi == (g0 >> 6) ? (unsigned)(g0 & 63) : 0;
    unsigned hi = wi == (g1 >> 6) ? (unsigned)(g1 & 63) : 63;
    uint64_t m = (hi == 63 ? ~(uint64_t)0 : (((uint64_t)1 << (hi + 1)) - 1)) &
                 ~(((uint64_t)1 << lo) - 1);
    _Atomic uint64_t *w = (_Atomic uint64_t *)&gran[wi];
    if ((atomic_load_explicit(w, memory_order_relaxed) & m) != m) {
      atomic_fetch_or_explicit(w, m, memory_order_relaxed);
      fresh = true;
    }
  }
  return fresh;
}

static void mark_in(int w, uintptr_t off, size_t n) {
  if (!set_grans(__mmsb_windows[w].gran, off >> GRAN_SHIFT,
                 (off + n - 1) >> GRAN_SHIFT))
    return; /* every granule was dirty already, so its page is marked */
  mmsb_win_meta *m = &mmsb_win_meta_[w];
  for (size_t pg = off >> PAGE_SHIFT; pg <= (off + n - 1) >> PAGE_SHIFT; pg++) {
    set_bit(m->pages, pg);
    set_bit(m->summary, pg >> 6);
  }
}

bool mmsb_mark_range(uintptr_t p, size_t n) {
  if (n == 0) return true;
  for (int w = 0; w < MMSB_NWINDOWS; w++) {
    uintptr_t off = p - __mmsb_windows[w].lo;
    uintptr_t size = __mmsb_windows[w].size;
    if (off < size) {
      mark_in(w, off, n <= size - off ? n : size - off);
      return n <= size - off;
    }
  }
  static _Thread_local unsigned slot = ~0u;
  if (slot == ~0u) slot = (unsigned)(((uintptr_t)&slot >> 12) % 16);
  atomic_fetch_add_explicit(&outside[slot].n, 1, memory_order_relaxed);
  return false;
}

uint64_t mmsb_outside_count(void) {
  uint64_t t = 0;
  for (int i = 0; i < 16; i++) t += atomic_load(&outside[i].n);
  return t;
}

/* Touching the shadow of a new region now keeps first-touch page faults
 * out of the store fast path. */
void mmsb_shadow_prefault(int w, uintptr_t off, size_t len) {
  uint8_t *g = (uint8_t *)__mmsb_windows[w].gran + (off >> 6);
  size_t n = (len + 63) >> 6;
  for (size_t i = 0; i < n; i += MMSB_PAGE_SIZE) ((volatile uint8_t *)g)[i] = 0;
  if (n) ((volatile uint8_t *)g)[n - 1] = 0;
}

void mmsb_shadow_clear(int w, uintptr_t off, size_t len) {
  memset((uint8_t *)__mmsb_windows[w].gran + (off >> 6), 0, (len + 63) >> 6);
  mmsb_win_meta *m = &mmsb_win_meta_[w];
  for (size_t pg = off >> PAGE_SHIFT; pg < (off + len) >> PAGE_SHIFT; pg++) {
    m->pages[pg >> 6] &= ~((uint64_t)1 << (pg & 63));
  }
  /* Summary bits are a hint: a stale one costs one look at a zero word. */
}

/* ---- window 1: the mmsb_state sections of instrumented modules ---- */

/* Window 1 is the hull of every section registered; the bitmaps are set up
 * again (and old bits carried over) if a later module widens it.  Modules
 * register from constructors, before their code stores to state. */
int mmsb_static_window_add(uintptr_t start, uintptr_t stop) {
  start &= ~(uintptr_t)(MMSB_PAGE_SIZE - 1);
  stop = (stop + MMSB_PAGE_SIZE - 1) & ~(uintptr_t)(MMSB_PAGE_SIZE - 1);
  if (stop <= start) return MMSB_OK;
  pthread_mutex_lock(&arena_lock);
  __mmsb_window *w = &__mmsb_windows[1];
  int rc = MMSB_OK;
  if (w->size == 0) {
    rc = window_setup(1, start, stop - start);
  } else if (start < w->lo || stop > w->lo + w->size) {
    if (start > w->lo) start = w->lo;
    if (stop < w->lo + w->size) stop = w->lo + w->size;
    if (stop - start > ((size_t)1 << 40)) {
      rc = mmsb_fail(MMSB_ENOMEM, "mmsb_state sections span more than 1 TiB");
    } else {
      /* Instrumented modules that register later must not widen the window
       * under concurrent writers; this happens before main or at dlopen. */
      __mmsb_window old = *w;
      mmsb_win_meta oldm = mmsb_win_meta_[1];
      w->size = 0;
      rc = window_setup(1, start, stop - start);
      if (rc == MMSB_OK) {
        size_t d = old.lo - start;
        for (size_t pg = 0; pg < old.size >> PAGE_SHIFT; pg++)
          if (oldm.pages[pg >> 6] >> (pg & 63) & 1)
            mark_in(1, d + (pg << PAGE_SHIFT), MMSB_PAGE_SIZE);
      } else {
        *w = old;
      }
    }
  }
  pthread_mutex_unlock(&arena_lock);
  return rc;
}
