#include "crc32c.h"
#include <nmmintrin.h>
#include <string.h>

// The package already requires AVX2 (-target-cpu haswell), which implies SSE4.2; the attribute
// keeps this file independent of the flags it is compiled with.
__attribute__((target("sse4.2")))
uint32_t charter_crc32c(uint32_t crc, const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t c = ~crc;
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
    }
    uint32_t c32 = (uint32_t)c;
    for (; n > 0; n--, p++) c32 = _mm_crc32_u8(c32, *p);
    return ~c32;
}
