/* fastpath.h - the store fast path the pass emits for an 8-byte store to
 * memory that may be tracked (runtime/mmsb_abi.h), for benchmarks that
 * measure it without compiling with the pass. */
#ifndef MMSB_BENCH_FASTPATH_H
#define MMSB_BENCH_FASTPATH_H

#include "mmsb_abi.h"

static inline void tracked_store8(uint64_t *p, uint64_t v) {
  uintptr_t a = (uintptr_t)p;
  if (a - __mmsb_windows[0].lo < __mmsb_windows[0].size ||
      a - __mmsb_windows[1].lo < __mmsb_windows[1].size) {
    uint64_t *e = __mmsb_log.pos;
    if (e == __mmsb_log.end) e = __mmsb_log_refill();
    *e = (uint64_t)a | (uint64_t)7 << MMSB_LOG_LEN_SHIFT;
    __mmsb_log.pos = e + 1;
  }
  *p = v;
}

#endif
