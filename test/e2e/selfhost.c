// Real code: the project's own runtime and two of its test programs, built
// as ordinary programs with the pass in checked mode, behave exactly as
// without it (same output), and the instrumented IR verifies.
// (test_commit is not used: its oracle test writes state behind the
// runtime's back on purpose, which the pass then rightly records.)
// RUN: %cc-mmsb -O2 -D_GNU_SOURCE -DXXH_INLINE_ALL -I%{mmsb_src}/runtime -I%{mmsb_src}/test/unit %{mmsb_src}/runtime/*.c %{mmsb_src}/test/unit/test_delta.c -lm -lzstd -lffi -ldl -lpthread -o %t.delta
// RUN: clang -O2 -D_GNU_SOURCE -DXXH_INLINE_ALL -I%{mmsb_src}/include -I%{mmsb_src}/runtime -I%{mmsb_src}/test/unit %{mmsb_src}/runtime/*.c %{mmsb_src}/test/unit/test_delta.c -lm -lzstd -lffi -ldl -lpthread -o %t.delta.plain
// RUN: %t.delta > %t.delta.out && %t.delta.plain > %t.delta.plain.out
// RUN: diff %t.delta.out %t.delta.plain.out
// RUN: FileCheck --check-prefix=DELTA %s < %t.delta.out
// RUN: %cc-mmsb -O2 -D_GNU_SOURCE -DXXH_INLINE_ALL -I%{mmsb_src}/runtime -I%{mmsb_src}/test/unit %{mmsb_src}/runtime/*.c %{mmsb_src}/test/unit/test_threads.c -lm -lzstd -lffi -ldl -lpthread -o %t.threads
// RUN: %t.threads | FileCheck --check-prefix=THREADS %s
// RUN: %cc-mmsb -O2 -D_GNU_SOURCE -I%{mmsb_src}/runtime -S -emit-llvm %{mmsb_src}/runtime/commit.c -o %t.ll
// RUN: %opt-mmsb -passes=verify -disable-output %t.ll
// DELTA: test_delta: {{[0-9]+}} checks, 0 failed
// THREADS: test_threads: {{[0-9]+}} checks, 0 failed
