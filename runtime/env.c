/*
 * env.c - numbers from MMSB_* environment variables.
 *
 * Every numeric setting is read through mmsb_env_number: a decimal number,
 * optionally followed by K, M or G (times 1024, 1024^2, 1024^3), within the
 * setting's range.  A value that is set but is not such a number is named
 * on stderr (once for each value) and the default stays.  Read with atoi
 * or strtoull, a mistyped setting turned silently into another one:
 * MMSB_ZERO_COPY=1M into one byte (every epoch copied),
 * MMSB_COMMIT_THREADS=eight into one thread.
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* A setting's complaint is printed once per process for each value: the
 * settings of buses are read again at every mmsb_config_init, and a
 * program that opens a bus per request printed the same line each time. */
enum { WARNED_MAX = 32, WARNED_VALUE = 64 };
static struct { const char *name; char value[WARNED_VALUE]; } warned[WARNED_MAX];
static int nwarned;
static pthread_mutex_t warned_lock = PTHREAD_MUTEX_INITIALIZER;

/* Whether name=value was not complained of yet (and now counts as
 * complained of); a value longer than WARNED_VALUE - 1 bytes is told
 * apart by its first WARNED_VALUE - 1.  Past WARNED_MAX pairs, a new one
 * is named each time: a program with that many bad settings hears of it. */
static bool first_time(const char *name, const char *value) {
  bool first = true;
  pthread_mutex_lock(&warned_lock);
  for (int i = 0; i < nwarned && first; i++)
    first = strcmp(warned[i].name, name) || strncmp(warned[i].value, value, WARNED_VALUE - 1);
  if (first && nwarned < WARNED_MAX) {
    warned[nwarned].name = name;
    snprintf(warned[nwarned].value, WARNED_VALUE, "%s", value);
    nwarned++;
  }
  pthread_mutex_unlock(&warned_lock);
  return first;
}

void mmsb_env_complain(const char *name, const char *value, const char *fmt, ...) {
  if (!first_time(name, value)) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "mmsb: %s='%s' ", name, value);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

bool mmsb_env_number(const char *name, long long min, long long max, long long *out) {
  const char *v = getenv(name);
  if (!v || !*v) return false;
  if (mmsb_parse_number(v, min, max, out)) return true;
  mmsb_env_complain(name, v, "is not a number from %lld to %lld (K, M, G allowed); using the "
                    "default", min, max);
  return false;
}
