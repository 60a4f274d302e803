//===- Instrument.cpp - MMSB store instrumentation ------------------------===//
//
// Turns stores into tracked state into marks in the MMSB runtime's per-thread
// mark log (runtime/mmsb_abi.h), so that mmsb_commit() can make byte-exact
// deltas of them.  Modelled on ThreadSanitizer.cpp: one pass class,
// cl::opt options, STATISTIC counters, IRBuilder, and a reason for every
// store it leaves alone (-Rpass=mmsb / -Rpass-missed=mmsb).
//
// Per function, in order, before the IR is changed:
//   1. collect every access that writes memory (stores, atomics, memory
//      intrinsics, masked stores and scatters, libc calls that write a
//      buffer they are given);
//   2. classify its pointer: proven untracked (skip), known tracked (an
//      MMSB_STATE global: no range check), or unknown (inline range check);
//   3. cover affine stores in call-free loops by one range mark in the
//      preheader (SCEV), and merge stores to one base in a block;
// then emit the marks.
//===----------------------------------------------------------------------===//

#include "Instrument.h"

#include "llvm/ADT/SmallPtrSet.h"
#include "llvm/ADT/Statistic.h"
#include "llvm/Analysis/CaptureTracking.h"
#include "llvm/Analysis/LoopInfo.h"
#include "llvm/Analysis/OptimizationRemarkEmitter.h"
#include "llvm/Analysis/ScalarEvolution.h"
#include "llvm/Analysis/ScalarEvolutionExpressions.h"
#include "llvm/Analysis/ValueTracking.h"
#include "llvm/IR/Constants.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/InstIterator.h"
#include "llvm/IR/IntrinsicInst.h"
#include "llvm/IR/MDBuilder.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Transforms/Utils/BasicBlockUtils.h"
#include "llvm/Transforms/Utils/ModuleUtils.h"
#include "llvm/Transforms/Utils/ScalarEvolutionExpander.h"

using namespace llvm;

#define DEBUG_TYPE "mmsb"

namespace {
enum class Mode { Checked, Annotated, Off };
} // namespace

static cl::opt<Mode> ClMode(
    "mmsb-mode", cl::desc("Which stores MMSB instruments"),
    cl::values(clEnumValN(Mode::Checked, "checked",
                          "every store not proven outside tracked memory"),
               clEnumValN(Mode::Annotated, "annotated",
                          "only stores proven or annotated to be tracked"),
               clEnumValN(Mode::Off, "off", "none")),
    cl::init(Mode::Checked));
static cl::opt<bool> ClLoopMarks("mmsb-loop-marks",
                                 cl::desc("One range mark per affine loop store"),
                                 cl::init(true));
static cl::opt<bool> ClMerge("mmsb-merge",
                             cl::desc("Merge marks of nearby stores in a block"),
                             cl::init(true));
static cl::opt<unsigned> ClMergeSpan("mmsb-merge-span",
                                     cl::desc("Largest span a merged mark covers"),
                                     cl::init(256));
static cl::opt<bool> ClInline("mmsb-inline",
                              cl::desc("Emit the mark fast path inline"),
                              cl::init(true));
static cl::opt<unsigned> ClMaxLoopStride(
    "mmsb-max-loop-stride",
    cl::desc("Largest stride (bytes) of a loop store covered by a range mark"),
    cl::init(64));

STATISTIC(NumInstrumented, "Marks emitted for single stores");
STATISTIC(NumKnownTracked, "Stores to MMSB_STATE globals (no range check)");
STATISTIC(NumMerged, "Stores covered by another store's merged mark");
STATISTIC(NumLoopMarks, "Loop stores covered by one range mark per loop");
STATISTIC(NumMemIntrinsics, "Memory intrinsics instrumented");
STATISTIC(NumLibCalls, "libc calls whose output buffer is marked");
STATISTIC(NumSkippedAlloca, "Stores skipped: non-escaping alloca");
STATISTIC(NumSkippedGlobal, "Stores skipped: global that is not state");
STATISTIC(NumSkippedConstant, "Stores skipped: constant address");
STATISTIC(NumSkippedMode, "Stores skipped: not annotated (annotated mode)");
STATISTIC(NumStateGlobals, "MMSB_STATE globals registered");

namespace {

/// How a written pointer relates to tracked memory.
enum class Kind { Skip, Known, Unknown };

/// One memory write to instrument.
struct Access {
  Instruction *I;
  Value *Ptr;
  Value *Size;        // bytes written: a ConstantInt or a runtime value
  Kind K = Kind::Unknown;
  bool After = false; // mark after I (libc calls), not before
  bool CString = false; // the size is strlen(Ptr) + 1 after the call
  Value *SizeMul = nullptr; // libc: Size * SizeMul (fread's nmemb)
  bool Covered = false; // by a loop mark or a merged mark
  int64_t MergeLen = 0; // >0: this access marks [Ptr + MergeOff, +MergeLen)
  int64_t MergeOff = 0;
  Value *MergeBase = nullptr;
};

class MMSBInstrument {
public:
  MMSBInstrument(Module &M, FunctionAnalysisManager &FAM) : M(M), FAM(FAM) {}
  bool run();

private:
  void readAnnotations();
  void placeStateGlobals();
  void emitModuleCtor();
  void emitAbiCheck();
  void declareRuntime();
  bool instrumentFunction(Function &F);
  void collect(Function &F, SmallVectorImpl<Access> &Out);
  Kind classify(Function &F, Value *Ptr, const char *&Why);
  bool isAnnotatedPointer(Value *Ptr);
  void coverLoops(Function &F, SmallVectorImpl<Access> &Acc);
  void mergeInBlocks(SmallVectorImpl<Access> &Acc);
  void emitMark(Instruction *Before, Value *Ptr, Value *Size, bool Known);
  void emitLogAppend(IRBuilder<> &IRB, Value *Addr, uint64_t Size);

  Module &M;
  FunctionAnalysisManager &FAM;
  const DataLayout *DL = nullptr;
  SmallPtrSet<GlobalVariable *, 8> StateGlobals;
  SmallPtrSet<Function *, 8> AllocFns, ProducerFns;
  Type *IntptrTy = nullptr;
  StructType *WindowTy = nullptr, *LogTy = nullptr;
  GlobalVariable *Windows = nullptr, *Log = nullptr;
  FunctionCallee StoreRange, StoreCStr, LogRefill, RegisterState, Mark;
};

} // namespace

/// Strips casts and returns the annotation string of an
/// llvm.global.annotations entry, or "".
static StringRef annotationString(Value *V) {
  auto *GV = dyn_cast<GlobalVariable>(V->stripPointerCasts());
  if (!GV || !GV->hasInitializer())
    return "";
  if (auto *CDA = dyn_cast<ConstantDataArray>(GV->getInitializer()))
    if (CDA->isCString())
      return CDA->getAsCString();
  return "";
}

void MMSBInstrument::readAnnotations() {
  GlobalVariable *A = M.getGlobalVariable("llvm.global.annotations");
  if (!A || !A->hasInitializer())
    return;
  auto *Arr = dyn_cast<ConstantArray>(A->getInitializer());
  if (!Arr)
    return;
  for (Value *Op : Arr->operands()) {
    auto *E = dyn_cast<ConstantStruct>(Op);
    if (!E || E->getNumOperands() < 2)
      continue;
    Value *Target = E->getOperand(0)->stripPointerCasts();
    StringRef What = annotationString(E->getOperand(1));
    if (What == "mmsb.state") {
      if (auto *GV = dyn_cast<GlobalVariable>(Target))
        StateGlobals.insert(GV);
    } else if (What == "mmsb.alloc") {
      if (auto *Fn = dyn_cast<Function>(Target))
        AllocFns.insert(Fn);
    } else if (What == "mmsb.producer") {
      if (auto *Fn = dyn_cast<Function>(Target))
        ProducerFns.insert(Fn);
    }
  }
}

/// MMSB_STATE definitions are page-aligned: a region starts on a page.  They
/// stay in .data or .bss (a custom section would store a large zero array
/// in the file); the runtime's window 1 grows to cover each one registered.
void MMSBInstrument::placeStateGlobals() {
  for (GlobalVariable *GV : StateGlobals)
    if (!GV->isDeclaration() && GV->getAlign().valueOrOne() < Align(4096))
      GV->setAlignment(Align(4096));
}

void MMSBInstrument::declareRuntime() {
  LLVMContext &C = M.getContext();
  auto *PtrTy = PointerType::getUnqual(C);
  IntptrTy = DL->getIntPtrType(C);
  WindowTy = StructType::get(C, {IntptrTy, IntptrTy});
  LogTy = StructType::get(C, {PtrTy, PtrTy});
  auto *WinArr = ArrayType::get(WindowTy, 2);
  Windows = dyn_cast_or_null<GlobalVariable>(M.getNamedValue("__mmsb_windows"));
  if (!Windows)
    Windows = new GlobalVariable(M, WinArr, false, GlobalValue::ExternalLinkage,
                                 nullptr, "__mmsb_windows");
  Log = dyn_cast_or_null<GlobalVariable>(M.getNamedValue("__mmsb_log"));
  if (!Log)
    Log = new GlobalVariable(M, LogTy, false, GlobalValue::ExternalLinkage,
                             nullptr, "__mmsb_log", nullptr,
                             GlobalValue::GeneralDynamicTLSModel);
  auto *VoidTy = Type::getVoidTy(C);
  StoreRange = M.getOrInsertFunction("__mmsb_store_range", VoidTy, PtrTy, IntptrTy);
  StoreCStr = M.getOrInsertFunction("__mmsb_store_cstr", VoidTy, PtrTy);
  Mark = M.getOrInsertFunction("__mmsb_mark", VoidTy, PtrTy, IntptrTy);
  LogRefill = M.getOrInsertFunction("__mmsb_log_refill", PtrTy);
  RegisterState = M.getOrInsertFunction("__mmsb_register_state", VoidTy, PtrTy,
                                        PtrTy, IntptrTy);
}

/// A constant that refers to __mmsb_abi_version_1: linking an instrumented
/// object with a runtime of another ABI fails with an undefined symbol.
void MMSBInstrument::emitAbiCheck() {
  LLVMContext &C = M.getContext();
  if (M.getNamedValue("__mmsb_abi_check"))
    return;
  auto *Ver = M.getOrInsertGlobal("__mmsb_abi_version_1", Type::getInt32Ty(C));
  auto *Ref = new GlobalVariable(M, PointerType::getUnqual(C), true,
                                 GlobalValue::InternalLinkage,
                                 cast<Constant>(Ver), "__mmsb_abi_check");
  appendToCompilerUsed(M, {Ref});
}

/// A constructor that registers each MMSB_STATE global as a region of the
/// default bus, before main.
void MMSBInstrument::emitModuleCtor() {
  SmallVector<GlobalVariable *, 8> Defs;
  for (GlobalVariable *GV : StateGlobals)
    if (!GV->isDeclaration())
      Defs.push_back(GV);
  if (Defs.empty())
    return;
  llvm::sort(Defs, [](GlobalVariable *A, GlobalVariable *B) {
    return A->getName() < B->getName();
  });
  LLVMContext &C = M.getContext();
  auto *PtrTy = PointerType::getUnqual(C);
  auto *Ctor = Function::Create(FunctionType::get(Type::getVoidTy(C), false),
                                GlobalValue::InternalLinkage, "mmsb.module_ctor", M);
  IRBuilder<> IRB(BasicBlock::Create(C, "", Ctor));
  for (GlobalVariable *GV : Defs) {
    uint64_t Size = DL->getTypeAllocSize(GV->getValueType());
    Constant *Name = IRB.CreateGlobalString(GV->getName(), "mmsb.name");
    IRB.CreateCall(RegisterState,
                   {Name, GV, ConstantInt::get(IntptrTy, Size)});
    ++NumStateGlobals;
  }
  IRB.CreateRetVoid();
  (void)PtrTy;
  // Priority 1, as the sanitizers: before the program's own constructors,
  // which may already store to state.
  appendToGlobalCtors(M, Ctor, 1);
}

/// True if the pointer was derived through llvm.ptr.annotation("mmsb.tracked")
/// (an MMSB_TRACKED field) or from a call to an MMSB_ALLOC function.
bool MMSBInstrument::isAnnotatedPointer(Value *Ptr) {
  for (int Depth = 0; Ptr && Depth < 16; ++Depth) {
    if (auto *II = dyn_cast<IntrinsicInst>(Ptr)) {
      if (II->getIntrinsicID() == Intrinsic::ptr_annotation &&
          annotationString(II->getArgOperand(1)) == "mmsb.tracked")
        return true;
    }
    if (auto *CB = dyn_cast<CallBase>(Ptr))
      if (Function *Fn = CB->getCalledFunction())
        if (AllocFns.count(Fn))
          return true;
    if (auto *GEP = dyn_cast<GEPOperator>(Ptr))
      Ptr = GEP->getPointerOperand();
    else if (auto *BC = dyn_cast<BitCastOperator>(Ptr))
      Ptr = BC->getOperand(0);
    else if (auto *CB = dyn_cast<CallBase>(Ptr))
      Ptr = CB->getReturnedArgOperand();
    else
      return false;
  }
  return false;
}

static bool mayBeCaptured(const Value *V) {
#if LLVM_VERSION_MAJOR >= 21
  return PointerMayBeCaptured(V, /*ReturnCaptures=*/true);
#else
  return PointerMayBeCaptured(V, /*ReturnCaptures=*/true, /*StoreCaptures=*/true);
#endif
}

Kind MMSBInstrument::classify(Function &F, Value *Ptr, const char *&Why) {
  const Value *Obj = getUnderlyingObject(Ptr, 0);
  if (isa<AllocaInst>(Obj) && !mayBeCaptured(Obj)) {
    ++NumSkippedAlloca;
    Why = "non-escaping alloca";
    return Kind::Skip;
  }
  if (auto *GV = dyn_cast<GlobalVariable>(Obj)) {
    if (StateGlobals.count(const_cast<GlobalVariable *>(GV))) {
      Why = "MMSB_STATE global";
      return Kind::Known;
    }
    if (GV->isConstant()) {
      ++NumSkippedConstant;
      Why = "constant global";
      return Kind::Skip;
    }
    // A definition here that is not state is never part of a region; a
    // declaration may be another module's state.
    if (!GV->isDeclaration()) {
      ++NumSkippedGlobal;
      Why = "global that is not state";
      return Kind::Skip;
    }
  }
  if (isa<ConstantPointerNull>(Obj) || isa<UndefValue>(Obj)) {
    ++NumSkippedConstant;
    Why = "constant address";
    return Kind::Skip;
  }
  if (ClMode == Mode::Annotated && !ProducerFns.count(&F) &&
      !isAnnotatedPointer(Ptr)) {
    ++NumSkippedMode;
    Why = "not annotated (annotated mode)";
    return Kind::Skip;
  }
  Why = "address checked at run time";
  return Kind::Unknown;
}

/// libc functions that write a buffer they are given: (pointer argument,
/// size argument or -1, how to find the size).
struct LibWrite {
  const char *Name;
  int PtrArg, SizeArg, SizeMulArg; // SizeMulArg: fread's nmemb
  bool CString;                    // size known only after: strlen + 1
};
static const LibWrite LibWrites[] = {
    {"memcpy", 0, 2, -1, false},   {"memmove", 0, 2, -1, false},
    {"mempcpy", 0, 2, -1, false},  {"memset", 0, 2, -1, false},
    {"memccpy", 0, 3, -1, false},  {"bzero", 0, 1, -1, false},
    {"explicit_bzero", 0, 1, -1, false},
    {"strncpy", 0, 2, -1, false},  {"stpncpy", 0, 2, -1, false},
    {"strcpy", 0, -1, -1, true},   {"stpcpy", 0, -1, -1, true},
    {"strcat", 0, -1, -1, true},   {"strncat", 0, -1, -1, true},
    {"sprintf", 0, -1, -1, true},  {"vsprintf", 0, -1, -1, true},
    {"snprintf", 0, 1, -1, false}, {"vsnprintf", 0, 1, -1, false},
    {"read", 1, 2, -1, false},     {"pread", 1, 2, -1, false},
    {"recv", 1, 2, -1, false},     {"fread", 0, 1, 2, false},
    {"fgets", 0, 1, -1, false},
};

void MMSBInstrument::collect(Function &F, SmallVectorImpl<Access> &Out) {
  LLVMContext &C = M.getContext();
  auto SizeOf = [&](Type *T) -> Value * {
    TypeSize TS = DL->getTypeStoreSize(T);
    if (TS.isScalable())
      return nullptr;
    return ConstantInt::get(IntptrTy, TS.getFixedValue());
  };
  for (Instruction &I : instructions(F)) {
    Access A{&I, nullptr, nullptr};
    if (auto *SI = dyn_cast<StoreInst>(&I)) {
      A.Ptr = SI->getPointerOperand();
      A.Size = SizeOf(SI->getValueOperand()->getType());
    } else if (auto *RMW = dyn_cast<AtomicRMWInst>(&I)) {
      A.Ptr = RMW->getPointerOperand();
      A.Size = SizeOf(RMW->getValOperand()->getType());
    } else if (auto *CX = dyn_cast<AtomicCmpXchgInst>(&I)) {
      A.Ptr = CX->getPointerOperand();
      A.Size = SizeOf(CX->getNewValOperand()->getType());
    } else if (auto *MI = dyn_cast<MemIntrinsic>(&I)) {
      A.Ptr = MI->getDest();
      A.Size = MI->getLength();
      ++NumMemIntrinsics;
    } else if (auto *II = dyn_cast<IntrinsicInst>(&I)) {
      switch (II->getIntrinsicID()) {
      case Intrinsic::masked_store:
      case Intrinsic::masked_compressstore:
        // Conservatively the whole vector, whatever the mask.
        A.Ptr = II->getArgOperand(1);
        A.Size = SizeOf(II->getArgOperand(0)->getType());
        break;
      case Intrinsic::masked_scatter: {
        auto *VT = dyn_cast<FixedVectorType>(II->getArgOperand(0)->getType());
        if (!VT)
          break;
        // One access per lane, each range-checked (lanes may point anywhere).
        for (unsigned L = 0; L < VT->getNumElements(); ++L) {
          Access Lane{&I, nullptr, SizeOf(VT->getElementType())};
          Lane.Ptr = II->getArgOperand(1); // lane extracted when emitting
          Lane.MergeOff = L;               // reused as the lane index
          Lane.MergeLen = -1;              // marks a scatter lane
          Out.push_back(Lane);
        }
        continue;
      }
      default:
        break;
      }
    } else if (auto *CB = dyn_cast<CallBase>(&I)) {
      Function *Fn = CB->getCalledFunction();
      if (!Fn || !Fn->isDeclaration() || !isa<CallInst>(CB))
        continue;
      for (const LibWrite &W : LibWrites) {
        if (Fn->getName() != W.Name || CB->arg_size() <= (unsigned)W.PtrArg)
          continue;
        A.Ptr = CB->getArgOperand(W.PtrArg);
        A.After = true;
        if (W.CString) {
          A.CString = true;
          A.Size = ConstantInt::get(IntptrTy, 1);
        } else if (CB->arg_size() > (unsigned)W.SizeArg) {
          A.Size = CB->getArgOperand(W.SizeArg);
          if (W.SizeMulArg >= 0 && CB->arg_size() > (unsigned)W.SizeMulArg)
            A.SizeMul = CB->getArgOperand(W.SizeMulArg);
        }
        ++NumLibCalls;
        break;
      }
    }
    if (A.Ptr && A.Size && A.Ptr->getType()->isPointerTy())
      Out.push_back(A);
  }
  (void)C;
}

/// True for a call that might reach mmsb_commit (any call but an
/// intrinsic): marks may not move across it, or a store made after a commit
/// could be marked before it.
static bool mayCommit(const Instruction &I) {
  auto *CB = dyn_cast<CallBase>(&I);
  return CB && !isa<IntrinsicInst>(CB);
}

/// A loop in which a range mark in the preheader stands for every store:
/// it has a preheader and calls nothing that could commit.
static bool loopAllowsRangeMarks(Loop *L) {
  if (!L->getLoopPreheader())
    return false;
  for (BasicBlock *BB : L->blocks())
    for (Instruction &I : *BB)
      if (mayCommit(I))
        return false;
  return true;
}

void MMSBInstrument::coverLoops(Function &F, SmallVectorImpl<Access> &Acc) {
  if (!ClLoopMarks)
    return;
  auto &LI = FAM.getResult<LoopAnalysis>(F);
  auto &SE = FAM.getResult<ScalarEvolutionAnalysis>(F);
#if LLVM_VERSION_MAJOR >= 21
  SCEVExpander Exp(SE, "mmsb");
#else
  SCEVExpander Exp(SE, *DL, "mmsb");
#endif
  for (Access &A : Acc) {
    if (A.K == Kind::Skip || A.After || A.MergeLen < 0 || !isa<ConstantInt>(A.Size))
      continue;
    Loop *L = LI.getLoopFor(A.I->getParent());
    if (!L || !loopAllowsRangeMarks(L))
      continue;
    auto *AR = dyn_cast<SCEVAddRecExpr>(SE.getSCEV(A.Ptr));
    if (!AR || AR->getLoop() != L || !AR->isAffine())
      continue;
    auto *Step = dyn_cast<SCEVConstant>(AR->getStepRecurrence(SE));
    uint64_t Size = cast<ConstantInt>(A.Size)->getZExtValue();
    if (!Step || Step->getAPInt().abs().ugt(std::max<uint64_t>(ClMaxLoopStride, Size)))
      continue;
    // The symbolic maximum covers loops with early exits too: marking bytes
    // an early exit never wrote is harmless, missing one is not.
    const SCEV *BTC = SE.getSymbolicMaxBackedgeTakenCount(L);
    if (isa<SCEVCouldNotCompute>(BTC))
      continue;
    const SCEV *Last = AR->evaluateAtIteration(BTC, SE);
    bool Up = !Step->getAPInt().isNegative();
    const SCEV *Lo = Up ? AR->getStart() : Last;
    const SCEV *Hi = Up ? Last : AR->getStart();
    const SCEV *Len = SE.getMinusSCEV(Hi, Lo);
    if (isa<SCEVCouldNotCompute>(Len))
      continue;
    Len = SE.getAddExpr(SE.getTruncateOrZeroExtend(Len, IntptrTy),
                        SE.getConstant(IntptrTy, Size));
    Instruction *At = L->getLoopPreheader()->getTerminator();
    if (!Exp.isSafeToExpandAt(Lo, At) || !Exp.isSafeToExpandAt(Len, At))
      continue;
    Value *LoV = Exp.expandCodeFor(Lo, A.Ptr->getType(), At);
    Value *LenV = Exp.expandCodeFor(Len, IntptrTy, At);
    IRBuilder<> IRB(At);
    IRB.CreateCall(StoreRange, {LoV, LenV});
    A.Covered = true;
    ++NumLoopMarks;
    auto &ORE = FAM.getResult<OptimizationRemarkEmitterAnalysis>(F);
    ORE.emit([&] {
      return OptimizationRemark(DEBUG_TYPE, "LoopMark", A.I)
             << "store covered by one range mark per loop";
    });
  }
  Exp.clear();
}

void MMSBInstrument::mergeInBlocks(SmallVectorImpl<Access> &Acc) {
  if (!ClMerge)
    return;
  // Accesses are in program order; a group is a run of accesses in one block
  // with the same base, no breaking call between, within the span.
  Access *Lead = nullptr;
  int64_t Lo = 0, Hi = 0;
  unsigned Members = 0;
  const Instruction *Prev = nullptr;
  auto Close = [&] {
    if (Lead && Lead->MergeBase && Members > 1) {
      Lead->MergeOff = Lo;
      Lead->MergeLen = Hi - Lo;
    }
    Lead = nullptr;
  };
  for (Access &A : Acc) {
    if (A.K == Kind::Skip || A.Covered || A.After || A.MergeLen < 0 ||
        !isa<ConstantInt>(A.Size)) {
      if (A.After || A.MergeLen < 0)
        Close();
      continue;
    }
    bool Broken = !Lead || A.I->getParent() != Lead->I->getParent();
    for (const Instruction *I = Prev; !Broken && I && I != A.I; I = I->getNextNode())
      Broken = mayCommit(*I);
    int64_t Off = 0;
    Value *Base = GetPointerBaseWithConstantOffset(A.Ptr, Off, *DL);
    int64_t Size = (int64_t)cast<ConstantInt>(A.Size)->getZExtValue();
    if (!Broken && Base == Lead->MergeBase && A.K == Lead->K &&
        std::max(Hi, Off + Size) - std::min(Lo, Off) <= (int64_t)ClMergeSpan) {
      Lo = std::min(Lo, Off);
      Hi = std::max(Hi, Off + Size);
      A.Covered = true;
      ++NumMerged;
      ++Members;
    } else {
      Close();
      Lead = &A;
      Members = 1;
      A.MergeBase = Base;
      Lo = Off;
      Hi = Off + Size;
    }
    Prev = A.I;
  }
  Close();
}

/// Appends one entry to the thread's mark log (see mmsb_abi.h).
void MMSBInstrument::emitLogAppend(IRBuilder<> &IRB, Value *Addr, uint64_t Size) {
  LLVMContext &C = M.getContext();
  auto *PtrTy = PointerType::getUnqual(C);
  Value *LogP = IRB.CreateThreadLocalAddress(Log);
  Value *EndP = IRB.CreateConstGEP2_32(LogTy, LogP, 0, 1);
  Value *Pos = IRB.CreateLoad(PtrTy, LogP, "mmsb.pos");
  Value *End = IRB.CreateLoad(PtrTy, EndP, "mmsb.end");
  Value *Full = IRB.CreateICmpEQ(Pos, End);
  Instruction *Here = &*IRB.GetInsertPoint();
  BasicBlock *Head = Here->getParent();
  Instruction *Then = SplitBlockAndInsertIfThen(
      Full, Here, false, MDBuilder(C).createUnlikelyBranchWeights());
  IRBuilder<> TB(Then);
  Value *Refilled = TB.CreateCall(LogRefill, {});
  IRB.SetInsertPoint(Here);
  PHINode *E = IRB.CreatePHI(PtrTy, 2, "mmsb.e");
  E->addIncoming(Pos, Head);
  E->addIncoming(Refilled, Then->getParent());
  Value *Entry = IRB.CreateOr(
      Addr, ConstantInt::get(IntptrTy, (Size - 1) << 48));
  IRB.CreateStore(Entry, E);
  IRB.CreateStore(IRB.CreateConstGEP1_32(IntptrTy, E, 1), LogP);
}

void MMSBInstrument::emitMark(Instruction *Before, Value *Ptr, Value *Size,
                              bool Known) {
  IRBuilder<> IRB(Before);
  auto *CI = dyn_cast<ConstantInt>(Size);
  if (!ClInline || !CI || CI->isZero() || CI->getZExtValue() > 65536) {
    IRB.CreateCall(StoreRange, {Ptr, IRB.CreateZExtOrTrunc(Size, IntptrTy)});
    return;
  }
  Value *Addr = IRB.CreatePtrToInt(Ptr, IntptrTy);
  if (Known) {
    emitLogAppend(IRB, Addr, CI->getZExtValue());
    return;
  }
  // Unknown pointer: the range check inline (it fails for untracked memory,
  // the common case in checked mode), the append out of line in a cold
  // block.  Inlining the append here too doubled the code of store-heavy
  // functions and their compile time (docs/performance.md).
  Value *In = nullptr;
  for (unsigned W = 0; W < 2; ++W) {
    Value *LoP = IRB.CreateConstGEP2_32(ArrayType::get(WindowTy, 2), Windows, 0, W);
    Value *Lo = IRB.CreateLoad(IntptrTy, LoP);
    Value *Sz = IRB.CreateLoad(IntptrTy, IRB.CreateConstGEP2_32(WindowTy, LoP, 0, 1));
    Value *InW = IRB.CreateICmpULT(IRB.CreateSub(Addr, Lo), Sz);
    In = In ? IRB.CreateOr(In, InW) : InW;
  }
  Instruction *Then = SplitBlockAndInsertIfThen(
      In, Before, false, MDBuilder(M.getContext()).createUnlikelyBranchWeights());
  IRBuilder<> TB(Then);
  TB.CreateCall(Mark, {Ptr, Size});
}

bool MMSBInstrument::instrumentFunction(Function &F) {
  if (F.isDeclaration() || F.getName().starts_with("__mmsb_") ||
      F.getName().starts_with("mmsb.") || F.hasFnAttribute(Attribute::Naked) ||
      F.hasFnAttribute("mmsb-no-instrument"))
    return false;
  SmallVector<Access, 32> Acc;
  collect(F, Acc);
  if (Acc.empty())
    return false;
  auto &ORE = FAM.getResult<OptimizationRemarkEmitterAnalysis>(F);
  for (Access &A : Acc) {
    const char *Why = "";
    A.K = classify(F, A.Ptr, Why);
    if (A.K == Kind::Skip) {
      ORE.emit([&] {
        return OptimizationRemarkMissed(DEBUG_TYPE, "Skipped", A.I)
               << "store not instrumented: " << Why;
      });
    } else {
      if (A.K == Kind::Known)
        ++NumKnownTracked;
      ORE.emit([&] {
        return OptimizationRemark(DEBUG_TYPE, "Instrumented", A.I)
               << "store instrumented: " << Why;
      });
    }
  }
  coverLoops(F, Acc);
  mergeInBlocks(Acc);
  for (Access &A : Acc) {
    if (A.K == Kind::Skip || A.Covered)
      continue;
    ++NumInstrumented;
    if (A.MergeLen < 0) { // a scatter lane
      IRBuilder<> IRB(A.I);
      Value *P = IRB.CreateExtractElement(A.Ptr, (uint64_t)A.MergeOff);
      emitMark(A.I, P, A.Size, false);
      continue;
    }
    if (A.After) {
      IRBuilder<> IRB(A.I->getNextNode());
      Value *N = IRB.CreateZExtOrTrunc(A.Size, IntptrTy);
      if (A.SizeMul)
        N = IRB.CreateMul(N, IRB.CreateZExtOrTrunc(A.SizeMul, IntptrTy));
      if (A.CString)
        IRB.CreateCall(StoreCStr, {A.Ptr});
      else
        IRB.CreateCall(StoreRange, {A.Ptr, N});
      continue;
    }
    if (A.MergeLen > 0) {
      IRBuilder<> IRB(A.I);
      Value *P = IRB.CreateGEP(IRB.getInt8Ty(), A.MergeBase,
                               ConstantInt::get(IntptrTy, A.MergeOff));
      emitMark(A.I, P, ConstantInt::get(IntptrTy, A.MergeLen), A.K == Kind::Known);
      continue;
    }
    emitMark(A.I, A.Ptr, A.Size, A.K == Kind::Known);
  }
  return true;
}

/// Mode off still places and registers state globals: the program keeps
/// its regions (and can report its writes with mmsb_touch); only stores are
/// left alone.
bool MMSBInstrument::run() {
  DL = &M.getDataLayout();
  readAnnotations();
  if (ClMode == Mode::Off && StateGlobals.empty())
    return false;
  declareRuntime();
  placeStateGlobals();
  emitAbiCheck();
  if (ClMode != Mode::Off)
    for (Function &F : M)
      instrumentFunction(F);
  emitModuleCtor();
  return true;
}

PreservedAnalyses MMSBInstrumentPass::run(Module &M, ModuleAnalysisManager &MAM) {
  auto &FAM = MAM.getResult<FunctionAnalysisManagerModuleProxy>(M).getManager();
  if (!MMSBInstrument(M, FAM).run())
    return PreservedAnalyses::all();
  return PreservedAnalyses::none();
}
