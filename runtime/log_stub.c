/* log_stub.c - placeholder until the durable log lands (issue 4). */
#include "internal.h"

int mmsb_bus_attach_log(mmsb_bus *bus) {
  (void)bus;
  return mmsb_fail(MMSB_EUNSUPPORTED, "the durable log is not built yet");
}
int mmsb_bus_detach_log(mmsb_bus *bus) { (void)bus; return MMSB_OK; }
int mmsb_checkpoint(mmsb_bus *bus) {
  (void)bus;
  return mmsb_fail(MMSB_EUNSUPPORTED, "checkpoints are not built yet");
}
