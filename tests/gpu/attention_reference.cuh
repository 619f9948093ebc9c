#pragma once
// What the attention kernel tests (test_flash_attention.cu, test_decode_attention.cu)
// share: random bf16 inputs with their exact values, device buffers, the float64
// reference attention and the comparison with its tolerances. Header-only, CUDA tests only.
//
// Tolerances (bf16 inputs, fp32 accumulation, P rounded to bf16 before P V):
//   O:   ||out - ref|| / ||ref|| <= kTolO = 1e-2
//   LSE: max |out - ref| <= kTolLse = 2e-3 over finite entries; -inf exactly where the
//        reference has it.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ringinfer/cuda_check.h"
#include "ringinfer/kv_quant.h"

namespace ringinfer::test {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr double kTolO = 1e-2, kTolLse = 2e-3;

// bf16 tensor on host (the bits the GPU sees) and its exact values as double.
struct HostBf16 {
  std::vector<__nv_bfloat16> bits;
  std::vector<double> val;
};

// n values drawn from N(0, stddev^2) with rng, rounded to bf16.
inline HostBf16 random_bf16(size_t n, double stddev, std::mt19937_64& rng) {
  std::normal_distribution<float> dist(0.f, float(stddev));
  HostBf16 t;
  t.bits.resize(n);
  t.val.resize(n);
  for (size_t i = 0; i < n; ++i) {
    t.bits[i] = __float2bfloat16_rn(dist(rng));
    t.val[i] = double(__bfloat162float(t.bits[i]));
  }
  return t;
}

// An fp8 KV tensor [rows, Hkv, D] as the cache stores it (kv_quant.h's rule, one scale per
// (row, head)) and its exact dequantized values value(byte) * scale as double.
struct HostFp8 {
  std::vector<uint8_t> bytes;
  std::vector<float> scale;  // [rows, Hkv]
  std::vector<double> val;
};

// Rows of N(0, stddev^2) values times a per-(row, head) magnitude 2^u, u uniform in
// [-spread, spread] (scales differ a lot), quantized; `zero_row` (if >= 0) is all zeros.
inline HostFp8 random_fp8(size_t rows, int Hkv, int D, double stddev, double spread, std::mt19937_64& rng,
                          long zero_row = -1) {
  std::normal_distribution<float> dist(0.f, float(stddev));
  std::uniform_real_distribution<double> mag(-spread, spread);
  HostFp8 t;
  const size_t heads = rows * size_t(Hkv);
  t.bytes.resize(heads * D);
  t.scale.resize(heads);
  t.val.resize(heads * D);
  std::vector<float> x(D);
  for (size_t h = 0; h < heads; ++h) {
    const float m = float(std::exp2(mag(rng)));
    float amax = 0.f;
    for (int d = 0; d < D; ++d) {
      x[d] = long(h / Hkv) == zero_row ? 0.f : dist(rng) * m;
      amax = std::fmax(amax, std::fabs(x[d]));
    }
    const float sc = kvq::fp8_scale(amax);
    t.scale[h] = sc;
    for (int d = 0; d < D; ++d) {
      t.bytes[h * D + d] = kvq::fp8_quantize(x[d], sc);
      t.val[h * D + d] = double(kvq::fp8_e4m3_value(t.bytes[h * D + d])) * double(sc);
    }
  }
  return t;
}

// `count` elements of T on the device (at least one is allocated); freed on destruction.
template <class T>
struct DeviceBuf {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuf(size_t count) : n(count) { CUDA_CHECK(cudaMalloc(&ptr, std::max<size_t>(count, 1) * sizeof(T))); }
  DeviceBuf(const std::vector<T>& h) : DeviceBuf(h.size()) { upload(h); }
  ~DeviceBuf() { cudaFree(ptr); }
  DeviceBuf(const DeviceBuf&) = delete;
  DeviceBuf& operator=(const DeviceBuf&) = delete;
  void upload(const std::vector<T>& h) { CUDA_CHECK(cudaMemcpy(ptr, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice)); }
  // All bytes 0xff: NaN as float, so an element the kernel does not write fails the check.
  void poison() { CUDA_CHECK(cudaMemset(ptr, 0xff, n * sizeof(T))); }
  std::vector<T> download() const {
    std::vector<T> h(n);
    CUDA_CHECK(cudaMemcpy(h.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

// q [n_q, H, D], k and v [n_k, Hkv, D].
struct AttnShape {
  int n_q, n_k, H, Hkv, D;
};

// Reference (O, LSE) in float64. visible(i, j): may query row i see key row j (called from
// several threads). Rows that see no key get O = 0, LSE = -inf. The (row, head) pairs are
// spread over the host's cores (each pair alone, in the same order, whatever the thread
// count): a 70K-key case is billions of multiply-adds, and device time waits for it.
template <class Visible>
void reference_attention(const AttnShape& s, const std::vector<double>& q, const std::vector<double>& k,
                         const std::vector<double>& v, double scale, Visible visible, std::vector<double>& o,
                         std::vector<double>& lse) {
  o.assign(size_t(s.n_q) * s.H * s.D, 0.0);
  lse.assign(size_t(s.n_q) * s.H, kNegInf);
  const int group = s.H / s.Hkv;
  const long pairs = long(s.n_q) * s.H;
  auto run = [&](long first, long step) {
    std::vector<double> score(s.n_k);
    for (long pair = first; pair < pairs; pair += step) {
      const int i = int(pair / s.H), h = int(pair % s.H), kvh = h / group;
      const double* qi = &q[(size_t(i) * s.H + h) * s.D];
      double mx = kNegInf;
      for (int j = 0; j < s.n_k; ++j) {
        score[j] = kNegInf;
        if (!visible(i, j)) continue;
        const double* kj = &k[(size_t(j) * s.Hkv + kvh) * s.D];
        double dot = 0;
        for (int d = 0; d < s.D; ++d) dot += qi[d] * kj[d];
        score[j] = dot * scale;
        mx = std::max(mx, score[j]);
      }
      if (mx == kNegInf) continue;
      double sum = 0;
      double* oi = &o[(size_t(i) * s.H + h) * s.D];
      for (int j = 0; j < s.n_k; ++j) {
        if (score[j] == kNegInf) continue;
        const double p = std::exp(score[j] - mx);
        sum += p;
        const double* vj = &v[(size_t(j) * s.Hkv + kvh) * s.D];
        for (int d = 0; d < s.D; ++d) oi[d] += p * vj[d];
      }
      for (int d = 0; d < s.D; ++d) oi[d] /= sum;
      lse[size_t(i) * s.H + h] = mx + std::log(sum);
    }
  };
  // Threads only where there is work enough to pay for them.
  const double work = double(pairs) * s.n_k * s.D;
  const long threads = work < 1e7 ? 1 : std::min<long>(pairs, std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (long t = 1; t < threads; ++t) pool.emplace_back(run, t, threads);
  run(0, threads);
  for (std::thread& t : pool) t.join();
}

// Checks device results (O, LSE) against the reference with kTolO and kTolLse; returns
// the relative O error.
inline double expect_close(const std::vector<float>& o, const std::vector<float>& lse, const std::vector<double>& ref_o,
                           const std::vector<double>& ref_lse, const std::string& what) {
  double num = 0, den = 0;
  bool finite = true;
  for (size_t i = 0; i < o.size(); ++i) {
    finite = finite && std::isfinite(o[i]);
    num += (o[i] - ref_o[i]) * (o[i] - ref_o[i]);
    den += ref_o[i] * ref_o[i];
  }
  EXPECT_TRUE(finite) << what << ": O has NaN/inf (unwritten or broken)";
  const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  EXPECT_LE(rel, kTolO) << what << ": relative O error";
  double worst = 0;
  int bad_inf = 0;
  for (size_t i = 0; i < lse.size(); ++i) {
    if (ref_lse[i] == kNegInf) {
      bad_inf += !(std::isinf(lse[i]) && lse[i] < 0);
    } else {
      if (!std::isfinite(lse[i])) ++bad_inf;
      else worst = std::max(worst, std::fabs(lse[i] - ref_lse[i]));
    }
  }
  EXPECT_EQ(bad_inf, 0) << what << ": LSE rows with the wrong -inf/finite state";
  EXPECT_LE(worst, kTolLse) << what << ": max LSE error";
  return rel;
}

}  // namespace ringinfer::test
