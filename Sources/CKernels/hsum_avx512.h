// Shared by the AVX-512 kernels (not part of the module's interface).
#pragma once
#include <immintrin.h>

// The fixed horizontal sum every tile shape of every AVX-512 kernel ends with, so their reduction
// orders stay one: out = the 16 lanes of acc summed (added to *o when accumulating).
__attribute__((target("avx512f,avx512bw,avx512vl,fma"), always_inline))
static inline void finish(__m512 acc, float *o, int accumulate) {
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(acc), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    float s = _mm_cvtss_f32(q);
    *o = accumulate ? *o + s : s;
}
