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
// RUN: not %{mmsb_bin}/mmsb frobnicate %t.dir 2>&1 | FileCheck --check-prefix=USAGE %s
// RUN: %{mmsb_bin}/mmsb info 2>/dev/null; test $? = 2
// RUN: printf 'garbage' | dd of=%t.dir/seg-00000000000000000001.log bs=1 seek=100 conv=notrunc 2>/dev/null
// RUN: not %{mmsb_bin}/mmsb verify %t.dir | FileCheck --check-prefix=BAD %s
// INFO: epoch 3 (checkpoint at 0, log holds 3 epochs 1..3
// INFO: region 1 'grid': 8192 bytes
// JSON: "epoch": 3
// JSON: "name": "grid", "size": 8192
// LOG: region 1 'grid' 8192 bytes
// LOG: epoch 1: 1 deltas
// LOG: epoch 3: 2 deltas
// VERIFY: OK {{.*}}: 4 records, epoch 3, every digest verified
// EXPORT: 0000800 200
// DIFF: grid [800, 801) 1 bytes
// DIFF: grid [4096, 4097) 1 bytes
// DIFF: bytes differ between epoch 1 and 3
// AGAIN: recovered epoch 3, grid[100]=200
// USAGE: usage: mmsb info
// BAD: FAIL
#include <mmsb/mmsb.h>
#include <stdio.h>

MMSB_STATE static long grid[1024];

int main(void) {
  if (mmsb_epoch(NULL) > 0) { /* a second run: the state came back */
    printf("recovered epoch %llu, grid[100]=%ld\n", (unsigned long long)mmsb_epoch(NULL), grid[100]);
    return 0;
  }
  grid[100] = 100;
  mmsb_commit(NULL, NULL);
  grid[100] = 200;
  mmsb_commit(NULL, NULL);
  grid[512] = 7;
  grid[3] = 1;
  mmsb_commit(NULL, NULL);
  return 0;
}
