; In the -O0 and -O2 pipelines the pass runs once, at OptimizerLast.
; RUN: %opt-mmsb -passes='default<O0>' -S %s | FileCheck %s
; RUN: %opt-mmsb -passes='default<O2>' -S %s | FileCheck %s
; RUN: %opt-mmsb -passes='default<O2>' -S %s | %opt-mmsb -passes=verify -disable-output

target datalayout = "e-m:e-p270:32:32-p271:32:32-p272:64:64-i64:64-i128:128-f80:128-n8:16:32:64-S128"
target triple = "x86_64-pc-linux-gnu"

; CHECK-LABEL: define {{.*}}void @f(
; CHECK-COUNT-1: call void @__mmsb_mark
; CHECK-NOT: call void @__mmsb_mark
; CHECK: ret void
define void @f(ptr %p) noinline {
  store volatile i32 1, ptr %p
  ret void
}
