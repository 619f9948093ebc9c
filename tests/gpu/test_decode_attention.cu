// decode_attention (split-KV) against a float64 CPU reference on fresh random inputs.
// Tolerances as for flash attention (bf16 inputs, fp32 accumulation, P rounded to bf16):
//   O:   ||out - ref|| / ||ref|| <= 1e-2;  LSE: max |out - ref| <= 2e-3.
// Outputs and the workspace are NaN-poisoned before every run.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "gpu_skip.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "decode_attention.h"
#include "ringinfer/cuda_check.h"

namespace ringinfer {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
std::mt19937_64 rng(777);

struct Case {
  int n_q, n_k, H, Hkv, D;
  int variant = 0;
  int num_splits = 0;
};

void run_case(const Case& c) {
  const size_t nq = size_t(c.n_q) * c.H * c.D, nkv = size_t(c.n_k) * c.Hkv * c.D;
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<__nv_bfloat16> q(nq), k(nkv), v(nkv);
  std::vector<double> qd(nq), kd(nkv), vd(nkv);
  for (size_t i = 0; i < nq; ++i) qd[i] = __bfloat162float(q[i] = __float2bfloat16_rn(dist(rng)));
  // Keys with a spread of scales so some splits dominate the merge.
  for (size_t i = 0; i < nkv; ++i) kd[i] = __bfloat162float(k[i] = __float2bfloat16_rn(dist(rng) * 1.5f));
  for (size_t i = 0; i < nkv; ++i) vd[i] = __bfloat162float(v[i] = __float2bfloat16_rn(dist(rng)));

  __nv_bfloat16 *dq, *dk, *dv;
  float *dO, *dL;
  void* ws;
  CUDA_CHECK(cudaMalloc(&dq, std::max<size_t>(nq, 1) * 2));
  CUDA_CHECK(cudaMalloc(&dk, std::max<size_t>(nkv, 1) * 2));
  CUDA_CHECK(cudaMalloc(&dv, std::max<size_t>(nkv, 1) * 2));
  CUDA_CHECK(cudaMalloc(&dO, nq * 4));
  CUDA_CHECK(cudaMalloc(&dL, size_t(c.n_q) * c.H * 4));
  CUDA_CHECK(cudaMemcpy(dq, q.data(), nq * 2, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dk, k.data(), nkv * 2, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dv, v.data(), nkv * 2, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemset(dO, 0xff, nq * 4));
  CUDA_CHECK(cudaMemset(dL, 0xff, size_t(c.n_q) * c.H * 4));

  DecodeAttnParams p;
  p.q = dq;
  p.k = dk;
  p.v = dv;
  p.o = dO;
  p.lse = dL;
  p.n_q = c.n_q;
  p.n_k = c.n_k;
  p.n_heads = c.H;
  p.n_kv_heads = c.Hkv;
  p.head_dim = c.D;
  p.softmax_scale = float(1.0 / std::sqrt(double(c.D)));
  p.variant = c.variant;
  p.num_splits = c.num_splits;
  const size_t ws_bytes = decode_attention_workspace_bytes(p);
  CUDA_CHECK(cudaMalloc(&ws, ws_bytes));
  CUDA_CHECK(cudaMemset(ws, 0xff, ws_bytes));
  decode_attention(p, ws, ws_bytes, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> o(nq), lse(size_t(c.n_q) * c.H);
  CUDA_CHECK(cudaMemcpy(o.data(), dO, nq * 4, cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(lse.data(), dL, lse.size() * 4, cudaMemcpyDeviceToHost));
  cudaFree(dq);
  cudaFree(dk);
  cudaFree(dv);
  cudaFree(dO);
  cudaFree(dL);
  cudaFree(ws);

  // float64 reference: every key visible.
  const int group = c.H / c.Hkv;
  double num = 0, den = 0, worst_lse = 0;
  int bad = 0;
  std::vector<double> sc(c.n_k), ref(c.D);
  for (int t = 0; t < c.n_q; ++t)
    for (int h = 0; h < c.H; ++h) {
      const double* qi = &qd[(size_t(t) * c.H + h) * c.D];
      double mx = kNegInf;
      for (int j = 0; j < c.n_k; ++j) {
        const double* kj = &kd[(size_t(j) * c.Hkv + h / group) * c.D];
        double dot = 0;
        for (int d = 0; d < c.D; ++d) dot += qi[d] * kj[d];
        sc[j] = dot * p.softmax_scale;
        mx = std::max(mx, sc[j]);
      }
      double sum = 0;
      std::fill(ref.begin(), ref.end(), 0.0);
      for (int j = 0; j < c.n_k; ++j) {
        const double w = std::exp(sc[j] - mx);
        sum += w;
        const double* vj = &vd[(size_t(j) * c.Hkv + h / group) * c.D];
        for (int d = 0; d < c.D; ++d) ref[d] += w * vj[d];
      }
      const size_t row = size_t(t) * c.H + h;
      const double ref_lse = c.n_k ? mx + std::log(sum) : kNegInf;
      for (int d = 0; d < c.D; ++d) {
        const double r = c.n_k ? ref[d] / sum : 0.0;
        const double x = o[row * c.D + d];
        bad += !std::isfinite(x);
        num += (x - r) * (x - r);
        den += r * r;
      }
      if (ref_lse == kNegInf)
        bad += !(std::isinf(lse[row]) && lse[row] < 0);
      else if (!std::isfinite(lse[row]))
        ++bad;
      else
        worst_lse = std::max(worst_lse, std::fabs(lse[row] - ref_lse));
    }
  const std::string what = "n_q=" + std::to_string(c.n_q) + " n_k=" + std::to_string(c.n_k) + " H=" +
                           std::to_string(c.H) + " Hkv=" + std::to_string(c.Hkv) + " D=" + std::to_string(c.D) +
                           " variant=" + std::to_string(c.variant) + " splits=" + std::to_string(c.num_splits);
  EXPECT_EQ(bad, 0) << what << ": non-finite outputs or wrong -inf state";
  const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  EXPECT_LE(rel, 1e-2) << what << ": relative O error";
  EXPECT_LE(worst_lse, 2e-3) << what << ": max LSE error";
}

TEST(DecodeAttention, HeadDimsGqaRatiosAndKeyCounts) {
  for (int D : {64, 128})
    for (int ratio : {1, 4, 8})
      for (int n_k : {1, 37, 1000, 5003})
        for (int variant = 0; variant < decode_attention_variants(); ++variant)
          run_case({1, n_k, 2 * ratio, 2, D, variant});
}

TEST(DecodeAttention, SeveralQueryTokensSpanLaunches) {
  // 16 rows per KV head per launch: ratio 8 x 3 tokens takes two launches, ratio 4 x 5 two.
  run_case({3, 2000, 16, 2, 128});
  run_case({5, 777, 8, 2, 64, 1});
  run_case({2, 300, 32, 2, 128});  // ratio 16: one token per launch
}

TEST(DecodeAttention, ForcedSplitCountsAndIdleWarps) {
  // Many splits: some blocks have fewer tiles than warps (idle warps merge as identity).
  run_case({1, 1500, 8, 2, 128, 0, 40});
  run_case({1, 1500, 8, 2, 128, 1, 90});
  run_case({1, 100, 4, 1, 64, 0, 1});
}

TEST(DecodeAttention, NoKeysGivesIdentity) { run_case({2, 0, 8, 2, 128}); }

TEST(DecodeAttention, LongCacheManySplits) { run_case({1, 70000, 32, 8, 128}); }

TEST(DecodeAttention, RejectsTooSmallWorkspace) {
  DecodeAttnParams p;
  p.n_q = 1;
  p.n_k = 100;
  p.n_heads = 8;
  p.n_kv_heads = 2;
  p.head_dim = 128;
  p.softmax_scale = 0.1f;
  p.q = p.k = p.v = reinterpret_cast<const __nv_bfloat16*>(16);
  p.o = p.lse = reinterpret_cast<float*>(16);
  try {
    decode_attention(p, reinterpret_cast<void*>(16), 8, nullptr);
    FAIL() << "accepted an 8-byte workspace";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("workspace of 8 bytes, need"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ringinfer
