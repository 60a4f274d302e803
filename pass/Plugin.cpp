//===- Plugin.cpp - registers the MMSB pass with the new pass manager -----===//
//
// clang -fpass-plugin=MMSBPass.so runs it at the end of the optimization
// pipeline (OptimizerLast, where the sanitizers run) at every -O level;
// opt -load-pass-plugin=MMSBPass.so -passes=mmsb-instrument runs it alone.
// Only OptimizerLast is registered: with PipelineStart too, stores would be
// instrumented twice.
//===----------------------------------------------------------------------===//

#include "Instrument.h"

#include "llvm/Passes/PassBuilder.h"
#if __has_include("llvm/Plugins/PassPlugin.h")
#include "llvm/Plugins/PassPlugin.h" // LLVM 22 moved it here
#else
#include "llvm/Passes/PassPlugin.h"
#endif

using namespace llvm;

extern "C" LLVM_ATTRIBUTE_WEAK PassPluginLibraryInfo llvmGetPassPluginInfo() {
  return {LLVM_PLUGIN_API_VERSION, "MMSBInstrument", "0.1",
          [](PassBuilder &PB) {
            // LLVM 20 added a ThinOrFullLTOPhase argument: accept both forms.
            PB.registerOptimizerLastEPCallback(
                [](ModulePassManager &MPM, OptimizationLevel, auto &&...) {
                  MPM.addPass(MMSBInstrumentPass());
                });
            PB.registerPipelineParsingCallback(
                [](StringRef Name, ModulePassManager &MPM,
                   ArrayRef<PassBuilder::PipelineElement>) {
                  if (Name != "mmsb-instrument")
                    return false;
                  MPM.addPass(MMSBInstrumentPass());
                  return true;
                });
          }};
}
