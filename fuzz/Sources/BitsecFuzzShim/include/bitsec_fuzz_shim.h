#ifndef BITSEC_FUZZ_SHIM_H
#define BITSEC_FUZZ_SHIM_H
/* The fuzz executable's entry point lives in fuzz/Sources/BitsecFuzzShim/entry.c: SwiftPM
 * links executables with main defined as <module>_main, so libFuzzer's own main is not
 * used; BitsecFuzz_main hands control to libFuzzer's driver instead. Nothing to import. */
#endif
