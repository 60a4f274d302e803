; libc functions that write a buffer they are given mark it after the call,
; as the sanitizers' interceptors do.
; RUN: %opt-mmsb -passes='mmsb-instrument,verify' -S %s | FileCheck %s

target datalayout = "e-m:e-p270:32:32-p271:32:32-p272:64:64-i64:64-i128:128-f80:128-n8:16:32:64-S128"
target triple = "x86_64-pc-linux-gnu"

; CHECK-LABEL: define void @calls(
; CHECK: call ptr @strcpy(ptr %d, ptr %s)
; CHECK-NEXT: call void @__mmsb_store_cstr(ptr %d)
; CHECK: call i64 @read(i32 0, ptr %d, i64 %n)
; CHECK-NEXT: call void @__mmsb_store_range(ptr %d, i64 %n)
; CHECK: call i64 @fread(ptr %d, i64 8, i64 %n, ptr %f)
; CHECK-NEXT: %[[M:.*]] = mul i64 8, %n
; CHECK: call void @__mmsb_store_range(ptr %d, i64 %[[M]])
; CHECK: call i32 (ptr, i64, ptr, ...) @snprintf(ptr %d, i64 64, ptr %s)
; CHECK-NEXT: call void @__mmsb_store_range(ptr %d, i64 64)
define void @calls(ptr %d, ptr %s, i64 %n, ptr %f) {
  %1 = call ptr @strcpy(ptr %d, ptr %s)
  %2 = call i64 @read(i32 0, ptr %d, i64 %n)
  %3 = call i64 @fread(ptr %d, i64 8, i64 %n, ptr %f)
  %4 = call i32 (ptr, i64, ptr, ...) @snprintf(ptr %d, i64 64, ptr %s)
  ret void
}
declare ptr @strcpy(ptr, ptr)
declare i64 @read(i32, ptr, i64)
declare i64 @fread(ptr, i64, i64, ptr)
declare i32 @snprintf(ptr, i64, ptr, ...)
