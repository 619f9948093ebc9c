// The CUDA backend's attention op on each path (--attention native | cudnn | auto) against a
// float64 reference, on fresh random inputs: two key blocks merged into (O, LSE) after a
// reset, as two ring steps do, under the striped mask of both block kinds (key rank s <= r:
// causal with its diagonal; s > r: without it, "q[1:] against k[:-1]"), GQA, query chunks
// at q_start > 0, head_dim 64 and 128, the fixtures' 16/32, the odd 80/96 and 20 (which the
// cuDNN path may refuse: then the native kernels serve them, and the result is the same).
// Tolerances: attention_reference.cuh (O rel 1e-2, LSE abs 2e-3, -inf exactly where the
// reference has it); the cuDNN path rounds each block's O to bf16 once before the fp32 merge.
// The backend's outputs are NaN-poisoned before the reset, and a warm-up call on other
// inputs leaves stale data in its scratch, so a row the path fails to write shows.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "gpu_skip.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "attention_reference.cuh"
#include "ringinfer/backend.h"
#include "ringinfer/cuda_backend.h"
#include "ringinfer/striped.h"

namespace ringinfer {
namespace {

using test::expect_close;
using test::HostBf16;
using test::kNegInf;
using test::reference_attention;

std::mt19937_64 rng(20261207);

struct Case {
  int H, Hkv, D, nq, nk, q_start, r, s, N;  // second block: key rank (s + 1) mod N
  bool cudnn_shape;                         // cuDNN should take it (head_dim 64/128, kv fits)
};

void merge_ref(int D, std::vector<double>& o1, std::vector<double>& l1, const std::vector<double>& o2,
               const std::vector<double>& l2) {
  for (size_t r = 0; r < l1.size(); ++r) {
    if (l2[r] == kNegInf) continue;
    if (l1[r] == kNegInf) {
      l1[r] = l2[r];
      for (int d = 0; d < D; ++d) o1[r * D + d] = o2[r * D + d];
      continue;
    }
    const double m = std::max(l1[r], l2[r]);
    const double l = m + std::log(std::exp(l1[r] - m) + std::exp(l2[r] - m));
    const double w1 = std::exp(l1[r] - l), w2 = std::exp(l2[r] - l);
    for (int d = 0; d < D; ++d) o1[r * D + d] = w1 * o1[r * D + d] + w2 * o2[r * D + d];
    l1[r] = l;
  }
}

std::vector<float> as_float(const HostBf16& t) { return std::vector<float>(t.val.begin(), t.val.end()); }

Tensor upload(Backend& be, const std::vector<float>& h, int64_t rows, int64_t cols) {
  Tensor t = be.alloc(rows, cols, DType::f32);
  be.copy_from_host(t, h.data());
  return t;
}

// A bf16 KV block of `rows` tokens holding k and v (bf16 bits).
KvBlock upload_kv(Backend& be, const HostBf16& k, const HostBf16& v, int64_t rows, int64_t n_kv_heads, int64_t head_dim) {
  const KvBlock kv = be.alloc_kv(rows, n_kv_heads, head_dim, KvDtype::bf16);
  be.copy_from_host(kv.k, k.bits.data());
  be.copy_from_host(kv.v, v.bits.data());
  return kv;
}

AttentionShape shape_of(const Case& c, int k_rank) {
  AttentionShape sh;
  sh.n_heads = c.H;
  sh.n_kv_heads = c.Hkv;
  sh.head_dim = c.D;
  sh.q_start = c.q_start;
  sh.q_rank = c.r;
  sh.k_rank = k_rank;
  sh.n_ranks = c.N;
  sh.scale = static_cast<float>(1.0 / std::sqrt(double(c.D)));
  return sh;
}

// Runs case c on a backend with `path` (and auto's threshold, when >= 0); returns the cuDNN
// plans it built.
int64_t check_case(const Case& c, AttentionPath path, int64_t auto_cudnn_min_keys = -1) {
  CudaBackendOptions opt;
  opt.attention = path;
  if (auto_cudnn_min_keys >= 0) opt.auto_cudnn_min_keys = auto_cudnn_min_keys;
  auto be = make_cuda_backend(opt);
  const std::string what = std::string(to_string(path)) + " H " + std::to_string(c.H) + "/" + std::to_string(c.Hkv) +
                           " D " + std::to_string(c.D) + " nq " + std::to_string(c.nq) + " nk " +
                           std::to_string(c.nk) + " q_start " + std::to_string(c.q_start) + " r " +
                           std::to_string(c.r) + " s " + std::to_string(c.s) + " N " + std::to_string(c.N);
  const test::AttnShape rs{c.nq, c.nk, c.H, c.Hkv, c.D};
  const HostBf16 q = test::random_bf16(size_t(c.nq) * c.H * c.D, 1.0, rng);
  Tensor qt = upload(*be, as_float(q), c.nq, int64_t(c.H) * c.D);
  Tensor o = be->alloc(c.nq, int64_t(c.H) * c.D, DType::f32), lse = be->alloc(c.nq, c.H, DType::f32);

  // Warm-up on other inputs: stale values in the backend's scratch.
  {
    const HostBf16 q0 = test::random_bf16(size_t(c.nq) * c.H * c.D, 3.0, rng);
    const HostBf16 k0 = test::random_bf16(size_t(c.nk) * c.Hkv * c.D, 3.0, rng);
    Tensor q0t = upload(*be, as_float(q0), c.nq, int64_t(c.H) * c.D);
    const KvBlock kv0 = upload_kv(*be, k0, k0, c.nk, c.Hkv, c.D);
    be->attention_reset(o, lse);
    be->attention(q0t, kv0, shape_of(c, c.s), o, lse);
    be->synchronize();
  }
  const std::vector<float> nan_o(size_t(c.nq) * c.H * c.D, std::nanf("")), nan_l(size_t(c.nq) * c.H, std::nanf(""));
  be->copy_from_host(o, nan_o.data());
  be->copy_from_host(lse, nan_l.data());
  be->attention_reset(o, lse);

  std::vector<double> ref_o, ref_l;
  for (int step = 0; step < 2; ++step) {
    const int s = step == 0 ? c.s : (c.s + 1) % c.N;
    const HostBf16 k = test::random_bf16(size_t(c.nk) * c.Hkv * c.D, 1.0, rng);
    const HostBf16 v = test::random_bf16(size_t(c.nk) * c.Hkv * c.D, 1.0, rng);
    const KvBlock kv = upload_kv(*be, k, v, c.nk, c.Hkv, c.D);
    be->attention(qt, kv, shape_of(c, s), o, lse);
    be->synchronize();  // kv is freed at the end of this iteration
    std::vector<double> bo, bl;
    const auto visible = [&](int i, int j) { return key_visible(c.q_start + i, c.r, j, s, c.N); };
    reference_attention(rs, q.val, k.val, v.val, 1.0 / std::sqrt(double(c.D)), visible, bo, bl);
    if (step == 0) {
      ref_o = bo;
      ref_l = bl;
    } else {
      merge_ref(c.D, ref_o, ref_l, bo, bl);
    }
  }
  std::vector<float> got_o(size_t(c.nq) * c.H * c.D), got_l(size_t(c.nq) * c.H);
  be->copy_to_host(got_o.data(), o);
  be->copy_to_host(got_l.data(), lse);
  const double rel = expect_close(got_o, got_l, ref_o, ref_l, what);
  const int64_t plans = cuda_backend_cudnn_plans(*be);
  std::printf("[ measured ] %-70s O rel %.3g, cuDNN plans %lld\n", what.c_str(), rel, (long long)plans);
  return plans;
}

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {8, 2, 128, 200, 200, 0, 1, 1, 2, true},     // s = r (diagonal), then s = 0 < r
      {8, 2, 128, 200, 201, 0, 0, 1, 2, true},     // s > r: row 0 sees nothing in block 1
      {4, 1, 64, 64, 300, 100, 2, 3, 4, true},     // a chunk at q_start 100, MQA, s > r then s = 0
      {4, 4, 64, 130, 130, 0, 0, 1, 3, true},      // both blocks s > r: row 0 stays at -inf
      {32, 8, 128, 256, 256, 0, 0, 0, 1, true},    // one rank, the 8B head layout
      {8, 2, 128, 1000, 1000, 0, 1, 0, 2, true},   // several cuDNN tiles
      {4, 2, 64, 100, 50, 10, 0, 0, 1, false},     // kv_len 110 > 50 keys: not one band, native
      {4, 2, 80, 100, 100, 0, 1, 0, 2, false},     // odd head_dims: cuDNN or the generic kernel
      {4, 2, 96, 100, 100, 0, 1, 0, 2, false},
      {4, 2, 16, 50, 60, 5, 1, 0, 2, false},       // the fixtures' head_dims
      {4, 1, 32, 40, 40, 0, 0, 1, 2, false},
      {4, 2, 20, 60, 60, 0, 1, 0, 2, false},       // head_dim 20: cuDNN may refuse it (native generic)
  };
  return all;
}

TEST(AttentionPaths, NativeMatchesFloat64) {
  for (const Case& c : cases()) EXPECT_EQ(check_case(c, AttentionPath::native), 0);
}

TEST(AttentionPaths, CudnnMatchesFloat64) {
  if (!cuda_build_has_cudnn()) GTEST_SKIP() << "this build has no cuDNN path";
  for (const Case& c : cases()) {
    const int64_t plans = check_case(c, AttentionPath::cudnn);
    if (c.cudnn_shape) EXPECT_GT(plans, 0) << "the cuDNN path did not serve a shape it should take";
  }
}

TEST(AttentionPaths, AutoMatchesFloat64) {
  for (const Case& c : cases()) check_case(c, AttentionPath::auto_select);
}

// auto offers cuDNN the blocks of a one-rank ring from its threshold on, and never a block
// of a ring of several ranks (whose partial O would cross ring steps in bf16). (check_case
// merges two blocks even at N = 1, which the engine never does; here only the choice counts.)
TEST(AttentionPaths, AutoTakesCudnnForOneRankBlocksFromItsThreshold) {
  if (!cuda_build_has_cudnn()) GTEST_SKIP() << "this build has no cuDNN path";
  int one_rank_cudnn_cases = 0;
  for (const Case& c : cases()) {
    const int64_t plans = check_case(c, AttentionPath::auto_select, c.nk);
    if (c.N > 1) {
      EXPECT_EQ(plans, 0) << "auto gave cuDNN a block of a ring of " << c.N << " ranks";
    } else if (c.cudnn_shape) {
      EXPECT_GT(plans, 0) << "auto did not give cuDNN a one-rank block at its threshold";
      EXPECT_EQ(check_case(c, AttentionPath::auto_select, c.nk + 1), 0) << "auto gave cuDNN a block below its threshold";
      ++one_rank_cudnn_cases;
    }
  }
  EXPECT_GT(one_rank_cudnn_cases, 0);
}

// Every chunk of a ring step shares one plan: lengths come from device memory.
TEST(AttentionPaths, CudnnChunksShareOnePlan) {
  if (!cuda_build_has_cudnn()) GTEST_SKIP() << "this build has no cuDNN path";
  CudaBackendOptions opt;
  opt.attention = AttentionPath::cudnn;
  auto be = make_cuda_backend(opt);
  const int H = 8, Hkv = 2, D = 128, n = 512, chunk = 128;
  const HostBf16 q = test::random_bf16(size_t(n) * H * D, 1.0, rng);
  const HostBf16 k = test::random_bf16(size_t(n) * Hkv * D, 1.0, rng), v = test::random_bf16(size_t(n) * Hkv * D, 1.0, rng);
  Tensor qt = upload(*be, as_float(q), n, H * D);
  const KvBlock kv = upload_kv(*be, k, v, n, Hkv, D);
  Tensor o = be->alloc(n, H * D, DType::f32), lse = be->alloc(n, H, DType::f32);
  be->attention_reset(o, lse);
  const Case c{H, Hkv, D, chunk, n, 0, 1, 0, 2, true};
  for (int c0 = 0; c0 < n; c0 += chunk) {
    Case cc = c;
    cc.q_start = c0;
    be->attention(qt.rows(c0, chunk), kv, shape_of(cc, 0), o.rows(c0, chunk), lse.rows(c0, chunk));
  }
  std::vector<float> got_o(size_t(n) * H * D), got_l(size_t(n) * H);
  be->copy_to_host(got_o.data(), o);
  be->copy_to_host(got_l.data(), lse);
  std::vector<double> ref_o, ref_l;
  reference_attention(test::AttnShape{n, n, H, Hkv, D}, q.val, k.val, v.val, 1.0 / std::sqrt(double(D)),
                      [&](int i, int j) { return key_visible(i, 1, j, 0, 2); }, ref_o, ref_l);
  expect_close(got_o, got_l, ref_o, ref_l, "cudnn chunked");
  EXPECT_EQ(cuda_backend_cudnn_plans(*be), 1);
}

}  // namespace
}  // namespace ringinfer
