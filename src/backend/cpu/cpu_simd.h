#pragma once
// AVX2/FMA helpers for the CPU backend's kernels, compiled per function
// (target attribute) and chosen at run time (have_avx2()), so the binary keeps the
// x86-64 baseline and still runs on CPUs without AVX2. Private to backend/cpu/.
#if defined(__x86_64__) && defined(__GNUC__)
#define RI_X86_SIMD 1
#include <cpuid.h>
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#define RI_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace ringinfer::cpu {

// Whether this CPU runs the RI_AVX2 kernels (checked once). F16C is read from CPUID leaf 1
// (ECX bit 29): clang 14's __builtin_cpu_supports does not know "f16c".
inline bool have_avx2() {
  static const bool ok = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
  }();
  return ok;
}

RI_AVX2 inline float hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The little-endian fp16 at p as fp32 (exact).
RI_AVX2 inline float f16_avx2(const unsigned char* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return _cvtsh_ss(h);
}

// e^x for x <= 0 (and -inf -> 0), 4 double lanes, within ~1 ulp of float64: range
// reduction x = n ln2 + r (ln 2 in two parts, |r| <= ln2 / 2), the Taylor polynomial of
// degree 13 (truncation below 1e-17), then 2^n through the exponent field. The CPU
// attention's softmax runs in float64 (cpu_attention.cpp says why), so its exponentials
// must be float64-accurate: the same e^(s - m) rescaled by another running max differs
// only in float64's last bits.
RI_AVX2 inline __m256d exp_avx2_pd(__m256d x) {
  const __m256d lo = _mm256_set1_pd(-708.0);
  const __m256d under = _mm256_cmp_pd(x, lo, _CMP_LT_OQ);  // e^x near or below DBL_MIN: 0
  x = _mm256_max_pd(x, lo);
  const __m256d n = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(1.4426950408889634)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256d r = _mm256_fnmadd_pd(n, _mm256_set1_pd(6.93147180369123816490e-01), x);
  r = _mm256_fnmadd_pd(n, _mm256_set1_pd(1.90821492927058770002e-10), r);
  static constexpr double c[14] = {1.0,
                                   1.0,
                                   1.0 / 2,
                                   1.0 / 6,
                                   1.0 / 24,
                                   1.0 / 120,
                                   1.0 / 720,
                                   1.0 / 5040,
                                   1.0 / 40320,
                                   1.0 / 362880,
                                   1.0 / 3628800,
                                   1.0 / 39916800,
                                   1.0 / 479001600,
                                   1.0 / 6227020800};
  __m256d y = _mm256_set1_pd(c[13]);
  for (int i = 12; i >= 0; --i) y = _mm256_fmadd_pd(y, r, _mm256_set1_pd(c[i]));
  // 2^n: n in [-1021, 0] here, so the exponent field is in range.
  const __m256i e = _mm256_slli_epi64(
      _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n)), _mm256_set1_epi64x(1023)), 52);
  return _mm256_andnot_pd(under, _mm256_mul_pd(y, _mm256_castsi256_pd(e)));
}

// p[j] = exp(s[j] - m) for j < n rounded down to a multiple of 4; returns their sum.
RI_AVX2 inline double exp_row_avx2_pd(const double* s, double m, int64_t n, double* p) {
  const __m256d vm = _mm256_set1_pd(m);
  __m256d sum = _mm256_setzero_pd();
  for (int64_t j = 0; j + 4 <= n; j += 4) {
    const __m256d e = exp_avx2_pd(_mm256_sub_pd(_mm256_loadu_pd(s + j), vm));
    _mm256_storeu_pd(p + j, e);
    sum = _mm256_add_pd(sum, e);
  }
  __m128d h = _mm_add_pd(_mm256_castpd256_pd128(sum), _mm256_extractf128_pd(sum, 1));
  return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}

}  // namespace ringinfer::cpu
#else
#define RI_X86_SIMD 0
namespace ringinfer::cpu {
inline bool have_avx2() { return false; }
}  // namespace ringinfer::cpu
#endif
