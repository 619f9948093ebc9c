// decode_attention (split-KV) against a float64 CPU reference on fresh random inputs.
// Tolerances as for flash attention (attention_reference.cuh; bf16 inputs, fp32
// accumulation, P rounded to bf16):
//   O:   ||out - ref|| / ||ref|| <= 1e-2;  LSE: max |out - ref| <= 2e-3.
// Outputs and the workspace are NaN-poisoned before every run.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "gpu_skip.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "attention_reference.cuh"
#include "decode_attention.h"
#include "ringinfer/cuda_check.h"

namespace ringinfer {
namespace {

using test::DeviceBuf;
using test::HostBf16;

std::mt19937_64 rng(777);

struct Case {
  int n_q, n_k, H, Hkv, D;
  int variant = 0;
  int num_splits = 0;
};

// Runs decode_attention for case c on p (whose cache pointers the caller set) with q, into
// poisoned outputs and workspace, and checks it against the float64 reference over the
// exact values kval, vval (every key visible). Returns the relative O error.
double run_and_check(const Case& c, DecodeAttnParams p, const DeviceBuf<__nv_bfloat16>& dq, const HostBf16& q,
                     const std::vector<double>& kval, const std::vector<double>& vval, const char* kind) {
  DeviceBuf<float> dO(size_t(c.n_q) * c.H * c.D), dL(size_t(c.n_q) * c.H);
  dO.poison();
  dL.poison();
  p.q = dq.ptr;
  p.o = dO.ptr;
  p.lse = dL.ptr;
  p.n_q = c.n_q;
  p.n_k = c.n_k;
  p.n_heads = c.H;
  p.n_kv_heads = c.Hkv;
  p.head_dim = c.D;
  p.softmax_scale = float(1.0 / std::sqrt(double(c.D)));
  p.variant = c.variant;
  p.num_splits = c.num_splits;
  const size_t ws_bytes = decode_attention_workspace_bytes(p);
  DeviceBuf<char> ws(ws_bytes);
  ws.poison();
  decode_attention(p, ws.ptr, ws_bytes, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> ref_o, ref_lse;
  test::reference_attention({c.n_q, c.n_k, c.H, c.Hkv, c.D}, q.val, kval, vval, p.softmax_scale,
                            [](int, int) { return true; }, ref_o, ref_lse);
  const std::string what = std::string(kind) + " n_q=" + std::to_string(c.n_q) + " n_k=" + std::to_string(c.n_k) +
                           " H=" + std::to_string(c.H) + " Hkv=" + std::to_string(c.Hkv) + " D=" +
                           std::to_string(c.D) + " variant=" + std::to_string(c.variant) +
                           " splits=" + std::to_string(c.num_splits);
  const double rel = test::expect_close(dO.download(), dL.download(), ref_o, ref_lse, what);
  std::printf("[ measured ] %s: O rel %.3g\n", what.c_str(), rel);
  return rel;
}

void run_case(const Case& c) {
  const size_t nq = size_t(c.n_q) * c.H * c.D, nkv = size_t(c.n_k) * c.Hkv * c.D;
  const HostBf16 q = test::random_bf16(nq, 1.0, rng);
  // Keys with a spread of scales so some splits dominate the merge.
  const HostBf16 k = test::random_bf16(nkv, 1.5, rng);
  const HostBf16 v = test::random_bf16(nkv, 1.0, rng);
  DeviceBuf<__nv_bfloat16> dq(q.bits), dk(k.bits), dv(v.bits);
  DecodeAttnParams p;
  p.k = dk.ptr;
  p.v = dv.ptr;
  run_and_check(c, p, dq, q, k.val, v.val, "bf16");
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
  // More splits than head_dim: the combine kernel takes the splits' weights in rounds of D.
  run_case({1, 5000, 8, 2, 128, 1, 200});
  run_case({1, 3000, 4, 1, 64, 0, 90});
}

// fp8 cache read directly (e4m3 bytes + per-(token, head) scales) against the float64
// reference over the dequantized values; keys of very different magnitudes per row, a zero
// row, GQA, several splits. Same tolerances as bf16 (the e4m3 values are exact in bf16,
// the scales applied in fp32).
// The value ranges of an fp8 case: standard deviations of q, k and v, the spread of the
// per-row magnitudes (2^+-spread), and v_rise: V's scales grow by 2^v_rise from the first key
// to the last (every few tiles a larger weight than any before, so an f16-P variant
// rescales its accumulator often).
struct Fp8Ranges {
  double q_std = 1.0, k_std = 1.0, k_spread = 3.0, v_std = 1.0, v_spread = 2.0, v_rise = 0.0;
  bool v_zero_row = false;  // one V row of zeros (scale 0)
};

// head_major: the scales as [Hkv][capacity] (key stride 1, head stride capacity = n_k + 24,
// the rows past n_k poisoned with NaN) instead of the cache's [n_k, Hkv].
void run_fp8_case(const Case& c, const Fp8Ranges& r = {}, bool head_major = false) {
  const HostBf16 q = test::random_bf16(size_t(c.n_q) * c.H * c.D, r.q_std, rng);
  const test::HostFp8 k = test::random_fp8(c.n_k, c.Hkv, c.D, r.k_std, r.k_spread, rng, c.n_k / 2);
  test::HostFp8 v = test::random_fp8(c.n_k, c.Hkv, c.D, r.v_std, r.v_spread, rng, r.v_zero_row ? c.n_k / 3 : -1);
  if (r.v_rise != 0.0) {
    for (size_t h = 0; h < v.scale.size(); ++h) {
      const double key = double(h / c.Hkv);
      v.scale[h] = float(v.scale[h] * std::exp2(r.v_rise * key / std::max(1, c.n_k)));
      for (int d = 0; d < c.D; ++d)
        v.val[h * c.D + d] = double(kvq::fp8_e4m3_value(v.bytes[h * c.D + d])) * double(v.scale[h]);
    }
  }
  DeviceBuf<__nv_bfloat16> dq(q.bits);
  DeviceBuf<uint8_t> dk(k.bytes), dv(v.bytes);
  const long capacity = long(c.n_k) + 24;
  const auto layout = [&](const std::vector<float>& scale) {
    if (!head_major) return scale;
    std::vector<float> t(size_t(c.Hkv) * capacity, std::nanf(""));
    for (long key = 0; key < c.n_k; ++key)
      for (int h = 0; h < c.Hkv; ++h) t[size_t(h * capacity + key)] = scale[size_t(key * c.Hkv + h)];
    return t;
  };
  DeviceBuf<float> dks(layout(k.scale)), dvs(layout(v.scale));
  DecodeAttnParams p;
  p.k_fp8 = dk.ptr;
  p.v_fp8 = dv.ptr;
  p.k_scale = dks.ptr;
  p.v_scale = dvs.ptr;
  if (head_major) {
    p.scale_key_stride = 1;
    p.scale_head_stride = capacity;
  }
  run_and_check(c, p, dq, q, k.val, v.val, head_major ? "fp8 head-major scales" : "fp8");
}

// Every fp8 variant (converted tile or direct fragments, 16- or 32-key tiles); lengths
// that are not a multiple of either tile, one shorter than a 32-key tile.
TEST(DecodeAttention, Fp8CacheReadDirectly) {
  for (int variant = 0; variant < decode_attention_fp8_variants(); ++variant) {
    for (int D : {64, 128})
      for (int ratio : {1, 4, 8})
        for (int n_k : {1, 24, 37, 1000, 5003}) run_fp8_case({1, n_k, 2 * ratio, 2, D, variant});
    run_fp8_case({3, 2000, 16, 2, 128, variant});        // several tokens, two launches
    run_fp8_case({5, 777, 8, 2, 64, variant});           // ratio 4 x 5 tokens: two launches
    run_fp8_case({2, 300, 32, 2, 128, variant});         // ratio 16: one token per launch
    run_fp8_case({1, 1500, 8, 2, 128, variant, 40});     // idle warps
    run_fp8_case({1, 1500, 8, 2, 64, variant, 90});      // more idle warps
    run_fp8_case({1, 70000, 32, 8, 128, variant});       // long cache, many splits
    run_fp8_case({2, 0, 8, 2, 64, variant});             // no keys: identity
    run_fp8_case({1, 0, 8, 2, 128, variant});
  }
  run_fp8_case({1, 1000, 8, 2, 128, -1});  // the default variant
}

// Scales laid out head-major ([Hkv][capacity]) read through the scale strides, every variant.
TEST(DecodeAttention, Fp8ScalesHeadMajor) {
  for (int variant = 0; variant < decode_attention_fp8_variants(); ++variant)
    for (int D : {64, 128}) {
      run_fp8_case({1, 1000, 8, 2, D, variant}, {}, true);
      run_fp8_case({1, 5003, 32, 8, D, variant}, {}, true);
      run_fp8_case({3, 777, 16, 2, D, variant}, {}, true);  // several tokens per launch
    }
}

// Value ranges at the edges of the formats, for every fp8 variant: queries far beyond
// f16's range (max|q| ~ 1.5e5 > 65504) or tiny, keys scaled the other way so the logits
// stay moderate; V scales over 2^+-10 within a tile, rising along the keys, and a zero V
// row. (Written for two variants that ran the MMAs in f16 on the raw e4m3 values; they
// were slower than variant 1 and were removed: docs/PERFORMANCE.md.)
TEST(DecodeAttention, Fp8ValueRanges) {
  for (int variant = 0; variant < decode_attention_fp8_variants(); ++variant)
    for (int D : {64, 128}) {
      Fp8Ranges big_q, small_q, wide_v, rising_v, falling_v;
      big_q.q_std = 3e4, big_q.k_std = 3e-5;
      small_q.q_std = 1e-4, small_q.k_std = 1e4;
      wide_v.v_spread = 10.0, wide_v.v_zero_row = true;
      rising_v.v_rise = 16.0;
      falling_v.v_spread = 6.0, falling_v.v_rise = -16.0;
      run_fp8_case({1, 3000, 8, 2, D, variant}, big_q);
      run_fp8_case({1, 3000, 8, 2, D, variant}, small_q);
      run_fp8_case({1, 3000, 8, 2, D, variant}, wide_v);
      run_fp8_case({1, 5003, 32, 8, D, variant}, rising_v);
      run_fp8_case({1, 5003, 32, 8, D, variant}, falling_v);
    }
}

TEST(DecodeAttention, Fp8RejectsMixedOrIncompleteCaches) {
  DecodeAttnParams p;
  p.n_q = 1;
  p.n_k = 100;
  p.n_heads = 8;
  p.n_kv_heads = 2;
  p.head_dim = 128;
  p.softmax_scale = 0.1f;
  p.q = reinterpret_cast<const __nv_bfloat16*>(16);
  p.k_fp8 = p.v_fp8 = reinterpret_cast<const uint8_t*>(16);
  p.o = p.lse = reinterpret_cast<float*>(16);
  EXPECT_THROW(decode_attention_workspace_bytes(p), Error);  // no scales
  p.k_scale = p.v_scale = reinterpret_cast<const float*>(16);
  p.variant = decode_attention_fp8_variants();
  EXPECT_THROW(decode_attention_workspace_bytes(p), Error);  // no such fp8 variant
  p.variant = -2;
  EXPECT_THROW(decode_attention_workspace_bytes(p), Error);
  p.variant = decode_attention_fp8_variants() - 1;
  EXPECT_NO_THROW(decode_attention_workspace_bytes(p));
}

// decode_attention_batch: one query row per sequence, each against its own cache of its own
// length (empty ones included), more sequences than one launch takes (16), bf16 and fp8;
// every row against the float64 reference of its own inputs.
void run_batch_case(bool fp8, int D, int H, int Hkv, const std::vector<int>& lengths, int variant = -1) {
  const int n = static_cast<int>(lengths.size());
  const HostBf16 q = test::random_bf16(size_t(n) * H * D, 1.0, rng);
  DeviceBuf<__nv_bfloat16> dq(q.bits);
  std::vector<std::vector<double>> kval(n), vval(n);
  std::vector<std::unique_ptr<DeviceBuf<__nv_bfloat16>>> kb, vb;
  std::vector<std::unique_ptr<DeviceBuf<uint8_t>>> k8, v8;
  std::vector<std::unique_ptr<DeviceBuf<float>>> ks, vs;
  std::vector<DecodeSeqKv> seqs(n);
  for (int i = 0; i < n; ++i) {
    const int nk = lengths[i];
    seqs[i].n_k = nk;
    if (fp8) {
      const test::HostFp8 k = test::random_fp8(nk, Hkv, D, 1.0, 3.0, rng, nk / 2);
      const test::HostFp8 v = test::random_fp8(nk, Hkv, D, 1.0, 2.0, rng);
      k8.push_back(std::make_unique<DeviceBuf<uint8_t>>(k.bytes));
      v8.push_back(std::make_unique<DeviceBuf<uint8_t>>(v.bytes));
      ks.push_back(std::make_unique<DeviceBuf<float>>(k.scale));
      vs.push_back(std::make_unique<DeviceBuf<float>>(v.scale));
      seqs[i].k = k8.back()->ptr, seqs[i].v = v8.back()->ptr;
      seqs[i].k_scale = ks.back()->ptr, seqs[i].v_scale = vs.back()->ptr;
      kval[i] = k.val, vval[i] = v.val;
    } else {
      const HostBf16 k = test::random_bf16(size_t(nk) * Hkv * D, 1.5, rng);
      const HostBf16 v = test::random_bf16(size_t(nk) * Hkv * D, 1.0, rng);
      kb.push_back(std::make_unique<DeviceBuf<__nv_bfloat16>>(k.bits));
      vb.push_back(std::make_unique<DeviceBuf<__nv_bfloat16>>(v.bits));
      seqs[i].k = kb.back()->ptr, seqs[i].v = vb.back()->ptr;
      kval[i] = k.val, vval[i] = v.val;
    }
  }
  DeviceBuf<float> dO(size_t(n) * H * D), dL(size_t(n) * H);
  dO.poison();
  dL.poison();
  DecodeAttnParams p;
  p.q = dq.ptr;
  p.o = dO.ptr;
  p.lse = dL.ptr;
  p.n_heads = H;
  p.n_kv_heads = Hkv;
  p.head_dim = D;
  p.softmax_scale = float(1.0 / std::sqrt(double(D)));
  p.variant = variant;
  const size_t ws_bytes = decode_attention_batch_workspace_bytes(p, fp8, seqs.data(), n);
  DeviceBuf<char> ws(ws_bytes);
  ws.poison();
  decode_attention_batch(p, fp8, seqs.data(), n, ws.ptr, ws_bytes, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> o = dO.download(), lse = dL.download();
  for (int i = 0; i < n; ++i) {
    std::vector<double> qi(q.val.begin() + size_t(i) * H * D, q.val.begin() + size_t(i + 1) * H * D);
    std::vector<double> ref_o, ref_lse;
    test::reference_attention({1, lengths[i], H, Hkv, D}, qi, kval[i], vval[i], p.softmax_scale,
                              [](int, int) { return true; }, ref_o, ref_lse);
    const std::vector<float> oi(o.begin() + size_t(i) * H * D, o.begin() + size_t(i + 1) * H * D);
    const std::vector<float> li(lse.begin() + size_t(i) * H, lse.begin() + size_t(i + 1) * H);
    test::expect_close(oi, li, ref_o, ref_lse,
                       std::string(fp8 ? "fp8" : "bf16") + " batch row " + std::to_string(i) + " of " +
                           std::to_string(n) + " n_k=" + std::to_string(lengths[i]) + " H=" + std::to_string(H) +
                           " Hkv=" + std::to_string(Hkv) + " D=" + std::to_string(D) +
                           " variant=" + std::to_string(variant));
  }
}

TEST(DecodeAttention, BatchOfSequencesEachAgainstItsOwnCache) {
  const std::vector<int> lengths = {1000, 0, 1, 37, 5003, 300, 2, 4097, 64, 65, 999, 0, 12, 3000, 128, 17, 2500, 7, 800};
  for (int D : {64, 128})
    for (int ratio : {1, 4, 8}) {
      run_batch_case(false, D, 2 * ratio, 2, lengths);
      for (int variant = 0; variant < decode_attention_fp8_variants(); ++variant)
        run_batch_case(true, D, 2 * ratio, 2, lengths, variant);
    }
  run_batch_case(false, 128, 32, 8, {70000, 5, 0});  // one long, one short: the long one's splits
  for (int variant = 0; variant < decode_attention_fp8_variants(); ++variant) {
    run_batch_case(true, 128, 32, 8, {0, 70000, 5}, variant);  // an empty first sequence, then the long one
    run_batch_case(true, 128, 32, 8, {0}, variant);            // only an empty sequence: identity
  }
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
