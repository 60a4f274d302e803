/*
 * mmsb - reads a log directory without the program that wrote it.
 *
 *   mmsb info DIR [--json]            regions, epochs, files, recovery state
 *   mmsb log DIR [--json]             one line per record
 *   mmsb verify DIR                   replay everything, check every digest
 *   mmsb export DIR --region NAME [--epoch E] [-o FILE]
 *   mmsb diff DIR E1 E2 [--json]      byte ranges that differ between epochs
 *   mmsb graph DIR                    the propagation graph, as Graphviz DOT
 *
 * Exit status: 0 success, 1 a check failed, 2 bad usage.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int usage(FILE *f, int code) {
  fputs("usage: mmsb info DIR [--json]\n"
        "       mmsb log DIR [--json]\n"
        "       mmsb verify DIR\n"
        "       mmsb export DIR --region NAME [--epoch E] [-o FILE]\n"
        "       mmsb diff DIR E1 E2 [--json]\n"
        "       mmsb graph DIR\n"
        "Reads an MMSB log directory. Exit status: 0 ok, 1 check failed, 2 usage.\n", f);
  return code;
}

static int fail(const char *what) {
  fprintf(stderr, "mmsb: %s: %s\n", what, mmsb_last_error());
  return 1;
}

static void json_str(const char *s) {
  putchar('"');
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') printf("\\%c", *s);
    else if ((unsigned char)*s < 0x20) printf("\\u%04x", *s);
    else putchar(*s);
  }
  putchar('"');
}

/* ---- log ---- */
typedef struct scan_ctx {
  int json, n;
  uint64_t epochs, regions, bytes, bad;
  mmsb_epoch_t first, last;
  char bad_at[300];
} scan_ctx;

static int print_record(void *c, const char *seg, size_t off, int type, mmsb_epoch_t e,
                        const uint8_t *p, uint64_t len) {
  scan_ctx *s = c;
  if (type == 0) {
    s->bad++;
    snprintf(s->bad_at, sizeof s->bad_at, "%s offset %zu", seg, off);
    if (s->json) printf("%s\n  {\"bad_record\": \"%s\", \"offset\": %zu}", s->n++ ? "," : "", seg, off);
    else printf("%-30s %10zu  BAD RECORD (torn or corrupt from here)\n", seg, off);
    return 0;
  }
  if (type == MMSB_REC_GRAPH) {
    uint32_t n = 0;
    if (len >= 4) memcpy(&n, p, 4);
    if (s->json)
      printf("%s\n  {\"type\": \"graph\", \"segment\": \"%s\", \"offset\": %zu, \"epoch\": %llu, "
             "\"nodes\": %u}", s->n++ ? "," : "", seg, off, (unsigned long long)e, n);
    else
      printf("%-30s %10zu  graph from epoch %llu: %u nodes\n", seg, off, (unsigned long long)e, n);
    return 0;
  }
  mmsb_region_rec r;
  if (type == MMSB_REC_REGION && mmsb_region_record_read(p, len, &r) == MMSB_OK) {
    if (s->json) {
      printf("%s\n  {\"type\": \"region\", \"segment\": \"%s\", \"offset\": %zu, \"id\": %u, "
             "\"size\": %llu, \"name\": ", s->n++ ? "," : "", seg, off, r.id,
             (unsigned long long)r.size);
      json_str(r.name);
      putchar('}');
    } else {
      printf("%-30s %10zu  region %u '%s' %llu bytes\n", seg, off, r.id, r.name,
             (unsigned long long)r.size);
    }
    return 0;
  }
  if (type == MMSB_REC_REGION) { /* checksummed, yet not a region record */
    if (s->json)
      printf("%s\n  {\"type\": \"region\", \"segment\": \"%s\", \"offset\": %zu, "
             "\"malformed\": true}", s->n++ ? "," : "", seg, off);
    else
      printf("%-30s %10zu  region record, malformed\n", seg, off);
    return 0;
  }
  mmsb_batch *b = NULL;
  uint64_t digest = 0;
  if (len >= 8) memcpy(&digest, p, 8);
  size_t nd = 0;
  if (len >= 8 && mmsb_batch_decode(p + 8, len - 8, &b) == MMSB_OK) nd = mmsb_batch_count(b);
  mmsb_batch_free(b);
  if (s->json)
    printf("%s\n  {\"type\": \"epoch\", \"segment\": \"%s\", \"offset\": %zu, \"epoch\": %llu, "
           "\"deltas\": %zu, \"bytes\": %llu, \"digest\": \"%016llx\"}", s->n++ ? "," : "", seg, off,
           (unsigned long long)e, nd, (unsigned long long)len, (unsigned long long)digest);
  else
    printf("%-30s %10zu  epoch %llu: %zu deltas, %llu bytes, digest %016llx\n", seg, off,
           (unsigned long long)e, nd, (unsigned long long)len, (unsigned long long)digest);
  return 0;
}

static int cmd_log(const char *dir, int json) {
  scan_ctx s = {.json = json};
  if (json) printf("{\"dir\": \"%s\", \"records\": [", dir);
  int rc = mmsb_log_scan(dir, print_record, &s);
  if (json) printf("\n]}\n");
  return rc ? fail(dir) : 0;
}

/* ---- info ---- */
static int count_record(void *c, const char *seg, size_t off, int type, mmsb_epoch_t e,
                        const uint8_t *p, uint64_t len) {
  (void)p;
  scan_ctx *s = c;
  if (type == 0) {
    s->bad++;
    snprintf(s->bad_at, sizeof s->bad_at, "%s offset %zu", seg, off);
  } else if (type == MMSB_REC_REGION) {
    s->regions++;
  } else if (type == MMSB_REC_EPOCH) {
    if (!s->epochs++) s->first = e;
    s->last = e;
  }
  s->bytes += MMSB_REC_HDR + len;
  return 0;
}

static int cmd_info(const char *dir, int json) {
  scan_ctx s = {0};
  int rc = mmsb_log_scan(dir, count_record, &s);
  if (rc) return fail(dir);
  mmsb_bus *bus;
  rc = mmsb_replay(dir, 0, &bus);
  if (rc) return fail(dir);
  mmsb_recovery rec;
  mmsb_recovery_info(bus, &rec);
  if (json) {
    printf("{\"dir\": \"%s\", \"epoch\": %llu, \"checkpoint_epoch\": %llu, \"log_epochs\": [%llu, %llu], "
           "\"log_bytes\": %llu, \"digest\": \"%016llx\", \"torn_bytes\": %llu, \"regions\": [",
           dir, (unsigned long long)mmsb_epoch(bus), (unsigned long long)rec.checkpoint_epoch,
           (unsigned long long)s.first, (unsigned long long)s.last, (unsigned long long)s.bytes,
           (unsigned long long)mmsb_digest(bus), (unsigned long long)rec.bytes_dropped);
  } else {
    printf("%s: epoch %llu (checkpoint at %llu, log holds %llu epochs %llu..%llu in %llu bytes)\n"
           "digest %016llx%s%s\n", dir, (unsigned long long)mmsb_epoch(bus),
           (unsigned long long)rec.checkpoint_epoch, (unsigned long long)s.epochs,
           (unsigned long long)s.first, (unsigned long long)s.last, (unsigned long long)s.bytes,
           (unsigned long long)mmsb_digest(bus), rec.detail[0] ? "\n" : "", rec.detail);
  }
  int k = 0;
  for (uint32_t id = 1; id <= 1u << 24; id++) {
    mmsb_region *r = mmsb_region_by_id(bus, id);
    if (!r && id > 1024) break;
    if (!r) continue;
    if (json) {
      printf("%s{\"id\": %u, \"name\": ", k++ ? ", " : "", id);
      json_str(mmsb_region_name(r));
      printf(", \"size\": %zu}", mmsb_region_size(r));
    } else {
      printf("  region %u '%s': %zu bytes\n", id, mmsb_region_name(r), mmsb_region_size(r));
    }
  }
  if (json) printf("]}\n");
  mmsb_bus_close(bus);
  return 0;
}

/* ---- verify: recovery reads and checks everything; a progress line on a
 * terminal while it runs ---- */
static int progress_record(void *c, const char *seg, size_t off, int type, mmsb_epoch_t e,
                           const uint8_t *p, uint64_t len) {
  scan_ctx *s = c;
  count_record(c, seg, off, type, e, p, len);
  if (isatty(2) && s->epochs % 256 == 0)
    fprintf(stderr, "\rmmsb verify: scanned %llu records", (unsigned long long)(s->epochs + s->regions));
  return 0;
}

static int cmd_verify(const char *dir) {
  scan_ctx s = {0};
  if (mmsb_log_scan(dir, progress_record, &s)) return fail(dir);
  if (isatty(2)) fprintf(stderr, "\r%60s\r", "");
  mmsb_bus *bus;
  if (mmsb_replay(dir, 0, &bus)) {
    printf("FAIL %s: %s\n", dir, mmsb_last_error());
    return 1;
  }
  mmsb_recovery rec;
  mmsb_recovery_info(bus, &rec);
  int torn = rec.bytes_dropped != 0;
  printf("%s %s: %llu records, epoch %llu, every digest verified%s%s\n", torn ? "WARN" : "OK", dir,
         (unsigned long long)rec.records, (unsigned long long)mmsb_epoch(bus),
         torn ? "; " : "", rec.detail);
  mmsb_bus_close(bus);
  return 0;
}

/* ---- export ---- */
static int cmd_export(const char *dir, const char *region, mmsb_epoch_t e, const char *out) {
  mmsb_bus *bus;
  mmsb_region *r;
  if (mmsb_replay(dir, e, &bus)) return fail(dir);
  if (mmsb_region_find(bus, region, &r)) {
    mmsb_bus_close(bus);
    return fail(region);
  }
  FILE *f = out ? fopen(out, "wb") : stdout;
  int rc = 0;
  if (!f || fwrite(mmsb_region_data(r), 1, mmsb_region_size(r), f) != mmsb_region_size(r)) {
    perror(out ? out : "stdout");
    rc = 1;
  }
  if (f && out) fclose(f);
  mmsb_bus_close(bus);
  return rc;
}

/* ---- diff ---- */
/* The first index from i on where a (na bytes, zeros past them) and b
 * (n bytes) differ; n if none.  Equal 4 KiB blocks are skipped with memcmp:
 * byte by byte, a 1 GiB region took a second. */
static size_t next_difference(const uint8_t *a, size_t na, const uint8_t *b, size_t i, size_t n) {
  static const uint8_t zeros[4096];
  for (;;) {
    size_t k = n - i < sizeof zeros ? n - i : sizeof zeros;
    if (!k) return n;
    bool same = i + k <= na ? !memcmp(a + i, b + i, k) : i >= na && !memcmp(zeros, b + i, k);
    if (!same) break;
    i += k;
  }
  while (i < n && (i < na ? a[i] : 0) == b[i]) i++;
  return i;
}

static int cmd_diff(const char *dir, mmsb_epoch_t e1, mmsb_epoch_t e2, int json) {
  mmsb_bus *a, *b;
  if (mmsb_replay(dir, e1, &a)) return fail("first epoch");
  if (mmsb_replay(dir, e2, &b)) {
    mmsb_bus_close(a);
    return fail("second epoch");
  }
  if (json) printf("{\"from\": %llu, \"to\": %llu, \"changes\": [", (unsigned long long)e1,
                   (unsigned long long)e2);
  int k = 0;
  uint64_t total = 0;
  for (uint32_t id = 1; id <= 1024 * 1024; id++) {
    mmsb_region *rb = mmsb_region_by_id(b, id), *ra = mmsb_region_by_id(a, id);
    if (!rb) { if (id > 1024) break; continue; }
    const uint8_t *pb = mmsb_region_data(rb), *pa = ra ? mmsb_region_data(ra) : NULL;
    size_t n = mmsb_region_size(rb), na = ra ? mmsb_region_size(ra) : 0;
    for (size_t i = next_difference(pa, na, pb, 0, n); i < n; i = next_difference(pa, na, pb, i, n)) {
      size_t j = i;
      while (j < n && (j < na ? pa[j] : 0) != pb[j]) j++;
      total += j - i;
      if (json) {
        printf("%s\n  {\"region\": ", k++ ? "," : "");
        json_str(mmsb_region_name(rb));
        printf(", \"offset\": %zu, \"length\": %zu}", i, j - i);
      } else {
        printf("%s [%zu, %zu) %zu bytes\n", mmsb_region_name(rb), i, j, j - i);
      }
      i = j;
    }
  }
  if (json) printf("\n], \"bytes\": %llu}\n", (unsigned long long)total);
  else printf("%llu bytes differ between epoch %llu and %llu\n", (unsigned long long)total,
              (unsigned long long)e1, (unsigned long long)e2);
  mmsb_bus_close(a);
  mmsb_bus_close(b);
  return 0;
}

/* ---- graph: the last GRAPH record, region names from REGION records ---- */
typedef struct graph_ctx {
  char names[4096][64]; /* region id -> name (ids past 4095 print as ids) */
  uint8_t *graph;
  uint64_t len;
} graph_ctx;

static int graph_record(void *c, const char *seg, size_t off, int type, mmsb_epoch_t e,
                        const uint8_t *p, uint64_t len) {
  (void)seg; (void)off; (void)e;
  graph_ctx *g = c;
  mmsb_region_rec r;
  if (type == MMSB_REC_REGION) {
    if (mmsb_region_record_read(p, len, &r) == MMSB_OK && r.id < 4096)
      snprintf(g->names[r.id], 64, "%.63s", r.name);
  } else if (type == MMSB_REC_GRAPH) {
    free(g->graph);
    g->graph = malloc(len ? len : 1);
    if (g->graph) memcpy(g->graph, p, len);
    g->len = g->graph ? len : 0;
  }
  return 0;
}

static const char *rname(graph_ctx *g, uint32_t id, char *buf) {
  if (id < 4096 && g->names[id][0]) return g->names[id];
  snprintf(buf, 16, "#%u", id);
  return buf;
}

/* Reads u32 at *at of p[len]; false past the end. */
static bool rd32(const uint8_t *p, uint64_t len, uint64_t *at, uint32_t *v) {
  if (len - *at < 4 || *at > len) return false;
  memcpy(v, p + *at, 4);
  *at += 4;
  return true;
}

static int cmd_graph(const char *dir) {
  static graph_ctx g; /* 256 KiB of names: not on the stack */
  memset(&g, 0, sizeof g); /* fuzz/fuzz_log.c calls this once an input */
  if (mmsb_log_scan(dir, graph_record, &g)) return fail(dir);
  printf("digraph mmsb {\n  rankdir=LR;\n");
  uint64_t at = 0;
  uint32_t n = 0, k, id;
  char b1[16];
  bool ok = !g.graph || rd32(g.graph, g.len, &at, &n);
  for (uint32_t i = 0; ok && i < n; i++) {
    uint16_t nl;
    if (g.len - at < 2) { ok = false; break; }
    memcpy(&nl, g.graph + at, 2);
    at += 2;
    if (g.len - at < nl) { ok = false; break; }
    printf("  \"n:%.*s\" [shape=ellipse];\n", (int)nl, (const char *)g.graph + at);
    const char *name = (const char *)g.graph + at;
    at += nl;
    ok = rd32(g.graph, g.len, &at, &k);
    for (uint32_t j = 0; ok && j < k; j++)
      if ((ok = rd32(g.graph, g.len, &at, &id)))
        printf("  \"r:%s\" -> \"n:%.*s\";\n", rname(&g, id, b1), (int)nl, name);
    ok = ok && rd32(g.graph, g.len, &at, &k);
    for (uint32_t j = 0; ok && j < k; j++)
      if ((ok = rd32(g.graph, g.len, &at, &id)))
        printf("  \"n:%.*s\" -> \"r:%s\" [style=bold];\n", (int)nl, name, rname(&g, id, b1));
  }
  printf("}\n");
  free(g.graph);
  g.graph = NULL;
  if (!ok) fprintf(stderr, "mmsb: %s: malformed graph record\n", dir);
  return ok ? 0 : 1;
}

static int parse_epoch(const char *s, mmsb_epoch_t *e) {
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (!*s || *end) return -1;
  *e = v;
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) return usage(stderr, 2);
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(stdout, 0);
  const char *cmd = argv[1], *dir = argc > 2 ? argv[2] : NULL;
  int json = 0;
  const char *region = NULL, *out = NULL;
  mmsb_epoch_t epoch = 0;
  const char *pos[4];
  int npos = 0;
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) json = 1;
    else if (!strcmp(argv[i], "--region") && i + 1 < argc) region = argv[++i];
    else if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
    else if (!strcmp(argv[i], "--epoch") && i + 1 < argc) {
      if (parse_epoch(argv[++i], &epoch)) return usage(stderr, 2);
    } else if (argv[i][0] == '-') return usage(stderr, 2);
    else if (npos < 4) pos[npos++] = argv[i];
    else return usage(stderr, 2);
  }
  if (!dir || npos < 1) return usage(stderr, 2);
  if (!strcmp(cmd, "info") && npos == 1) return cmd_info(dir, json);
  if (!strcmp(cmd, "log") && npos == 1) return cmd_log(dir, json);
  if (!strcmp(cmd, "verify") && npos == 1) return cmd_verify(dir);
  if (!strcmp(cmd, "graph") && npos == 1) return cmd_graph(dir);
  if (!strcmp(cmd, "export") && npos == 1 && region) return cmd_export(dir, region, epoch, out);
  if (!strcmp(cmd, "diff") && npos == 3) {
    mmsb_epoch_t a, b;
    if (parse_epoch(pos[1], &a) || parse_epoch(pos[2], &b)) return usage(stderr, 2);
    return cmd_diff(dir, a, b, json);
  }
  return usage(stderr, 2);
}
