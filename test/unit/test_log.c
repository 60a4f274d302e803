/* test_log.c - the durable log: recovery, replay, checkpoints, torn and
 * corrupt files, a full disk, and SIGKILL at random moments.  Every check
 * compares against an independent model of the state. */
#include "check.h"
#include "hash.h"

#include <mmsb/format.h>

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define ASZ 65536
#define BSZ 10000
#define MAXE 64

static uint64_t seed;
static char dir[256];
static uint64_t seg_bytes = 16384; /* several segments even for small logs */

/* The model: the bytes of regions a and b after epoch e, computed by
 * replaying the same generator on plain memory. */
typedef struct { uint8_t a[ASZ], b[BSZ]; } model;

static void gen_epoch(uint64_t s, int e, uint8_t *a, uint8_t *b, int touch) {
  uint64_t r = s * 1000003u + (uint64_t)e;
  int n = 1 + (int)rng_below(&r, 40);
  for (int i = 0; i < n; i++) {
    int which = (int)rng_below(&r, 2);
    size_t size = which ? BSZ : ASZ, len = 1 + rng_below(&r, e % 5 == 0 ? 3000 : 40);
    if (len > size) len = size;
    size_t off = rng_below(&r, size - len + 1);
    uint8_t *p = (which ? b : a) + off;
    for (size_t k = 0; k < len; k++) p[k] = (uint8_t)rng_next(&r);
    if (touch) mmsb_touch(p, len);
  }
}

static void model_at(uint64_t s, int e, model *m) {
  memset(m, 0, sizeof *m);
  for (int i = 1; i <= e; i++) gen_epoch(s, i, m->a, m->b, 0);
}

static mmsb_bus *open_dir(int sync, mmsb_region **a, mmsb_region **b, int *rc_out) {
  mmsb_config cfg;
  mmsb_config_init(&cfg);
  cfg.dir = dir;
  cfg.sync = sync;
  cfg.segment_bytes = seg_bytes;
  mmsb_bus *bus = NULL;
  int rc = mmsb_bus_open(&cfg, &bus);
  if (rc_out) *rc_out = rc;
  if (rc) return NULL;
  if (mmsb_region_create(bus, "a", ASZ, 0, a) || mmsb_region_create(bus, "b", BSZ, 0, b)) {
    if (rc_out) *rc_out = -100;
    mmsb_bus_close(bus);
    return NULL;
  }
  return bus;
}

static bool equals_model(mmsb_region *a, mmsb_region *b, uint64_t s, mmsb_epoch_t e) {
  static model m;
  model_at(s, (int)e, &m);
  return memcmp(mmsb_region_data(a), m.a, ASZ) == 0 && memcmp(mmsb_region_data(b), m.b, BSZ) == 0;
}

static void rmdir_all(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd)) {}
}

/* Stores and commits epochs from..to of generator s on an open bus. */
static void commit_epochs(mmsb_bus *bus, mmsb_region *a, mmsb_region *b, uint64_t s, int from,
                          int to) {
  for (int e = from; e <= to; e++) {
    gen_epoch(s, e, mmsb_region_data(a), mmsb_region_data(b), 1);
    CHECK_OK(mmsb_commit(bus, NULL));
  }
}

static void write_epochs(uint64_t s, int from, int to, int sync) {
  mmsb_region *a, *b;
  mmsb_bus *bus = open_dir(sync, &a, &b, NULL);
  CHECK(bus != NULL);
  if (!bus) return;
  CHECK(mmsb_epoch(bus) == (mmsb_epoch_t)from - 1);
  commit_epochs(bus, a, b, s, from, to);
  CHECK_OK(mmsb_bus_close(bus));
}

static void test_recover_and_replay(void) {
  rmdir_all();
  write_epochs(11, 1, 20, MMSB_SYNC_COMMIT);
  write_epochs(11, 21, 30, MMSB_SYNC_GROUP); /* reopen, go on */
  mmsb_region *a, *b;
  mmsb_bus *bus = open_dir(MMSB_SYNC_NONE, &a, &b, NULL);
  CHECK(bus && mmsb_epoch(bus) == 30);
  if (bus) CHECK(equals_model(a, b, 11, 30));
  mmsb_region *x;
  CHECK_FAILS(mmsb_region_create(bus, "a", 123, 0, &x), MMSB_EEXIST);
  CHECK_OK(mmsb_bus_close(bus));
  /* a size mismatch on a fresh recovery */
  mmsb_config cfg;
  mmsb_config_init(&cfg);
  cfg.dir = dir;
  CHECK_OK(mmsb_bus_open(&cfg, &bus));
  CHECK_FAILS(mmsb_region_create(bus, "a", ASZ + 1, 0, &x), MMSB_EMISMATCH);
  CHECK_OK(mmsb_region_find(bus, "b", &x));
  CHECK_OK(mmsb_bus_close(bus));
  int bad = 0;
  for (int e = 1; e <= 30; e++) {
    mmsb_bus *v;
    CHECK_OK(mmsb_replay(dir, (mmsb_epoch_t)e, &v));
    mmsb_region *ra, *rb;
    CHECK_OK(mmsb_region_find(v, "a", &ra));
    CHECK_OK(mmsb_region_find(v, "b", &rb));
    bad += !(mmsb_epoch(v) == (mmsb_epoch_t)e && equals_model(ra, rb, 11, (mmsb_epoch_t)e));
    CHECK_FAILS(mmsb_commit(v, NULL), MMSB_EINVAL);
    mmsb_bus_close(v);
  }
  CHECK(bad == 0);
  mmsb_bus *v;
  CHECK_FAILS(mmsb_replay(dir, 31, &v), MMSB_ENOTFOUND);
  CHECK_FAILS(mmsb_replay("/nonexistent/mmsb", 0, &v), MMSB_ENOTFOUND);
}

/* A fresh log of epochs 1..last (seed s), reopened and checkpointed. */
static mmsb_bus *checkpointed_log(uint64_t s, int last, int sync, mmsb_region **a,
                                  mmsb_region **b) {
  rmdir_all();
  write_epochs(s, 1, last, sync);
  mmsb_bus *bus = open_dir(sync, a, b, NULL);
  CHECK_OK(mmsb_checkpoint(bus));
  return bus;
}

static void test_checkpoint(void) {
  mmsb_region *a, *b;
  mmsb_bus *bus = checkpointed_log(12, 25, MMSB_SYNC_COMMIT, &a, &b);
  commit_epochs(bus, a, b, 12, 26, 40);
  CHECK_OK(mmsb_checkpoint(bus));
  commit_epochs(bus, a, b, 12, 41, 45);
  CHECK_OK(mmsb_bus_close(bus));
  bus = open_dir(MMSB_SYNC_COMMIT, &a, &b, NULL);
  mmsb_recovery rec;
  CHECK_OK(mmsb_recovery_info(bus, &rec));
  CHECK(rec.checkpoint_epoch == 40 && rec.last_epoch == 45 && rec.bytes_dropped == 0);
  CHECK(bus && equals_model(a, b, 12, 45));
  CHECK_OK(mmsb_bus_close(bus));
  mmsb_bus *v;
  CHECK_OK(mmsb_replay(dir, 42, &v));
  CHECK(mmsb_epoch(v) == 42);
  mmsb_bus_close(v);
  CHECK_FAILS(mmsb_replay(dir, 30, &v), MMSB_ENOTFOUND); /* retired with its segments */
}

/* Opens a file of dir. */
static int open_in_dir(const char *name, int flags) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  return open(p, flags, 0600);
}

/* Reads a file of dir whole; *len gets its size. */
static uint8_t *slurp(const char *name, size_t *len) {
  int fd = open_in_dir(name, O_RDONLY);
  struct stat st;
  uint8_t *buf = fd >= 0 && fstat(fd, &st) == 0 ? malloc((size_t)st.st_size + 1) : NULL;
  if (buf) {
    *len = (size_t)st.st_size;
    if (read(fd, buf, *len) != (ssize_t)*len) *len = 0;
  }
  if (fd >= 0) close(fd);
  return buf;
}

static void spill(const char *name, const uint8_t *buf, size_t len) {
  int fd = open_in_dir(name, O_WRONLY | O_CREAT | O_TRUNC);
  if (fd < 0 || write(fd, buf, len) != (ssize_t)len) CHECK(0);
  if (fd >= 0) close(fd);
}

/* The log cut at every byte offset: each opens with a valid prefix (a torn
 * tail), never more epochs than a longer cut, and the right bytes. */
static void test_torn_every_offset(void) {
  rmdir_all();
  seg_bytes = (uint64_t)1 << 30; /* one segment */
  write_epochs(13, 1, 10, MMSB_SYNC_NONE);
  seg_bytes = 16384;
  const char *seg = "seg-00000000000000000001.log";
  size_t full;
  uint8_t *orig = slurp(seg, &full);
  CHECK(orig && full > 0);
  int opened = 0, refused = 0, wrong = 0;
  mmsb_epoch_t prev = 0;
  uint64_t dropped_max = 0;
  for (size_t cut = 0; orig && cut <= full; cut++) {
    spill(seg, orig, cut);
    mmsb_config cfg;
    mmsb_config_init(&cfg);
    cfg.dir = dir;
    mmsb_bus *bus;
    if (mmsb_bus_open(&cfg, &bus)) { refused++; continue; }
    opened++;
    mmsb_region *a, *b;
    if (mmsb_region_create(bus, "a", ASZ, 0, &a) == MMSB_OK &&
        mmsb_region_create(bus, "b", BSZ, 0, &b) == MMSB_OK)
      wrong += !equals_model(a, b, 13, mmsb_epoch(bus));
    wrong += mmsb_epoch(bus) < prev;
    prev = mmsb_epoch(bus);
    mmsb_recovery rec;
    mmsb_recovery_info(bus, &rec);
    if (rec.bytes_dropped > dropped_max) dropped_max = rec.bytes_dropped;
    mmsb_bus_close(bus);
  }
  CHECK(wrong == 0 && refused == 0 && prev == 10 && dropped_max > 0);
  printf("torn: %zu cuts, %d opened, %d refused, %d wrong\n", full + 1, opened, refused, wrong);
  free(orig);
}

/* Random bit flips in a checkpoint and a segment: open recovers a valid
 * prefix or refuses with MMSB_ECORRUPT; it never opens with wrong bytes. */
static void test_bit_flips(int cases) {
  mmsb_region *a0, *b0;
  mmsb_bus *bus0 = checkpointed_log(14, 15, MMSB_SYNC_NONE, &a0, &b0);
  commit_epochs(bus0, a0, b0, 14, 16, 20);
  mmsb_bus_close(bus0);
  const char *files[] = {"ckpt-00000000000000000015.ckpt", "seg-00000000000000000016.log"};
  size_t len[2];
  uint8_t *orig[2] = {slurp(files[0], &len[0]), slurp(files[1], &len[1])};
  CHECK(orig[0] && orig[1] && len[0] && len[1]);
  int opened = 0, refused = 0, wrong = 0;
  for (int n = 0; n < cases && orig[0] && orig[1]; n++) {
    int f = n % 2;
    uint8_t *buf = malloc(len[f]);
    memcpy(buf, orig[f], len[f]);
    int flips = 1 + (int)rng_below(&seed, 3);
    for (int k = 0; k < flips; k++) {
      size_t at = rng_below(&seed, 3) ? rng_below(&seed, len[f] < 64 ? len[f] : 64)
                                      : rng_below(&seed, len[f]);
      buf[at] ^= (uint8_t)(1u << rng_below(&seed, 8));
    }
    spill(files[f], buf, len[f]);
    spill(files[1 - f], orig[1 - f], len[1 - f]);
    free(buf);
    mmsb_config cfg;
    mmsb_config_init(&cfg);
    cfg.dir = dir;
    mmsb_bus *bus;
    int rc = mmsb_bus_open(&cfg, &bus);
    if (rc) {
      CHECK(rc == MMSB_ECORRUPT && mmsb_last_error()[0]);
      refused++;
      continue;
    }
    opened++;
    mmsb_region *a, *b;
    if (mmsb_region_create(bus, "a", ASZ, 0, &a) == MMSB_OK &&
        mmsb_region_create(bus, "b", BSZ, 0, &b) == MMSB_OK)
      wrong += !equals_model(a, b, 14, mmsb_epoch(bus));
    else
      wrong++;
    mmsb_bus_close(bus);
  }
  CHECK(wrong == 0);
  printf("bit flips: %d cases, %d opened (valid prefix), %d refused, %d wrong\n", cases,
         opened, refused, wrong);
  free(orig[0]);
  free(orig[1]);
}

/* A full disk: RLIMIT_FSIZE makes writes fail with EFBIG.  The commit that
 * hits it returns MMSB_ENOSPC, the program goes on, and what was committed
 * before is intact after reopening. */
static void test_full_disk(void) {
  rmdir_all();
  write_epochs(15, 1, 3, MMSB_SYNC_COMMIT);
  pid_t pid = fork();
  if (pid == 0) {
    signal(SIGXFSZ, SIG_IGN);
    mmsb_region *a, *b;
    mmsb_bus *bus = open_dir(MMSB_SYNC_COMMIT, &a, &b, NULL);
    if (!bus) _exit(10);
    struct rlimit rl = {12000, 12000};
    setrlimit(RLIMIT_FSIZE, &rl);
    int e = 4, failed = 0;
    for (; e < 200 && !failed; e++) {
      gen_epoch(15, e, mmsb_region_data(a), mmsb_region_data(b), 1);
      int rc = mmsb_commit(bus, NULL);
      if (rc == MMSB_ENOSPC) failed = e;
      else if (rc) _exit(11);
    }
    if (!failed) _exit(12);
    /* the program goes on: the failed epoch was not sealed */
    if (mmsb_epoch(bus) != (mmsb_epoch_t)failed - 1) _exit(13);
    if (mmsb_commit(bus, NULL) != MMSB_ENOSPC) _exit(14);
    mmsb_bus_close(bus);
    _exit(failed > 4 ? 0 : 15);
  }
  int st;
  waitpid(pid, &st, 0);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  mmsb_region *a, *b;
  mmsb_bus *bus = open_dir(MMSB_SYNC_COMMIT, &a, &b, NULL);
  CHECK(bus != NULL);
  if (bus) {
    CHECK(mmsb_epoch(bus) >= 4 && equals_model(a, b, 15, mmsb_epoch(bus)));
    mmsb_bus_close(bus);
  }
}

/* SIGKILL at random moments; after each, recovery gives exactly the state
 * of an epoch at or after the last one the child reported committed. */
static void test_crash(int kills) {
  rmdir_all();
  int bad = 0, behind = 0;
  mmsb_epoch_t top = 0;
  for (int k = 0; k < kills; k++) {
    int fds[2];
    if (pipe(fds)) { CHECK(0); return; }
    pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      mmsb_region *a, *b;
      mmsb_bus *bus = open_dir(MMSB_SYNC_COMMIT, &a, &b, NULL);
      if (!bus) _exit(1);
      for (int e = (int)mmsb_epoch(bus) + 1;; e++) {
        gen_epoch(16, e, mmsb_region_data(a), mmsb_region_data(b), 1);
        if (mmsb_commit(bus, NULL)) _exit(2);
        uint32_t v = (uint32_t)e;
        if (write(fds[1], &v, 4) != 4) _exit(3);
        if (e % 50 == 0 && mmsb_checkpoint(bus)) _exit(4);
      }
    }
    close(fds[1]);
    usleep((useconds_t)(1000 + rng_below(&seed, 15000)));
    kill(pid, SIGKILL);
    uint32_t v, last = 0;
    while (read(fds[0], &v, 4) == 4) last = v;
    close(fds[0]);
    waitpid(pid, NULL, 0);
    mmsb_region *a, *b;
    int rc;
    mmsb_bus *bus = open_dir(MMSB_SYNC_COMMIT, &a, &b, &rc);
    if (!bus) { bad++; fprintf(stderr, "crash %d: open: %d %s\n", k, rc, mmsb_last_error()); break; }
    behind += mmsb_epoch(bus) < last;
    if (mmsb_epoch(bus) >= 1 && !equals_model(a, b, 16, mmsb_epoch(bus))) bad++;
    top = mmsb_epoch(bus);
    mmsb_bus_close(bus);
    if (top > MAXE * 4) rmdir_all(); /* keep the model cheap */
  }
  CHECK(bad == 0 && behind == 0);
  printf("crash: %d kills, %d wrong, %d behind the last reported epoch\n", kills, bad, behind);
}

/* The name of dir's first file that starts with prefix ("" if none). */
static const char *first_file(const char *prefix) {
  static char name[256];
  name[0] = 0;
  DIR *d = opendir(dir);
  struct dirent *e;
  while (d && (e = readdir(d)))
    if (!strncmp(e->d_name, prefix, strlen(prefix)) && (!name[0] || strcmp(e->d_name, name) < 0))
      snprintf(name, sizeof name, "%s", e->d_name);
  if (d) closedir(d);
  return name;
}

/* Files whose checksums hold but whose region sizes are out of all
 * proportion to them (a writer's bug, or a file made to do harm), as
 * fuzz/fuzz_log.c found them: before, each made recovery write 4-6 GiB of
 * bitmaps and take 12-14 s.  A zstd checkpoint whose region says 256 GiB
 * is refused before the region is made (its frame cannot hold that); a
 * segment's region record may say it (that is how such a region is
 * logged), and the region is made and dropped without its bitmaps being
 * written.  A zstd checkpoint of a real 256 MiB region of zeros (a frame
 * of ~8 KiB) still loads. */
static void test_huge_claims(void) {
  const uint64_t huge = (uint64_t)1 << 38;
  mmsb_config cfg;
  mmsb_config_init(&cfg);
  cfg.dir = dir;
  cfg.compress = 1;
  mmsb_bus *bus;
  mmsb_recovery rec;
  /* The checkpoint: region a's size, and the file's checksum made right. */
  rmdir_all();
  write_epochs(21, 1, 3, MMSB_SYNC_NONE);
  CHECK_OK(mmsb_bus_open(&cfg, &bus));
  CHECK_OK(mmsb_checkpoint(bus));
  CHECK_OK(mmsb_bus_close(bus));
  const char *ckpt = first_file("ckpt-");
  size_t len = 0;
  uint8_t *f = slurp(ckpt, &len);
  CHECK(f && len > MMSB_CKPT_HDR + MMSB_CKPT_REGION_HDR + 8);
  if (!f) return;
  memcpy(f + MMSB_CKPT_HDR + 8, &huge, 8);
  uint64_t sum = mmsb_xxh3(f, len - 8);
  memcpy(f + len - 8, &sum, 8);
  spill(ckpt, f, len);
  free(f);
  CHECK_OK(mmsb_bus_open(&cfg, &bus)); /* the checkpoint skipped, as a bad one is */
  CHECK_OK(mmsb_recovery_info(bus, &rec));
  CHECK(strstr(rec.detail, "skipped bad checkpoint") && strstr(rec.detail, "zstd frame"));
  CHECK_OK(mmsb_bus_close(bus));
  /* The segment: region a's record. */
  rmdir_all();
  write_epochs(21, 1, 3, MMSB_SYNC_NONE);
  const char *seg = first_file("seg-");
  f = slurp(seg, &len);
  CHECK(f != NULL);
  int changed = 0;
  for (size_t off = MMSB_SEG_HDR; f && off + MMSB_REC_HDR <= len;) {
    uint16_t type;
    uint64_t plen;
    memcpy(&type, f + off + 4, 2);
    memcpy(&plen, f + off + 16, 8);
    if (plen > len - off - MMSB_REC_HDR) break;
    uint8_t *pl = f + off + MMSB_REC_HDR;
    /* id u32, flags u32, size u64, name_len u16, name: region "a", no image */
    if (type == MMSB_REC_REGION && plen > 18 && !memcmp(pl + 18, "a", 1) && !(pl[4] & 1)) {
      memcpy(pl + 8, &huge, 8);
      const void *parts[2] = {f + off, pl};
      size_t lens[2] = {24, (size_t)plen};
      sum = mmsb_xxh3_parts(parts, lens, 2);
      memcpy(f + off + 24, &sum, 8);
      changed++;
    }
    off += MMSB_REC_HDR + plen;
  }
  CHECK(changed == 1);
  if (f) spill(seg, f, len);
  free(f);
  mmsb_region *a;
  CHECK_OK(mmsb_replay(dir, 0, &bus));
  CHECK_OK(mmsb_region_find(bus, "a", &a));
  CHECK(mmsb_region_size(a) == huge && mmsb_epoch(bus) == 3);
  CHECK_OK(mmsb_bus_close(bus));
  struct rusage ru;
  CHECK(getrusage(RUSAGE_SELF, &ru) == 0 && ru.ru_maxrss < (1 << 20)); /* KiB: under 1 GiB */
  /* A real region of 256 MiB, compressed. */
  rmdir_all();
  CHECK_OK(mmsb_bus_open(&cfg, &bus));
  CHECK_OK(mmsb_region_create(bus, "z", 256u << 20, 0, &a));
  ((uint8_t *)mmsb_region_data(a))[12345] = 7;
  CHECK_OK(mmsb_touch((uint8_t *)mmsb_region_data(a) + 12345, 1));
  CHECK_OK(mmsb_commit(bus, NULL));
  CHECK_OK(mmsb_checkpoint(bus));
  CHECK_OK(mmsb_bus_close(bus));
  CHECK_OK(mmsb_bus_open(&cfg, &bus));
  CHECK_OK(mmsb_recovery_info(bus, &rec));
  CHECK_OK(mmsb_region_find(bus, "z", &a));
  CHECK(rec.checkpoint_epoch == 1 && ((uint8_t *)mmsb_region_data(a))[12345] == 7);
  CHECK_OK(mmsb_bus_close(bus));
  printf("huge claims: a checkpoint's refused, a segment's region of %llu bytes made, "
         "max RSS %ld KiB\n", (unsigned long long)huge, ru.ru_maxrss);
}

int main(void) {
  seed = test_seed();
  snprintf(dir, sizeof dir, "/tmp/mmsb-test-log-%d", (int)getpid());
  int scale = test_scale();
  test_recover_and_replay();
  test_checkpoint();
  test_torn_every_offset();
  test_bit_flips(300 * scale);
  test_huge_claims();
  test_full_disk();
  test_crash(200 * scale);
  rmdir_all();
  return check_done("test_log");
}
