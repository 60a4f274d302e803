/* error.c - status names and the thread-local detail of the last failure. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[512];

const char *mmsb_strerror(int status) {
  switch (status) {
  case MMSB_OK: return "ok";
  case MMSB_EINVAL: return "invalid argument";
  case MMSB_ENOMEM: return "out of memory";
  case MMSB_EEXIST: return "already exists";
  case MMSB_ENOTFOUND: return "not found";
  case MMSB_ERANGE: return "outside tracked memory";
  case MMSB_ECORRUPT: return "corrupt data";
  case MMSB_EIO: return "i/o error";
  case MMSB_ENOSPC: return "no space left";
  case MMSB_EMISMATCH: return "region mismatch";
  case MMSB_EBUSY: return "busy";
  case MMSB_ENODEV: return "no device";
  case MMSB_ECYCLE: return "cycle";
  case MMSB_ENODE: return "node failed";
  case MMSB_EUNSUPPORTED: return "unsupported in this build";
  default: return "unknown status";
  }
}

const char *mmsb_last_error(void) { return last_error; }

void mmsb_clear_error(void) { last_error[0] = 0; }

/* Records the detail and returns the status, so callers write
 * `return mmsb_fail(MMSB_EINVAL, "...")`. */
int mmsb_fail(int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return status;
}
