/*
 * marklog.c - per-thread mark logs.
 *
 * A tracked store appends (address, length) to its thread's log: a
 * sequential write to memory the thread owns, with no atomic instruction
 * and no second cache miss.  When the log fills, the entries written since
 * it last filled lose their repeats (a loop that stores to a few hot words
 * adds almost nothing); a log still more than half full doubles, up to a
 * limit; at the limit the thread takes mmsb_mark_lock and folds it into the
 * window bitmaps.  Dropping repeats and growing take only the log's own
 * lock, which a collection takes too (mmsb_logs_lock): under the global
 * lock, threads storing at once waited for each other's refills, each up to
 * a few hundred microseconds for a large log (record_commit's threads case:
 * sixteen threads on the H200's VM stored at 1.27-1.62x the plain stores'
 * time with these locks, 1.74-1.98x without; two on the CPU machine show no
 * difference).  An emptied log keeps its memory but counts as LOG_ENTRIES
 * long again, so that each epoch's repeats are dropped early (a log grown
 * by a large epoch would otherwise take the next epoch's hot words a
 * million times before it first filled).  An epoch whose marks all stayed
 * in the logs is collected from them (collect_logs.c), one whose marks
 * went into the bitmaps from those (collect.c).  A thread that exits folds
 * its log first.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* A log starts at 32 KiB and doubles up to LOG_MAX_DEFAULT entries (8 MiB;
 * MMSB_MARK_LOG sets it): 1e-3 of a GiB's words in one epoch stay in the
 * log.  Folding a mark into the bitmaps is a random read-modify-write of a
 * granule line, done again in reverse at commit; sorting the log at commit
 * is sequential and runs on the pool (measured in docs/performance.md). */
#define LOG_ENTRIES 4096
#define LOG_MAX_DEFAULT ((size_t)1 << 20)

__thread __mmsb_log_t __mmsb_log;

/* The table of recent entries that repeats are dropped against: RECENT
 * slots, in sets of two (the one hit or added last first), so that a set
 * must take three of the hot words before they push each other out. */
#define RECENT 1024

typedef struct thread_log {
  struct thread_log *next, *prev;
  pthread_mutex_t lock; /* the owner's refill against collections; taken
                           after mmsb_mark_lock when both are held */
  __mmsb_log_t *log;  /* the owning thread's __mmsb_log; its end is where
                         the log counts as full, at most buf + cap */
  uint64_t *buf;
  size_t cap;         /* entries allocated */
  uint64_t *filtered; /* entries before it went through drop_repeats */
  bool dropping;      /* the last filtered chunk lost an eighth or more */
  /* RECENT entries kept since the log was last emptied, by a hash of the
   * entry: an entry equal to one of them marks nothing new.  Cleared
   * whenever the log is emptied, since the entry it matched is gone then.
   * Allocated with the node (8 KiB, for threads that store only); NULL on
   * the fallback log, which never drops repeats. */
  uint64_t *recent;
} thread_log;

static thread_log *logs;  /* every registered thread; mmsb_mark_lock */
static pthread_key_t exit_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static __thread thread_log *self;
/* A short log and its node for when malloc fails: a thread always has a
 * log that commit folds. */
static __thread thread_log fallback_node;
static __thread uint64_t fallback[16];

/* Striped counter of stores outside every window: one cache line per slot so
 * that threads do not contend on it. */
static struct { _Atomic uint64_t n; char pad[56]; } outside[16];

/* Folds entries into the bitmaps.  Entries point anywhere in a window, so
 * the granule words are random accesses: each is prefetched a few entries
 * ahead so that the misses overlap instead of queueing. */
static void fold(const uint64_t *e, const uint64_t *end) {
  enum { AHEAD = 32 };
  if (e < end) mmsb_bitmap_gen++;
  for (; e < end; e++) {
    if (e + AHEAD < end) {
      uintptr_t q = mmsb_log_entry_addr(e[AHEAD]);
      for (int w = 0; w < MMSB_NWINDOWS; w++) {
        uintptr_t off = q - __mmsb_windows[w].lo;
        if (off < __mmsb_windows[w].size) {
          __builtin_prefetch(&mmsb_maps[w].gran[off >> (GRAN_SHIFT + 6)], 1);
          break;
        }
      }
    }
    uintptr_t p = mmsb_log_entry_addr(*e);
    size_t n = (size_t)(*e >> MMSB_LOG_LEN_SHIFT) + 1;
    for (int w = 0; w < MMSB_NWINDOWS; w++) {
      uintptr_t off = p - __mmsb_windows[w].lo, size = __mmsb_windows[w].size;
      if (off >= size) continue;
      if (n <= size - off && (off & 7) + n <= 8) { /* one granule: the common case */
        mmsb_win_maps *m = &mmsb_maps[w];
        size_t g = off >> GRAN_SHIFT, pg = off >> PAGE_SHIFT;
        m->gran[g >> 6] |= (uint64_t)1 << (g & 63);
        m->pages[pg >> 6] |= (uint64_t)1 << (pg & 63);
        m->summary[pg >> 12] |= (uint64_t)1 << ((pg >> 6) & 63);
      } else {
        mmsb_bits_set(w, off, n <= size - off ? n : size - off);
      }
      break;
    }
  }
}

/* Empties t's log (its entries were folded or taken).  recent holds only
 * entries that were kept in the log, so an empty log has it clear already:
 * a commit skips the table of every thread that stored nothing. */
static void empty(thread_log *t) {
  if (t->recent && t->log->pos != t->buf) memset(t->recent, 0, RECENT * sizeof *t->recent);
  t->log->pos = t->filtered = t->buf;
  t->log->end = t->buf + (t->cap < LOG_ENTRIES ? t->cap : LOG_ENTRIES);
}

static void flush_one(thread_log *t) {
  fold(t->buf, t->log->pos);
  empty(t);
}

void mmsb_logs_lock(void) {
  pthread_mutex_lock(&mmsb_mark_lock);
  for (thread_log *t = logs; t; t = t->next) pthread_mutex_lock(&t->lock);
}

void mmsb_logs_unlock(void) {
  for (thread_log *t = logs; t; t = t->next) pthread_mutex_unlock(&t->lock);
  pthread_mutex_unlock(&mmsb_mark_lock);
}

void mmsb_logs_flush_all(void) {
  for (thread_log *t = logs; t; t = t->next) flush_one(t);
}

size_t mmsb_logs_segs(mmsb_log_seg **segs, size_t *cap) {
  size_t n = 0;
  for (thread_log *t = logs; t; t = t->next) n++;
  mmsb_log_seg *g = mmsb_grow(*segs, cap, n ? n : 1, sizeof *g);
  if (!g) return SIZE_MAX;
  *segs = g;
  n = 0;
  for (thread_log *t = logs; t; t = t->next)
    if (t->log->pos > t->buf) g[n++] = (mmsb_log_seg){t->buf, (size_t)(t->log->pos - t->buf)};
  return n;
}

void mmsb_logs_clear(void) {
  for (thread_log *t = logs; t; t = t->next) empty(t);
}

void mmsb_logs_fold(const uint64_t *e, size_t n) { fold(e, e + n); }

static void on_thread_exit(void *arg) {
  thread_log *t = arg;
  pthread_mutex_lock(&mmsb_mark_lock);
  pthread_mutex_lock(&t->lock);
  flush_one(t);
  pthread_mutex_unlock(&t->lock);
  pthread_mutex_destroy(&t->lock);
  if (t->prev) t->prev->next = t->next;
  else logs = t->next;
  if (t->next) t->next->prev = t->prev;
  pthread_mutex_unlock(&mmsb_mark_lock);
  if (t->buf != fallback) free(t->buf);
  if (t != &fallback_node) free(t);
  self = NULL;
  __mmsb_log.pos = __mmsb_log.end = NULL;
}

static void make_key(void) { pthread_key_create(&exit_key, on_thread_exit); }

/* Registers the calling thread's log. */
static void register_self(void) {
  pthread_once(&key_once, make_key);
  size_t n = LOG_ENTRIES;
  thread_log *t = calloc(1, sizeof *t + RECENT * sizeof(uint64_t));
  uint64_t *buf = t ? malloc(n * sizeof *buf) : NULL;
  uint64_t *recent = buf ? (uint64_t *)(t + 1) : NULL; /* t + 1 only when t is not NULL */
  if (!buf) { /* no memory for a log: a short one, folded more often */
    free(t);
    t = &fallback_node;
    buf = fallback;
    n = sizeof fallback / sizeof *fallback;
  }
  *t = (thread_log){NULL, NULL, PTHREAD_MUTEX_INITIALIZER, &__mmsb_log, buf, n, buf, false, recent};
  __mmsb_log.pos = buf;
  __mmsb_log.end = buf + n;
  pthread_mutex_lock(&mmsb_mark_lock);
  t->next = logs;
  if (logs) logs->prev = t;
  logs = t;
  pthread_mutex_unlock(&mmsb_mark_lock);
  pthread_setspecific(exit_key, t);
  self = t;
}

/* Drops the entries of [e, end) that repeat one in t->recent (or an
 * earlier one of them), compacting the rest in place; returns their end.
 * The hash mixes all bits: hot words often sit a power of two apart, and a
 * plain multiply left half of 100 such words sharing slots. */
static uint64_t *drop_repeats(thread_log *t, uint64_t *e, const uint64_t *end) {
  uint64_t *w = e;
  for (; e < end; e++) {
    uint64_t x = *e, h = x ^ (x >> 29);
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    uint64_t *set = &t->recent[(h & (RECENT / 2 - 1)) * 2];
    if (set[0] == x) continue; /* 0 is no entry: addresses are not 0 */
    if (set[1] == x) { /* hit: first in its set now */
      set[1] = set[0];
      set[0] = x;
      continue;
    }
    set[1] = set[0];
    set[0] = x;
    *w++ = x;
  }
  return w;
}

/* A log shorter than this always loses its repeats when it fills; a longer
 * one only while the last chunk had many (an epoch of distinct stores stops
 * paying for the table: at 1e-2 of a GiB it cost 0.2x of a plain store). */
#define FILTER_ALWAYS 65536

/* Entries a log may grow to: MMSB_MARK_LOG (at least LOG_ENTRIES), read
 * once.  Threads refill under their own logs' locks, so the cache is
 * atomic (each thread that races on the first read computes the same). */
static size_t log_max(void) {
  static _Atomic size_t max;
  size_t m = atomic_load_explicit(&max, memory_order_relaxed);
  if (!m) {
    long long n = LOG_MAX_DEFAULT; /* kept when the setting is unset or wrong */
    mmsb_env_number("MMSB_MARK_LOG", 1, 1LL << 36, &n);
    m = n < LOG_ENTRIES ? LOG_ENTRIES : (size_t)n;
    atomic_store_explicit(&max, m, memory_order_relaxed);
  }
  return m;
}

/* A full log's next capacity: twice, but no more than log_max. */
static size_t grown(size_t cap) { return 2 * cap < log_max() ? 2 * cap : log_max(); }

/* Makes room in the calling thread's full log t (its lock held): drops
 * repeats, or extends it into memory it has, or grows it.  False when none
 * of those made room: the log must be folded. */
static bool make_room(thread_log *t) {
  __mmsb_log_t *log = t->log;
  size_t len = (size_t)(log->end - t->buf); /* where it counted as full */
  if (t->recent && (len <= FILTER_ALWAYS || t->dropping)) {
    size_t chunk = (size_t)(log->pos - t->filtered);
    log->pos = drop_repeats(t, t->filtered, log->pos);
    t->dropping = (chunk - (size_t)(log->pos - t->filtered)) * 8 >= chunk;
  }
  t->filtered = log->pos;
  size_t used = (size_t)(log->pos - t->buf);
  if (used <= len / 2) return true; /* repeats made room */
  if (len < t->cap) { /* memory from an earlier epoch */
    log->end = t->buf + (2 * len < t->cap ? 2 * len : t->cap);
    return true;
  }
  size_t cap = grown(t->cap);
  uint64_t *b = cap > t->cap && t->buf != fallback ? realloc(t->buf, cap * sizeof *b) : NULL;
  if (!b) return false;
  t->buf = b; /* room for twice as many: the marks stay in the log */
  t->cap = cap;
  t->filtered = log->pos = b + used;
  log->end = b + cap;
  return true;
}

uint64_t *__mmsb_log_refill(void) {
  if (!self) {
    register_self();
    return __mmsb_log.pos;
  }
  thread_log *t = self;
  pthread_mutex_lock(&t->lock);
  bool room = make_room(t);
  pthread_mutex_unlock(&t->lock);
  if (!room) { /* fold: the global lock first, as collections take them */
    pthread_mutex_lock(&mmsb_mark_lock);
    pthread_mutex_lock(&t->lock);
    if (__mmsb_log.pos != t->buf) flush_one(t); /* else a commit emptied it meanwhile */
    pthread_mutex_unlock(&t->lock);
    pthread_mutex_unlock(&mmsb_mark_lock);
  }
  return __mmsb_log.pos;
}

static inline void log_append(uintptr_t p, size_t n) {
  uint64_t *e = __mmsb_log.pos;
  if (e == __mmsb_log.end) e = __mmsb_log_refill();
  *e = (uint64_t)p | (uint64_t)(n - 1) << MMSB_LOG_LEN_SHIFT;
  __mmsb_log.pos = e + 1;
}

bool mmsb_mark_range(uintptr_t p, size_t n) {
  if (n == 0) return true;
  for (int w = 0; w < MMSB_NWINDOWS; w++) {
    uintptr_t off = p - __mmsb_windows[w].lo, size = __mmsb_windows[w].size;
    if (off >= size) continue;
    size_t in = n <= size - off ? n : size - off;
    if (in <= MMSB_LOG_MAX_LEN) {
      log_append(p, in);
    } else { /* a large range: straight into the bitmaps */
      pthread_mutex_lock(&mmsb_mark_lock);
      mmsb_bits_set(w, off, in);
      pthread_mutex_unlock(&mmsb_mark_lock);
    }
    return in == n;
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
