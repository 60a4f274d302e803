// mmsb-cc as a drop-in compiler: one step, separate compile and link steps,
// C++ through mmsb-c++, -mmsb-mode passed through.  With the pass off the
// oracle must see the untracked bytes (proof that it is live).
// REQUIRES: primary
// RUN: %mmsb-cc -O2 %s -o %t.one && env MMSB_VERIFY=1 %t.one | FileCheck %s
// RUN: %mmsb-cc -O2 -c %s -o %t.o && %mmsb-cc %t.o -o %t.two && env MMSB_VERIFY=1 %t.two | FileCheck %s
// RUN: %mmsb-c++ -O2 -x c++ %s -o %t.cxx && env MMSB_VERIFY=1 %t.cxx | FileCheck %s
// RUN: %mmsb-cc -O2 -mmsb-mode=off %s -o %t.off && env MMSB_VERIFY=1 %t.off 2>/dev/null | FileCheck --check-prefix=OFF %s
// CHECK: deltas=2 untracked=0
// OFF: untracked=8
#include <mmsb/mmsb.h>
#include <stdio.h>

MMSB_STATE static long table[1024];

int main(void) {
  for (int i = 0; i < 8; i++) table[i * 128] = i + 1; /* two pages */
  mmsb_commit(NULL, NULL);
  mmsb_stats st;
  mmsb_stats_get(NULL, &st);
  printf("deltas=%llu untracked=%llu\n", (unsigned long long)st.deltas,
         (unsigned long long)st.untracked_bytes);
  return 0;
}
