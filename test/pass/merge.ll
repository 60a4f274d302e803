; Stores to one base in a block share one mark covering their span, unless
; a call (which could commit) stands between them.
; RUN: %opt-mmsb -passes='mmsb-instrument,verify' -S %s | FileCheck %s

target datalayout = "e-m:e-p270:32:32-p271:32:32-p272:64:64-i64:64-i128:128-f80:128-n8:16:32:64-S128"
target triple = "x86_64-pc-linux-gnu"

; Three fields of a struct: one mark for bytes [0, 24).
; CHECK-LABEL: define void @fields(
; CHECK: call void @__mmsb_mark(ptr %{{.*}}, i64 24)
; CHECK-NOT: __mmsb_mark
; CHECK: ret void
define void @fields(ptr %s) {
  store i64 1, ptr %s
  %b = getelementptr i8, ptr %s, i64 8
  store i64 2, ptr %b
  %c = getelementptr i8, ptr %s, i64 16
  store i64 3, ptr %c
  ret void
}

; CHECK-LABEL: define void @split(
; CHECK: call void @__mmsb_mark(ptr %s, i64 8)
; CHECK: store i64 1
; CHECK: call void @other()
; CHECK: call void @__mmsb_mark(ptr %b, i64 8)
; CHECK: store i64 2
define void @split(ptr %s) {
  store i64 1, ptr %s
  call void @other()
  %b = getelementptr i8, ptr %s, i64 8
  store i64 2, ptr %b
  ret void
}
declare void @other()
