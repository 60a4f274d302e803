//===- Instrument.h - MMSB store instrumentation pass ---------------------===//
#ifndef MMSB_PASS_INSTRUMENT_H
#define MMSB_PASS_INSTRUMENT_H

#include "llvm/IR/PassManager.h"

/// Instruments every store that may land in MMSB-tracked memory (see
/// Instrument.cpp).  Required: it runs at -O0 too.
struct MMSBInstrumentPass : llvm::PassInfoMixin<MMSBInstrumentPass> {
  llvm::PreservedAnalyses run(llvm::Module &M, llvm::ModuleAnalysisManager &MAM);
  static bool isRequired() { return true; }
};

#endif
