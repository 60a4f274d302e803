/*
 * bus.c - a bus: its configuration, regions, epoch counter and sinks, and
 * the process's default bus configured from MMSB_* variables.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* MMSB_SYNC: "none", "commit", "group" or "group:MS" (MS from 1 to an
 * hour). */
static void parse_sync(mmsb_config *c, const char *v) {
  long long ms = c->group_ms;
  if (!strcmp(v, "none")) c->sync = MMSB_SYNC_NONE;
  else if (!strcmp(v, "commit")) c->sync = MMSB_SYNC_COMMIT;
  else if (!strcmp(v, "group") ||
           (!strncmp(v, "group:", 6) && mmsb_parse_number(v + 6, 1, 3600000, &ms))) {
    c->sync = MMSB_SYNC_GROUP;
    c->group_ms = (unsigned)ms;
  } else {
    mmsb_env_complain("MMSB_SYNC", v, "is not none, commit, group or group:MS (MS from 1 to "
                      "3600000); using commit");
  }
}

static int env_flag(const char *name) {
  const char *v = getenv(name);
  return v && *v && strcmp(v, "0") != 0;
}

void mmsb_config_init(mmsb_config *c) {
  if (!c) return;
  memset(c, 0, sizeof *c);
  c->sync = MMSB_SYNC_COMMIT;
  c->group_ms = 10;
  c->device = -1;
  c->threads = 1;
  const char *v;
  long long n;
  if ((v = getenv("MMSB_DIR")) && *v) c->dir = v;
  if ((v = getenv("MMSB_SYNC")) && *v) parse_sync(c, v);
  if (mmsb_env_number("MMSB_DEVICE", -1, 1023, &n)) c->device = (int)n;
  if (mmsb_env_number("MMSB_THREADS", 1, 1024, &n)) c->threads = (int)n;
  c->commit_threads = mmsb_default_threads();
  if (mmsb_env_number("MMSB_COMMIT_THREADS", 1, 1024, &n)) c->commit_threads = (int)n;
  if ((v = getenv("MMSB_TRACE")) && *v) c->trace = v;
  c->verify = env_flag("MMSB_VERIFY");
  c->stats = env_flag("MMSB_STATS");
  c->salvage = env_flag("MMSB_SALVAGE");
  c->compress = env_flag("MMSB_COMPRESS");
}

static int bus_open(const mmsb_config *cfg, bool read_only, mmsb_epoch_t stop,
                    mmsb_bus **out) {
  if (!out) return mmsb_fail(MMSB_EINVAL, "out is NULL");
  *out = NULL;
  mmsb_bus *bus = calloc(1, sizeof *bus);
  if (!bus) return mmsb_fail(MMSB_ENOMEM, "bus");
  bus->read_only = read_only;
  bus->replay_stop = stop;
  if (cfg) bus->cfg = *cfg;
  else mmsb_config_init(&bus->cfg);
  if (bus->cfg.sync < MMSB_SYNC_NONE || bus->cfg.sync > MMSB_SYNC_GROUP) {
    int sync = bus->cfg.sync;
    free(bus);
    return mmsb_fail(MMSB_EINVAL, "sync policy %d", sync);
  }
  pthread_mutexattr_t at;
  pthread_mutexattr_init(&at);
  /* Recursive: subscribers and nodes run under the lock and may look up
   * regions of the bus they are called for. */
  pthread_mutexattr_settype(&at, PTHREAD_MUTEX_RECURSIVE);
  pthread_mutex_init(&bus->lock, &at);
  pthread_mutexattr_destroy(&at);
  int rc = mmsb_arena_init();
  if (!rc && bus->cfg.dir) {
    bus->dir = strdup(bus->cfg.dir);
    rc = bus->dir ? mmsb_bus_attach_log(bus) : mmsb_fail(MMSB_ENOMEM, "dir");
  }
  for (uint32_t i = 0; !rc && i < bus->nregions; i++)
    if (bus->regions[i] && !bus->regions[i]->shadow_copy)
      rc = mmsb_verify_region_init(bus->regions[i]);
  if (!rc && bus->cfg.trace && !read_only) rc = mmsb_trace_open(bus, bus->cfg.trace);
  bus->cfg.dir = bus->dir;
  bus->cfg.trace = NULL;
  if (rc) {
    mmsb_bus_close(bus);
    return rc;
  }
  *out = bus;
  return MMSB_OK;
}

int mmsb_bus_open(const mmsb_config *cfg, mmsb_bus **out) {
  return bus_open(cfg, false, 0, out);
}

int mmsb_replay(const char *dir, mmsb_epoch_t epoch, mmsb_bus **out) {
  if (!dir) return mmsb_fail(MMSB_EINVAL, "dir is NULL");
  mmsb_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.dir = dir;
  cfg.sync = MMSB_SYNC_NONE;
  cfg.device = -1;
  return bus_open(&cfg, true, epoch, out);
}

static void print_stats(const mmsb_bus *bus) {
  const mmsb_stats *s = &bus->stats;
  fprintf(stderr,
          "mmsb: epoch %llu: %llu commits (%llu from the mark logs), %llu deltas "
          "(%llu whole pages, %llu runs), %llu batch bytes, %.3f ms in commit, %llu "
          "stores outside regions%s",
          (unsigned long long)atomic_load(&bus->epoch), (unsigned long long)s->commits,
          (unsigned long long)s->log_commits, (unsigned long long)s->deltas,
          (unsigned long long)s->whole_pages, (unsigned long long)s->runs,
          (unsigned long long)s->delta_bytes, s->commit_ns / 1e6,
          (unsigned long long)mmsb_outside_count(), bus->cfg.verify ? "" : "\n");
  if (bus->cfg.verify)
    fprintf(stderr, ", %llu untracked bytes\n", (unsigned long long)s->untracked_bytes);
}

int mmsb_bus_close(mmsb_bus *bus) {
  if (!bus) return mmsb_fail(MMSB_EINVAL, "bus is NULL");
  if (bus->is_default)
    return mmsb_fail(MMSB_EBUSY, "the default bus lives as long as the process");
  if (mmsb_refuse_inside(bus, "mmsb_bus_close")) return MMSB_EBUSY;
  int rc = mmsb_bus_detach_log(bus);
  if (bus->cfg.stats) print_stats(bus);
  mmsb_graph_free(bus); /* first: its GPU nodes hold mirrors */
  mmsb_mirrors_free(bus);
  mmsb_trace_close(bus);
  for (uint32_t i = 0; i < bus->nregions; i++)
    if (bus->regions[i]) mmsb_region_release(bus->regions[i]);
  free(bus->regions);
  mmsb_nameidx_free(&bus->names);
  mmsb_router_free(bus);
  mmsb_accum_free(bus);
  free(bus->accums);
  mmsb_batch_reset(&bus->batch);
  free(bus->dir);
  pthread_mutex_destroy(&bus->lock);
  free(bus);
  return rc;
}

int mmsb_stats_get(const mmsb_bus *bus, mmsb_stats *out) {
  if (!out) return mmsb_fail(MMSB_EINVAL, "out is NULL");
  if (!bus) bus = mmsb_default_bus();
  *out = bus->stats;
  out->stores_outside = mmsb_outside_count();
  return MMSB_OK;
}

/* ---- the default bus ---- */

static mmsb_bus *default_bus;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void default_at_exit(void) {
  mmsb_bus_detach_log(default_bus);
  mmsb_trace_close(default_bus);
  if (default_bus->cfg.stats) print_stats(default_bus);
}

static void default_open(void) {
  mmsb_config cfg;
  mmsb_config_init(&cfg);
  if (mmsb_bus_open(&cfg, &default_bus) != MMSB_OK) {
    fprintf(stderr, "mmsb: default bus: %s; running in memory\n", mmsb_last_error());
    cfg.dir = NULL;
    if (mmsb_bus_open(&cfg, &default_bus) != MMSB_OK) {
      fprintf(stderr, "mmsb: cannot open the default bus: %s\n", mmsb_last_error());
      abort(); /* no address space for the arena: nothing can be tracked */
    }
  }
  default_bus->is_default = true;
  atexit(default_at_exit);
}

mmsb_bus *mmsb_default_bus(void) {
  pthread_once(&default_once, default_open);
  return default_bus;
}
