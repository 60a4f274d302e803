/*
 * host_mirror - keeping a copy of a 1 GiB region up to date where there is
 * no GPU: a mirror on the host backend (device -1), the same API and the
 * same per-page code as a GPU mirror.  Random 8-byte writes at dirty
 * fractions 1e-5 .. 1e-2 of the region's words, against in the same run:
 *   commit   the commit of the same stores into a second region that has
 *            no mirror (what the copy adds to a commit is the difference)
 *   floor    the changed words copied into a plain copy by their offsets
 *            (known for free): what any copy has to write
 *   memcpy   the whole region copied into a plain copy each epoch
 * sync is the commit plus mmsb_mirror_wait (the host backend applies at
 * the commit; the wait returns at once).  Every rep draws new offsets; the
 * mirror is checked against the region at the end.  The plain copy has
 * transparent huge pages, as the region and the mirror do: with 4 KiB
 * pages the floor's random writes were ~2 us each on the CPU machine (a
 * VM: two-level page walks).  memcpy runs in a loop of its own after the
 * others: streaming 1 GiB through the caches made the commit after it
 * 15 times slower there, whichever way it was synchronized.  And 256
 * untimed epochs come first: there the first hundred or so after the
 * setup took 2-4 times as long as the ones after.
 */
#include "bench.h"
#include "fastpath.h"
#include "mmsb/mmsb.h"

#include <sys/mman.h>

#define GIB ((size_t)1 << 30)

static void die(const char *what) {
  fprintf(stderr, "host_mirror: %s: %s\n", what, mmsb_last_error());
  exit(1);
}

int main(int argc, char **argv) {
  bench_out o;
  bench_init(&o, "host_mirror", argc, argv);
  size_t words = GIB / 8;
  mmsb_region *r, *r2;
  if (mmsb_region_create(mmsb_default_bus(), "host-mirrored", GIB, 0, &r)) die("region");
  if (mmsb_region_create(mmsb_default_bus(), "no-mirror", GIB, 0, &r2)) die("region");
  uint64_t *host = mmsb_region_data(r), *host2 = mmsb_region_data(r2);
  memset(host, 0, GIB);
  memset(host2, 0, GIB);
  mmsb_mirror *m;
  if (mmsb_mirror_create(r, -1, &m)) die("mirror");
  mmsb_commit(NULL, NULL);
  uint64_t *copy = mmap(NULL, GIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (copy == MAP_FAILED) die("copy");
  madvise(copy, GIB, MADV_HUGEPAGE);
  memset(copy, 0, GIB);
  static const double fracs[] = {1e-5, 1e-4, 1e-3, 1e-2};
  size_t maxn = (size_t)(fracs[3] * (double)words) + 1;
  uint64_t *idx = malloc(maxn * 8), seed = 7;
  for (int e = 0; e < 256; e++) { /* warm-up, at the first fraction */
    for (size_t i = 0; i < (size_t)(fracs[0] * (double)words); i++) {
      size_t w = bench_rng(&seed) % words;
      tracked_store8(&host[w], w);
      copy[w] = host[w];
    }
    mmsb_commit(NULL, NULL);
  }
  for (int f = 0; f < 4; f++) {
    size_t n = (size_t)(fracs[f] * (double)words);
    int reps = f == 3 ? 6 : f == 2 ? 16 : 32, cp_reps = 4;
    double tsync[32], tcm[32], tfl[32], tcp[4];
    for (int rep = 0; rep < reps; rep++) {
      uint64_t v = ((uint64_t)f << 48) | ((uint64_t)rep << 40);
      for (size_t i = 0; i < n; i++) idx[i] = bench_rng(&seed) % words;
      for (size_t i = 0; i < n; i++) tracked_store8(&host2[idx[i]], v + i);
      double t0 = bench_now_ms();
      mmsb_commit(NULL, NULL);
      tcm[rep] = bench_now_ms() - t0;
      for (size_t i = 0; i < n; i++) tracked_store8(&host[idx[i]], v + i);
      t0 = bench_now_ms();
      mmsb_epoch_t e;
      if (mmsb_commit(NULL, &e) || mmsb_mirror_wait(m, e)) die("commit");
      tsync[rep] = bench_now_ms() - t0;
      t0 = bench_now_ms();
      for (size_t i = 0; i < n; i++) copy[idx[i]] = host[idx[i]];
      tfl[rep] = bench_now_ms() - t0;
    }
    for (int rep = 0; rep < cp_reps; rep++) {
      double t0 = bench_now_ms();
      memcpy(copy, host, GIB);
      tcp[rep] = bench_now_ms() - t0;
    }
    double s = bench_median(tsync, reps), fl = bench_median(tfl, reps), cp = bench_median(tcp, cp_reps);
    bench_row *row = bench_add(&o, "1GiB frac=%g", fracs[f]);
    bench_metric(row, "stores", (double)n);
    bench_metric(row, "sync_ms", s);
    bench_metric(row, "commit_no_mirror_ms", bench_median(tcm, reps));
    bench_metric(row, "floor_ms", fl);
    bench_metric(row, "memcpy_ms", cp);
    bench_metric(row, "x_of_floor", s / fl);
    bench_metric(row, "x_vs_memcpy", cp / s);
  }
  if (mmsb_mirror_download(m, copy)) die("download");
  int bad = memcmp(copy, host, GIB) != 0;
  fprintf(stderr, "host_mirror: mirror %s the region\n", bad ? "DIFFERS FROM" : "equals");
  bench_print(&o);
  return bad;
}
