// A program logs to MMSB_DIR (no setup code); the mmsb CLI reads the log
// without it: info, log, verify, export, diff, --json, exit codes.
// RUN: rm -rf %t.dir && %cc-mmsb -O2 %s %rt -o %t
// RUN: env MMSB_DIR=%t.dir %t
// RUN: %{mmsb_bin}/mmsb info %t.dir | FileCheck --check-prefix=INFO %s
// RUN: %{mmsb_bin}/mmsb info %t.dir --json | FileCheck --check-prefix=JSON %s
// RUN: %{mmsb_bin}/mmsb log %t.dir | FileCheck --check-prefix=LOG %s
// RUN: %{mmsb_bin}/mmsb verify %t.dir | FileCheck --check-prefix=VERIFY %s
// RUN: %{mmsb_bin}/mmsb export %t.dir --region grid --epoch 2 -o %t.bin
// RUN: od -A d -t u8 -j 800 -N 8 %t.bin | FileCheck --check-prefix=EXPORT %s
// RUN: %{mmsb_bin}/mmsb diff %t.dir 1 3 | FileCheck --check-prefix=DIFF %s
// RUN: env MMSB_DIR=%t.dir %t | FileCheck --check-prefix=AGAIN %s
// RUN: %{mmsb_bin}/mmsb graph %t.dir | FileCheck --check-prefix=GRAPH %s
// RUN: not %{mmsb_bin}/mmsb frobnicate %t.dir 2>&1 | FileCheck --check-prefix=USAGE %s
// RUN: %{mmsb_bin}/mmsb info 2>/dev/null; test $? = 2
// RUN: printf 'garbage' | dd of=%t.dir/seg-00000000000000000001.log bs=1 seek=100 conv=notrunc 2>/dev/null
// RUN: not %{mmsb_bin}/mmsb verify %t.dir | FileCheck --check-prefix=BAD %s
// INFO: epoch 3 (checkpoint at 0, log holds 3 epochs 1..3
// INFO: region 1 'grid': 8192 bytes
// INFO: region 2 'nonzero': 8 bytes
// JSON: "epoch": 3
// JSON: "name": "grid", "size": 8192
// LOG: region 1 'grid' 8192 bytes
// LOG: graph from epoch 1: 1 nodes
// LOG: epoch 1: 2 deltas
// LOG: epoch 3: 3 deltas
// VERIFY: OK {{.*}}: 6 records, epoch 3, every digest verified
// EXPORT: 0000800 200
// DIFF: grid [800, 801) 1 bytes
// DIFF: grid [4096, 4097) 1 bytes
// DIFF: bytes differ between epoch 1 and 3
// AGAIN: recovered epoch 3, grid[100]=200, nonzero=3
// GRAPH: digraph mmsb {
// GRAPH: "n:count" [shape=ellipse];
// GRAPH: "r:grid" -> "n:count";
// GRAPH: "n:count" -> "r:nonzero" [style=bold];
// USAGE: usage: mmsb info
// BAD: FAIL
#include <mmsb/mmsb.h>
#include <stdio.h>

MMSB_STATE static long grid[1024];

/* A derived region: how many words of grid are not zero. */
static long *nonzero;
static int count(void *ctx) {
  (void)ctx;
  long n = 0;
  for (int i = 0; i < 1024; i++) n += grid[i] != 0;
  *nonzero = n;
  return 0;
}

int main(void) {
  mmsb_region *g, *nz;
  mmsb_region_find(mmsb_default_bus(), "grid", &g);
  mmsb_region_create(mmsb_default_bus(), "nonzero", 8, 0, &nz);
  nonzero = mmsb_region_data(nz);
  if (mmsb_epoch(NULL) > 0) { /* a second run: the state came back */
    printf("recovered epoch %llu, grid[100]=%ld, nonzero=%ld\n",
           (unsigned long long)mmsb_epoch(NULL), grid[100], *nonzero);
    return 0;
  }
  mmsb_node *n;
  mmsb_node_create(mmsb_default_bus(), "count", count, NULL, &n);
  mmsb_node_input(n, g);
  mmsb_node_output(n, nz, MMSB_DETECT_DIFF);
  grid[100] = 100;
  mmsb_commit(NULL, NULL);
  grid[100] = 200;
  mmsb_commit(NULL, NULL);
  grid[512] = 7;
  grid[3] = 1;
  mmsb_commit(NULL, NULL);
  return 0;
}
