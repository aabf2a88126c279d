// The engine's projection kernel for AVX-512F CPUs, for float32 weights and for bfloat16 weights
// widened to float32 as they load (the same float32 arithmetic on the widened values). Compiled for
// the baseline CPU, with only these functions allowed AVX-512 (the target attribute), so the binary
// still runs on AVX2-only machines and CHARTER_KERNEL=avx512 picks this kernel at run time
// (Engine/Kernel.swift).
#include "kernels.h"
#include <immintrin.h>
#include "hsum_avx512.h"

int charter_cpu_has_avx512f(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}

#define TARGET "avx512f,avx512bw,avx512vl,fma"
#define AVX512 __attribute__((target(TARGET), always_inline)) static inline

// The one reduction order every tile shape shares: 16-lane FMAs over K in order, then finish()'s
// fixed horizontal sum (hsum_avx512.h).

// Whole chunks load plainly; the last partial one through a mask (zeros beyond K), so it adds in the
// same lanes and order whatever the tile.
#define ALL ((__mmask16)0xFFFF)
AVX512 __mmask16 tail(size_t left) { return (__mmask16)((1u << left) - 1); }
AVX512 __m512 load(const float *p, __mmask16 mask) { return mask == ALL ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(mask, p); }
// A weight: float32, or (half = 1, a constant where it is inlined) bfloat16 shifted into the top
// half of a float32, which is exactly the number it stands for.
AVX512 __m512 weight(const void *w, size_t at, __mmask16 mask, int half) {
    if (!half) return load((const float *)w + at, mask);
    const uint16_t *p = (const uint16_t *)w + at;
    __m256i bits = mask == ALL ? _mm256_loadu_si256((const __m256i *)p) : _mm256_maskz_loadu_epi16(mask, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// Four rows of x against three rows of w: 12 accumulators, 3 weight vectors and one of x.
AVX512 void tile4x3(float *out, const float *x, size_t i, const void *w, size_t j, size_t n, size_t k, int accumulate, int half) {
    const float *x0 = x + i * k, *x1 = x0 + k, *x2 = x1 + k, *x3 = x2 + k;
    size_t w0 = j * k, w1 = w0 + k, w2 = w1 + k;
    __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00;
    __m512 a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;
#define STEP(mask) { \
        __m512 v0 = weight(w, w0 + t, mask, half), v1 = weight(w, w1 + t, mask, half), v2 = weight(w, w2 + t, mask, half); \
        __m512 u = load(x0 + t, mask); \
        a00 = _mm512_fmadd_ps(u, v0, a00); a01 = _mm512_fmadd_ps(u, v1, a01); a02 = _mm512_fmadd_ps(u, v2, a02); \
        u = load(x1 + t, mask); \
        a10 = _mm512_fmadd_ps(u, v0, a10); a11 = _mm512_fmadd_ps(u, v1, a11); a12 = _mm512_fmadd_ps(u, v2, a12); \
        u = load(x2 + t, mask); \
        a20 = _mm512_fmadd_ps(u, v0, a20); a21 = _mm512_fmadd_ps(u, v1, a21); a22 = _mm512_fmadd_ps(u, v2, a22); \
        u = load(x3 + t, mask); \
        a30 = _mm512_fmadd_ps(u, v0, a30); a31 = _mm512_fmadd_ps(u, v1, a31); a32 = _mm512_fmadd_ps(u, v2, a32); }
    size_t t = 0;
    for (; t + 16 <= k; t += 16) STEP(ALL)
    if (t < k) STEP(tail(k - t))
#undef STEP
    float *o0 = out + i * n + j, *o1 = o0 + n, *o2 = o1 + n, *o3 = o2 + n;
    finish(a00, o0, accumulate); finish(a01, o0 + 1, accumulate); finish(a02, o0 + 2, accumulate);
    finish(a10, o1, accumulate); finish(a11, o1 + 1, accumulate); finish(a12, o1 + 2, accumulate);
    finish(a20, o2, accumulate); finish(a21, o2 + 1, accumulate); finish(a22, o2 + 2, accumulate);
    finish(a30, o3, accumulate); finish(a31, o3 + 1, accumulate); finish(a32, o3 + 2, accumulate);
}

AVX512 void tile1x3(float *out, const float *x, size_t i, const void *w, size_t j, size_t n, size_t k, int accumulate, int half) {
    const float *x0 = x + i * k;
    size_t w0 = j * k, w1 = w0 + k, w2 = w1 + k;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0;
#define STEP(mask) { \
        __m512 u = load(x0 + t, mask); \
        a0 = _mm512_fmadd_ps(u, weight(w, w0 + t, mask, half), a0); \
        a1 = _mm512_fmadd_ps(u, weight(w, w1 + t, mask, half), a1); \
        a2 = _mm512_fmadd_ps(u, weight(w, w2 + t, mask, half), a2); }
    size_t t = 0;
    for (; t + 16 <= k; t += 16) STEP(ALL)
    if (t < k) STEP(tail(k - t))
#undef STEP
    float *o = out + i * n + j;
    finish(a0, o, accumulate); finish(a1, o + 1, accumulate); finish(a2, o + 2, accumulate);
}

AVX512 void single(float *out, const float *x, size_t i, const void *w, size_t j, size_t n, size_t k, int accumulate, int half) {
    const float *x0 = x + i * k;
    size_t w0 = j * k;
    __m512 a = _mm512_setzero_ps();
    size_t t = 0;
    for (; t + 16 <= k; t += 16) a = _mm512_fmadd_ps(load(x0 + t, ALL), weight(w, w0 + t, ALL, half), a);
    if (t < k) a = _mm512_fmadd_ps(load(x0 + t, tail(k - t)), weight(w, w0 + t, tail(k - t), half), a);
    finish(a, out + i * n + j, accumulate);
}

AVX512 void linear(float *out, const float *x, size_t m, const void *w, size_t n0, size_t n1, size_t n, size_t k, int accumulate, int half) {
    size_t whole = n0 + (n1 - n0) / 3 * 3;
    // Four rows of x stay in L1 while the task's rows of w come from L2.
    for (size_t i = 0; i < m; i += 4) {
        size_t rows = m - i < 4 ? m - i : 4;
        for (size_t j = n0; j < whole; j += 3) {
            if (rows == 4) tile4x3(out, x, i, w, j, n, k, accumulate, half);
            else for (size_t r = i; r < i + rows; r++) tile1x3(out, x, r, w, j, n, k, accumulate, half);
        }
        for (size_t j = whole; j < n1; j++)
            for (size_t r = i; r < i + rows; r++) single(out, x, r, w, j, n, k, accumulate, half);
    }
}

__attribute__((target(TARGET)))
void charter_linear_avx512(float *out, const float *x, size_t m, const float *w,
                           size_t n0, size_t n1, size_t n, size_t k, int accumulate) {
    linear(out, x, m, w, n0, n1, n, k, accumulate, 0);
}

__attribute__((target(TARGET)))
void charter_linear_avx512_widen(float *out, const float *x, size_t m, const uint16_t *w,
                                 size_t n0, size_t n1, size_t n, size_t k, int accumulate) {
    linear(out, x, m, w, n0, n1, n, k, accumulate, 1);
}
