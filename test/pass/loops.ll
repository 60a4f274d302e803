; An affine store in a call-free loop is marked once, in the preheader, for
; the whole range the loop can write (the symbolic maximum trip count, so
; loops with early exits are covered too).  A loop that calls something is
; marked per store: the call could commit between iterations.
; RUN: %opt-mmsb -passes='mmsb-instrument,verify' -S %s | FileCheck %s
; RUN: %opt-mmsb -passes='mmsb-instrument,verify' -mmsb-loop-marks=false -S %s | FileCheck --check-prefix=NOLOOP %s

target datalayout = "e-m:e-p270:32:32-p271:32:32-p272:64:64-i64:64-i128:128-f80:128-n8:16:32:64-S128"
target triple = "x86_64-pc-linux-gnu"

; CHECK-LABEL: define void @fill(
; CHECK: entry:
; CHECK: call void @__mmsb_store_range(ptr %a, i64
; CHECK: loop:
; CHECK-NOT: __mmsb_mark
; CHECK: ret void
; NOLOOP-LABEL: define void @fill(
; NOLOOP: loop:
; NOLOOP: call void @__mmsb_mark
define void @fill(ptr %a, i64 %n) {
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i.next, %loop ]
  %p = getelementptr i64, ptr %a, i64 %i
  store i64 %i, ptr %p
  %i.next = add i64 %i, 1
  %c = icmp ult i64 %i.next, %n
  br i1 %c, label %loop, label %exit
exit:
  ret void
}

; Early exit: still one mark, sized by the maximum trip count.
; CHECK-LABEL: define void @search(
; CHECK: entry:
; CHECK: call void @__mmsb_store_range(ptr %a, i64
; CHECK: body:
; CHECK-NOT: __mmsb_mark
; CHECK: ret void
define void @search(ptr %a, ptr %b, i64 %n) {
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i.next, %body ]
  %q = getelementptr i8, ptr %b, i64 %i
  %v = load i8, ptr %q
  %z = icmp eq i8 %v, 0
  br i1 %z, label %exit, label %body
body:
  %p = getelementptr i8, ptr %a, i64 %i
  store i8 %v, ptr %p
  %i.next = add i64 %i, 1
  %c = icmp ult i64 %i.next, %n
  br i1 %c, label %loop, label %exit
exit:
  ret void
}

; CHECK-LABEL: define void @withcall(
; CHECK: loop:
; CHECK: call void @__mmsb_mark(ptr %p, i64 8)
; CHECK: call void @step()
define void @withcall(ptr %a, i64 %n) {
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i.next, %loop ]
  %p = getelementptr i64, ptr %a, i64 %i
  store i64 %i, ptr %p
  call void @step()
  %i.next = add i64 %i, 1
  %c = icmp ult i64 %i.next, %n
  br i1 %c, label %loop, label %exit
exit:
  ret void
}
declare void @step()
