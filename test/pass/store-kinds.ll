; Every store kind gets a mark before it: an inline range check on both
; windows, then (in a cold block) __mmsb_mark(address, length).
; RUN: %opt-mmsb -passes='mmsb-instrument,verify' -S %s | FileCheck %s

target datalayout = "e-m:e-p270:32:32-p271:32:32-p272:64:64-i64:64-i128:128-f80:128-n8:16:32:64-S128"
target triple = "x86_64-pc-linux-gnu"

; The module references the runtime's ABI version symbol.
; CHECK: @__mmsb_abi_check = internal constant ptr @__mmsb_abi_version_1
; CHECK: @llvm.compiler.used = {{.*}}@__mmsb_abi_check

; CHECK-LABEL: define void @scalar(
; CHECK: %[[A:.*]] = ptrtoint ptr %p to i64
; CHECK: load i64, ptr @__mmsb_windows
; CHECK: icmp ult i64
; CHECK: br i1 %{{.*}}, label %{{.*}}, label %{{.*}}, !prof
; CHECK: call void @__mmsb_mark(ptr %p, i64 8)
; CHECK: store i64 7, ptr %p
define void @scalar(ptr %p) {
  store i64 7, ptr %p
  ret void
}

; CHECK-LABEL: define void @vector(
; CHECK: call void @__mmsb_mark(ptr %p, i64 16)
; CHECK: store <4 x i32>
define void @vector(ptr %p, <4 x i32> %v) {
  store <4 x i32> %v, ptr %p, align 4
  ret void
}

; CHECK-LABEL: define void @atomics(
; CHECK: call void @__mmsb_mark(ptr %a, i64 4)
; CHECK: store atomic i32
; CHECK: call void @__mmsb_mark(ptr %b, i64 8)
; CHECK: atomicrmw add
; CHECK: call void @__mmsb_mark(ptr %c, i64 8)
; CHECK: cmpxchg
define void @atomics(ptr %a, ptr %b, ptr %c) {
  store atomic i32 1, ptr %a seq_cst, align 4
  %x = atomicrmw add ptr %b, i64 1 seq_cst
  %y = cmpxchg ptr %c, i64 0, i64 1 seq_cst seq_cst
  ret void
}

; Memory intrinsics mark their whole destination; a constant length up to
; 64 KiB inline, anything else through __mmsb_store_range.
; CHECK-LABEL: define void @intrinsics(
; CHECK: call void @__mmsb_mark(ptr %d, i64 101)
; CHECK: call void @llvm.memcpy
; CHECK: call void @__mmsb_store_range(ptr %d, i64 %n)
; CHECK: call void @llvm.memmove
; CHECK: call void @__mmsb_store_range(ptr %d, i64 1000000)
; CHECK: call void @llvm.memset
define void @intrinsics(ptr %d, ptr %s, i64 %n) {
  call void @llvm.memcpy.p0.p0.i64(ptr %d, ptr %s, i64 101, i1 false)
  call void @llvm.memmove.p0.p0.i64(ptr %d, ptr %s, i64 %n, i1 false)
  call void @llvm.memset.p0.i64(ptr %d, i8 0, i64 1000000, i1 false)
  ret void
}

; A masked store marks the whole vector, whatever the mask; a scatter marks
; each lane's address.
; CHECK-LABEL: define void @masked(
; CHECK: call void @__mmsb_mark(ptr %p, i64 32)
; CHECK: call void @llvm.masked.store
; CHECK: %[[L0:.*]] = extractelement <2 x ptr> %ptrs, i64 0
; CHECK: call void @__mmsb_mark(ptr %[[L0]], i64 8)
; CHECK: %[[L1:.*]] = extractelement <2 x ptr> %ptrs, i64 1
; CHECK: call void @__mmsb_mark(ptr %[[L1]], i64 8)
; CHECK: call void @llvm.masked.scatter
define void @masked(ptr %p, <8 x i32> %v, <8 x i1> %m, <2 x ptr> %ptrs, <2 x i64> %w, <2 x i1> %m2) {
  call void @llvm.masked.store.v8i32.p0(<8 x i32> %v, ptr %p, i32 4, <8 x i1> %m)
  call void @llvm.masked.scatter.v2i64.v2p0(<2 x i64> %w, <2 x ptr> %ptrs, i32 8, <2 x i1> %m2)
  ret void
}

; Unaligned and cross-granule: the mark carries the exact address and
; length; the runtime marks every granule the bytes touch.
; CHECK-LABEL: define void @unaligned(
; CHECK: call void @__mmsb_mark(ptr %q, i64 8)
; CHECK: store i64 1, ptr %q, align 1
define void @unaligned(ptr %p) {
  %q = getelementptr i8, ptr %p, i64 5
  store i64 1, ptr %q, align 1
  ret void
}

declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)
declare void @llvm.memmove.p0.p0.i64(ptr, ptr, i64, i1)
declare void @llvm.memset.p0.i64(ptr, i8, i64, i1)
declare void @llvm.masked.store.v8i32.p0(<8 x i32>, ptr, i32, <8 x i1>)
declare void @llvm.masked.scatter.v2i64.v2p0(<2 x i64>, <2 x ptr>, i32, <2 x i1>)
