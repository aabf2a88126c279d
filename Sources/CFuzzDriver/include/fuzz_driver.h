#ifndef CHARTER_FUZZ_DRIVER_H
#define CHARTER_FUZZ_DRIVER_H
#include <stddef.h>
#include <stdint.h>

/// Hands control to libFuzzer with `one` as the input callback. Only meaningful in a binary linked
/// with -sanitize=fuzzer; elsewhere it returns 2.
int charter_fuzz_run(int argc, char **argv, int (*one)(const uint8_t *data, size_t size));

#endif
