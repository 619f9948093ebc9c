// CPU matmul: out = x W^T for fp32 weights and for GGUF weights kept quantized
// (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K..Q6_K, IQ4_NL, IQ4_XS, F16, BF16), which stay as stored and are
// dequantized block by block inside the loops, fp32 arithmetic throughout: a quarter of
// the bytes of fp32 weights or less.
//
// Each output element is one dot product computed in a fixed order that depends only on
// the weight row and the x row, never on how many rows x has, which rows a call gets, or
// how the weight rows are split among threads (OpenBLAS's sgemm gives a row different bits
// at another M or N: its edge kernels sum in another order). So a token's activations are
// bitwise the same whether its rank holds 59 or 237 tokens, or its rows come in chunks of
// 64 or 13, which is what makes the forward independent of the rank count (README
// "KV cache dtype"). The order: the weight row's fp32 values (GGUF types dequantized to
// the values dequantizing at load gives) times x in 8 lanes, lane l accumulating
// k = l, l + 8, ... by FMA, then hsum_avx2's fixed tree, then the k past the last multiple
// of 8 by scalar FMA (AVX2 + FMA, runtime dispatch: the binary keeps the x86-64 baseline);
// portable C++ (a CPU without AVX2, or the test option) uses 8 lanes without FMA and the
// same tree. The kernel blocks up to 4 x rows by 3 to 8 weight rows in registers. Prefill's
// many x rows: each thread dequantizes a panel of weight rows to fp32 scratch and runs every
// x row against it, 4 at a time (they stay in L1 while the panel streams from L2). Decode's
// few rows (<= 4) read each weight once: the AVX2 kernels decode each block of a stored
// row in registers right before its FMAs (the same fp32 values, lanes and order, so the
// same bits) while prefetching the next rows; the portable code dequantizes 24 weight
// rows at a time into L1.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_simd.h"
#include "model/dtype_convert.h"

namespace ringinfer::cpu {

namespace {

constexpr int64_t kRowBlock = 4;     // x rows per kernel call (registers)
constexpr int64_t kDecodeRows = 24;  // weight rows dequantized at a time for few x rows (into L1)
constexpr int64_t kPanelRows = 64;   // weight rows per panel (fp32 or dequantized: 64 x in floats)

// ---------------------------------------------------------------- portable kernels

// The dot product of n fp32 values: 8 lanes, then (l, l+4) pairs, (0+2), (1+3), their sum
// (hsum_avx2's tree), then the tail.
float dot_portable(const float* w, const float* x, int64_t n) {
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8)
    for (int l = 0; l < 8; ++l) lane[l] += w[k + l] * x[k + l];
  const float a0 = lane[0] + lane[4], a1 = lane[1] + lane[5], a2 = lane[2] + lane[6], a3 = lane[3] + lane[7];
  float s = (a0 + a2) + (a1 + a3);
  for (; k < n; ++k) s += w[k] * x[k];
  return s;
}

// ---------------------------------------------------------------- AVX2 + FMA kernels
#if RI_X86_SIMD
RI_AVX2 inline float fma_ss(float a, float b, float c) {
  return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)));
}

// out[i * ldo + c] = row c of w (fp32, stride ldw) . row i of x (stride ldx), n values,
// for i < R, c < C.
template <int R, int C>
RI_AVX2 void dot_f32_block(const float* w, int64_t ldw, const float* x, int64_t ldx, int64_t n, float* out,
                           int64_t ldo) {
  __m256 acc[R][C];
  for (int i = 0; i < R; ++i)
    for (int c = 0; c < C; ++c) acc[i][c] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    __m256 wv[C];
    for (int c = 0; c < C; ++c) wv[c] = _mm256_loadu_ps(w + c * ldw + k);
    for (int i = 0; i < R; ++i) {
      const __m256 xv = _mm256_loadu_ps(x + i * ldx + k);
      for (int c = 0; c < C; ++c) acc[i][c] = _mm256_fmadd_ps(wv[c], xv, acc[i][c]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int c = 0; c < C; ++c) {
      float s = hsum_avx2(acc[i][c]);
      for (int64_t kk = k; kk < n; ++kk) s = fma_ss(w[c * ldw + kk], x[i * ldx + kk], s);
      out[i * ldo + c] = s;
    }
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

// Bitwise the scalar values (dtype_convert.cpp) only because every product below is exact
// in fp32 (a fp16 d times small integers: at most 23 significant bits), so the compiler may
// fuse a product with the following add or subtract (it does: vfmadd/vfmsub) without
// changing a bit. A format whose products round would need -ffp-contract=off here.
// Q5_0 / Q5_1: value j's fifth bit is bit j of the block's u32 qh; the same float
// operations as dtype::dequant_q5_0 / q5_1 ((q - 16) d exact; q d exact, then + m).
template <bool kHasMin>
RI_AVX2 void dequant_q5_avx2(const unsigned char* w, int64_t nb, float* dst) {
  const int64_t bytes = kHasMin ? dtype::kQ5_1Bytes : dtype::kQ5_0Bytes;
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), one = _mm256_set1_epi32(1);
  const __m256i low = _mm256_set1_epi32(0x0f);
  for (int64_t b = 0; b < nb; ++b, w += bytes, dst += dtype::kQBlock) {
    const __m256 d = _mm256_set1_ps(f16_avx2(w)), m = _mm256_set1_ps(kHasMin ? f16_avx2(w + 2) : 0.0f);
    const unsigned char* q = w + (kHasMin ? 4 : 2);
    uint32_t qh_bits;
    std::memcpy(&qh_bits, q, sizeof qh_bits);
    const __m256i qh = _mm256_set1_epi32(static_cast<int>(qh_bits));
    for (int g = 0; g < 4; ++g) {  // values 8g .. 8g + 7: nibbles of bytes (8g .. 8g + 7) mod 16
      const __m256i bytes8 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 4 + 8 * (g % 2))));
      const __m256i nib = g < 2 ? _mm256_and_si256(bytes8, low) : _mm256_srli_epi32(bytes8, 4);
      const __m256i hi = _mm256_and_si256(_mm256_srlv_epi32(qh, _mm256_add_epi32(lane, _mm256_set1_epi32(8 * g))), one);
      __m256i v = _mm256_or_si256(nib, _mm256_slli_epi32(hi, 4));
      if (!kHasMin) v = _mm256_sub_epi32(v, _mm256_set1_epi32(16));
      const __m256 qd = _mm256_mul_ps(_mm256_cvtepi32_ps(v), d);
      _mm256_storeu_ps(dst + 8 * g, kHasMin ? _mm256_add_ps(qd, m) : qd);
    }
  }
}

// Q4_K / Q5_K: per 32-value sub-block s, d scale and dmin min (exact products), then
// q (d scale) - dmin min, as dtype::dequant_q4_k / q5_k.
template <bool kFive>
RI_AVX2 void dequant_qk4_avx2(const unsigned char* w, int64_t nb, float* dst) {
  const int64_t bytes = kFive ? dtype::kQ5_KBytes : dtype::kQ4_KBytes;
  const __m256i low = _mm256_set1_epi32(0x0f), one = _mm256_set1_epi32(1);
  for (int64_t b = 0; b < nb; ++b, w += bytes) {
    const float d = f16_avx2(w), dmin = f16_avx2(w + 2);
    const unsigned char* qh = w + 16;
    const unsigned char* qs = w + (kFive ? 48 : 16);
    for (int s = 0; s < 8; ++s, dst += 32) {
      int scale, min;
      dtype::scale_min_k4(s, w + 4, &scale, &min);
      const __m256 dl = _mm256_set1_ps(d * static_cast<float>(scale)), ml = _mm256_set1_ps(dmin * static_cast<float>(min));
      const unsigned char* q = qs + 32 * (s / 2);
      for (int g = 0; g < 4; ++g) {
        const __m256i b8 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 8 * g)));
        __m256i v = s % 2 == 0 ? _mm256_and_si256(b8, low) : _mm256_srli_epi32(b8, 4);
        if (kFive) {
          const __m256i h8 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(qh + 8 * g)));
          const __m256i bit = _mm256_and_si256(_mm256_srlv_epi32(h8, _mm256_set1_epi32(s)), one);
          v = _mm256_or_si256(v, _mm256_slli_epi32(bit, 4));
        }
        _mm256_storeu_ps(dst + 8 * g, _mm256_sub_ps(_mm256_mul_ps(dl, _mm256_cvtepi32_ps(v)), ml));
      }
    }
  }
}

// Q6_K: value l + 32 k of each 128-value half: 4 low bits from ql, 2 high bits from qh[l]
// at bit 2 k, minus 32, times (d scale[l / 16 + 2 k]), as dtype::dequant_q6_k.
RI_AVX2 void dequant_q6_k_avx2(const unsigned char* w, int64_t nb, float* dst) {
  const __m256i low = _mm256_set1_epi32(0x0f), three = _mm256_set1_epi32(3), off = _mm256_set1_epi32(32);
  for (int64_t b = 0; b < nb; ++b, w += dtype::kQ6_KBytes) {
    const float d = f16_avx2(w + 208);
    for (int half = 0; half < 2; ++half) {
      const unsigned char* ql = w + 64 * half;
      const unsigned char* qh = w + 128 + 32 * half;
      const auto* sc = reinterpret_cast<const int8_t*>(w + 192 + 8 * half);
      for (int k = 0; k < 4; ++k, dst += 32)
        for (int g = 0; g < 4; ++g) {
          const __m256i l8 =
              _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(ql + 32 * (k % 2) + 8 * g)));
          const __m256i lo = k < 2 ? _mm256_and_si256(l8, low) : _mm256_srli_epi32(l8, 4);
          const __m256i h8 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(qh + 8 * g)));
          const __m256i hi = _mm256_and_si256(_mm256_srlv_epi32(h8, _mm256_set1_epi32(2 * k)), three);
          const __m256i q = _mm256_sub_epi32(_mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)), off);
          const __m256 ds = _mm256_set1_ps(d * static_cast<float>(sc[g / 2 + 2 * k]));
          _mm256_storeu_ps(dst + 8 * g, _mm256_mul_ps(ds, _mm256_cvtepi32_ps(q)));
        }
    }
  }
}

// Weight rows per kernel call for R x rows: R x C accumulators (and R x rows, one weight
// vector) fill the 16 ymm registers; decode's single row needs many independent
// accumulators, its FMA chain being latency-bound.
template <int R>
constexpr int64_t col_block() {
  return R == 1 ? 8 : R == 2 ? 6 : R == 3 ? 4 : 3;
}

// dot_f32_block<R, C> for weight rows in blocks of col_block<R>() (the last one shorter).
template <int R>
void dot_f32_rows(int64_t cols, const float* w, int64_t ldw, const float* x, int64_t ldx, int64_t n, float* out,
                  int64_t ldo) {
  constexpr int64_t C = col_block<R>();
  int64_t c = 0;
  for (; c + C <= cols; c += C) dot_f32_block<R, C>(w + c * ldw, ldw, x, ldx, n, out + c, ldo);
  switch (cols - c) {
    case 0: return;
    case 1: return dot_f32_block<R, 1>(w + c * ldw, ldw, x, ldx, n, out + c, ldo);
    case 2: return dot_f32_block<R, (C > 2 ? 2 : 1)>(w + c * ldw, ldw, x, ldx, n, out + c, ldo);
    case 3: return dot_f32_block<R, (C > 3 ? 3 : 1)>(w + c * ldw, ldw, x, ldx, n, out + c, ldo);
    case 4: return dot_f32_block<R, (C > 4 ? 4 : 1)>(w + c * ldw, ldw, x, ldx, n, out + c, ldo);
    case 5: return dot_f32_block<R, (C > 5 ? 5 : 1)>(w + c * ldw, ldw, x, ldx, n, out + c, ldo);
    case 6: return dot_f32_block<R, (C > 6 ? 6 : 1)>(w + c * ldw, ldw, x, ldx, n, out + c, ldo);
    default: return dot_f32_block<R, (C > 7 ? 7 : 1)>(w + c * ldw, ldw, x, ldx, n, out + c, ldo);
  }
}

// fp16 / bf16 rows to fp32 (exact conversions, the values of dtype::f16_to_f32 and
// bf16_to_f32), 8 at a time.
RI_AVX2 void f16_to_f32_avx2(const unsigned char* w, int64_t n, float* dst) {
  int64_t k = 0;
  for (; k + 8 <= n; k += 8)
    _mm256_storeu_ps(dst + k, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 2 * k))));
  for (; k < n; ++k) dst[k] = f16_avx2(w + 2 * k);
}

RI_AVX2 inline __m256 bf16x8_avx2(const unsigned char* p) {
  return _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}

RI_AVX2 inline float bf16_value(const unsigned char* p) {
  const uint32_t bits = static_cast<uint32_t>(p[0] | (p[1] << 8)) << 16;
  float v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

RI_AVX2 void bf16_to_f32_avx2(const unsigned char* w, int64_t n, float* dst) {
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) _mm256_storeu_ps(dst + k, bf16x8_avx2(w + 2 * k));
  for (; k < n; ++k) dst[k] = bf16_value(w + 2 * k);
}

// ---------------------------------------------------------------- decode kernels
// Few x rows (decode): the weights are read once per call, so dequantizing them to memory
// and reading them back costs as much as the product. These kernels dequantize each step
// of a stored weight row into registers and use it at once: the very fp32 values
// dequant_row() writes (the same float operations: q d + m by FMA, q d exact), in the same
// lanes and order as dot_f32_block, so every output element has the bits of the panel
// path (tests/unit/test_cpu_backend.cpp, MatmulFewRowsBitwiseEqualManyRows).
//
// A decoder: kVecs vectors of 8 values per step (a 32-value block for Q8_0 / Q4_x, 8
// values for F16 / BF16), kStepBytes stored bytes per step; step(p, w) decodes the step
// at p; value(row, k) is value k of a row (the scalar tail, types of block 1 only).
struct DecodeF16 {
  static constexpr int kVecs = 1;
  static constexpr int64_t kStepBytes = 16;
  RI_AVX2 static void step(const unsigned char* p, __m256* w) {
    w[0] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  RI_AVX2 static float value(const unsigned char* row, int64_t k) { return f16_avx2(row + 2 * k); }
};

struct DecodeBF16 {
  static constexpr int kVecs = 1;
  static constexpr int64_t kStepBytes = 16;
  RI_AVX2 static void step(const unsigned char* p, __m256* w) { w[0] = bf16x8_avx2(p); }
  RI_AVX2 static float value(const unsigned char* row, int64_t k) { return bf16_value(row + 2 * k); }
};

// Q8_0: q d (exact), as dequant_q8_0_avx2.
struct DecodeQ8_0 {
  static constexpr int kVecs = 4;
  static constexpr int64_t kStepBytes = dtype::kQ8_0Bytes;
  RI_AVX2 static void step(const unsigned char* p, __m256* w) {
    const __m256 d = _mm256_set1_ps(f16_avx2(p));
    for (int v = 0; v < 4; ++v)
      w[v] = _mm256_mul_ps(
          _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 2 + 8 * v)))),
          d);
  }
  static float value(const unsigned char*, int64_t) { return 0.0f; }  // rows are whole blocks: no tail
};

// Q4_0 / Q4_1: FMA(q, d, m) with m = -8 d (Q4_0) or the block's m, as dequant_q4_avx2.
// Values 0-7 and 8-15 are the low nibbles of bytes 0-7 and 8-15, 16-31 their high nibbles.
template <bool kHasMin>
struct DecodeQ4 {
  static constexpr int kVecs = 4;
  static constexpr int64_t kStepBytes = kHasMin ? dtype::kQ4_1Bytes : dtype::kQ4_0Bytes;
  RI_AVX2 static void step(const unsigned char* p, __m256* w) {
    uint32_t dm_bits;  // d and (Q4_1) m, fp16
    std::memcpy(&dm_bits, p, sizeof dm_bits);
    const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dm_bits)));
    const __m256 d = _mm256_broadcastss_ps(dm);
    const __m256 m = kHasMin ? _mm256_broadcastss_ps(_mm_movehdup_ps(dm)) : _mm256_mul_ps(d, _mm256_set1_ps(-8.0f));
    const unsigned char* q = p + (kHasMin ? 4 : 2);
    const __m256i b0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q)));
    const __m256i b1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 8)));
    const __m256i low = _mm256_set1_epi32(0x0f);
    w[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(b0, low)), d, m);
    w[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(b1, low)), d, m);
    w[2] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(b0, 4)), d, m);
    w[3] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(b1, 4)), d, m);
  }
  static float value(const unsigned char*, int64_t) { return 0.0f; }  // rows are whole blocks: no tail
};

// out[i * ldo + c] = stored weight row c (at w + c * row_bytes) . row i of x, n values,
// for i < R, c < C: dot_f32_block's lanes, tree and tail on values decoded in registers.
// Meanwhile the next rows' bytes [w + C row_bytes, end) are prefetched into L1, spread over
// the steps: the C rows are C interleaved streams, which the hardware prefetcher does not
// follow well (measured: Q8_0 from DRAM 35% slower than from cache without this).
template <class D, int R, int C>
RI_AVX2 void dot_stored_block(const unsigned char* w, int64_t row_bytes, const float* x, int64_t ldx, int64_t n,
                              float* out, int64_t ldo, const unsigned char* end) {
  constexpr int64_t kValues = 8 * D::kVecs;
  __m256 acc[R][C];
  for (int i = 0; i < R; ++i)
    for (int c = 0; c < C; ++c) acc[i][c] = _mm256_setzero_ps();
  const int64_t steps = n / kValues;
  const unsigned char* pf = w + C * row_bytes;
  const int64_t pf_bytes = std::min<int64_t>(end - pf, C * row_bytes);
  const int64_t pf_step = steps > 0 ? (pf_bytes / steps + 64) & ~int64_t{63} : 0;  // bytes per step, >= 64
  for (int64_t s = 0; s < steps; ++s) {
    for (int64_t b = s * pf_step; b < std::min(pf_bytes, (s + 1) * pf_step); b += 64)
      _mm_prefetch(reinterpret_cast<const char*>(pf + b), _MM_HINT_T0);
    const float* xs = x + s * kValues;
    for (int c = 0; c < C; ++c) {
      __m256 wv[D::kVecs];
      D::step(w + c * row_bytes + s * D::kStepBytes, wv);
      for (int v = 0; v < D::kVecs; ++v)
        for (int i = 0; i < R; ++i)
          acc[i][c] = _mm256_fmadd_ps(wv[v], _mm256_loadu_ps(xs + i * ldx + 8 * v), acc[i][c]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int c = 0; c < C; ++c) {
      float s = hsum_avx2(acc[i][c]);
      for (int64_t k = steps * kValues; k < n; ++k) s = fma_ss(D::value(w + c * row_bytes, k), x[i * ldx + k], s);
      out[i * ldo + c] = s;
    }
}

// Weight rows per dot_stored_block call for R x rows: fewer than col_block<R>() leaves
// registers for the decoded step (measured, Q4_1 and Q8_0 at 1-4 rows: 6, 4, 3, 2 as fast
// as or up to 8% faster than 8, 6, 4, 3).
template <int R>
constexpr int stored_col_block() {
  return R == 1 ? 6 : R == 2 ? 4 : R == 3 ? 3 : 2;
}

// dot_stored_block<D, R, C> for weight rows in blocks of stored_col_block<R>(), the rest
// by 4, 2, 1.
template <class D, int R>
void dot_stored_rows(int64_t cols, const unsigned char* w, int64_t row_bytes, const float* x, int64_t ldx, int64_t n,
                     float* out, int64_t ldo) {
  constexpr int C = stored_col_block<R>();
  const unsigned char* end = w + cols * row_bytes;
  int64_t c = 0;
  for (; c + C <= cols; c += C) dot_stored_block<D, R, C>(w + c * row_bytes, row_bytes, x, ldx, n, out + c, ldo, end);
  if (C > 4 && c + 4 <= cols) {
    dot_stored_block<D, R, (C > 4 ? 4 : 1)>(w + c * row_bytes, row_bytes, x, ldx, n, out + c, ldo, end);
    c += 4;
  }
  if (c + 2 <= cols) {
    dot_stored_block<D, R, 2>(w + c * row_bytes, row_bytes, x, ldx, n, out + c, ldo, end);
    c += 2;
  }
  if (c < cols) dot_stored_block<D, R, 1>(w + c * row_bytes, row_bytes, x, ldx, n, out + c, ldo, end);
}

template <class D>
void dot_stored_tile_of(int64_t cols, const unsigned char* w, int64_t row_bytes, const float* x, int64_t ldx,
                        int64_t rows, int64_t n, float* out, int64_t ldo) {
  switch (rows) {
    case 1: return dot_stored_rows<D, 1>(cols, w, row_bytes, x, ldx, n, out, ldo);
    case 2: return dot_stored_rows<D, 2>(cols, w, row_bytes, x, ldx, n, out, ldo);
    case 3: return dot_stored_rows<D, 3>(cols, w, row_bytes, x, ldx, n, out, ldo);
    default: return dot_stored_rows<D, 4>(cols, w, row_bytes, x, ldx, n, out, ldo);
  }
}
#endif

// Whether dot_stored_tile takes weights of type t: the GGUF types it has a decoder for,
// with the AVX2 kernels (Q5_x and the k-quants are dequantized kDecodeRows rows at a time).
bool decodes_in_registers(DType t, bool simd) {
  return RI_X86_SIMD && simd &&
         (t == DType::f16 || t == DType::bf16 || t == DType::q8_0 || t == DType::q4_0 || t == DType::q4_1);
}

// out (rows x cols, stride ldo) = x rows (rows <= kRowBlock, stride ldx) . stored weight
// rows of a GGUF type (cols of them at w, row_bytes apart), n values each, decoded in
// registers; only where decodes_in_registers(t, true).
void dot_stored_tile(DType t, const unsigned char* w, int64_t row_bytes, int64_t cols, const float* x, int64_t ldx,
                     int64_t rows, int64_t n, float* out, int64_t ldo) {
#if RI_X86_SIMD
  switch (t) {
    case DType::f16: return dot_stored_tile_of<DecodeF16>(cols, w, row_bytes, x, ldx, rows, n, out, ldo);
    case DType::bf16: return dot_stored_tile_of<DecodeBF16>(cols, w, row_bytes, x, ldx, rows, n, out, ldo);
    case DType::q8_0: return dot_stored_tile_of<DecodeQ8_0>(cols, w, row_bytes, x, ldx, rows, n, out, ldo);
    case DType::q4_0: return dot_stored_tile_of<DecodeQ4<false>>(cols, w, row_bytes, x, ldx, rows, n, out, ldo);
    case DType::q4_1: return dot_stored_tile_of<DecodeQ4<true>>(cols, w, row_bytes, x, ldx, rows, n, out, ldo);
    default: break;
  }
#else
  (void)w, (void)row_bytes, (void)cols, (void)x, (void)ldx, (void)rows, (void)n, (void)out, (void)ldo;
#endif
  throw Error(std::string("cpu backend: no register decoding for ") + dtype_name(t));
}

// out (rows x cols, stride ldo) = x rows (rows <= kRowBlock, stride ldx) . fp32 weight rows
// wp (cols of them, stride ldw), n values each.
void dot_f32_tile(const float* wp, int64_t ldw, int64_t cols, const float* x, int64_t ldx, int64_t rows, int64_t n,
                  float* out, int64_t ldo, bool simd) {
#if RI_X86_SIMD
  if (simd) {
    switch (rows) {
      case 1: dot_f32_rows<1>(cols, wp, ldw, x, ldx, n, out, ldo); break;
      case 2: dot_f32_rows<2>(cols, wp, ldw, x, ldx, n, out, ldo); break;
      case 3: dot_f32_rows<3>(cols, wp, ldw, x, ldx, n, out, ldo); break;
      default: dot_f32_rows<4>(cols, wp, ldw, x, ldx, n, out, ldo); break;
    }
    return;
  }
#else
  (void)simd;
#endif
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < cols; ++c) out[i * ldo + c] = dot_portable(wp + c * ldw, x + i * ldx, n);
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
      case DType::q5_0: return dequant_q5_avx2<false>(src, n / dtype::kQBlock, dst);
      case DType::q5_1: return dequant_q5_avx2<true>(src, n / dtype::kQBlock, dst);
      case DType::q4_k: return dequant_qk4_avx2<false>(src, n / dtype::kQKBlock, dst);
      case DType::q5_k: return dequant_qk4_avx2<true>(src, n / dtype::kQKBlock, dst);
      case DType::q6_k: return dequant_q6_k_avx2(src, n / dtype::kQKBlock, dst);
      case DType::f16: return f16_to_f32_avx2(src, n, dst);
      case DType::bf16: return bf16_to_f32_avx2(src, n, dst);
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
    case DType::q5_0: dtype::dequant_q5_0(src, n / dtype::kQBlock, dst); return;
    case DType::q5_1: dtype::dequant_q5_1(src, n / dtype::kQBlock, dst); return;
    case DType::q2_k: dtype::dequant_q2_k(src, n / dtype::kQKBlock, dst); return;
    case DType::q3_k: dtype::dequant_q3_k(src, n / dtype::kQKBlock, dst); return;
    case DType::q4_k: dtype::dequant_q4_k(src, n / dtype::kQKBlock, dst); return;
    case DType::q5_k: dtype::dequant_q5_k(src, n / dtype::kQKBlock, dst); return;
    case DType::q6_k: dtype::dequant_q6_k(src, n / dtype::kQKBlock, dst); return;
    case DType::iq4_nl: dtype::dequant_iq4_nl(src, n / dtype::kQBlock, dst); return;
    case DType::iq4_xs: dtype::dequant_iq4_xs(src, n / dtype::kQKBlock, dst); return;
    default: throw Error(std::string("cpu backend: no dequantization for ") + dtype_name(t));
  }
}

// ---------------------------------------------------------------- matmul

void CpuBackend::matmul(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out, bool accumulate) {
  matmul_products(x, {{w, bias, out}}, accumulate);
}

void CpuBackend::matmuls(const Tensor& x, const std::vector<Product>& products) {
  matmul_products(x, products, false);
}

// Every product's weight rows in panels, a multiple of the team's size of them per product
// (decode's few x rows split evenly), each panel against every x row; all products' panels
// in one parallel region (decode runs q, k, v and gate, up as one: waking the team costs
// microseconds, ~100 times per token). A panel's split changes no bits (the file's header).
void CpuBackend::matmul_products(const Tensor& x, const std::vector<Product>& products, bool accumulate) {
  const int64_t n = x.rows(), in = x.cols();
  check(x.dtype() == DType::f32, "matmul", std::string("needs f32 x, got ") + dtype_name(x.dtype()));
  for (const Product& p : products) {
    check(is_weight_dtype(p.w.dtype()), "matmul",
          std::string("needs an f32 or GGUF weight, got ") + dtype_name(p.w.dtype()));
    check(p.w.cols() == in, "matmul", "x is " + shape(x) + " but w is " + shape(p.w));
    expect(p.out, n, p.w.rows(), DType::f32, "matmul", "out");
    if (!p.bias.empty()) expect(p.bias, p.w.rows(), 1, DType::f32, "matmul", "bias");
  }
  if (n == 0) return;
  if (in == 0) {
    for (const Product& p : products)
      if (!accumulate && !p.out.empty()) std::memset(p.out.data(), 0, p.out.bytes());
  } else {
    // first[j]: product j's first panel among all; panel[j]: its weight rows per panel.
    const int64_t team = omp_get_max_threads();
    const size_t np = products.size();
    std::vector<int64_t> first(np + 1, 0), panel(np, 0);
    int64_t max_panel = 0, scratch_floats = 0;
    const bool few = n <= kRowBlock;
    for (size_t j = 0; j < np; ++j) {
      const int64_t of = products[j].w.rows();
      const int64_t panels = team * ((of + team * kPanelRows - 1) / (team * kPanelRows));
      panel[j] = panels > 0 ? (of + panels - 1) / panels : 0;
      first[j + 1] = first[j] + panels;
      max_panel = std::max(max_panel, panel[j]);
      // Decode's few x rows: GGUF weights decoded in registers (AVX2), or dequantized
      // kDecodeRows rows at a time (portable); more rows: each panel dequantized once.
      const DType t = products[j].w.dtype();
      if (t != DType::f32 && !(few && decodes_in_registers(t, simd_)))
        scratch_floats = std::max(scratch_floats, (few ? kDecodeRows : panel[j]) * in);
    }
#pragma omp parallel
    {
      std::vector<float> scratch(static_cast<size_t>(scratch_floats));
      std::vector<float> vals(static_cast<size_t>(kRowBlock * max_panel));
#pragma omp for schedule(dynamic, 1)
      for (int64_t g = 0; g < first[np]; ++g) {
        size_t j = 0;
        while (first[j + 1] <= g) ++j;
        const Tensor& w = products[j].w;
        const int64_t of = w.rows(), pr = panel[j];
        const int64_t r0 = std::min(of, (g - first[j]) * pr), rows = std::min(pr, of - r0);
        if (rows <= 0) continue;
        const DType t = w.dtype();
        const size_t row_bytes = storage_bytes(t, in);
        const auto* wb = static_cast<const unsigned char*>(w.data());
        // Weight rows r0 + [c0, c0 + cn) as fp32 rows of stride `in`: the weights' own, or
        // dequantized into scratch.
        const auto fp32_rows = [&](int64_t c0, int64_t cn, float* dst) -> const float* {
          if (t == DType::f32) return w.f32() + (r0 + c0) * in;
          for (int64_t c = 0; c < cn; ++c) dequant_row(t, wb + (r0 + c0 + c) * row_bytes, in, dst + c * in, simd_);
          return dst;
        };
        if (few && decodes_in_registers(t, simd_)) {
          dot_stored_tile(t, wb + r0 * row_bytes, static_cast<int64_t>(row_bytes), rows, x.f32(), in, n, in,
                          vals.data(), pr);
        } else if (few) {
          for (int64_t c0 = 0; c0 < rows; c0 += kDecodeRows) {
            const int64_t cn = std::min(kDecodeRows, rows - c0);
            dot_f32_tile(fp32_rows(c0, cn, scratch.data()), in, cn, x.f32(), in, n, in, vals.data() + c0, pr, simd_);
          }
        }
        const float* wp = few ? nullptr : fp32_rows(0, rows, scratch.data());
        for (int64_t i0 = 0; i0 < n; i0 += kRowBlock) {
          const int64_t ri = std::min(kRowBlock, n - i0);
          if (!few) dot_f32_tile(wp, in, rows, x.f32() + i0 * in, in, ri, in, vals.data(), pr, simd_);
          for (int64_t i = 0; i < ri; ++i) {
            float* oi = products[j].out.f32() + (i0 + i) * of + r0;
            const float* v = vals.data() + i * pr;
            for (int64_t r = 0; r < rows; ++r) oi[r] = accumulate ? oi[r] + v[r] : v[r];
          }
        }
      }
    }
  }
  for (const Product& p : products) {
    if (p.bias.empty()) continue;
    const int64_t of = p.w.rows();
    const float* b = p.bias.f32();
    float* o = p.out.f32();
#pragma omp parallel for schedule(static) if (n * of >= kParallelMin)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < of; ++k) o[i * of + k] += b[k];
  }
}

}  // namespace ringinfer::cpu
