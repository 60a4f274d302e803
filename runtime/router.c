/*
 * router.c - the one place that knows the order in which an epoch reaches
 * its sinks: propagation, then the log (write-ahead: nothing downstream sees
 * an epoch the log does not have), then device mirrors, then subscribers.
 * Sinks of one stage run in registration order.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

int mmsb_router_add(mmsb_bus *bus, int stage, mmsb_sink_fn fn, void *ctx,
                    unsigned *id) {
  mmsb_sink *s = mmsb_grow(bus->sinks, &bus->cap_sinks, (size_t)bus->nsinks + 1, sizeof *s);
  if (!s) return mmsb_fail(MMSB_ENOMEM, "sink table");
  bus->sinks = s;
  unsigned at = bus->nsinks;
  while (at > 0 && bus->sinks[at - 1].stage > stage) at--;
  memmove(&bus->sinks[at + 1], &bus->sinks[at],
          (bus->nsinks - at) * sizeof *bus->sinks);
  bus->sinks[at] = (mmsb_sink){++bus->next_sink_id, stage, fn, ctx};
  bus->nsinks++;
  if (id) *id = bus->next_sink_id;
  return MMSB_OK;
}

int mmsb_router_remove(mmsb_bus *bus, unsigned id) {
  for (unsigned i = 0; i < bus->nsinks; i++) {
    if (bus->sinks[i].id != id) continue;
    memmove(&bus->sinks[i], &bus->sinks[i + 1],
            (bus->nsinks - i - 1) * sizeof *bus->sinks);
    bus->nsinks--;
    return MMSB_OK;
  }
  return mmsb_fail(MMSB_ENOTFOUND, "no sink %u", id);
}

/* Runs the sinks of stages [first, last]; the first failure stops the epoch
 * from reaching the sinks after it (an epoch the log refused must not reach
 * a mirror). */
int mmsb_route(mmsb_bus *bus, const mmsb_batch *b, int first, int last) {
  static const char *stage_name[] = {"propagate", "log", "mirror", "subscriber"};
  for (unsigned i = 0; i < bus->nsinks; i++) {
    mmsb_sink *s = &bus->sinks[i];
    if (s->stage < first || s->stage > last) continue;
    uint64_t t0 = bus->trace ? mmsb_now_ns() : 0;
    int rc = s->fn(s->ctx, bus, b);
    if (bus->trace)
      mmsb_trace_event(bus, stage_name[s->stage], t0, mmsb_now_ns(), mmsb_batch_epoch(b),
                       mmsb_batch_count(b));
    if (rc) return rc;
  }
  return MMSB_OK;
}

/* ---- subscribers: user callbacks, the last stage ---- */

typedef struct sub_ctx {
  mmsb_subscriber_fn fn;
  void *ctx;
} sub_ctx;

static int call_subscriber(void *ctx, mmsb_bus *bus, const mmsb_batch *b) {
  (void)bus;
  sub_ctx *s = ctx;
  if (s->fn(s->ctx, b) != 0)
    return mmsb_fail(MMSB_EIO, "a subscriber failed epoch %llu (the epoch stays "
                     "committed)", (unsigned long long)mmsb_batch_epoch(b));
  return MMSB_OK;
}

int mmsb_subscribe(mmsb_bus *bus, mmsb_subscriber_fn fn, void *ctx, unsigned *id) {
  if (!bus || !fn) return mmsb_fail(MMSB_EINVAL, "bus or fn is NULL");
  if (mmsb_refuse_inside(bus, "mmsb_subscribe")) return MMSB_EBUSY;
  sub_ctx *s = malloc(sizeof *s);
  if (!s) return mmsb_fail(MMSB_ENOMEM, "subscriber");
  *s = (sub_ctx){fn, ctx};
  pthread_mutex_lock(&bus->lock);
  int rc = mmsb_router_add(bus, MMSB_STAGE_SUBSCRIBE, call_subscriber, s, id);
  pthread_mutex_unlock(&bus->lock);
  if (rc) free(s);
  return rc;
}

int mmsb_unsubscribe(mmsb_bus *bus, unsigned id) {
  if (!bus) return mmsb_fail(MMSB_EINVAL, "bus is NULL");
  if (mmsb_refuse_inside(bus, "mmsb_unsubscribe")) return MMSB_EBUSY;
  pthread_mutex_lock(&bus->lock);
  int rc = mmsb_fail(MMSB_ENOTFOUND, "no subscriber %u", id);
  for (unsigned i = 0; i < bus->nsinks; i++) {
    if (bus->sinks[i].id == id && bus->sinks[i].fn == call_subscriber) {
      free(bus->sinks[i].ctx);
      rc = mmsb_router_remove(bus, id);
      break;
    }
  }
  pthread_mutex_unlock(&bus->lock);
  return rc;
}

/* Frees the contexts the router owns (subscribers) when the bus closes. */
void mmsb_router_free(mmsb_bus *bus) {
  for (unsigned i = 0; i < bus->nsinks; i++)
    if (bus->sinks[i].fn == call_subscriber) free(bus->sinks[i].ctx);
  free(bus->sinks);
  bus->sinks = NULL;
  bus->nsinks = bus->cap_sinks = 0;
}
