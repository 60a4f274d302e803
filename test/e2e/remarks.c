// clang explains each store with -Rpass=mmsb / -Rpass-missed=mmsb, with
// source locations; from LLVM 22 -mllvm options of the plugin work with
// -fpass-plugin alone.
// RUN: %cc-mmsb -O2 -g -c %s -o /dev/null -Rpass=mmsb -Rpass-missed=mmsb 2>&1 | FileCheck %s
// RUN: %if llvm22 %{ %cc-mmsb -O2 -c %s -o /dev/null -mllvm -mmsb-mode=annotated -Rpass-missed=mmsb 2>&1 | FileCheck --check-prefix=ANN %s %}
// CHECK-DAG: remarks.c:[[@LINE+9]]:{{[0-9]+}}: remark: store instrumented: MMSB_STATE global
// CHECK-DAG: remarks.c:[[@LINE+9]]:{{[0-9]+}}: remark: store instrumented: address checked at run time
// CHECK-DAG: remarks.c:[[@LINE+12]]:{{[0-9]+}}: remark: store not instrumented: global that is not state
// ANN: store not instrumented: not annotated (annotated mode)
#include <mmsb/mmsb.h>

MMSB_STATE long state[512];
long plain[16];

void set_state(int i) { state[i] = 1; }
void set_any(long *p) { *p = 2; }
__attribute__((noinline)) void touch(volatile long *p) { (void)p; }
void set_plain(int i) {
  touch(&plain[0]);
  plain[i & 15] = 3;
}
