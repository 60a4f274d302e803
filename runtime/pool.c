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

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define POOL_MAX 64

static struct {
  pthread_mutex_t job_lock;  /* one job at a time */
  pthread_mutex_t lock;      /* the fields below */
  pthread_cond_t go, done;
  int nthreads;              /* workers started */
  _Atomic uint64_t gen;      /* bumped for each job (under lock) */
  mmsb_part_fn fn;
  void *ctx;
  int nparts, next, left;    /* parts of the job: handed out, unfinished */
  int helpers;               /* workers the job may still take (threads - 1) */
} P = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
       PTHREAD_COND_INITIALIZER, 0, 0, NULL, NULL, 0, 0, 0, 0};

static __thread int in_job; /* this thread is running a part or waiting for its job */

/* Takes parts of the current job until none is left; P.lock held. */
static void take_parts(void) {
  while (P.next < P.nparts) {
    int part = P.next++;
    mmsb_part_fn fn = P.fn;
    void *ctx = P.ctx;
    int n = P.nparts;
    pthread_mutex_unlock(&P.lock);
    fn(ctx, part, n);
    pthread_mutex_lock(&P.lock);
    if (--P.left == 0) pthread_cond_broadcast(&P.done);
  }
}

/* A worker spins a little before it sleeps: collection hands out two jobs
 * back to back (size, then fill), and waking a sleeping thread took ~50 us
 * on a VM, as long as a whole small commit. */
#define SPIN 4000

static void *worker(void *arg) {
  (void)arg;
  pthread_mutex_lock(&P.lock);
  uint64_t seen = P.gen;
  pthread_mutex_unlock(&P.lock);
  for (;;) {
    for (int k = 0; k < SPIN && atomic_load_explicit(&P.gen, memory_order_relaxed) == seen; k++) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    pthread_mutex_lock(&P.lock);
    while (P.gen == seen) pthread_cond_wait(&P.go, &P.lock);
    seen = P.gen;
    if (P.helpers > 0) { /* the pool may be larger than this job asked */
      P.helpers--;
      in_job = 1;
      take_parts();
      in_job = 0;
    }
    pthread_mutex_unlock(&P.lock);
  }
  return NULL;
}

/* Starts workers until there are `want` (or as many as the system gives). */
static void grow(int want) {
  if (want > POOL_MAX) want = POOL_MAX;
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

int mmsb_pool_run(int nparts, int threads, mmsb_part_fn fn, void *ctx) {
  if (nparts <= 1 || threads <= 1 || in_job) {
    for (int i = 0; i < nparts; i++) fn(ctx, i, nparts);
    return 1;
  }
  pthread_mutex_lock(&P.job_lock);
  pthread_mutex_lock(&P.lock);
  grow((threads < nparts ? threads : nparts) - 1);
  if (P.nthreads == 0) { /* no thread could be started: all parts here */
    pthread_mutex_unlock(&P.lock);
    for (int i = 0; i < nparts; i++) fn(ctx, i, nparts);
    pthread_mutex_unlock(&P.job_lock);
    return 1;
  }
  P.fn = fn;
  P.ctx = ctx;
  P.nparts = P.left = nparts;
  P.next = 0;
  int asked = (threads < nparts ? threads : nparts) - 1;
  P.helpers = asked;
  P.gen++;
  pthread_cond_broadcast(&P.go);
  in_job = 1;
  take_parts();
  while (P.left) pthread_cond_wait(&P.done, &P.lock);
  in_job = 0;
  int used = 1 + asked - P.helpers; /* workers that came before the end */
  P.helpers = 0;
  pthread_mutex_unlock(&P.lock);
  pthread_mutex_unlock(&P.job_lock);
  return used;
}

/* Copies n bytes from src to dst on up to `threads` threads (parts of at
 * least 1 MiB): filling pinned staging from a batch that other threads
 * wrote is bound by their caches, not by one core's copy speed. */
typedef struct copy_job {
  uint8_t *dst;
  const uint8_t *src;
  size_t n;
} copy_job;

static void copy_part(void *ctx, int part, int nparts) {
  copy_job *c = ctx;
  size_t lo = c->n * (size_t)part / (size_t)nparts, hi = c->n * (size_t)(part + 1) / (size_t)nparts;
  memcpy(c->dst + lo, c->src + lo, hi - lo);
}

void mmsb_parallel_copy(void *dst, const void *src, size_t n, int threads) {
  size_t parts = n >> 20;
  if (parts > (size_t)threads) parts = (size_t)threads;
  copy_job c = {dst, src, n};
  mmsb_pool_run(parts < 1 ? 1 : (int)parts, threads, copy_part, &c);
}

int mmsb_default_threads(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > 16 ? 16 : (int)n;
}
