; An MMSB_STATE global becomes page-aligned; a constructor registers it
; before main; stores to it need no range check.
; RUN: %opt-mmsb -passes='mmsb-instrument,verify' -S %s | FileCheck %s

target datalayout = "e-m:e-p270:32:32-p271:32:32-p272:64:64-i64:64-i128:128-f80:128-n8:16:32:64-S128"
target triple = "x86_64-pc-linux-gnu"

@book = global [512 x i64] zeroinitializer, align 16
@.str = private unnamed_addr constant [11 x i8] c"mmsb.state\00", section "llvm.metadata"
@.file = private unnamed_addr constant [4 x i8] c"t.c\00", section "llvm.metadata"
@llvm.global.annotations = appending global [1 x { ptr, ptr, ptr, i32, ptr }] [{ ptr, ptr, ptr, i32, ptr } { ptr @book, ptr @.str, ptr @.file, i32 1, ptr null }], section "llvm.metadata"

; CHECK: @book = global [512 x i64] zeroinitializer, align 4096
; CHECK: @mmsb.name = private unnamed_addr constant [5 x i8] c"book\00"
; CHECK: @llvm.global_ctors = appending global {{.*}} { i32 1, ptr @mmsb.module_ctor, ptr null }

; CHECK-LABEL: define void @set(
; CHECK-NOT: __mmsb_windows
; CHECK: call ptr @llvm.threadlocal.address.p0(ptr @__mmsb_log)
; CHECK: store i64 %v
define void @set(i64 %i, i64 %v) {
  %p = getelementptr [512 x i64], ptr @book, i64 0, i64 %i
  store i64 %v, ptr %p
  ret void
}

; CHECK-LABEL: define internal void @mmsb.module_ctor()
; CHECK: call void @__mmsb_register_state(ptr @mmsb.name, ptr @book, i64 4096)
