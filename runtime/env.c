/*
 * env.c - numbers from MMSB_* environment variables.
 *
 * Every numeric setting is read through mmsb_env_number: a decimal number,
 * optionally followed by K, M or G (times 1024, 1024^2, 1024^3), within the
 * setting's range.  A value that is set but is not such a number is named
 * on stderr and the default stays.  Read with atoi or strtoull, a mistyped
 * setting turned silently into another one: MMSB_ZERO_COPY=1M into one byte
 * (every epoch copied), MMSB_COMMIT_THREADS=eight into one thread.
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

bool mmsb_parse_number(const char *v, long long min, long long max, long long *out) {
  char *end;
  errno = 0;
  long long n = strtoll(v, &end, 10);
  if (end == v || errno) return false;
  long long unit = 1;
  switch (*end) {
  case 'K': case 'k': unit = 1LL << 10; end++; break;
  case 'M': case 'm': unit = 1LL << 20; end++; break;
  case 'G': case 'g': unit = 1LL << 30; end++; break;
  default: break;
  }
  if (*end || n > LLONG_MAX / unit || n < LLONG_MIN / unit) return false;
  n *= unit;
  if (n < min || n > max) return false;
  *out = n;
  return true;
}

bool mmsb_env_number(const char *name, long long min, long long max, long long *out) {
  const char *v = getenv(name);
  if (!v || !*v) return false;
  if (mmsb_parse_number(v, min, max, out)) return true;
  fprintf(stderr, "mmsb: %s='%s' is not a number from %lld to %lld (K, M, G allowed); "
          "using the default\n", name, v, min, max);
  return false;
}
