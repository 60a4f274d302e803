/*
 * mmsb_abi.h - the entry points that instrumented code calls, and the data it
 * reads inline.  Shared by the runtime and the pass (whose lit tests check
 * the exact names and layouts below).  Change MMSB_ABI_VERSION with any
 * change here: instrumented objects reference __mmsb_abi_version_N, so a
 * pass and runtime of different versions fail at link time.
 *
 * Tracked memory lives in "windows": window 0 is the arena that dynamic
 * regions are carved from, window 1 the hull of the mmsb_state sections that
 * hold MMSB_STATE globals.  Each window has a granule bitmap: bit g is
 * granule g (8 bytes) from window.lo.  The inline fast path the pass emits
 * is:   off = p - win.lo; if (off < win.size) { test bit off>>3 in win.gran;
 *       if clear, call __mmsb_mark(p, n) }.
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

/* Layout fixed by the ABI: three pointer-sized fields, in this order. */
typedef struct __mmsb_window {
  uintptr_t lo;    /* first byte of the window */
  uintptr_t size;  /* bytes; 0 while the window is not set up */
  uint64_t *gran;  /* granule bitmap, one bit per 8 bytes */
} __mmsb_window;

extern __mmsb_window __mmsb_windows[MMSB_NWINDOWS];
extern const int __mmsb_abi_version_1;

/* Sized stores: mark the granules of [p, p+N).  Safe to call on any address;
 * stores outside every window are counted and otherwise ignored. */
void __mmsb_store1(const void *p);
void __mmsb_store2(const void *p);
void __mmsb_store4(const void *p);
void __mmsb_store8(const void *p);
void __mmsb_store16(const void *p);
void __mmsb_store_range(const void *p, size_t n);
/* The slow path after an inline check found a clear bit: p is inside a
 * window (it is range-checked again all the same). */
void __mmsb_mark(const void *p, size_t n);

/* Emitted by the pass in a module constructor: registers the mmsb_state
 * section [start, stop) of one module, then each MMSB_STATE global. */
void __mmsb_register_section(void *start, void *stop);
void __mmsb_register_state(const char *name, void *addr, size_t size);

#ifdef __cplusplus
}
#endif
#endif
