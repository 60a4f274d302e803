# lit configuration for the pass (test/pass/*.ll) and end-to-end
# (test/e2e/*.c) suites.  Loaded from build/test/lit-N/lit.site.cfg.py, one
# per LLVM major version the pass was built for.
import os
import lit.formats

config.name = "MMSB-LLVM" + config.llvm_major
config.test_format = lit.formats.ShTest(True)
config.suffixes = [".ll", ".c", ".cpp"]
config.excludes = ["unit", "Inputs", "CMakeLists.txt", "lit.cfg.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.mmsb_build, "test", "lit-" + config.llvm_major)

llvm_bin = "/usr/lib/llvm-%s/bin" % config.llvm_major
config.environment["PATH"] = llvm_bin + os.pathsep + config.environment.get("PATH", os.environ["PATH"])
for var in ("MMSB_VERIFY", "MMSB_DIR", "MMSB_STATS", "MMSB_SYNC"):
    config.environment.pop(var, None)

inc = os.path.join(config.mmsb_src, "include")
rt = "%s %s -lzstd -lffi -lpthread -ldl" % (config.mmsb_lib, config.extra_libs)
config.substitutions += [
    ("%plugin", config.plugin),
    ("%opt-mmsb", "%s/opt -load-pass-plugin=%s" % (llvm_bin, config.plugin)),
    ("%cc-mmsb", "%s/clang -fpass-plugin=%s -I%s -I%s" % (llvm_bin, config.plugin, inc,
                                                       os.path.join(config.mmsb_src, "runtime"))),
    ("%cxx-mmsb", "%s/clang++ -fpass-plugin=%s -I%s" % (llvm_bin, config.plugin, inc)),
    ("%rt", rt),
    ("%mmsb-cc", os.path.join(config.mmsb_build, "bin", "mmsb-cc")),
    ("%mmsb-c\\+\\+", os.path.join(config.mmsb_build, "bin", "mmsb-c++")),
    ("%{mmsb_src}", config.mmsb_src),
    ("%{mmsb_bin}", os.path.join(config.mmsb_build, "bin")),
]
if config.primary:
    config.available_features.add("primary")
config.available_features.add("llvm" + config.llvm_major)
