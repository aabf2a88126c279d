// The projection kernel for bfloat16 weights on CPUs with AVX512-BF16: the rows of x are rounded
// to bfloat16 once per call, and VDPBF16PS multiplies 32 pairs per instruction (each product of two
// bfloat16 numbers is exact in float32) into 16 float32 sums. Compiled for the baseline CPU with
// only these functions allowed the instructions (the target attribute); Engine/Kernel.swift calls
// them only when charter_cpu_has_avx512bf16() says so.
#include "kernels.h"
#include <immintrin.h>
#include "hsum_avx512.h"

int charter_cpu_has_avx512bf16(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512bf16");
}

#define TARGET "avx512f,avx512bw,avx512vl,avx512bf16,fma"
#define BF16 __attribute__((target(TARGET), always_inline)) static inline

__attribute__((target(TARGET)))
void charter_round_to_bf16(uint16_t *out, const float *x, size_t count) {
    size_t i = 0;
    for (; i + 32 <= count; i += 32)
        _mm512_storeu_si512(out + i, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i)));
    if (i < count) {
        size_t left = count - i;
        __mmask16 lo = (__mmask16)((1u << (left < 16 ? left : 16)) - 1), hi = (__mmask16)(left > 16 ? (1u << (left - 16)) - 1 : 0);
        __m512bh both = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, x + i + 16), _mm512_maskz_loadu_ps(lo, x + i));
        _mm512_mask_storeu_epi16(out + i, (__mmask32)((1ull << left) - 1), (__m512i)both);
    }
}

// Every tile ends with finish()'s fixed horizontal sum (hsum_avx512.h).

// 32 bfloat16 numbers; the last partial chunk through a mask (zeros beyond K), so it adds in the
// same lanes and order whatever the tile.
#define ALL ((__mmask32)0xFFFFFFFF)
BF16 __mmask32 tail(size_t left) { return (__mmask32)((1ull << left) - 1); }
BF16 __m512bh load(const uint16_t *p, __mmask32 mask) {
    return (__m512bh)(mask == ALL ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi16(mask, p));
}
#define DOT(acc, a, b) acc = _mm512_dpbf16_ps(acc, a, b)

// Four rows of x against three rows of w: 12 accumulators, 3 weight vectors and one of x.
BF16 void tile4x3(float *out, const uint16_t *x, size_t i, const uint16_t *w, size_t j, size_t n, size_t k, int accumulate) {
    const uint16_t *x0 = x + i * k, *x1 = x0 + k, *x2 = x1 + k, *x3 = x2 + k;
    const uint16_t *w0 = w + j * k, *w1 = w0 + k, *w2 = w1 + k;
    __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00;
    __m512 a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;
#define STEP(mask) { \
        __m512bh v0 = load(w0 + t, mask), v1 = load(w1 + t, mask), v2 = load(w2 + t, mask); \
        __m512bh u = load(x0 + t, mask); \
        DOT(a00, u, v0); DOT(a01, u, v1); DOT(a02, u, v2); \
        u = load(x1 + t, mask); \
        DOT(a10, u, v0); DOT(a11, u, v1); DOT(a12, u, v2); \
        u = load(x2 + t, mask); \
        DOT(a20, u, v0); DOT(a21, u, v1); DOT(a22, u, v2); \
        u = load(x3 + t, mask); \
        DOT(a30, u, v0); DOT(a31, u, v1); DOT(a32, u, v2); }
    size_t t = 0;
    for (; t + 32 <= k; t += 32) STEP(ALL)
    if (t < k) STEP(tail(k - t))
#undef STEP
    float *o0 = out + i * n + j, *o1 = o0 + n, *o2 = o1 + n, *o3 = o2 + n;
    finish(a00, o0, accumulate); finish(a01, o0 + 1, accumulate); finish(a02, o0 + 2, accumulate);
    finish(a10, o1, accumulate); finish(a11, o1 + 1, accumulate); finish(a12, o1 + 2, accumulate);
    finish(a20, o2, accumulate); finish(a21, o2 + 1, accumulate); finish(a22, o2 + 2, accumulate);
    finish(a30, o3, accumulate); finish(a31, o3 + 1, accumulate); finish(a32, o3 + 2, accumulate);
}

BF16 void tile1x3(float *out, const uint16_t *x, size_t i, const uint16_t *w, size_t j, size_t n, size_t k, int accumulate) {
    const uint16_t *x0 = x + i * k, *w0 = w + j * k, *w1 = w0 + k, *w2 = w1 + k;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0;
#define STEP(mask) { \
        __m512bh u = load(x0 + t, mask); \
        DOT(a0, u, load(w0 + t, mask)); DOT(a1, u, load(w1 + t, mask)); DOT(a2, u, load(w2 + t, mask)); }
    size_t t = 0;
    for (; t + 32 <= k; t += 32) STEP(ALL)
    if (t < k) STEP(tail(k - t))
#undef STEP
    float *o = out + i * n + j;
    finish(a0, o, accumulate); finish(a1, o + 1, accumulate); finish(a2, o + 2, accumulate);
}

BF16 void single(float *out, const uint16_t *x, size_t i, const uint16_t *w, size_t j, size_t n, size_t k, int accumulate) {
    const uint16_t *x0 = x + i * k, *w0 = w + j * k;
    __m512 a = _mm512_setzero_ps();
    size_t t = 0;
    for (; t + 32 <= k; t += 32) DOT(a, load(x0 + t, ALL), load(w0 + t, ALL));
    if (t < k) DOT(a, load(x0 + t, tail(k - t)), load(w0 + t, tail(k - t)));
    finish(a, out + i * n + j, accumulate);
}

__attribute__((target(TARGET)))
void charter_linear_avx512bf16(float *out, const uint16_t *x, size_t m, const uint16_t *w,
                               size_t n0, size_t n1, size_t n, size_t k, int accumulate) {
    size_t whole = n0 + (n1 - n0) / 3 * 3;
    for (size_t i = 0; i < m; i += 4) {
        size_t rows = m - i < 4 ? m - i : 4;
        for (size_t j = n0; j < whole; j += 3) {
            if (rows == 4) tile4x3(out, x, i, w, j, n, k, accumulate);
            else for (size_t r = i; r < i + rows; r++) tile1x3(out, x, r, w, j, n, k, accumulate);
        }
        for (size_t j = whole; j < n1; j++)
            for (size_t r = i; r < i + rows; r++) single(out, x, r, w, j, n, k, accumulate);
    }
}
