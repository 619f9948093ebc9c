// CPU matmul: out = x W^T for fp32 weights and for GGUF weights kept quantized
// (Q8_0, Q4_0, Q4_1, F16, BF16), which stay as stored and are dequantized block by block
// inside the loops, fp32 arithmetic throughout: a quarter of the bytes of fp32 weights.
//   - a few rows of x (decode): a GEMV per weight row, AVX2/FMA when the CPU has it
//     (runtime dispatch: the binary keeps the x86-64 baseline), else portable C++;
//   - more rows (prefill): each thread dequantizes a panel of weight rows to fp32 scratch
//     and calls OpenBLAS sgemm (single-threaded; the OpenMP team splits the panels).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_simd.h"
#include "model/dtype_convert.h"

namespace ringinfer::cpu {

namespace {

constexpr int64_t kGemvMaxRows = 4;   // x rows up to which a GEMV beats dequantize + sgemm
constexpr int64_t kPanelRows = 256;   // weight rows per dequantized panel (scratch 256 x in fp32)

// ---------------------------------------------------------------- portable kernels

float dot_portable(DType t, const unsigned char* w, const float* x, int64_t n, float* tmp) {
  dequant_row(t, w, n, tmp, false);
  float s = 0.0f;
  for (int64_t k = 0; k < n; ++k) s += tmp[k] * x[k];
  return s;
}

// ---------------------------------------------------------------- AVX2 + FMA kernels
// Per block, sum_j w_j x_j = d sum_j q_j x_j (+ m sum_j x_j for Q4_1, with the block sums
// of x computed once per x row): the integer codes meet x in fp32 and the scale is applied
// once per block. The same sum as with dequantized weights, rounded in another order.
#if RI_X86_SIMD
// The 16 code bytes at p as 32 values: element j in the low nibble of byte j, element
// j + 16 in the high nibble; minus `bias` (8 for Q4_0, 0 for Q4_1). Returns sum_j q_j x_j.
RI_AVX2 inline __m256 nibbles_dot_avx2(const unsigned char* p, const float* x, __m128i bias) {
  const __m128i low = _mm_set1_epi8(0x0f);
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i lo = _mm_sub_epi8(_mm_and_si128(q, low), bias);
  const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), low), bias);
  __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), _mm256_loadu_ps(x));
  s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), _mm256_loadu_ps(x + 8), s);
  s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), _mm256_loadu_ps(x + 16), s);
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), _mm256_loadu_ps(x + 24), s);
}

RI_AVX2 float dot_q4_1_avx2(const unsigned char* w, const float* x, const float* xsum, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  float macc = 0.0f;
  const __m128i zero = _mm_setzero_si128();
  for (int64_t b = 0; b < nb; ++b, w += dtype::kQ4_1Bytes, x += dtype::kQBlock) {
    acc = _mm256_fmadd_ps(nibbles_dot_avx2(w + 4, x, zero), _mm256_set1_ps(f16_avx2(w)), acc);
    macc += f16_avx2(w + 2) * xsum[b];
  }
  return hsum_avx2(acc) + macc;
}

RI_AVX2 float dot_q4_0_avx2(const unsigned char* w, const float* x, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  const __m128i eight = _mm_set1_epi8(8);
  for (int64_t b = 0; b < nb; ++b, w += dtype::kQ4_0Bytes, x += dtype::kQBlock)
    acc = _mm256_fmadd_ps(nibbles_dot_avx2(w + 2, x, eight), _mm256_set1_ps(f16_avx2(w)), acc);
  return hsum_avx2(acc);
}

RI_AVX2 float dot_q8_0_avx2(const unsigned char* w, const float* x, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b, w += dtype::kQ8_0Bytes, x += dtype::kQBlock) {
    const unsigned char* q = w + 2;
    __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q)))),
                             _mm256_loadu_ps(x));
    for (int k = 8; k < 32; k += 8)
      s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + k)))),
                          _mm256_loadu_ps(x + k), s);
    acc = _mm256_fmadd_ps(s, _mm256_set1_ps(f16_avx2(w)), acc);
  }
  return hsum_avx2(acc);
}

// Dequantization to fp32 scratch (prefill panels, embed): the same values as the
// portable code (q d is exact in fp32, so q d + m rounds once either way).
RI_AVX2 void dequant_q4_avx2(const unsigned char* w, int64_t nb, float* dst, bool has_min) {
  const __m128i low = _mm_set1_epi8(0x0f);
  const int64_t bytes = has_min ? dtype::kQ4_1Bytes : dtype::kQ4_0Bytes;
  for (int64_t b = 0; b < nb; ++b, w += bytes, dst += dtype::kQBlock) {
    const float d = f16_avx2(w);
    const __m256 vd = _mm256_set1_ps(d), vm = _mm256_set1_ps(has_min ? f16_avx2(w + 2) : -8.0f * d);
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + (has_min ? 4 : 2)));
    const __m128i lo = _mm_and_si128(q, low), hi = _mm_and_si128(_mm_srli_epi16(q, 4), low);
    const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int k = 0; k < 4; ++k)
      _mm256_storeu_ps(dst + 8 * k, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[k])), vd, vm));
  }
}

RI_AVX2 void dequant_q8_0_avx2(const unsigned char* w, int64_t nb, float* dst) {
  for (int64_t b = 0; b < nb; ++b, w += dtype::kQ8_0Bytes, dst += dtype::kQBlock) {
    const __m256 vd = _mm256_set1_ps(f16_avx2(w));
    for (int k = 0; k < 32; k += 8)
      _mm256_storeu_ps(dst + k, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                                  _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + 2 + k)))),
                                              vd));
  }
}
#endif

// One weight row (n elements of type t) dotted with x; xsum: x's sums per 32-block.
float dot_row(DType t, const unsigned char* w, const float* x, const float* xsum, int64_t n, float* tmp, bool simd) {
#if RI_X86_SIMD
  if (simd) {
    switch (t) {
      case DType::q4_1: return dot_q4_1_avx2(w, x, xsum, n / dtype::kQBlock);
      case DType::q4_0: return dot_q4_0_avx2(w, x, n / dtype::kQBlock);
      case DType::q8_0: return dot_q8_0_avx2(w, x, n / dtype::kQBlock);
      default: break;
    }
  }
#else
  (void)xsum, (void)simd;
#endif
  return dot_portable(t, w, x, n, tmp);
}

}  // namespace

// ---------------------------------------------------------------- dequantization

void dequant_row(DType t, const unsigned char* src, int64_t n, float* dst, bool simd) {
#if RI_X86_SIMD
  if (simd) {
    switch (t) {
      case DType::q8_0: return dequant_q8_0_avx2(src, n / dtype::kQBlock, dst);
      case DType::q4_0: return dequant_q4_avx2(src, n / dtype::kQBlock, dst, false);
      case DType::q4_1: return dequant_q4_avx2(src, n / dtype::kQBlock, dst, true);
      default: break;
    }
  }
#else
  (void)simd;
#endif
  switch (t) {
    case DType::f32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); return;
    case DType::f16: dtype::f16_to_f32(src, n, dst); return;
    case DType::bf16: dtype::bf16_to_f32(src, n, dst); return;
    case DType::q8_0: dtype::dequant_q8_0(src, n / dtype::kQBlock, dst); return;
    case DType::q4_0: dtype::dequant_q4_0(src, n / dtype::kQBlock, dst); return;
    case DType::q4_1: dtype::dequant_q4_1(src, n / dtype::kQBlock, dst); return;
    default: throw Error(std::string("cpu backend: no dequantization for ") + dtype_name(t));
  }
}

// ---------------------------------------------------------------- matmul

void CpuBackend::matmul(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out, bool accumulate) {
  const int64_t n = x.rows(), in = x.cols(), of = w.rows();
  check(x.dtype() == DType::f32 && is_weight_dtype(w.dtype()), "matmul",
        std::string("needs f32 x and an f32 or GGUF weight, got ") + dtype_name(w.dtype()));
  check(w.cols() == in, "matmul", "x is " + shape(x) + " but w is " + shape(w));
  expect(out, n, of, DType::f32, "matmul", "out");
  if (!bias.empty()) expect(bias, of, 1, DType::f32, "matmul", "bias");
  if (n == 0 || of == 0) return;
  const DType t = w.dtype();
  const size_t row_bytes = storage_bytes(t, in);
  const auto* wb = static_cast<const unsigned char*>(w.data());
  const float* xs = x.f32();
  float* o = out.f32();
  if (in == 0) {
    if (!accumulate) std::memset(out.data(), 0, out.bytes());
  } else if (t != DType::f32 && n <= kGemvMaxRows) {
    const int64_t nb = in / dtype::kQBlock;  // x's sums per block (Q4_1's offsets multiply them)
    std::vector<float> xsum(static_cast<size_t>(n * nb), 0.0f);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t b = 0; b < nb; ++b)
        for (int64_t k = 0; k < dtype::kQBlock; ++k) xsum[i * nb + b] += xs[i * in + b * dtype::kQBlock + k];
#pragma omp parallel
    {
      std::vector<float> tmp(static_cast<size_t>(in));
#pragma omp for schedule(static)
      for (int64_t r = 0; r < of; ++r)
        for (int64_t i = 0; i < n; ++i) {
          const float v = dot_row(t, wb + r * row_bytes, xs + i * in, xsum.data() + i * nb, in, tmp.data(), simd_);
          o[i * of + r] = accumulate ? o[i * of + r] + v : v;
        }
    }
  } else {
    // Panels of weight rows over the team, each an sgemm of all x rows against the panel.
    const int64_t team = omp_get_max_threads();
    const int64_t panel = std::max<int64_t>(16, std::min(kPanelRows, (of + team - 1) / team));
    const int64_t panels = (of + panel - 1) / panel;
#pragma omp parallel
    {
      std::vector<float> scratch(t == DType::f32 ? 0 : static_cast<size_t>(panel * in));
#pragma omp for schedule(dynamic, 1)
      for (int64_t p = 0; p < panels; ++p) {
        const int64_t r0 = p * panel, rows = std::min(panel, of - r0);
        const float* wp = w.f32() + r0 * in;
        if (t != DType::f32) {
          for (int64_t r = 0; r < rows; ++r)
            dequant_row(t, wb + (r0 + r) * row_bytes, in, scratch.data() + r * in, simd_);
          wp = scratch.data();
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(rows),
                    static_cast<int>(in), 1.0f, xs, static_cast<int>(in), wp, static_cast<int>(in),
                    accumulate ? 1.0f : 0.0f, o + r0, static_cast<int>(of));
      }
    }
  }
  if (!bias.empty()) {
    const float* b = bias.f32();
#pragma omp parallel for schedule(static) if (n * of >= kParallelMin)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < of; ++k) o[i * of + k] += b[k];
  }
}

}  // namespace ringinfer::cpu
