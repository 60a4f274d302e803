/*
 * durability - what the durable log costs, against plain file writes:
 *   log append: commits of 1 MiB of changed pages with sync none, in payload
 *     GB/s, against write() of the same bytes in the same chunks
 *   commits per second with sync per commit and with group commit, and
 *     how long after mmsb_commit the epoch is reported durable
 *   replay: mmsb_replay of the whole log, GB/s of payload
 *   checkpoint of 1 GiB of state: write and load, GB/s (raw and zstd)
 * The log directory is under $MMSB_BENCH_DIR (default /tmp).
 */
#include "bench.h"
#include "mmsb/mmsb.h"

#include <fcntl.h>
#include <unistd.h>

static char dir[512];

static void clean(void) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd)) {}
}

static mmsb_bus *open_log(int sync, int compress, mmsb_region **r, size_t size) {
  mmsb_config cfg;
  mmsb_config_init(&cfg);
  cfg.dir = dir;
  cfg.sync = sync;
  cfg.group_ms = 2;
  cfg.compress = compress;
  cfg.segment_bytes = (uint64_t)256 << 20;
  mmsb_bus *bus;
  if (mmsb_bus_open(&cfg, &bus) || mmsb_region_create(bus, "state", size, 0, r)) {
    fprintf(stderr, "durability: %s\n", mmsb_last_error());
    exit(1);
  }
  return bus;
}

static void bench_append(bench_out *o) {
  clean();
  size_t size = (size_t)256 << 20, chunk = (size_t)1 << 20;
  mmsb_region *r;
  mmsb_bus *bus = open_log(MMSB_SYNC_NONE, 0, &r, size);
  uint8_t *d = mmsb_region_data(r);
  memset(d, 1, size);
  int n = 512;
  uint64_t payload = 0;
  double t0 = bench_now_ms();
  for (int i = 0; i < n; i++) {
    uint8_t *p = d + (size_t)(i % 256) * chunk;
    p[0] = (uint8_t)i;
    mmsb_touch(p, chunk);
    mmsb_commit(bus, NULL);
    size_t len;
    mmsb_batch_bytes(mmsb_last_batch(bus), &len);
    payload += len;
  }
  double t_log = bench_now_ms() - t0;
  mmsb_log_sync(bus);
  mmsb_bus_close(bus);
  /* the baseline: the same bytes, the same chunks, straight to a file */
  char path[600];
  snprintf(path, sizeof path, "%s/raw", dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  uint8_t *buf = malloc(chunk + 4096);
  memset(buf, 1, chunk + 4096);
  size_t per = (size_t)(payload / (uint64_t)n);
  t0 = bench_now_ms();
  for (int i = 0; i < n; i++)
    if (write(fd, buf, per) != (ssize_t)per) break;
  double t_raw = bench_now_ms() - t0;
  fdatasync(fd);
  close(fd);
  free(buf);
  bench_row *row = bench_add(o, "log append, 1 MiB commits, sync none");
  bench_metric(row, "payload_mb", payload / 1e6);
  bench_metric(row, "log_gbps", payload / t_log / 1e6);
  bench_metric(row, "raw_write_gbps", payload / t_raw / 1e6);
  bench_metric(row, "x_of_raw_write", t_raw / t_log);

  /* replay of that log */
  t0 = bench_now_ms();
  mmsb_bus *v;
  if (mmsb_replay(dir, 0, &v) == MMSB_OK) {
    double t = bench_now_ms() - t0;
    row = bench_add(o, "replay whole log (digests verified)");
    bench_metric(row, "payload_mb", payload / 1e6);
    bench_metric(row, "ms", t);
    bench_metric(row, "gbps", payload / t / 1e6);
    mmsb_bus_close(v);
  }
}

static void bench_commit_rate(bench_out *o, int sync, const char *name) {
  clean();
  mmsb_region *r;
  mmsb_bus *bus = open_log(sync, 0, &r, 1 << 20);
  long *d = mmsb_region_data(r);
  int n = sync == MMSB_SYNC_COMMIT ? 300 : 3000;
  double lag_total = 0;
  int lag_n = 0;
  double t0 = bench_now_ms();
  for (int i = 0; i < n; i++) {
    d[(i * 97) % 100000] = i;
    mmsb_touch(&d[(i * 97) % 100000], 8);
    mmsb_epoch_t e;
    mmsb_commit(bus, &e);
    if (sync == MMSB_SYNC_GROUP && i % 100 == 0) { /* time to durability */
      double t1 = bench_now_ms();
      while (mmsb_durable_epoch(bus) < e) usleep(50);
      lag_total += bench_now_ms() - t1;
      lag_n++;
    }
  }
  double t = bench_now_ms() - t0;
  bench_row *row = bench_add(o, "%s", name);
  bench_metric(row, "commits_per_s", n / t * 1e3);
  bench_metric(row, "us_per_commit", t * 1e3 / n);
  if (lag_n) bench_metric(row, "ms_to_durable", lag_total / lag_n);
  mmsb_bus_close(bus);
}

static void bench_checkpoint(bench_out *o, int compress) {
  clean();
  size_t size = (size_t)1 << 30;
  mmsb_region *r;
  mmsb_bus *bus = open_log(MMSB_SYNC_NONE, compress, &r, size);
  uint64_t *d = mmsb_region_data(r), s = 1;
  for (size_t i = 0; i < size / 8; i++) d[i] = (i & 7) ? i : bench_rng(&s); /* partly compressible */
  mmsb_touch(d, size);
  mmsb_commit(bus, NULL);
  double t0 = bench_now_ms();
  int rc = mmsb_checkpoint(bus);
  double tw = bench_now_ms() - t0;
  mmsb_bus_close(bus);
  t0 = bench_now_ms();
  mmsb_bus *v = NULL;
  if (!rc) rc = mmsb_replay(dir, 0, &v);
  double tl = bench_now_ms() - t0;
  if (v) mmsb_bus_close(v);
  bench_row *row = bench_add(o, "checkpoint 1 GiB %s", compress ? "zstd" : "raw");
  bench_metric(row, "write_ms", rc ? NAN : tw);
  bench_metric(row, "write_gbps", rc ? NAN : size / tw / 1e6);
  bench_metric(row, "load_ms", rc ? NAN : tl);
  bench_metric(row, "load_gbps", rc ? NAN : size / tl / 1e6);
}

int main(int argc, char **argv) {
  bench_out o;
  bench_init(&o, "durability", argc, argv);
  const char *base = getenv("MMSB_BENCH_DIR");
  snprintf(dir, sizeof dir, "%s/mmsb-bench-durability-%d", base ? base : "/tmp", (int)getpid());
  bench_append(&o);
  bench_commit_rate(&o, MMSB_SYNC_COMMIT, "commits, sync per commit (1 store each)");
  bench_commit_rate(&o, MMSB_SYNC_GROUP, "commits, group commit 2 ms (1 store each)");
  bench_commit_rate(&o, MMSB_SYNC_NONE, "commits, sync none (1 store each)");
  bench_checkpoint(&o, 0);
  bench_checkpoint(&o, 1);
  clean();
  bench_print(&o);
  return 0;
}
