/*
 * mmsb_abi.h - the entry points that instrumented code calls, and the data it
 * reads inline.  Shared by the runtime and the pass (whose lit tests check
 * the exact names and layouts below).  Change MMSB_ABI_VERSION with any
 * change here: instrumented objects reference __mmsb_abi_version_N, so a
 * pass and runtime of different versions fail at link time.
 *
 * Tracked memory lives in "windows": window 0 is the arena that dynamic
 * regions are carved from, window 1 the hull of the MMSB_STATE globals
 * registered so far.
 *
 * A tracked store appends one entry to its thread's mark log; the runtime
 * folds logs into its dirty bitmaps when a log fills and at commit.  The
 * log is written sequentially, so a store to a random address costs one
 * extra L1 store instead of a second cache miss (into a bitmap) or a
 * locked read-modify-write that would drain the store buffer.  An entry is
 *   address | (length - 1) << 48        (length 1..65536)
 * The inline fast path the pass emits for a store of n bytes at p is:
 *   if (p - win.lo < win.size for window 0 or 1) {
 *     e = __mmsb_log.pos; if (e == __mmsb_log.end) e = __mmsb_log_refill();
 *     *e = p | (n - 1) << 48; __mmsb_log.pos = e + 1; }
 */
#ifndef MMSB_ABI_H
#define MMSB_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MMSB_ABI_VERSION 1
#define MMSB_NWINDOWS 2

/* Layout fixed by the ABI: two pointer-sized fields, in this order. */
typedef struct __mmsb_window {
  uintptr_t lo;      /* first byte of the window */
  uintptr_t size;    /* bytes; 0 while the window is not set up */
} __mmsb_window;

/* A thread's mark log: entries go at pos, up to end. */
typedef struct __mmsb_log_t {
  uint64_t *pos;
  uint64_t *end;
} __mmsb_log_t;

#define MMSB_LOG_LEN_SHIFT 48
#define MMSB_LOG_MAX_LEN 65536

extern __mmsb_window __mmsb_windows[MMSB_NWINDOWS];
extern __thread __mmsb_log_t __mmsb_log;
/* Folds the calling thread's full log into the bitmaps; returns the new
 * (empty) position. */
uint64_t *__mmsb_log_refill(void);
extern const int __mmsb_abi_version_1;

/* Sized stores: mark the granules of [p, p+N).  Safe to call on any address;
 * stores outside every window are counted and otherwise ignored. */
void __mmsb_store1(const void *p);
void __mmsb_store2(const void *p);
void __mmsb_store4(const void *p);
void __mmsb_store8(const void *p);
void __mmsb_store16(const void *p);
void __mmsb_store_range(const void *p, size_t n);
/* Marks [p, p+n) of any size (what __mmsb_store_range does). */
void __mmsb_mark(const void *p, size_t n);
/* After strcpy, strcat, sprintf: marks the string at p and its NUL. */
void __mmsb_store_cstr(const char *p);

/* Emitted by the pass in a module constructor: registers each MMSB_STATE
 * global (page-aligned) as a region of the default bus. */
void __mmsb_register_state(const char *name, void *addr, size_t size);

#ifdef __cplusplus
}
#endif
#endif
