; Modes: checked (default) instruments unknown pointers; annotated only
; state, MMSB_TRACKED fields, MMSB_ALLOC results and MMSB_PRODUCER
; functions; off changes nothing.
; RUN: %opt-mmsb -passes='mmsb-instrument,verify' -S %s | FileCheck --check-prefix=CHECKED %s
; RUN: %opt-mmsb -passes='mmsb-instrument,verify' -mmsb-mode=annotated -S %s | FileCheck --check-prefix=ANN %s
; RUN: %opt-mmsb -passes='mmsb-instrument,verify' -mmsb-mode=off -S %s | FileCheck --check-prefix=OFF %s

target datalayout = "e-m:e-p270:32:32-p271:32:32-p272:64:64-i64:64-i128:128-f80:128-n8:16:32:64-S128"
target triple = "x86_64-pc-linux-gnu"

@.tracked = private unnamed_addr constant [13 x i8] c"mmsb.tracked\00", section "llvm.metadata"
@.alloc = private unnamed_addr constant [11 x i8] c"mmsb.alloc\00", section "llvm.metadata"
@.producer = private unnamed_addr constant [14 x i8] c"mmsb.producer\00", section "llvm.metadata"
@.file = private unnamed_addr constant [4 x i8] c"t.c\00", section "llvm.metadata"
@llvm.global.annotations = appending global [2 x { ptr, ptr, ptr, i32, ptr }] [
  { ptr, ptr, ptr, i32, ptr } { ptr @make, ptr @.alloc, ptr @.file, i32 1, ptr null },
  { ptr, ptr, ptr, i32, ptr } { ptr @producer, ptr @.producer, ptr @.file, i32 2, ptr null }], section "llvm.metadata"

; CHECKED-LABEL: define void @unknown(
; CHECKED: call void @__mmsb_mark
; ANN-LABEL: define void @unknown(
; ANN-NOT: __mmsb_mark
; ANN: ret void
; OFF-LABEL: define void @unknown(
; OFF-NOT: __mmsb_mark
define void @unknown(ptr %p) {
  store i32 1, ptr %p
  ret void
}

; ANN-LABEL: define void @field(
; ANN: call void @__mmsb_mark
; ANN: store i32 2
define void @field(ptr %s) {
  %f = getelementptr inbounds { i32, i32 }, ptr %s, i32 0, i32 1
  %a = call ptr @llvm.ptr.annotation.p0.p0(ptr %f, ptr @.tracked, ptr @.file, i32 3, ptr null)
  store i32 2, ptr %a
  ret void
}

; ANN-LABEL: define void @fromalloc(
; ANN: call void @__mmsb_mark
; ANN: store i64 3
define void @fromalloc() {
  %m = call ptr @make()
  %q = getelementptr i64, ptr %m, i64 4
  store i64 3, ptr %q
  ret void
}

; ANN-LABEL: define void @producer(
; ANN: call void @__mmsb_mark
; ANN: store i64 4
define void @producer(ptr %p) {
  store i64 4, ptr %p
  ret void
}

; OFF-NOT: __mmsb_abi_check
; (no state here: with the pass off the module is unchanged)
declare ptr @make()
declare ptr @llvm.ptr.annotation.p0.p0(ptr, ptr, ptr, i32, ptr)
