/*
 * make_seeds.c - writes the seed corpus of the fuzz targets from a real
 * bus, so that the fuzzer starts from valid batches and logs:
 *   make_seeds OUT   ->  OUT/fuzz_batch/seed-*  OUT/fuzz_log/seed-*
 * The epochs have a whole page, runs, accumulations (integer and float), a
 * short last page, a node (a graph record), a plain and a zstd checkpoint.
 * Run it again when docs/format.md changes, and commit what it writes.
 */
#include <mmsb/mmsb.h>

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *out;

static void put(const char *target, const char *name, int how, const uint8_t *p, size_t len) {
  char path[4096];
  mkdir(out, 0755);
  snprintf(path, sizeof path, "%s/%s", out, target);
  mkdir(path, 0755);
  snprintf(path, sizeof path, "%s/%s/seed-%s", out, target, name);
  FILE *f = fopen(path, "wb");
  if (!f) { perror(path); exit(1); }
  if (how >= 0) fputc(how, f); /* fuzz_log's first byte: which file and how */
  fwrite(p, 1, len, f);
  fclose(f);
}

static void put_file(const char *dir, const char *name, int how, const char *as) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "rb");
  if (!f) return;
  static uint8_t buf[1 << 20];
  size_t len = fread(buf, 1, sizeof buf, f);
  fclose(f);
  put("fuzz_log", as, how, buf, len);
}

/* Puts each file of dir ending in suffix, as "<tag>-<k>" and again with
 * salvage asked for. */
static void save_dir(const char *dir, const char *tag, const char *suffix) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int k = 0, ckpt = !strcmp(suffix, ".ckpt");
  while (d && (e = readdir(d))) {
    size_t l = strlen(e->d_name), sl = strlen(suffix);
    if (l < sl || strcmp(e->d_name + l - sl, suffix)) continue;
    char as[64];
    snprintf(as, sizeof as, "%s-%d", tag, k++);
    put_file(dir, e->d_name, ckpt, as);
    put_file(dir, e->d_name, ckpt | 4, strcat(as, "-salvage"));
  }
  if (d) closedir(d);
}

/* The node is there for the log's graph record; it changes nothing. */
static int no_change(void *ctx) { (void)ctx; return 0; }

static void epochs(mmsb_bus *bus, mmsb_region *a, mmsb_region *b, int n, int save) {
  uint8_t *pa = mmsb_region_data(a);
  for (int e = 0; e < n; e++) {
    memset(pa + 4096, e + 1, 4096); /* a whole page */
    pa[3 * 4096 + 50] = (uint8_t)e;   /* the short last page */
    mmsb_touch(pa + 4096, 4096);
    mmsb_touch(pa + 3 * 4096 + 50, 1);
    for (int k = 0; k < 6; k++) pa[k * 97] = (uint8_t)(e * k), mmsb_touch(pa + k * 97, 1);
    uint64_t u = 3 + (uint64_t)e;
    double f = 0.5 * e;
    mmsb_accumulate(b, 8, MMSB_OP_ADD, MMSB_T_U64, &u, 1);
    mmsb_accumulate(b, 64, MMSB_OP_XOR, MMSB_T_U32, &u, 1);
    mmsb_accumulate(b, 128, e % 2 ? MMSB_OP_MIN : MMSB_OP_MAX, MMSB_T_F64, &f, 1);
    if (mmsb_commit(bus, NULL)) { fprintf(stderr, "commit: %s\n", mmsb_last_error()); exit(1); }
    if (save) {
      size_t len;
      const uint8_t *bytes = mmsb_batch_bytes(mmsb_last_batch(bus), &len);
      char name[32];
      snprintf(name, sizeof name, "batch-%d", e);
      put("fuzz_batch", name, -1, bytes, len);
    }
  }
}

int main(int argc, char **argv) {
  if (argc != 2) { fprintf(stderr, "usage: make_seeds OUT\n"); return 2; }
  out = argv[1];
  char dir[] = "/tmp/mmsb-seeds-XXXXXX";
  if (!mkdtemp(dir)) return 1;
  mmsb_config cfg;
  mmsb_config_init(&cfg);
  cfg.dir = dir;
  cfg.sync = MMSB_SYNC_NONE;
  mmsb_bus *bus;
  mmsb_region *a, *b, *c;
  mmsb_node *n;
  if (mmsb_bus_open(&cfg, &bus) || mmsb_region_create(bus, "a", 3 * 4096 + 100, 0, &a) ||
      mmsb_region_create(bus, "b", 4096, 0, &b) || mmsb_region_create(bus, "c", 64, 0, &c) ||
      mmsb_node_create(bus, "n", no_change, NULL, &n) || mmsb_node_input(n, b) ||
      mmsb_node_output(n, c, MMSB_DETECT_DIFF)) {
    fprintf(stderr, "make_seeds: %s\n", mmsb_last_error());
    return 1;
  }
  epochs(bus, a, b, 3, 1);
  save_dir(dir, "seg", ".log"); /* regions, a graph, epochs */
  mmsb_checkpoint(bus);
  save_dir(dir, "ckpt", ".ckpt");
  mmsb_bus_close(bus);
  cfg.compress = 1;
  if (mmsb_bus_open(&cfg, &bus) || mmsb_region_find(bus, "a", &a) ||
      mmsb_region_find(bus, "b", &b)) {
    fprintf(stderr, "make_seeds: reopen: %s\n", mmsb_last_error());
    return 1;
  }
  epochs(bus, a, b, 2, 0);
  mmsb_checkpoint(bus);
  save_dir(dir, "zstd", ".ckpt");
  mmsb_bus_close(bus);
  printf("seeds in %s (log directory %s)\n", out, dir);
  return 0;
}
