/* Entry point of bitsec-fuzz (see the header). SwiftPM links every executable product with
 * `--defsym main=<module>_main`; the Swift module is parse-as-library (no top-level code),
 * so this function is the program's main. It runs libFuzzer's driver with the callback the
 * Swift module exports (LLVMFuzzerTestOneInput, @_cdecl). libFuzzer also calls the Swift
 * LLVMFuzzerInitialize, which picks the target (BITSEC_FUZZ_TARGET). */
#include <stddef.h>
#include <stdint.h>

#include "bitsec_fuzz_shim.h"

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int BitsecFuzz_main(int argc, char **argv);
int BitsecFuzz_main(int argc, char **argv) {
    return LLVMFuzzerRunDriver(&argc, &argv, LLVMFuzzerTestOneInput);
}
