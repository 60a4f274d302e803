; Stores proven outside tracked memory are left alone, each with its reason.
; RUN: %opt-mmsb -passes='mmsb-instrument,verify' -pass-remarks=mmsb -pass-remarks-missed=mmsb -S %s 2>%t.remarks | FileCheck %s
; RUN: FileCheck --check-prefix=REMARK %s < %t.remarks

target datalayout = "e-m:e-p270:32:32-p271:32:32-p272:64:64-i64:64-i128:128-f80:128-n8:16:32:64-S128"
target triple = "x86_64-pc-linux-gnu"

@plain = global i64 0
@ro = constant i64 1
@ext = external global i64

; REMARK-DAG: store not instrumented: non-escaping alloca
; REMARK-DAG: store not instrumented: global that is not state
; REMARK-DAG: store not instrumented: constant address
; REMARK-DAG: store instrumented: address checked at run time

; CHECK-LABEL: define void @skips(
; CHECK-NOT: __mmsb_mark
; CHECK: ret void
define void @skips() {
  %a = alloca i64
  store i64 1, ptr %a
  store i64 2, ptr @plain
  store i64 3, ptr null
  ret void
}

; An alloca whose address escapes may be reached through a tracked pointer
; later: it is checked.  So is a global declared here but defined elsewhere
; (another module's state).
; CHECK-LABEL: define void @escapes(
; CHECK: call void @__mmsb_mark(ptr %a, i64 8)
; CHECK: store i64 1, ptr %a
; CHECK: call void @__mmsb_mark(ptr @ext, i64 8)
; CHECK: store i64 2, ptr @ext
define void @escapes() {
  %a = alloca i64
  call void @take(ptr %a)
  store i64 1, ptr %a
  store i64 2, ptr @ext
  ret void
}

declare void @take(ptr)
