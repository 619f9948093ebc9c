#pragma once
// Element codecs of the KV cache (DESIGN §6 "KV cache dtype"), one definition for the CPU
// backend's exact emulation and the CUDA kernels, so both store the same bytes.
//
// fp8 = e4m3 ("e4m3fn": bias 7, no infinities, largest finite 448, 0x7f/0xff = NaN) with
// one float32 scale per token and KV head, computed when the row is written:
//   amax  = max_d |x_d| over the head's D values (fp32)
//   scale = amax / 448                                  (fp32 division)
//   q_d   = e4m3(x_d / scale), round to nearest even, saturating to +-448
//   zero row (scale == 0, also amax below ~6e-43): scale 0, every byte 0 (+0)
//   value = float(q_d) * scale                          (fp32 multiply)
// NaN or inf in a row gives NaN values (nothing is hidden). The bytes depend on that row's
// values only, never on rank count or the order of work. Relative error per value is at
// most 2^-4 (3 mantissa bits) above 448 * 2^-6 * scale; the largest value of a row is exact.
// bf16 = the upper 16 bits of fp32, round to nearest even (what the CUDA backend stores).
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define RI_HOST_DEVICE __host__ __device__
#else
#define RI_HOST_DEVICE
#endif

namespace ringinfer::kvq {

constexpr float kFp8Max = 448.0f;  // largest finite e4m3 value

// e4m3 bits of x: round to nearest even, saturating; a zero result is +0 (never 0x80).
RI_HOST_DEVICE inline uint8_t fp8_e4m3_bits(float x) {
  if (x != x) return 0x7f;
  const uint8_t sign = x < 0.0f ? 0x80 : 0x00;
  const float a = fabsf(x);
  uint8_t mag;
  if (!(a < kFp8Max)) {
    mag = 0x7e;  // 448 itself, larger values and inf: 448
  } else if (a < 0.015625f) {  // below 2^-6: subnormals, steps of 2^-9 (8 = the smallest normal)
    mag = static_cast<uint8_t>(rintf(a * 512.0f));
  } else {
    int e = 0;
    frexpf(a, &e);                                            // a in [2^(e-1), 2^e)
    const int m = static_cast<int>(rintf(ldexpf(a, 4 - e)));  // 3 mantissa bits: m in [8, 16]
    mag = static_cast<uint8_t>(((e + 6) << 3) + m - 8);       // m = 16 carries into the exponent
  }
  return mag ? static_cast<uint8_t>(sign | mag) : uint8_t(0);
}

// The value of e4m3 bits b (exact in fp32).
RI_HOST_DEVICE inline float fp8_e4m3_value(uint8_t b) {
  const int e = (b >> 3) & 0xf, m = b & 7;
  float a;
  if ((b & 0x7f) == 0x7f) a = NAN;
  else a = e == 0 ? ldexpf(static_cast<float>(m), -9) : ldexpf(static_cast<float>(8 + m), e - 10);
  return (b & 0x80) ? -a : a;
}

// The scale of a row whose largest magnitude is amax.
RI_HOST_DEVICE inline float fp8_scale(float amax) { return amax / kFp8Max; }

// One value of a row quantized with `scale`.
RI_HOST_DEVICE inline uint8_t fp8_quantize(float x, float scale) {
  return scale == 0.0f ? uint8_t(0) : fp8_e4m3_bits(x / scale);
}

// bf16 bits of x, round to nearest even; NaN stays a quiet NaN.
RI_HOST_DEVICE inline uint16_t bf16_bits(float x) {
  uint32_t b;
  memcpy(&b, &x, 4);
  if ((b & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  return static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

RI_HOST_DEVICE inline float bf16_value(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

}  // namespace ringinfer::kvq
