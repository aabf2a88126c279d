#include <stddef.h>
#include <stdint.h>

/// 1 if the CPU runs AVX-512F, BW and VL instructions (and the OS saves their registers), else 0.
int charter_cpu_has_avx512f(void);

/// out[i][j] (= or +=) sum_t x[i][t] * w[j][t] for rows i < m and columns n0 <= j < n1, with
/// 16-lane AVX-512 FMAs. Call it only when charter_cpu_has_avx512f() is 1. Every output element is
/// the same sequence of operations whatever m, n0 and n1 are: the kernel is batch invariant.
void charter_linear_avx512(float *out, const float *x, size_t m, const float *w,
                           size_t n0, size_t n1, size_t n, size_t k, int accumulate);

/// The same with bfloat16 weights (bit patterns), each widened to the float32 it stands for as it
/// loads: the result is charter_linear_avx512's on those float32 weights, bit for bit.
void charter_linear_avx512_widen(float *out, const float *x, size_t m, const uint16_t *w,
                                 size_t n0, size_t n1, size_t n, size_t k, int accumulate);

/// 1 if the CPU runs AVX512-BF16 (with AVX-512F, BW and VL), else 0.
int charter_cpu_has_avx512bf16(void);

/// out[i] = x[i] rounded to bfloat16 (nearest, ties to even), as bit patterns. Needs AVX512-BF16.
void charter_round_to_bf16(uint16_t *out, const float *x, size_t count);

/// out[i][j] (= or +=) sum_t x[i][t] * w[j][t] with x and w in bfloat16 (bit patterns) and float32
/// sums: VDPBF16PS, 32 products per instruction. Needs AVX512-BF16. Batch invariant like the others.
void charter_linear_avx512bf16(float *out, const uint16_t *x, size_t m, const uint16_t *w,
                               size_t n0, size_t n1, size_t n, size_t k, int accumulate);

/// Makes glibc serve every block from the heap and keep freed pages (HeapReuse); 1 if it took.
int charter_heap_reuse(void);

/// The main heap's bytes, the bytes in blocks mapped on their own, and the heap's free bytes.
struct charter_heap_figures { size_t heap, mapped, free; };
struct charter_heap_figures charter_heap_figures(void);
