#include <stddef.h>

/// 1 if the CPU runs AVX-512F instructions (and the OS saves their registers), else 0.
int charter_cpu_has_avx512f(void);

/// out[i][j] (= or +=) sum_t x[i][t] * w[j][t] for rows i < m and columns n0 <= j < n1, with
/// 16-lane AVX-512 FMAs. Call it only when charter_cpu_has_avx512f() is 1. Every output element is
/// the same sequence of operations whatever m, n0 and n1 are: the kernel is batch invariant.
void charter_linear_avx512(float *out, const float *x, size_t m, const float *w,
                           size_t n0, size_t n1, size_t n, size_t k, int accumulate);
