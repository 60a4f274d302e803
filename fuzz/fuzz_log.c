/*
 * fuzz_log.c - untrusted log directories (docs/format.md) through
 * recovery: mmsb_replay (read only), mmsb_log_scan, and mmsb_bus_open
 * (which cuts a torn tail and then writes), plain and with salvage; then
 * the mmsb tool's log, graph and info commands.
 *
 * The input is one file: its first byte says which (bit 0: a checkpoint,
 * else a segment) and how (bit 1: leave the checksums as they are; bit 2:
 * salvage; bit 3: the mmsb tool's --json), the rest is the file's bytes.  Random bytes almost never carry
 * a valid XXH3-64, so by default the target puts the right checksum into
 * every record whose header and length hold, and at a checkpoint's end:
 * that is what takes the fuzzer past the checksums to the lengths, names,
 * batches and graphs behind them, which a buggy writer or a hostile file
 * could get wrong with a valid checksum.  Every call may refuse the
 * directory; none may crash, hang or read outside the file (ASan, UBSan).
 */
#include <mmsb/format.h>
#include <mmsb/mmsb.h>
#include "hash.h"     /* the log's own XXH3-64 */
#include "internal.h" /* mmsb_log_scan, as the mmsb tool reads logs */

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];

static void empty_dir(void) {
  DIR *d = opendir(dir);
  struct dirent *e;
  char path[512];
  while (d && (e = readdir(d)))
    if (e->d_name[0] != '.') {
      snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
      unlink(path);
    }
  if (d) closedir(d);
}

static void remove_dir(void) {
  empty_dir();
  rmdir(dir);
}

static void spill(const char *name, const uint8_t *p, size_t len) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(p, 1, len, f) != len) abort();
  fclose(f);
}

/* Puts the right checksum into each record of a segment, in order, while
 * the record's magic and length hold. */
static void fix_segment(uint8_t *p, size_t len) {
  size_t off = MMSB_SEG_HDR;
  while (off + MMSB_REC_HDR <= len) {
    uint32_t magic;
    uint64_t plen;
    memcpy(&magic, p + off, 4);
    memcpy(&plen, p + off + 16, 8);
    if (magic != MMSB_REC_MAGIC || plen > len - off - MMSB_REC_HDR) return;
    const void *parts[2] = {p + off, p + off + MMSB_REC_HDR};
    size_t lens[2] = {24, (size_t)plen};
    uint64_t sum = mmsb_xxh3_parts(parts, lens, 2);
    memcpy(p + off + 24, &sum, 8);
    off += MMSB_REC_HDR + plen;
  }
}

static void fix_checkpoint(uint8_t *p, size_t len) {
  if (len < 8) return;
  uint64_t sum = mmsb_xxh3(p, len - 8);
  memcpy(p + len - 8, &sum, 8);
}

static int each_record(void *ctx, const char *seg, size_t off, int type, mmsb_epoch_t e,
                       const uint8_t *p, uint64_t len) {
  (void)ctx, (void)seg, (void)off, (void)e;
  uint64_t sum = 0; /* the payload the scan hands out lies inside the file */
  for (uint64_t i = 0; i < len; i++) sum += p[i];
  (void)sum;
  return type < 0;
}

/* What a program does with a bus that opened: look at it, commit, close. */
static void use(mmsb_bus *bus) {
  mmsb_recovery info;
  mmsb_recovery_info(bus, &info);
  mmsb_digest(bus);
  for (uint32_t id = 0; id < 8; id++) {
    mmsb_region *r = mmsb_region_by_id(bus, id);
    if (r && mmsb_region_size(r)) {
      volatile uint8_t *data = mmsb_region_data(r);
      data[mmsb_region_size(r) - 1] += data[0]; /* ASan: the region is as big as it says */
    }
  }
  mmsb_commit(bus, NULL);
  mmsb_bus_close(bus);
}

/* The mmsb tool's commands that read every record without replaying
 * each epoch (verify, export and diff replay, as mmsb_replay above does,
 * and read regions whole: a log may name a region of 256 GiB). */
int mmsb_tool_main(int argc, char **argv); /* tools/mmsb.c's main, renamed */
static void tool(int how) {
  static bool quiet;
  if (!quiet && !freopen("/dev/null", "w", stdout)) abort(); /* what it prints */
  quiet = true;
  char *json = how & 8 ? "--json" : NULL;
  char *log[] = {"mmsb", "log", dir, json, NULL}, *graph[] = {"mmsb", "graph", dir, NULL};
  char *info[] = {"mmsb", "info", dir, json, NULL};
  mmsb_tool_main(json ? 4 : 3, log);
  mmsb_tool_main(3, graph);
  mmsb_tool_main(json ? 4 : 3, info);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!dir[0]) {
    snprintf(dir, sizeof dir, "/tmp/mmsb-fuzz-log-XXXXXX");
    if (!mkdtemp(dir)) abort();
    atexit(remove_dir); /* a replay in the tests leaves nothing behind */
  }
  if (size < 1) return 0;
  int how = data[0];
  size_t len = size - 1;
  uint8_t *file = malloc(len ? len : 1);
  if (!file) return 0;
  memcpy(file, data + 1, len);
  empty_dir();
  if (how & 1) {
    if (!(how & 2)) fix_checkpoint(file, len);
    spill("ckpt-00000000000000000002.ckpt", file, len);
  } else {
    if (!(how & 2)) fix_segment(file, len);
    spill("seg-00000000000000000001.log", file, len);
  }
  free(file);
  mmsb_log_scan(dir, each_record, NULL);
  mmsb_bus *bus;
  if (mmsb_replay(dir, 0, &bus) == MMSB_OK) use(bus);
  mmsb_config cfg;
  mmsb_config_init(&cfg);
  cfg.dir = dir;
  cfg.sync = MMSB_SYNC_NONE;
  cfg.salvage = (how & 4) != 0;
  if (mmsb_bus_open(&cfg, &bus) == MMSB_OK) use(bus);
  tool(how);
  return 0;
}
