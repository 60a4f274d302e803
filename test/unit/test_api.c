/* test_api.c - the API core: regions, status codes and bad arguments. */
#include "check.h"
#include "internal.h"
#include "mmsb_abi.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

static void test_strerror(void) {
  for (int s = 0; s >= MMSB_EUNSUPPORTED; s--)
    CHECK(strcmp(mmsb_strerror(s), "unknown status") != 0);
  CHECK(strcmp(mmsb_strerror(-999), "unknown status") == 0);
}

static void test_regions(mmsb_bus *bus) {
  mmsb_region *r = NULL, *f = NULL;
  CHECK_OK(mmsb_region_create(bus, "alpha", 10000, 0, &r));
  CHECK(r && ((uintptr_t)mmsb_region_data(r) & 4095) == 0);
  CHECK(mmsb_region_size(r) == 10000);
  CHECK(strcmp(mmsb_region_name(r), "alpha") == 0);
  CHECK(mmsb_region_id(r) >= 1);
  CHECK(mmsb_region_by_id(bus, mmsb_region_id(r)) == r);
  uint8_t *d = mmsb_region_data(r);
  for (int i = 0; i < 10000; i++) CHECK(d[i] == 0);
  CHECK_OK(mmsb_region_find(bus, "alpha", &f));
  CHECK(f == r);
  CHECK_FAILS(mmsb_region_create(bus, "alpha", 10000, 0, &f), MMSB_EEXIST);
  CHECK_FAILS(mmsb_region_find(bus, "beta", &f), MMSB_ENOTFOUND);
  CHECK(f == NULL);
  CHECK_OK(mmsb_region_destroy(r));
  CHECK_FAILS(mmsb_region_find(bus, "alpha", &f), MMSB_ENOTFOUND);
  /* The name can be used again once the region is gone. */
  CHECK_OK(mmsb_region_create(bus, "alpha", 4096, 0, &r));
}

static void test_bad_arguments(mmsb_bus *bus) {
  mmsb_region *r;
  char longname[400];
  memset(longname, 'x', sizeof longname - 1);
  longname[sizeof longname - 1] = 0;
  CHECK_FAILS(mmsb_region_create(bus, NULL, 100, 0, &r), MMSB_EINVAL);
  CHECK_FAILS(mmsb_region_create(bus, "", 100, 0, &r), MMSB_EINVAL);
  CHECK_FAILS(mmsb_region_create(bus, longname, 100, 0, &r), MMSB_EINVAL);
  CHECK_FAILS(mmsb_region_create(bus, "bad\nname", 100, 0, &r), MMSB_EINVAL);
  CHECK_FAILS(mmsb_region_create(bus, "zero", 0, 0, &r), MMSB_EINVAL);
  CHECK_FAILS(mmsb_region_create(bus, "huge", SIZE_MAX, 0, &r), MMSB_EINVAL);
  CHECK_FAILS(mmsb_region_create(bus, "huge2", SIZE_MAX / 2, 0, &r), MMSB_EINVAL);
  CHECK_FAILS(mmsb_region_create(bus, "flags", 100, 0x80, &r), MMSB_EINVAL);
  CHECK_FAILS(mmsb_region_create(NULL, "nobus", 100, 0, &r), MMSB_EINVAL);
  CHECK_FAILS(mmsb_region_create(bus, "noout", 100, 0, NULL), MMSB_EINVAL);
  CHECK_FAILS(mmsb_region_create(bus, "a/b", 100, MMSB_REGION_SHARED, &r), MMSB_EINVAL);
  CHECK_FAILS(mmsb_region_find(NULL, "x", &r), MMSB_EINVAL);
  CHECK_FAILS(mmsb_region_find(bus, NULL, &r), MMSB_EINVAL);
  CHECK_FAILS(mmsb_region_destroy(NULL), MMSB_EINVAL);
  CHECK_FAILS(mmsb_region_create_mapped(bus, "m", 100, NULL, &r), MMSB_EINVAL);
  CHECK_FAILS(mmsb_region_create_mapped(bus, "m", 100, "/nonexistent/dir/f", &r),
              MMSB_ENOTFOUND);
  CHECK(mmsb_region_data(NULL) == NULL && mmsb_region_size(NULL) == 0);
  CHECK(mmsb_region_by_id(bus, 0) == NULL && mmsb_region_by_id(bus, 99999) == NULL);
  CHECK_FAILS(mmsb_bus_open(NULL, NULL), MMSB_EINVAL);
  CHECK_FAILS(mmsb_bus_close(NULL), MMSB_EINVAL);
  CHECK_FAILS(mmsb_bus_close(mmsb_default_bus()), MMSB_EBUSY);
  mmsb_config cfg;
  mmsb_config_init(&cfg);
  cfg.sync = 42;
  mmsb_bus *b2;
  CHECK_FAILS(mmsb_bus_open(&cfg, &b2), MMSB_EINVAL);
  CHECK_FAILS(mmsb_subscribe(bus, NULL, NULL, NULL), MMSB_EINVAL);
  CHECK_FAILS(mmsb_unsubscribe(bus, 12345), MMSB_ENOTFOUND);
  CHECK_FAILS(mmsb_stats_get(bus, NULL), MMSB_EINVAL);
}

static void test_touch(mmsb_bus *bus) {
  int local = 0;
  mmsb_region *r;
  CHECK_OK(mmsb_region_create(bus, "touch", 8192, 0, &r));
  uint8_t *d = mmsb_region_data(r);
  CHECK_OK(mmsb_touch(d, 0));
  CHECK_OK(mmsb_touch(d + 100, 50));
  CHECK_FAILS(mmsb_touch(&local, sizeof local), MMSB_ERANGE);
  CHECK_FAILS(mmsb_touch(NULL, 8), MMSB_EINVAL);
  CHECK_FAILS(mmsb_touch((void *)(UINTPTR_MAX - 4), 100), MMSB_EINVAL);
  /* Stores outside every region through the entry points are counted. */
  mmsb_stats s0, s1;
  mmsb_stats_get(bus, &s0);
  __mmsb_store8(&local);
  __mmsb_store_range(&local, sizeof local);
  __mmsb_store1(NULL);
  mmsb_stats_get(bus, &s1);
  CHECK(s1.stores_outside == s0.stores_outside + 3);
  CHECK_OK(mmsb_region_destroy(r));
}

/* A MAP_SHARED region: another mapping of the file sees committed bytes. */
static void test_shared(mmsb_bus *bus) {
  char path[] = "/tmp/mmsb-test-shared-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  if (fd < 0) return;
  mmsb_region *r;
  CHECK_OK(mmsb_region_create_mapped(bus, "shared", 3 * 4096, path, &r));
  uint8_t *other = mmap(NULL, 3 * 4096, PROT_READ, MAP_SHARED, fd, 0);
  CHECK(other != MAP_FAILED);
  uint8_t *d = mmsb_region_data(r);
  memcpy(d + 5000, "hello", 5);
  CHECK_OK(mmsb_touch(d + 5000, 5));
  mmsb_epoch_t e;
  CHECK_OK(mmsb_commit(bus, &e));
  if (other != MAP_FAILED) {
    CHECK(memcmp(other + 5000, "hello", 5) == 0);
    munmap(other, 3 * 4096);
  }
  CHECK_OK(mmsb_region_destroy(r));
  close(fd);
  unlink(path);
  /* The flag form uses /dev/shm/mmsb.NAME. */
  CHECK_OK(mmsb_region_create(bus, "flagshared", 4096, MMSB_REGION_SHARED, &r));
  CHECK(access("/dev/shm/mmsb.flagshared", F_OK) == 0);
  CHECK_OK(mmsb_region_destroy(r));
  unlink("/dev/shm/mmsb.flagshared");
}

static void test_config(void) {
  setenv("MMSB_SYNC", "group:25", 1);
  setenv("MMSB_VERIFY", "1", 1);
  setenv("MMSB_DEVICE", "2", 1);
  setenv("MMSB_THREADS", "1K", 1);
  setenv("MMSB_COMMIT_THREADS", "8", 1);
  mmsb_config c;
  mmsb_config_init(&c);
  CHECK(c.sync == MMSB_SYNC_GROUP && c.group_ms == 25);
  CHECK(c.verify == 1 && c.device == 2 && c.dir == NULL);
  CHECK(c.threads == 1024 && c.commit_threads == 8);
  /* Not numbers, or out of range: a line on stderr, and the defaults. */
  setenv("MMSB_SYNC", "group:abc", 1);
  setenv("MMSB_DEVICE", "gpu1", 1);
  setenv("MMSB_THREADS", "2K", 1);
  setenv("MMSB_COMMIT_THREADS", "eight", 1);
  mmsb_config_init(&c);
  CHECK(c.sync == MMSB_SYNC_COMMIT && c.device == -1 && c.threads == 1);
  CHECK(c.commit_threads == mmsb_default_threads());
  unsetenv("MMSB_DEVICE");
  unsetenv("MMSB_THREADS");
  setenv("MMSB_SYNC", "group", 1);
  setenv("MMSB_COMMIT_THREADS", "0", 1);
  mmsb_config_init(&c);
  CHECK(c.sync == MMSB_SYNC_GROUP && c.group_ms == 10 && c.commit_threads == mmsb_default_threads());
  unsetenv("MMSB_SYNC");
  unsetenv("MMSB_VERIFY");
  unsetenv("MMSB_DEVICE");
  unsetenv("MMSB_THREADS");
  unsetenv("MMSB_COMMIT_THREADS");
  mmsb_config_init(&c);
  CHECK(c.sync == MMSB_SYNC_COMMIT && c.verify == 0 && c.device == -1 && c.threads == 1);
}

/* Runs fn with stderr going to a temporary file; returns the lines it
 * wrote there. */
static int stderr_lines(void (*fn)(void)) {
  fflush(stderr);
  int saved = dup(2);
  FILE *t = tmpfile();
  CHECK(saved >= 0 && t != NULL);
  if (saved < 0 || !t) return -1;
  dup2(fileno(t), 2);
  fn();
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  rewind(t);
  int lines = 0, ch;
  while ((ch = fgetc(t)) != EOF) lines += ch == '\n';
  fclose(t);
  return lines;
}

static void config_once(void) {
  mmsb_config c;
  mmsb_config_init(&c);
  CHECK(c.sync == MMSB_SYNC_COMMIT && c.device == -1 && c.threads == 1);
}

/* A bad setting is named once for each value, however many buses are
 * configured. */
static void test_complaints(void) {
  setenv("MMSB_SYNC", "group:xyz", 1);
  setenv("MMSB_DEVICE", "gpu2", 1);
  setenv("MMSB_THREADS", "3K", 1);
  setenv("MMSB_COMMIT_THREADS", "nine", 1);
  CHECK(stderr_lines(config_once) == 4);
  CHECK(stderr_lines(config_once) == 0);
  setenv("MMSB_DEVICE", "gpu3", 1);
  CHECK(stderr_lines(config_once) == 1);
  CHECK(stderr_lines(config_once) == 0);
  unsetenv("MMSB_SYNC");
  unsetenv("MMSB_DEVICE");
  unsetenv("MMSB_THREADS");
  unsetenv("MMSB_COMMIT_THREADS");
}

/* The numbers of MMSB_* settings (env.c). */
static void test_numbers(void) {
  static const struct { const char *v; bool ok; long long n; } cases[] = {
      {"4096", true, 4096},       {"256K", true, 262144},   {"1M", true, 1048576},
      {"1g", true, 1073741824},   {"0", true, 0},           {"-1", true, -1},
      {" 12", true, 12},          {"", false, 0},           {"12x", false, 0},
      {"1MB", false, 0},          {"K", false, 0},          {"-2", false, 0},
      {"2T", false, 0},           {"99999999999999999999", false, 0},
      {"9223372036854775807K", false, 0},                   {"1099511627777", false, 0}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    long long n = 12345;
    bool ok = mmsb_parse_number(cases[i].v, -1, 1LL << 40, &n);
    CHECK(ok == cases[i].ok && n == (ok ? cases[i].n : 12345));
  }
}

int main(void) {
  mmsb_bus *bus;
  CHECK_OK(mmsb_bus_open(NULL, &bus));
  test_strerror();
  test_regions(bus);
  test_bad_arguments(bus);
  test_touch(bus);
  test_shared(bus);
  test_config();
  test_numbers();
  test_complaints();
  mmsb_epoch_t e0 = mmsb_epoch(bus), e1;
  CHECK_OK(mmsb_commit(bus, &e1));
  CHECK(e1 == e0 + 1 && mmsb_epoch(bus) == e1);
  CHECK(mmsb_default_bus() != NULL && mmsb_default_bus() == mmsb_default_bus());
  CHECK_OK(mmsb_bus_close(bus));
  return check_done("test_api");
}
