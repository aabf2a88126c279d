#include <stddef.h>
#include <stdint.h>

/// CRC-32C (Castagnoli) of n bytes, continuing from crc (0 to start), with the SSE4.2 instruction.
uint32_t charter_crc32c(uint32_t crc, const void *data, size_t n);
