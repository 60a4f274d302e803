/*
 * pool.c - a process-wide pool of worker threads for the runtime's
 * parallel loops: collecting large epochs, filling mirror staging, and the
 * nodes of one propagation height.  Work is cut into parts; the caller and
 * the workers take parts as they come free, so a worker that wakes late
 * takes fewer.  Threads are started on first use and kept: starting threads
 * per commit costs more than a small commit.  One job runs at a time; a
 * second caller waits for the first, and a job started from inside a job
 * (a GPU node filling its staging) runs on its caller alone.
 *
 * A job uses at most the threads its caller asks for: user code (nodes)
 * runs on the pool only when MMSB_THREADS allows it.
 */
#include "internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define POOL_MAX 64

/* Parts are handed out without a lock: `ticket` holds the job's number
 * (high 32 bits) and its next part, taken by compare-and-swap.  With a
 * mutex around the handout, sixteen threads woken at once queued on it for
 * every part, and a commit's short jobs (tens of microseconds of work each)
 * took several times as long.  The mutex and condition variables are only
 * for sleeping and waking. */
static struct {
  pthread_mutex_t job_lock;  /* one job at a time */
  pthread_mutex_t lock;      /* sleeping and waking */
  pthread_cond_t go, done;
  int nthreads;              /* workers started (job_lock) */
  _Atomic uint64_t gen;      /* the current job's number (from 1); bumped under lock */
  _Atomic uint64_t ticket;   /* job number << 32 | next part */
  mmsb_part_fn fn;           /* the job: set before gen is bumped */
  void *ctx;
  _Atomic int nparts;        /* atomic: a late worker reads it as the next job starts */
  _Atomic int helpers;       /* workers the job may still take */
  _Atomic int left;          /* parts not finished */
} P = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
       PTHREAD_COND_INITIALIZER, 0, 1, 0, NULL, NULL, 0, 0, 0}; /* gen from 1: 0 is "the end" */

static __thread int in_job; /* this thread is running a part or waiting for its job */

/* Takes parts of job g until none is left (or another job is current: a
 * worker that woke late); the caller calls tick (if any) after each. */
static void take_parts(uint64_t g, bool (*tick)(void *), void *tctx) {
  for (;;) {
    uint64_t t = atomic_load(&P.ticket);
    do {
      if (t >> 32 != (g & 0xffffffffu) || (uint32_t)t >= (uint32_t)atomic_load(&P.nparts)) return;
    } while (!atomic_compare_exchange_weak(&P.ticket, &t, t + 1));
    /* The part is ours, so job g cannot end before it does: fn, ctx and
     * nparts are still g's. */
    P.fn(P.ctx, (int)(uint32_t)t, atomic_load(&P.nparts));
    if (atomic_fetch_sub(&P.left, 1) == 1) {
      pthread_mutex_lock(&P.lock);
      pthread_cond_broadcast(&P.done);
      pthread_mutex_unlock(&P.lock);
    }
    if (tick) tick(tctx);
  }
}

/* How long a thread spins for the next job (or for its job's end) before
 * it sleeps: collection hands out several jobs back to back, and waking a
 * sleeping thread took ~50 us on a VM, as long as a whole small commit.
 * MMSB_POOL_SPIN_US sets it (read once, when the first thread starts): a
 * program that commits every few hundred microseconds keeps the pool awake
 * from one commit to the next with a longer spin, at the price of the
 * cores it spins on; 0 sleeps at once. */
enum { SPIN_US_DEFAULT = 200, SPIN_US_MAX = 1000000 };
static _Atomic uint64_t spin_ns = SPIN_US_DEFAULT * 1000ull;

static void read_spin(void) {
  long long us;
  if (mmsb_env_number("MMSB_POOL_SPIN_US", 0, LLONG_MAX / 1000, &us))
    atomic_store(&spin_ns, (uint64_t)(us > SPIN_US_MAX ? SPIN_US_MAX : us) * 1000u);
}

uint64_t mmsb_pool_spin_us(void) { return atomic_load(&spin_ns) / 1000u; }

/* A spin-wait's pause: lets the core's other thread run, and saves power. */
static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* Whether the awaited thing happened: a job other than `seen` (workers),
 * or the end of the current job (its caller, seen = 0). */
static bool ready(uint64_t seen) {
  return seen ? atomic_load_explicit(&P.gen, memory_order_acquire) != seen
              : atomic_load_explicit(&P.left, memory_order_acquire) <= 0;
}

/* Spins for spin_ns, then sleeps on go (workers) or done (the caller). */
static void await(uint64_t seen) {
  uint64_t t0 = mmsb_now_ns();
  for (unsigned k = 1; !ready(seen); k++) {
    relax();
    if (k % 256 == 0 && mmsb_now_ns() - t0 > atomic_load_explicit(&spin_ns, memory_order_relaxed)) {
      pthread_mutex_lock(&P.lock);
      while (!ready(seen)) pthread_cond_wait(seen ? &P.go : &P.done, &P.lock);
      pthread_mutex_unlock(&P.lock);
      return;
    }
  }
}

static void *worker(void *arg) {
  (void)arg;
  uint64_t seen = atomic_load(&P.gen);
  for (;;) {
    await(seen);
    seen = atomic_load_explicit(&P.gen, memory_order_acquire);
    int h = atomic_load(&P.helpers); /* the pool may be larger than this job asked */
    while (h > 0 && !atomic_compare_exchange_weak(&P.helpers, &h, h - 1)) {
    }
    if (h <= 0) continue;
    in_job = 1;
    take_parts(seen, NULL, NULL);
    in_job = 0;
  }
  return NULL;
}

/* Starts workers until there are `want` (or as many as the system gives). */
static void grow(int want) {
  if (want > POOL_MAX) want = POOL_MAX;
  if (P.nthreads == 0) read_spin();
  while (P.nthreads < want) {
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &a, worker, NULL);
    pthread_attr_destroy(&a);
    if (rc) break;
    P.nthreads++;
  }
}

/* All parts on the calling thread, tick after each. */
static void run_here(int nparts, mmsb_part_fn fn, void *ctx, bool (*tick)(void *)) {
  for (int i = 0; i < nparts; i++) {
    fn(ctx, i, nparts);
    if (tick) tick(ctx);
  }
}

void mmsb_pool_run(int nparts, int threads, mmsb_part_fn fn, void *ctx) {
  mmsb_pool_run_tick(nparts, threads, fn, ctx, NULL);
}

void mmsb_pool_run_tick(int nparts, int threads, mmsb_part_fn fn, void *ctx,
                        bool (*tick)(void *ctx)) {
  if (nparts <= 1 || threads <= 1 || in_job) {
    run_here(nparts, fn, ctx, tick);
    return;
  }
  pthread_mutex_lock(&P.job_lock);
  int asked = (threads < nparts ? threads : nparts) - 1;
  grow(asked);
  if (P.nthreads == 0) { /* no thread could be started: all parts here */
    run_here(nparts, fn, ctx, tick);
    pthread_mutex_unlock(&P.job_lock);
    return;
  }
  P.fn = fn;
  P.ctx = ctx;
  atomic_store(&P.nparts, nparts);
  atomic_store(&P.left, nparts);
  atomic_store(&P.helpers, asked);
  uint64_t g = atomic_load(&P.gen) + 1;
  atomic_store(&P.ticket, (g & 0xffffffffu) << 32);
  pthread_mutex_lock(&P.lock);
  atomic_store_explicit(&P.gen, g, memory_order_release);
  pthread_cond_broadcast(&P.go);
  pthread_mutex_unlock(&P.lock);
  in_job = 1;
  take_parts(g, tick, ctx);
  while (tick && !tick(ctx)) relax(); /* its side work waits on the workers' parts */
  await(0);
  in_job = 0;
  /* Closed: a late worker that read this job's ticket must not pass the
   * part-count check against the next job's nparts and claim a part of a
   * job that has not started (it did, under compute-sanitizer). */
  atomic_store(&P.ticket, (g & 0xffffffffu) << 32 | 0xffffffffu);
  atomic_store(&P.helpers, 0); /* late workers take nothing now */
  pthread_mutex_unlock(&P.job_lock);
}

/* Filling pinned staging (mmsb_parallel_stage) on up to `threads`
 * threads, in parts of at least 64 KiB: the batch was just written by the
 * collection's threads and sits in their caches, and the pool's threads are
 * still spinning from it (a 470 KB batch at 1e-4 of a GiB was one thread's
 * copy with 1 MiB parts).  The 32-bit offsets are made in the same parts:
 * as a loop of their own on the caller they took ~100 us of a 1e-3 epoch
 * (105k deltas) on the H200's VM. */
typedef struct stage_job {
  uint8_t *dst;
  const uint8_t *src;
  size_t len;
  uint32_t *offs;
  const size_t *index;
  size_t base, n;
} stage_job;

void mmsb_stage_copy(void *dst, const void *src, size_t len, uint32_t *offs, const size_t *index,
                     size_t base, size_t n) {
  memcpy(dst, src, len);
  for (size_t i = 0; i < n; i++) offs[i] = (uint32_t)(index[i] - base);
}

static void stage_part(void *ctx, int part, int nparts) {
  stage_job *c = ctx;
  size_t lo, hi, dlo, dhi;
  mmsb_part_range(c->len, part, nparts, &lo, &hi);
  mmsb_part_range(c->n, part, nparts, &dlo, &dhi);
  mmsb_stage_copy(c->dst + lo, c->src + lo, hi - lo, c->offs + dlo, c->index + dlo, c->base,
                  dhi - dlo);
}

void mmsb_parallel_stage(void *dst, const void *src, size_t len, uint32_t *offs,
                         const size_t *index, size_t base, size_t n, int threads) {
  size_t parts = (len + 4 * n) >> 16;
  if (parts > (size_t)threads) parts = (size_t)threads;
  stage_job c = {dst, src, len, offs, index, base, n};
  mmsb_pool_run(parts < 1 ? 1 : (int)parts, threads, stage_part, &c);
}

int mmsb_default_threads(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > 16 ? 16 : (int)n;
}
