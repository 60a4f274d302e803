/*
 * record_commit - what recording stores and committing them costs, against
 * what a user would do otherwise.
 *
 * Cases: random 8-byte stores at dirty fractions 1e-5 .. 1e-1 of the words
 * of a 1 GiB region, a dense sequential loop over 64 MiB, hot spots
 * (500 000 stores cycling over 1 or 100 words: counters), and threads
 * storing at once (each 1e-3 of the region's words, so that every thread's
 * log fills, drops repeats and grows several times an epoch).  Methods, in
 * the same run:
 *   plain     stores with no tracking (the floor for the store loop)
 *   mmsb      the stores with the fast path the pass emits (inline range
 *             check, append to the thread's mark log), then mmsb_commit;
 *             the dense case also with the loop's range mark
 *   mprotect  write-protect, SIGSEGV handler unprotects and lists the page;
 *             commit copies the dirty pages and protects again
 *   snapshot  plain stores; commit compares with a snapshot copy, emits the
 *             changed words and updates the snapshot
 * Each method's commit produces the changes as bytes, so the work compares.
 */
#include "bench.h"
#include "mmsb/mmsb.h"
#include "fastpath.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#define GIB ((size_t)1 << 30)
#define PAGE 4096

/* ---- mprotect/SIGSEGV tracking ---- */
static uint8_t *mp_base;
static size_t mp_size;
static size_t *mp_dirty, mp_ndirty, mp_cap;
static volatile int mp_failed;

static void on_segv(int sig, siginfo_t *si, void *uc) {
  (void)uc;
  uint8_t *a = si->si_addr;
  if (a < mp_base || a >= mp_base + mp_size) { signal(sig, SIG_DFL); return; }
  uint8_t *pg = (uint8_t *)((uintptr_t)a & ~(uintptr_t)(PAGE - 1));
  if (mprotect(pg, PAGE, PROT_READ | PROT_WRITE) != 0) {
    /* vm.max_map_count: no more mappings.  Give up tracking. */
    mp_failed = 1;
    mprotect(mp_base, mp_size, PROT_READ | PROT_WRITE);
    return;
  }
  if (mp_ndirty < mp_cap) mp_dirty[mp_ndirty++] = (size_t)(pg - mp_base) / PAGE;
}

static double mp_commit(uint8_t *out) {
  double t0 = bench_now_ms();
  for (size_t i = 0; i < mp_ndirty; i++)
    memcpy(out + (i % 4096) * PAGE, mp_base + mp_dirty[i] * PAGE, PAGE);
  mp_ndirty = 0;
  mprotect(mp_base, mp_size, PROT_READ);
  return bench_now_ms() - t0;
}

/* ---- snapshot diff ---- */
static double snap_commit(uint64_t *live, uint64_t *snap, size_t bytes, uint64_t *out,
                          size_t *nout) {
  double t0 = bench_now_ms();
  size_t n = 0, cap = 1 << 20;
  for (size_t pg = 0; pg < bytes / PAGE; pg++) {
    uint64_t *a = live + pg * (PAGE / 8), *b = snap + pg * (PAGE / 8);
    if (memcmp(a, b, PAGE) == 0) continue;
    for (size_t w = 0; w < PAGE / 8; w++) {
      if (a[w] == b[w]) continue;
      out[(n % cap) * 2] = pg * (PAGE / 8) + w;
      out[(n % cap) * 2 + 1] = a[w];
      b[w] = a[w];
      n++;
    }
  }
  *nout = n;
  return bench_now_ms() - t0;
}


/* The metrics of a tracked method: stores of n words in store_ms (against
 * plain_ms of plain stores), then a commit of commit_ms. */
static bench_row *tracked_row(bench_row *row, double store_ms, double commit_ms, double n,
                              double plain_ms) {
  bench_metric(row, "ns_per_store", store_ms * 1e6 / n);
  bench_metric(row, "x_vs_plain_store", store_ms / plain_ms);
  bench_metric(row, "commit_ms", commit_ms);
  bench_metric(row, "total_ms", store_ms + commit_ms);
  return row;
}

static void fill_indices(uint64_t *idx, size_t n, size_t words, uint64_t seed) {
  for (size_t i = 0; i < n; i++) idx[i] = bench_rng(&seed) % words;
}

static void run_random(bench_out *o, double frac, uint64_t *mm, uint64_t *plain,
                       uint64_t *snap, uint64_t *scratch) {
  size_t words = GIB / 8, n = (size_t)(frac * (double)words);
  uint64_t *idx = malloc(n * sizeof *idx);
  int reps = frac >= 1e-2 ? 3 : 5;
  double t_plain[5], t_mm[5], c_mm[5], t_mp[5], c_mp[5], c_sn[5];
  int mp_ok = 1;
  for (int r = 0; r < reps; r++) {
    fill_indices(idx, n, words, 1000 + (uint64_t)r);
    uint64_t v = (uint64_t)r << 40;
    double t0 = bench_now_ms();
    for (size_t i = 0; i < n; i++) plain[idx[i]] = v + i;
    t_plain[r] = bench_now_ms() - t0;
    size_t nout;
    c_sn[r] = snap_commit(plain, snap, GIB, scratch, &nout);

    t0 = bench_now_ms();
    for (size_t i = 0; i < n; i++) tracked_store8(&mm[idx[i]], v + i);
    t_mm[r] = bench_now_ms() - t0;
    t0 = bench_now_ms();
    mmsb_commit(NULL, NULL);
    c_mm[r] = bench_now_ms() - t0;

    mp_failed = 0;
    t0 = bench_now_ms();
    for (size_t i = 0; i < n; i++) ((uint64_t *)mp_base)[idx[i]] = v + i;
    t_mp[r] = bench_now_ms() - t0;
    c_mp[r] = mp_commit((uint8_t *)scratch);
    if (mp_failed) mp_ok = 0;
  }
  double sp = bench_median(t_plain, reps), sm = bench_median(t_mm, reps);
  double cm = bench_median(c_mm, reps), smp = bench_median(t_mp, reps);
  double cmp = bench_median(c_mp, reps), cs = bench_median(c_sn, reps);
  double tot_mm = sm + cm, tot_mp = smp + cmp, tot_sn = sp + cs;
  bench_row *row = bench_add(o, "random 1GiB frac=%g plain", frac);
  bench_metric(row, "stores", (double)n);
  bench_metric(row, "ns_per_store", sp * 1e6 / (double)n);
  row = tracked_row(bench_add(o, "random 1GiB frac=%g mmsb", frac), sm, cm, (double)n, sp);
  bench_metric(row, "x_vs_mprotect", mp_ok ? tot_mp / tot_mm : NAN);
  bench_metric(row, "x_vs_snapshot", tot_sn / tot_mm);
  row = bench_add(o, "random 1GiB frac=%g mprotect", frac);
  bench_metric(row, "ns_per_store", mp_ok ? smp * 1e6 / (double)n : NAN);
  bench_metric(row, "commit_ms", mp_ok ? cmp : NAN);
  bench_metric(row, "total_ms", mp_ok ? tot_mp : NAN);
  if (!mp_ok) snprintf(row->note, sizeof row->note, "failed: mprotect ENOMEM (vm.max_map_count)");
  row = bench_add(o, "random 1GiB frac=%g snapshot", frac);
  bench_metric(row, "ns_per_store", sp * 1e6 / (double)n);
  bench_metric(row, "commit_ms", cs);
  bench_metric(row, "total_ms", tot_sn);
  free(idx);
}

static void run_dense(bench_out *o, uint64_t *mm, uint64_t *plain, uint64_t *snap,
                      uint64_t *scratch) {
  size_t words = (64u << 20) / 8;
  int reps = 5;
  double tp[5], tm[5], cm[5], tl[5], cl[5], tmp[5], cmp[5], cs[5];
  uint64_t *mpw = (uint64_t *)mp_base;
  for (int r = 0; r < reps; r++) {
    uint64_t k = (uint64_t)r * 7 + 1;
    double t0 = bench_now_ms();
    for (size_t i = 0; i < words; i++) plain[i] = i * k;
    tp[r] = bench_now_ms() - t0;
    size_t nout;
    cs[r] = snap_commit(plain, snap, words * 8, scratch, &nout);

    t0 = bench_now_ms();
    for (size_t i = 0; i < words; i++) tracked_store8(&mm[i], i * k);
    tm[r] = bench_now_ms() - t0;
    t0 = bench_now_ms();
    mmsb_commit(NULL, NULL);
    cm[r] = bench_now_ms() - t0;

    /* What the pass emits for an affine loop: one range mark. */
    t0 = bench_now_ms();
    for (size_t i = 0; i < words; i++) mm[i] = i * (k + 1);
    __mmsb_store_range(mm, words * 8);
    tl[r] = bench_now_ms() - t0;
    t0 = bench_now_ms();
    mmsb_commit(NULL, NULL);
    cl[r] = bench_now_ms() - t0;

    t0 = bench_now_ms();
    for (size_t i = 0; i < words; i++) mpw[i] = i * k;
    tmp[r] = bench_now_ms() - t0;
    cmp[r] = mp_commit((uint8_t *)scratch);
  }
  double p = bench_median(tp, reps), s = bench_median(cs, reps);
  bench_row *row = bench_add(o, "dense 64MiB plain");
  bench_metric(row, "ns_per_store", p * 1e6 / (double)words);
  double m = bench_median(tm, reps), c = bench_median(cm, reps);
  tracked_row(bench_add(o, "dense 64MiB mmsb per-store"), m, c, (double)words, p);
  double l = bench_median(tl, reps), lc = bench_median(cl, reps);
  double mp = bench_median(tmp, reps), mc = bench_median(cmp, reps);
  row = tracked_row(bench_add(o, "dense 64MiB mmsb loop-mark"), l, lc, (double)words, p);
  bench_metric(row, "x_vs_mprotect", (mp + mc) / (l + lc));
  bench_metric(row, "x_vs_snapshot", (p + s) / (l + lc));
  row = bench_add(o, "dense 64MiB mprotect");
  bench_metric(row, "ns_per_store", mp * 1e6 / (double)words);
  bench_metric(row, "commit_ms", mc);
  bench_metric(row, "total_ms", mp + mc);
  row = bench_add(o, "dense 64MiB snapshot");
  bench_metric(row, "commit_ms", s);
  bench_metric(row, "total_ms", p + s);
}

/* Hot spots: n stores cycling over `hot` words 4 KiB apart.  Every store
 * appends to the mark log; repeats are dropped when the log fills. */
static void run_hot(bench_out *o, size_t hot, uint64_t *mm, uint64_t *plain) {
  enum { N = 500000, REPS = 5 };
  double tp[REPS], tm[REPS], cm[REPS];
  for (int r = 0; r < REPS; r++) {
    double t0 = bench_now_ms();
    for (size_t i = 0; i < N; i++) plain[(i % hot) * 512] = i + (size_t)r;
    tp[r] = bench_now_ms() - t0;
    t0 = bench_now_ms();
    for (size_t i = 0; i < N; i++) tracked_store8(&mm[(i % hot) * 512], i + (size_t)r);
    tm[r] = bench_now_ms() - t0;
    t0 = bench_now_ms();
    mmsb_commit(NULL, NULL);
    cm[r] = bench_now_ms() - t0;
  }
  double p = bench_median(tp, REPS);
  bench_row *row = bench_add(o, "hot %zu word(s) plain", hot);
  bench_metric(row, "stores", N);
  bench_metric(row, "ns_per_store", p * 1e6 / N);
  tracked_row(bench_add(o, "hot %zu word(s) mmsb", hot), bench_median(tm, REPS),
              bench_median(cm, REPS), N, p);
}

/* T threads store at once, each n random words; the store phase's wall
 * time against the same with plain stores.  The threads live across the
 * epochs, as a program's workers do: their logs are collected by the
 * commit (a thread that exits folds its log into the bitmaps, which no
 * timer here would see).  A log that fills takes only its own lock, so the
 * threads should not wait for each other. */
typedef struct store_crew {
  int t;
  size_t n;
  uint64_t *mm, *plain;
  const uint64_t *idx; /* this rep's indices, t * n */
  int tracked, stop;   /* set by the main thread between phases */
  pthread_barrier_t go, done;
  double t0[16], t1[16]; /* each thread's start and end of the phase */
} store_crew;

typedef struct store_arg {
  store_crew *c;
  int k;
} store_arg;

static void *store_thread(void *arg) {
  store_arg *a = arg;
  store_crew *c = a->c;
  for (;;) {
    pthread_barrier_wait(&c->go);
    if (c->stop) return NULL;
    const uint64_t *idx = c->idx + (size_t)a->k * c->n;
    c->t0[a->k] = bench_now_ms();
    if (c->tracked)
      for (size_t i = 0; i < c->n; i++) tracked_store8(&c->mm[idx[i]], i);
    else
      for (size_t i = 0; i < c->n; i++) c->plain[idx[i]] = i;
    c->t1[a->k] = bench_now_ms();
    pthread_barrier_wait(&c->done);
  }
}

/* Wall time of one store phase of the crew, from the first thread's start
 * to the last one's end, as the threads see them (with as many threads as
 * cores, the main thread may get back on a core only after they are done). */
static double store_phase(store_crew *c, int tracked) {
  c->tracked = tracked;
  pthread_barrier_wait(&c->go);
  pthread_barrier_wait(&c->done);
  double t0 = c->t0[0], t1 = c->t1[0];
  for (int k = 1; k < c->t; k++) {
    t0 = c->t0[k] < t0 ? c->t0[k] : t0;
    t1 = c->t1[k] > t1 ? c->t1[k] : t1;
  }
  return t1 - t0;
}

static void run_threads(bench_out *o, uint64_t *mm, uint64_t *plain) {
  enum { REPS = 5, MAXT = 16 };
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  int t = ncpu < 2 ? 2 : ncpu > MAXT ? MAXT : (int)ncpu;
  size_t words = GIB / 8, n = words / 1000;
  uint64_t *idx = malloc((size_t)t * n * sizeof *idx);
  if (!idx) return;
  store_crew c = {.t = t, .n = n, .mm = mm, .plain = plain, .idx = idx};
  pthread_barrier_init(&c.go, NULL, (unsigned)t + 1);
  pthread_barrier_init(&c.done, NULL, (unsigned)t + 1);
  pthread_t th[MAXT];
  store_arg args[MAXT];
  for (int k = 0; k < t; k++) {
    args[k] = (store_arg){&c, k};
    pthread_create(&th[k], NULL, store_thread, &args[k]);
  }
  double tp[REPS], tm[REPS], cm[REPS];
  for (int r = 0; r < REPS; r++) {
    fill_indices(idx, (size_t)t * n, words, 77 + (uint64_t)r);
    tp[r] = store_phase(&c, 0);
    tm[r] = store_phase(&c, 1);
    double t0 = bench_now_ms(); /* the crew waits at go: quiescent */
    mmsb_commit(NULL, NULL);
    cm[r] = bench_now_ms() - t0;
  }
  c.stop = 1;
  pthread_barrier_wait(&c.go);
  for (int k = 0; k < t; k++) pthread_join(th[k], NULL);
  pthread_barrier_destroy(&c.go);
  pthread_barrier_destroy(&c.done);
  double p = bench_median(tp, REPS);
  bench_row *row = bench_add(o, "threads=%d x 1e-3 of 1GiB plain", t);
  bench_metric(row, "stores", (double)t * (double)n);
  bench_metric(row, "ns_per_store", p * 1e6 / (double)n);
  tracked_row(bench_add(o, "threads=%d x 1e-3 of 1GiB mmsb", t), bench_median(tm, REPS),
              bench_median(cm, REPS), (double)n, p);
  free(idx);
}

int main(int argc, char **argv) {
  bench_out o;
  bench_init(&o, "record_commit", argc, argv);
  int quick = 0;
  for (int i = 1; i < argc; i++) if (!strcmp(argv[i], "--quick")) quick = 1;
  mmsb_region *r;
  if (mmsb_region_create(mmsb_default_bus(), "bench", GIB, 0, &r) != MMSB_OK) {
    fprintf(stderr, "record_commit: %s\n", mmsb_last_error());
    return 1;
  }
  uint64_t *mm = mmsb_region_data(r);
  uint64_t *plain = mmap(NULL, GIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  uint64_t *snap = mmap(NULL, GIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  mp_size = GIB;
  mp_base = mmap(NULL, GIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  uint64_t *scratch = malloc((size_t)4096 * PAGE);
  if (plain == MAP_FAILED || snap == MAP_FAILED || mp_base == MAP_FAILED || !scratch) {
    fprintf(stderr, "record_commit: out of memory\n");
    return 1;
  }
  /* mmsb regions this large get transparent huge pages; so do the plain and
   * snapshot baselines, or the store comparison would measure TLB misses.
   * (mprotect tracking works on 4 KiB pages: its memory stays as it is.) */
  madvise(plain, GIB, MADV_HUGEPAGE);
  madvise(snap, GIB, MADV_HUGEPAGE);
  /* Every page resident before timing: page faults are not what we measure. */
  memset(mm, 0, GIB);
  memset(plain, 0, GIB);
  memset(snap, 0, GIB);
  memset(mp_base, 0, GIB);
  memset(scratch, 0, (size_t)4096 * PAGE);
  mmsb_commit(NULL, NULL);
  mp_cap = GIB / PAGE;
  mp_dirty = malloc(mp_cap * sizeof *mp_dirty);
  struct sigaction sa = {0};
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGSEGV, &sa, NULL);
  mprotect(mp_base, mp_size, PROT_READ);

  static const double fracs[] = {1e-5, 1e-4, 1e-3, 1e-2, 1e-1};
  for (int i = 0; i < (quick ? 3 : 5); i++) run_random(&o, fracs[i], mm, plain, snap, scratch);
  run_dense(&o, mm, plain, snap, scratch);
  run_hot(&o, 1, mm, plain);
  run_hot(&o, 100, mm, plain);
  run_threads(&o, mm, plain);
  bench_print(&o);
  return 0;
}
