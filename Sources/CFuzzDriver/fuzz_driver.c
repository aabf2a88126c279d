#include "fuzz_driver.h"

// libFuzzer's entry for programs with their own main (SwiftPM gives every executable one). Weak,
// so that the ordinary build, which has no libFuzzer, still links.
extern int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *, size_t)) __attribute__((weak));

int charter_fuzz_run(int argc, char **argv, int (*one)(const uint8_t *data, size_t size)) {
    if (!LLVMFuzzerRunDriver) return 2;
    return LLVMFuzzerRunDriver(&argc, &argv, one);
}
