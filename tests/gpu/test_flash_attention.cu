// flash_attention_forward against a float64 CPU reference on fresh random inputs.
// Tolerances (attention_reference.cuh; bf16 inputs, fp32 accumulation, P rounded to bf16
// before P V):
//   O:   ||out - ref|| / ||ref|| <= 1e-2 (measured ~3e-3)
//   LSE: max |out - ref| <= 2e-3 over finite entries; -inf exactly where the reference has it.
// Outputs are NaN-poisoned before overwrite runs, so an unwritten element fails.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "gpu_skip.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "attention_reference.cuh"
#include "flash_attention.h"
#include "kv_cache_ops.h"
#include "gtest_helpers.h"
#include "ringinfer/cuda_check.h"

namespace ringinfer {
namespace {

using test::DeviceBuf;
using test::expect_close;
using test::HostBf16;
using test::kNegInf;
using test::reference_attention;
using Shape = test::AttnShape;

std::mt19937_64 rng(20261124);

HostBf16 random_bf16(size_t n, double stddev) { return test::random_bf16(n, stddev, rng); }

// Merges (o2, lse2) into (o1, lse1) by log-sum-exp (the identity is LSE = -inf).
void reference_merge(int D, std::vector<double>& o1, std::vector<double>& lse1, const std::vector<double>& o2,
                     const std::vector<double>& lse2) {
  for (size_t r = 0; r < lse1.size(); ++r) {
    if (lse2[r] == kNegInf) continue;
    if (lse1[r] == kNegInf) {
      lse1[r] = lse2[r];
      for (int d = 0; d < D; ++d) o1[r * D + d] = o2[r * D + d];
      continue;
    }
    const double m = std::max(lse1[r], lse2[r]);
    const double l = m + std::log(std::exp(lse1[r] - m) + std::exp(lse2[r] - m));
    const double w1 = std::exp(lse1[r] - l), w2 = std::exp(lse2[r] - l);
    for (int d = 0; d < D; ++d) o1[r * D + d] = w1 * o1[r * D + d] + w2 * o2[r * D + d];
    lse1[r] = l;
  }
}

// Global-position striped rule, written independently of the kernel's folded form.
struct Striped {
  int q_start, r, s, N;
  bool operator()(int i, int j) const { return long(j) * N + s <= long(q_start + i) * N + r; }
};

// Random q [n_q, H, D], k and v [n_k, Hkv, D] of N(0, 1) in bf16, drawn in that order.
struct Qkv {
  HostBf16 q, k, v;
};
Qkv random_qkv(const Shape& s) {
  Qkv t;
  t.q = random_bf16(size_t(s.n_q) * s.H * s.D, 1.0);
  t.k = random_bf16(size_t(s.n_k) * s.Hkv * s.D, 1.0);
  t.v = random_bf16(size_t(s.n_k) * s.Hkv * s.D, 1.0);
  return t;
}

// One call on dense buffers of shape s; the caller sets softmax_scale, mask, merge and variant.
FlashAttnParams dense_params(const Shape& s, const DeviceBuf<__nv_bfloat16>& q, const DeviceBuf<__nv_bfloat16>& k,
                             const DeviceBuf<__nv_bfloat16>& v, DeviceBuf<float>& o, DeviceBuf<float>& lse) {
  FlashAttnParams p;
  p.q = q.ptr;
  p.k = k.ptr;
  p.v = v.ptr;
  p.o = o.ptr;
  p.lse = lse.ptr;
  p.n_q = s.n_q;
  p.n_k = s.n_k;
  p.n_heads = s.H;
  p.n_kv_heads = s.Hkv;
  p.head_dim = s.D;
  return p;
}

struct Case {
  Shape shape;
  AttnMask mask;
  int variant = 0;
};

// One overwrite call on poisoned outputs vs the reference.
void run_overwrite(const Case& c) {
  const Shape& s = c.shape;
  const Qkv in = random_qkv(s);
  DeviceBuf<__nv_bfloat16> dq(in.q.bits), dk(in.k.bits), dv(in.v.bits);
  DeviceBuf<float> dO(size_t(s.n_q) * s.H * s.D), dL(size_t(s.n_q) * s.H);
  dO.poison();
  dL.poison();
  FlashAttnParams p = dense_params(s, dq, dk, dv, dO, dL);
  p.softmax_scale = float(1.0 / std::sqrt(double(s.D)));
  p.mask = c.mask;
  p.merge = false;
  p.variant = c.variant;
  flash_attention_forward(p, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> ro, rl;
  const AttnMask m = c.mask;
  if (m.causal)
    reference_attention(s, in.q.val, in.k.val, in.v.val, p.softmax_scale,
                        Striped{m.q_start, m.q_rank, m.k_rank, m.group_size}, ro, rl);
  else
    reference_attention(s, in.q.val, in.k.val, in.v.val, p.softmax_scale, [](int, int) { return true; }, ro, rl);
  char what[200];
  std::snprintf(what, sizeof what, "n_q=%d n_k=%d H=%d Hkv=%d D=%d causal=%d q_start=%d r=%d s=%d N=%d variant=%d",
                s.n_q, s.n_k, s.H, s.Hkv, s.D, m.causal, m.q_start, m.q_rank, m.k_rank, m.group_size, c.variant);
  expect_close(dO.download(), dL.download(), ro, rl, what);
}

TEST(FlashAttention, CausalHeadDimsGqaRatiosAndVariants) {
  for (int D : {64, 128})
    for (int ratio : {1, 4, 8})
      for (int variant = 0; variant < flash_attention_variants(D); ++variant) {
        Case c;
        c.shape = {203, 203, 2 * ratio, 2, D};  // not a multiple of any tile size
        c.variant = variant;
        run_overwrite(c);
      }
}

TEST(FlashAttention, LongerCausalCrossesManyTiles) {
  for (int variant = 0; variant < flash_attention_variants(128); ++variant) {
    Case c;
    c.shape = {1000, 1000, 4, 1, 128};
    c.variant = variant;
    run_overwrite(c);
  }
}

TEST(FlashAttention, NoMaskWithKeyTail) {
  Case c;
  c.mask.causal = false;
  for (int variant = 0; variant < flash_attention_variants(128); ++variant) {
    c.shape = {70, 333, 8, 2, 128};
    c.variant = variant;
    run_overwrite(c);
  }
  c.shape = {70, 333, 8, 2, 64};
  c.variant = 0;
  run_overwrite(c);
}

TEST(FlashAttention, StripedMasksAllRankPairs) {
  // s < r, s = r, s > r for N = 1..4, with q_start = 0 (row 0 sees no key when s > r)
  // and q_start > 0 (a chunk of queries after an existing cache).
  for (int N = 1; N <= 4; ++N)
    for (int r = 0; r < N; ++r)
      for (int s = 0; s < N; ++s)
        for (int q_start : {0, 45}) {
          Case c;
          c.shape = {97, 150, 8, 2, (r + s) % 2 ? 64 : 128};
          c.mask = {true, q_start, r, s, N};
          c.variant = (N + r) % flash_attention_variants(c.shape.D);
          run_overwrite(c);
        }
}

// fp8 K/V for prefill (the CUDA backend's path): dequantize_kv_fp8 writes exactly
// bf16(value * scale) per element, and the flash kernel over that copy matches the float64
// reference over those bf16 values, for striped masks of every rank-pair kind and GQA.
// The copy's rounding is a second one after e4m3's (2^-9 relative on K): against the exact
// dequantized values the LSE moves by up to ~0.06 with keys scaled by up to 2^3 (H100,
// 2026-12-07), outside the bf16 tolerance, so that figure is printed, not asserted (the
// decode kernel reads the fp8 bytes and applies the scales in fp32: no second rounding).
TEST(FlashAttention, Fp8KvThroughTheDequantizedCopy) {
  for (const AttnMask mask : {AttnMask{true, 0, 0, 0, 1}, AttnMask{true, 0, 1, 2, 3}, AttnMask{true, 45, 2, 0, 3}})
    for (int D : {64, 128}) {
      const Shape s{97, 150, 8, 2, D};
      const HostBf16 q = random_bf16(size_t(s.n_q) * s.H * s.D, 1.0);
      const test::HostFp8 k = test::random_fp8(s.n_k, s.Hkv, s.D, 1.0, 3.0, rng, 7);
      const test::HostFp8 v = test::random_fp8(s.n_k, s.Hkv, s.D, 1.0, 2.0, rng);
      DeviceBuf<uint8_t> dk8(k.bytes), dv8(v.bytes);
      DeviceBuf<float> dks(k.scale), dvs(v.scale);
      DeviceBuf<__nv_bfloat16> dq(q.bits), dk(k.bytes.size()), dv(v.bytes.size());
      dk.poison();
      dv.poison();
      dequantize_kv_fp8(dk8.ptr, dks.ptr, long(s.n_k) * s.Hkv, s.D, dk.ptr, nullptr);
      dequantize_kv_fp8(dv8.ptr, dvs.ptr, long(s.n_k) * s.Hkv, s.D, dv.ptr, nullptr);
      CUDA_CHECK(cudaDeviceSynchronize());
      const auto kb = dk.download();
      for (size_t i = 0; i < kb.size(); ++i)
        ASSERT_EQ(__bfloat162float(kb[i]), __bfloat162float(__float2bfloat16_rn(
                                               kvq::fp8_e4m3_value(k.bytes[i]) * k.scale[i / s.D])))
            << "dequantized K element " << i;
      DeviceBuf<float> dO(size_t(s.n_q) * s.H * s.D), dL(size_t(s.n_q) * s.H);
      dO.poison();
      dL.poison();
      FlashAttnParams p = dense_params(s, dq, dk, dv, dO, dL);
      p.softmax_scale = float(1.0 / std::sqrt(double(s.D)));
      p.mask = mask;
      p.merge = false;
      flash_attention_forward(p, nullptr);
      CUDA_CHECK(cudaDeviceSynchronize());
      auto values = [](const std::vector<__nv_bfloat16>& b) {
        std::vector<double> out(b.size());
        for (size_t i = 0; i < b.size(); ++i) out[i] = __bfloat162float(b[i]);
        return out;
      };
      const Striped striped{mask.q_start, mask.q_rank, mask.k_rank, mask.group_size};
      std::vector<double> ro, rl, exact_o, exact_l;
      reference_attention(s, q.val, values(kb), values(dv.download()), p.softmax_scale, striped, ro, rl);
      reference_attention(s, q.val, k.val, v.val, p.softmax_scale, striped, exact_o, exact_l);
      char what[160];
      std::snprintf(what, sizeof what, "fp8 K/V D=%d q_start=%d r=%d s=%d N=%d", D, mask.q_start, mask.q_rank,
                    mask.k_rank, mask.group_size);
      const std::vector<float> o = dO.download(), l = dL.download();
      const double rel = expect_close(o, l, ro, rl, what);
      double lse_exact = 0;
      for (size_t i = 0; i < l.size(); ++i)
        if (std::isfinite(exact_l[i])) lse_exact = std::max(lse_exact, std::fabs(double(l[i]) - exact_l[i]));
      std::printf("[ measured ] %s: O rel %.3g; vs the exact dequantized values: max LSE error %.3g\n", what, rel,
                  lse_exact);
    }
}

TEST(FlashAttention, BlocksWithoutVisibleKeysGetIdentity) {
  // n_k = 0, and a whole query tile whose keys all lie in its future (s > r, one key).
  Case c;
  c.shape = {130, 0, 4, 4, 128};
  run_overwrite(c);
  c.shape = {130, 1, 4, 4, 128};
  c.mask = {true, 0, 0, 1, 2};  // row 0 sees nothing, rows >= 1 see key 0
  run_overwrite(c);
}

TEST(FlashAttention, MergeIntoExistingState) {
  for (int variant = 0; variant < flash_attention_variants(128); ++variant) {
    SCOPED_TRACE("variant " + std::to_string(variant));
    // Prior state: random O and LSE, some rows empty (LSE = -inf, O = NaN must be ignored).
    const Shape s{150, 90, 8, 2, 128};
    const AttnMask mask{true, 10, 1, 2, 3};  // s > r: row i sees keys j <= q_start + i - 1
    const Qkv in = random_qkv(s);
    std::vector<float> o0(size_t(s.n_q) * s.H * s.D), l0(size_t(s.n_q) * s.H);
    std::vector<double> ro0(o0.size()), rl0(l0.size());
    std::normal_distribution<float> nd(0.f, 1.f);
    for (size_t i = 0; i < o0.size(); ++i) ro0[i] = o0[i] = nd(rng);
    for (size_t i = 0; i < l0.size(); ++i) {
      if (i % 7 == 3) {
        l0[i] = -INFINITY;
        rl0[i] = kNegInf;
        for (int d = 0; d < s.D; ++d) {
          o0[i * s.D + d] = NAN;
          ro0[i * s.D + d] = 0;
        }
      } else {
        rl0[i] = l0[i] = 3.f + 2.f * nd(rng);
      }
    }
    DeviceBuf<__nv_bfloat16> dq(in.q.bits), dk(in.k.bits), dv(in.v.bits);
    DeviceBuf<float> dO(o0), dL(l0);
    FlashAttnParams p = dense_params(s, dq, dk, dv, dO, dL);
    p.softmax_scale = 0.1f;
    p.mask = mask;
    p.merge = true;
    p.variant = variant;
    flash_attention_forward(p, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<double> ro, rl;
    reference_attention(s, in.q.val, in.k.val, in.v.val, p.softmax_scale,
                        Striped{mask.q_start, mask.q_rank, mask.k_rank, mask.group_size}, ro, rl);
    reference_merge(s.D, ro0, rl0, ro, rl);
    const std::vector<float> o = dO.download(), l = dL.download();
    // Every row sees keys here (q_start + i - 1 >= 9); the prior rows that were empty
    // (LSE = -inf, O = NaN) must come out as this block's result alone, NaN-free.
    expect_close(o, l, ro0, rl0, "merge");
  }
}

TEST(FlashAttention, RowsWithoutKeysKeepStateBitwiseWhenMerging) {
  const Shape s{40, 5, 4, 2, 64};
  const AttnMask mask{true, 0, 0, 1, 2};  // s > r: row i sees keys j < i; row 0 sees none
  const Qkv in = random_qkv(s);
  std::vector<float> o0(size_t(s.n_q) * s.H * s.D), l0(size_t(s.n_q) * s.H);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (auto& x : o0) x = nd(rng);
  for (auto& x : l0) x = nd(rng);
  DeviceBuf<__nv_bfloat16> dq(in.q.bits), dk(in.k.bits), dv(in.v.bits);
  DeviceBuf<float> dO(o0), dL(l0);
  FlashAttnParams p = dense_params(s, dq, dk, dv, dO, dL);
  p.softmax_scale = 0.125f;
  p.mask = mask;
  flash_attention_forward(p, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> o = dO.download(), l = dL.download();
  for (int h = 0; h < s.H; ++h) {
    EXPECT_EQ(l[h], l0[h]) << "row 0 head " << h;
    for (int d = 0; d < s.D; ++d) ASSERT_EQ(o[h * s.D + d], o0[h * s.D + d]) << "row 0 head " << h;
  }
  for (int h = 0; h < s.H; ++h) EXPECT_NE(l[s.H + h], l0[s.H + h]) << "row 1 sees key 0 and must change";
}

// N ring steps of striped attention, merged, equal one causal attention over the whole
// sequence at the positions rank r owns.
TEST(FlashAttention, RingStepsMergeToFullCausalAttention) {
  for (int N : {2, 3, 4})
    for (int D : {64, 128}) {
      const int S = 517, H = 8, Hkv = 2;
      const Shape full{S, S, H, Hkv, D};
      const Qkv in = random_qkv(full);
      const float scale = float(1.0 / std::sqrt(double(D)));
      std::vector<double> ro, rl;
      reference_attention(full, in.q.val, in.k.val, in.v.val, scale, [](int i, int j) { return j <= i; }, ro, rl);
      auto stripe = [&](const std::vector<__nv_bfloat16>& x, int width, int rank) {
        std::vector<__nv_bfloat16> out;
        for (int t = rank; t < S; t += N) out.insert(out.end(), x.begin() + size_t(t) * width, x.begin() + size_t(t + 1) * width);
        return out;
      };
      for (int r = 0; r < N; ++r) {
        const std::vector<__nv_bfloat16> q_r = stripe(in.q.bits, H * D, r);
        const int n_q = int(q_r.size() / (H * D));
        DeviceBuf<__nv_bfloat16> dq(q_r);
        DeviceBuf<float> dO(size_t(n_q) * H * D), dL(size_t(n_q) * H);
        dO.poison();
        dL.poison();
        for (int step = 0; step < N; ++step) {
          const int s = (r - step + N) % N;  // the ring delivers rank r-step's block
          DeviceBuf<__nv_bfloat16> dk(stripe(in.k.bits, Hkv * D, s)), dv(stripe(in.v.bits, Hkv * D, s));
          FlashAttnParams p = dense_params({n_q, int(dk.n / (Hkv * D)), H, Hkv, D}, dq, dk, dv, dO, dL);
          p.softmax_scale = scale;
          p.mask = {true, 0, r, s, N};
          p.merge = step > 0;
          p.variant = (step + 2 * r + N) % flash_attention_variants(D);  // every variant, merging too
          flash_attention_forward(p, nullptr);
        }
        CUDA_CHECK(cudaDeviceSynchronize());
        std::vector<double> ro_r, rl_r;
        for (int t = r; t < S; t += N) {
          ro_r.insert(ro_r.end(), ro.begin() + size_t(t) * H * D, ro.begin() + size_t(t + 1) * H * D);
          rl_r.insert(rl_r.end(), rl.begin() + size_t(t) * H, rl.begin() + size_t(t + 1) * H);
        }
        expect_close(dO.download(), dL.download(), ro_r, rl_r,
                     "ring N=" + std::to_string(N) + " r=" + std::to_string(r) + " D=" + std::to_string(D));
      }
    }
}

TEST(FlashAttention, StridedRowsOfAFusedQkvBuffer) {
  // Q, K, V as column slices of one [n, (H + 2 Hkv) * D] buffer.
  const int n = 120, H = 4, Hkv = 2, D = 128, W = (H + 2 * Hkv) * D;
  const HostBf16 qkv = random_bf16(size_t(n) * W, 1.0);
  std::vector<double> q, k, v;
  for (int t = 0; t < n; ++t) {
    const double* row = &qkv.val[size_t(t) * W];
    q.insert(q.end(), row, row + H * D);
    k.insert(k.end(), row + H * D, row + (H + Hkv) * D);
    v.insert(v.end(), row + (H + Hkv) * D, row + W);
  }
  DeviceBuf<__nv_bfloat16> d(qkv.bits);
  DeviceBuf<float> dO(size_t(n) * H * D), dL(size_t(n) * H);
  dO.poison();
  FlashAttnParams p;
  p.q = d.ptr;
  p.k = d.ptr + H * D;
  p.v = d.ptr + (H + Hkv) * D;
  p.q_row_stride = p.kv_row_stride = W;
  p.o = dO.ptr;
  p.lse = dL.ptr;
  p.n_q = p.n_k = n;
  p.n_heads = H;
  p.n_kv_heads = Hkv;
  p.head_dim = D;
  p.softmax_scale = 0.09f;
  p.merge = false;
  flash_attention_forward(p, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> ro, rl;
  reference_attention({n, n, H, Hkv, D}, q, k, v, p.softmax_scale, [](int i, int j) { return j <= i; }, ro, rl);
  expect_close(dO.download(), dL.download(), ro, rl, "strided");
}

TEST(FlashAttention, RejectsUnsupportedShapes) {
  FlashAttnParams p;
  p.n_q = p.n_k = 1;
  p.n_heads = 6;
  p.n_kv_heads = 4;
  p.head_dim = 128;
  p.softmax_scale = 1.f;
  const auto error = [&] { return test::error_of([&] { flash_attention_forward(p, nullptr); }); };
  const std::string gqa = error();
  EXPECT_NE(gqa.find("n_heads 6 is not a multiple of n_kv_heads 4"), std::string::npos) << "got: \"" << gqa << '"';
  p.n_heads = 4;
  p.head_dim = 96;
  const std::string dim = error();
  EXPECT_NE(dim.find("head_dim 96 is not 64 or 128"), std::string::npos) << "got: \"" << dim << '"';
}

}  // namespace
}  // namespace ringinfer
