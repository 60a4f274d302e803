// MMSB_TRACE writes every commit, its collection (with the steps of a
// collection from the mark logs) and the sinks it ran as Chrome trace-event
// JSON that parses and that Perfetto opens.  Here the first commit is taken
// from the logs, the second from the bitmaps (the node's first run folded
// its output's marks there).
// RUN: %cc-mmsb -O2 %s %rt -o %t && env MMSB_TRACE=%t.json %t
// RUN: python3 -c "import json,sys; e=json.load(open(sys.argv[1])); print(len(e), sorted({x['name'] for x in e}), all(x['ph']=='X' and x['dur']>=0 for x in e))" %t.json | FileCheck %s
// CHECK: 11 ['collect', 'commit', 'logs: fill', 'logs: partition', 'logs: sort and size', 'propagate', 'subscriber'] True
#include <mmsb/mmsb.h>

MMSB_STATE static long a[512], b[512];
static int sub(void *ctx, const mmsb_batch *batch) { (void)ctx; (void)batch; return 0; }
static int twice(void *ctx) { (void)ctx; for (int i = 0; i < 512; i++) b[i] = 2 * a[i]; return 0; }

int main(void) {
  mmsb_region *ra, *rb;
  mmsb_node *n;
  mmsb_region_find(mmsb_default_bus(), "a", &ra);
  mmsb_region_find(mmsb_default_bus(), "b", &rb);
  mmsb_node_create(mmsb_default_bus(), "twice", twice, NULL, &n);
  mmsb_node_input(n, ra);
  mmsb_node_output(n, rb, MMSB_DETECT_DIFF);
  mmsb_subscribe(mmsb_default_bus(), sub, NULL, NULL);
  a[1] = 1;
  mmsb_commit(NULL, NULL);
  a[2] = 2;
  mmsb_commit(NULL, NULL);
  return 0;
}
