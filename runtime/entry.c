/*
 * entry.c - the __mmsb_* entry points that instrumented code calls.
 * The pass normally emits the fast path inline (mmsb_abi.h); these calls
 * are its out-of-line form, and count stores outside every window.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

void __mmsb_store1(const void *p) { mmsb_mark_range((uintptr_t)p, 1); }
void __mmsb_store2(const void *p) { mmsb_mark_range((uintptr_t)p, 2); }
void __mmsb_store4(const void *p) { mmsb_mark_range((uintptr_t)p, 4); }
void __mmsb_store8(const void *p) { mmsb_mark_range((uintptr_t)p, 8); }
void __mmsb_store16(const void *p) { mmsb_mark_range((uintptr_t)p, 16); }
void __mmsb_store_range(const void *p, size_t n) { mmsb_mark_range((uintptr_t)p, n); }
void __mmsb_mark(const void *p, size_t n) { mmsb_mark_range((uintptr_t)p, n); }

int mmsb_touch(const void *addr, size_t len) {
  if (!addr && len) return mmsb_fail(MMSB_EINVAL, "mmsb_touch: NULL address");
  if (len == 0) return MMSB_OK;
  if ((uintptr_t)addr + len < (uintptr_t)addr)
    return mmsb_fail(MMSB_EINVAL, "mmsb_touch: range wraps the address space");
  if (!mmsb_mark_range((uintptr_t)addr, len))
    return mmsb_fail(MMSB_ERANGE, "mmsb_touch: [%p, +%zu) is not all inside "
                     "tracked memory", addr, len);
  return MMSB_OK;
}

/* Window 1 grows to cover the global, then the global becomes a region. */
void __mmsb_register_state(const char *name, void *addr, size_t size) {
  mmsb_region *r;
  int rc = mmsb_static_window_add((uintptr_t)addr, (uintptr_t)addr + size);
  if (rc == MMSB_OK)
    rc = mmsb_region_attach(mmsb_default_bus(), name, addr, size, &r);
  if (rc)
    fprintf(stderr, "mmsb: cannot register state '%s': %s\n", name,
            mmsb_last_error());
}

/* After strcpy and friends: the string now at p, with its NUL. */
void __mmsb_store_cstr(const char *p) {
  if (p) mmsb_mark_range((uintptr_t)p, strlen(p) + 1);
}
