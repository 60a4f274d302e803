/*
 * trace.c - MMSB_TRACE: every commit and every sink it runs, as Chrome
 * trace-event JSON ("complete" events), which Perfetto and chrome://tracing
 * open.  The file is a JSON array written as events happen and closed when
 * the bus closes (or the process exits, for the default bus).
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct mmsb_trace {
  FILE *f;
  uint64_t t0;
  int n;
};

int mmsb_trace_open(mmsb_bus *bus, const char *path) {
  FILE *f = fopen(path, "w");
  if (!f) return mmsb_fail(MMSB_EIO, "MMSB_TRACE: cannot open %s", path);
  bus->trace = calloc(1, sizeof *bus->trace);
  if (!bus->trace) {
    fclose(f);
    return mmsb_fail(MMSB_ENOMEM, "trace");
  }
  bus->trace->f = f;
  bus->trace->t0 = mmsb_now_ns();
  fputs("[\n", f);
  return MMSB_OK;
}

void mmsb_trace_event(mmsb_bus *bus, const char *name, uint64_t start_ns, uint64_t end_ns,
                      mmsb_epoch_t epoch, size_t deltas) {
  mmsb_trace *t = bus->trace;
  if (!t) return;
  fprintf(t->f, "%s{\"name\": \"%s\", \"cat\": \"mmsb\", \"ph\": \"X\", \"ts\": %.3f, "
          "\"dur\": %.3f, \"pid\": %d, \"tid\": 1, \"args\": {\"epoch\": %llu, \"deltas\": %zu}}",
          t->n++ ? ",\n" : "", name, (start_ns - t->t0) / 1e3, (end_ns - start_ns) / 1e3,
          (int)getpid(), (unsigned long long)epoch, deltas);
}

void mmsb_trace_close(mmsb_bus *bus) {
  mmsb_trace *t = bus->trace;
  if (!t) return;
  fputs("\n]\n", t->f);
  fclose(t->f);
  free(t);
  bus->trace = NULL;
}
