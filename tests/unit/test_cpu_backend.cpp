// Each CPU backend op against a naive double-precision implementation on random inputs.
// Tolerance: max |got - want| <= 1e-5 x max |want| (fp32 arithmetic), unless stated.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "model_files.h"  // independent quantizers: block bytes and their exact values
#include "ringinfer/backend.h"
#include "ringinfer/kv_quant.h"
#include "ringinfer/sampling.h"
#include "ringinfer/striped.h"

using namespace ringinfer;

namespace {

constexpr double kRelTol = 1e-5;

struct Fixture {
  explicit Fixture(bool portable = false) : be(make_cpu_backend(options(portable))) {}
  static CpuBackendOptions options(bool portable) {
    CpuBackendOptions o;
    o.portable_kernels = portable;
    return o;
  }
  std::unique_ptr<Backend> be;
  std::mt19937 gen{1234};

  std::vector<float> randn(size_t n, float sd = 1.0f) {
    std::normal_distribution<float> nd(0.0f, sd);
    std::vector<float> v(n);
    for (float& x : v) x = nd(gen);
    return v;
  }
  Tensor put(const std::vector<float>& v, int64_t rows, int64_t cols) {
    Tensor t = be->alloc(rows, cols, DType::f32);
    be->copy_from_host(t, v.data());
    return t;
  }
  // An f32 KV block holding k, v (nk, Hkv*D).
  KvBlock put_kv(const std::vector<float>& k, const std::vector<float>& v, int64_t nk, int64_t Hkv, int64_t D) {
    KvBlock b = be->alloc_kv(nk, Hkv, D, KvDtype::f32);
    be->store_kv(put(k, nk, Hkv * D), put(v, nk, Hkv * D), b);
    return b;
  }
  std::vector<float> get(const Tensor& t) {
    std::vector<float> v(t.numel());
    be->copy_to_host(v.data(), t);
    return v;
  }
};

// max |got - want| / max |want|
double rel_err(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num = std::max(num, std::fabs(double(got[i]) - want[i]));
    den = std::max(den, std::fabs(want[i]));
  }
  return den > 0 ? num / den : num;
}

// A (rows, cols) weight of ggml type `type` (Q8_0 8, Q4_0 2, Q4_1 3, F16 1, BF16 30, or
// 0: fp32 values) made from values wf, as upload_weight takes it; deq (if given) gets the
// exact values it stores.
HostTensor gguf_weight(uint32_t type, const std::vector<float>& wf, int64_t rows, int64_t cols,
                       std::vector<double>* deq = nullptr) {
  HostTensor h;
  h.shape = {rows, cols};
  std::vector<double> d;
  if (type == 0) {
    h.data = wf;
    d.assign(wf.begin(), wf.end());
  }
  if (type == 8) h.blocks = ringinfer::test::quantize_q8_0(wf, &d);
  if (type == 2) h.blocks = ringinfer::test::quantize_q4_0(wf, &d);
  if (type == 3) h.blocks = ringinfer::test::quantize_q4_1(wf, &d);
  if (type == 1 || type == 30)
    for (float v : wf) {
      const uint16_t b = type == 1 ? ringinfer::test::float_to_fp16(v) : ringinfer::test::float_to_bf16(v);
      h.blocks.push_back(static_cast<uint8_t>(b & 0xff));
      h.blocks.push_back(static_cast<uint8_t>(b >> 8));
      d.push_back(type == 1 ? ringinfer::test::fp16_value(b) : ringinfer::test::bf16_value(b));
    }
  if (type != 0) h.ggml_type = type;
  if (deq) *deq = std::move(d);
  return h;
}

}  // namespace

TEST(CpuBackend, EmbedGathersRows) {
  Fixture f;
  const int64_t V = 50, h = 12;
  auto table = f.randn(V * h);
  Tensor t = f.put(table, V, h), ids = f.be->alloc(4, 1, DType::i32), out = f.be->alloc(4, h, DType::f32);
  const int32_t id[4] = {3, 49, 0, 3};
  f.be->copy_from_host(ids, id);
  f.be->embed(t, ids, out);
  auto got = f.get(out);
  for (int i = 0; i < 4; ++i)
    for (int k = 0; k < h; ++k) EXPECT_EQ(got[i * h + k], table[id[i] * h + k]);
  const int32_t bad = 50;
  f.be->copy_from_host(ids.rows(0, 1), &bad);
  EXPECT_THROW(f.be->embed(t, ids, out), Error);
}

TEST(CpuBackend, RmsNorm) {
  Fixture f;
  const int64_t n = 7, d = 96;
  auto x = f.randn(n * d, 3.0f), w = f.randn(d);
  Tensor out = f.be->alloc(n, d, DType::f32);
  f.be->rmsnorm(f.put(x, n, d), f.put(w, d, 1), 1e-5f, out);
  std::vector<double> want(n * d);
  for (int64_t i = 0; i < n; ++i) {
    double ss = 0;
    for (int64_t k = 0; k < d; ++k) ss += double(x[i * d + k]) * x[i * d + k];
    const double inv = 1.0 / std::sqrt(ss / d + 1e-5);
    for (int64_t k = 0; k < d; ++k) want[i * d + k] = w[k] * x[i * d + k] * inv;
  }
  EXPECT_LT(rel_err(f.get(out), want), kRelTol);
}

TEST(CpuBackend, MatmulBiasAccumulate) {
  Fixture f;
  const int64_t n = 9, in = 70, of = 33;
  auto x = f.randn(n * in), w = f.randn(of * in), b = f.randn(of), o0 = f.randn(n * of);
  for (bool use_bias : {false, true})
    for (bool acc : {false, true}) {
      Tensor out = f.put(o0, n, of);
      f.be->matmul(f.put(x, n, in), f.put(w, of, in), use_bias ? f.put(b, of, 1) : Tensor(), out, acc);
      std::vector<double> want(n * of);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < of; ++j) {
          double s = (use_bias ? b[j] : 0.0) + (acc ? o0[i * of + j] : 0.0);
          for (int64_t k = 0; k < in; ++k) s += double(x[i * in + k]) * w[j * in + k];
          want[i * of + j] = s;
        }
      EXPECT_LT(rel_err(f.get(out), want), kRelTol) << "bias " << use_bias << " accumulate " << acc;
    }
}

// GGUF weights kept quantized (upload_weight of HostTensor::blocks) against a float64
// product with the exact dequantized values, on both matmul paths: x rows <= 4 (weights
// decoded in registers, AVX2 when the CPU has it) and dequantized panels (more rows);
// of = 300 spans panels unevenly. The same weights through embed() give the dequantized values exactly.
// Both kernel sets: AVX2/FMA (where the CPU has it) and the portable C++.
TEST(CpuBackend, MatmulAndEmbedOnQuantizedWeights) {
  for (bool portable : {false, true}) {
    SCOPED_TRACE(portable ? "portable kernels" : "default kernels");
    Fixture f(portable);
    const int64_t of = 300;
    for (int64_t in : {64, 576}) {
      auto wf = f.randn(of * in, 0.5f);
      for (uint32_t type : {8u, 2u, 3u, 1u, 30u}) {  // Q8_0, Q4_0, Q4_1, F16, BF16
        std::vector<double> deq;
        const HostTensor h = gguf_weight(type, wf, of, in, &deq);
        Tensor w = f.be->upload_weight(h);
        ASSERT_NE(w.dtype(), DType::f32);
        EXPECT_EQ(w.bytes(), h.blocks.size());
        for (int64_t n : {1, 3, 4, 5, 37}) {
          auto x = f.randn(n * in), o0 = f.randn(n * of);
          for (bool acc : {false, true}) {
            Tensor out = f.put(o0, n, of);
            f.be->matmul(f.put(x, n, in), w, Tensor(), out, acc);
            std::vector<double> want(n * of);
            for (int64_t i = 0; i < n; ++i)
              for (int64_t j = 0; j < of; ++j) {
                double s = acc ? o0[i * of + j] : 0.0;
                for (int64_t k = 0; k < in; ++k) s += double(x[i * in + k]) * deq[j * in + k];
                want[i * of + j] = s;
              }
            EXPECT_LT(rel_err(f.get(out), want), kRelTol) << "type " << type << " in " << in << " n " << n;
          }
        }
        // embed: rows 299, 0 and 17 of the table, exactly.
        Tensor ids = f.be->alloc(3, 1, DType::i32), rows = f.be->alloc(3, in, DType::f32);
        const int32_t id[3] = {299, 0, 17};
        f.be->copy_from_host(ids, id);
        f.be->embed(w, ids, rows);
        auto got = f.get(rows);
        size_t bad = 0;
        for (int i = 0; i < 3; ++i)
          for (int64_t k = 0; k < in; ++k) bad += got[i * in + k] != deq[id[i] * in + k];
        EXPECT_EQ(bad, 0u) << "type " << type;
        // A view of rows (the tied LM head's vocabulary slice) starts at whole blocks.
        Tensor tail = w.rows(17, 283);
        const int32_t zero = 0;
        f.be->copy_from_host(ids.rows(0, 1), &zero);
        f.be->embed(tail, ids.rows(0, 1), rows.rows(0, 1));
        got = f.get(rows);
        for (int64_t k = 0; k < in; ++k) ASSERT_EQ(got[k], deq[17 * in + k]) << "type " << type;
      }
    }
  }
}

// Every output element of matmul is one dot product in a fixed order (cpu_matmul.cpp), so
// a row of x gets the same bits whether it comes alone (decode: 1 row, weights decoded in
// registers), among a few (2-4 rows) or among many (dequantized panels), wherever it sits
// in x and however many threads split the weight rows: the property that makes the forward
// independent of the rank count. Every weight type, inputs not a multiple of 8 (the FMA
// lanes' scalar tail) where the type allows, outputs not a multiple of any kernel's block
// of weight rows, both kernel sets.
TEST(CpuBackend, MatmulFewRowsBitwiseEqualManyRows) {
  struct Shape {
    int64_t in, of;
  };
  const Shape any_in[] = {{1, 7}, {13, 37}, {64, 300}, {203, 67}, {576, 5}};  // F32, F16, BF16
  const Shape blocks_in[] = {{32, 7}, {96, 37}, {224, 67}, {608, 300}};      // Q8_0, Q4_0, Q4_1: whole blocks
  const int default_threads = omp_get_max_threads();
  for (bool portable : {false, true}) {
    SCOPED_TRACE(portable ? "portable kernels" : "default kernels");
    Fixture f(portable);
    for (uint32_t type : {0u, 1u, 30u, 8u, 2u, 3u}) {  // F32, F16, BF16, Q8_0, Q4_0, Q4_1
      const bool quantized = type == 8 || type == 2 || type == 3;
      for (const Shape& sh : quantized ? std::vector<Shape>(std::begin(blocks_in), std::end(blocks_in))
                                       : std::vector<Shape>(std::begin(any_in), std::end(any_in))) {
        SCOPED_TRACE("type " + std::to_string(type) + " in " + std::to_string(sh.in) + " of " + std::to_string(sh.of));
        const Tensor w = f.be->upload_weight(gguf_weight(type, f.randn(sh.of * sh.in, 0.5f), sh.of, sh.in));
        const int64_t n = 37;
        const Tensor x = f.put(f.randn(n * sh.in), n, sh.in), many = f.be->alloc(n, sh.of, DType::f32);
        f.be->matmul(x, w, Tensor(), many, false);
        const std::vector<float> want = f.get(many);
        // 1 and 2 threads split of = 300 into panels of 60 and 50 (more threads than cores
        // would spin: libgomp's default wait policy here).
        for (int threads : {1, 2, default_threads}) {
          omp_set_num_threads(threads);
          for (int64_t rows = 1; rows <= 5; ++rows)
            for (int64_t first : {int64_t{0}, int64_t{3}, n - rows}) {
              const Tensor out = f.be->alloc(rows, sh.of, DType::f32);
              f.be->matmul(x.rows(first, rows), w, Tensor(), out, false);
              const std::vector<float> got = f.get(out);
              size_t bad = 0;
              for (size_t k = 0; k < got.size(); ++k)
                bad += std::memcmp(&got[k], &want[static_cast<size_t>(first * sh.of) + k], sizeof(float)) != 0;
              EXPECT_EQ(bad, 0u) << rows << " rows from row " << first << ", " << threads << " threads";
            }
        }
        omp_set_num_threads(default_threads);
      }
    }
  }
}

// matmuls() runs several products of one x in one parallel region: each out bitwise
// what matmul() gives it alone, weights of different types and sizes, with and without bias.
TEST(CpuBackend, MatmulsEqualMatmulPerProduct) {
  Fixture f;
  const int64_t in = 96;
  const Tensor w0 = f.be->upload_weight(gguf_weight(3, f.randn(37 * in, 0.5f), 37, in));   // Q4_1
  const Tensor w1 = f.be->upload_weight(gguf_weight(0, f.randn(5 * in, 0.5f), 5, in));     // F32
  const Tensor w2 = f.be->upload_weight(gguf_weight(8, f.randn(300 * in, 0.5f), 300, in)); // Q8_0
  const Tensor b2 = f.put(f.randn(300), 300, 1);
  for (int64_t n : {1, 3, 9}) {
    const Tensor x = f.put(f.randn(n * in), n, in);
    std::vector<Backend::Product> ps = {{w0, Tensor(), f.be->alloc(n, 37, DType::f32)},
                                        {w1, Tensor(), f.be->alloc(n, 5, DType::f32)},
                                        {w2, b2, f.be->alloc(n, 300, DType::f32)}};
    f.be->matmuls(x, ps);
    for (const Backend::Product& p : ps) {
      const Tensor alone = f.be->alloc(n, p.w.rows(), DType::f32);
      f.be->matmul(x, p.w, p.bias, alone, false);
      const std::vector<float> a = f.get(alone), b = f.get(p.out);
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << n << " rows, of " << p.w.rows();
    }
  }
}

TEST(CpuBackend, RopeAtLargeStridedPositions) {
  Fixture f;
  const int64_t n = 5, heads = 3, D = 16, start = 1000003, stride = 4;
  RopeConfig rc;
  rc.theta = 500000.0;
  rc.scaling = RopeScalingType::llama3;
  rc.factor = 8.0;
  rc.original_max_position = 8192;
  const std::vector<double> inv = rope_inv_freq(rc, D);
  Tensor tf = f.be->alloc(1, D / 2, DType::f64);
  f.be->copy_from_host(tf, inv.data());
  auto x = f.randn(n * heads * D);
  Tensor t = f.put(x, n, heads * D);
  f.be->rope(t, heads, tf, start, stride);
  std::vector<double> want(x.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t d = 0; d < D / 2; ++d) {
        const double a = double(start + i * stride) * inv[d];
        const size_t p = i * heads * D + h * D + d, q = p + D / 2;
        want[p] = x[p] * std::cos(a) - x[q] * std::sin(a);
        want[q] = x[q] * std::cos(a) + x[p] * std::sin(a);
      }
  EXPECT_LT(rel_err(f.get(t), want), kRelTol);
}

// A decode batch's ops (one row per document) equal the row-by-row ops bit for bit: RoPE
// at large, unordered and repeated positions; K/V stores into each document's own cache,
// in every KV dtype, where a row without a destination leaves every byte as it was.
TEST(CpuBackend, RopeRowsAndStoreKvRowsEqualTheRowByRowOps) {
  Fixture f;
  const int64_t B = 7, heads = 3, D = 32, Hkv = 2, cap = 5;
  const std::vector<int64_t> positions = {5000011, 3, 5000011, 123456789, 0, 77, 3};
  RopeConfig rc;
  rc.theta = 1000000.0;
  const std::vector<double> inv = rope_inv_freq(rc, D);
  Tensor tf = f.be->alloc(1, D / 2, DType::f64);
  f.be->copy_from_host(tf, inv.data());
  const auto x = f.randn(B * heads * D);
  Tensor batch = f.put(x, B, heads * D), rows = f.put(x, B, heads * D);
  f.be->rope_rows(batch, heads, tf, positions);
  for (int64_t i = 0; i < B; ++i) f.be->rope(rows.rows(i, 1), heads, tf, positions[i], 1);
  const auto got = f.get(batch);
  EXPECT_EQ(got, f.get(rows));
  EXPECT_NE(got, x);  // the rotation did something
  EXPECT_THROW(f.be->rope_rows(batch, heads, tf, {1, 2}), Error);

  const std::vector<int64_t> slot = {4, 0, 2, 2, 1, 3, 0};  // each document's row for the new token
  const std::vector<bool> owned = {true, false, true, true, false, true, true};
  auto k = f.randn(B * Hkv * D), v = f.randn(B * Hkv * D);
  for (size_t i = 0; i < k.size(); ++i) k[i] *= std::ldexp(1.0f, int(i / D) % 9 - 4);  // heads of different scales
  for (int64_t d = 0; d < D; ++d) v[(3 * Hkv + 1) * D + d] = 0.0f;                      // a zero head
  const Tensor kt = f.put(k, B, Hkv * D), vt = f.put(v, B, Hkv * D);
  for (KvDtype dt : {KvDtype::f32, KvDtype::bf16, KvDtype::fp8}) {
    SCOPED_TRACE(kv_dtype_name(dt));
    // Two caches per document, poisoned: one stored by store_kv_rows, one row by row.
    std::vector<KvBlock> by_batch, by_row, dst(B);
    for (int64_t b = 0; b < B; ++b) {
      by_batch.push_back(f.be->alloc_kv(cap, Hkv, D, dt));
      by_row.push_back(f.be->alloc_kv(cap, Hkv, D, dt));
      const std::vector<uint8_t> poison(by_batch[b].packed.bytes(), 0xa5);
      f.be->copy_from_host(by_batch[b].packed, poison.data());
      f.be->copy_from_host(by_row[b].packed, poison.data());
      if (owned[b]) {
        dst[b] = by_batch[b].rows(slot[b], 1);
        f.be->store_kv(kt.rows(b, 1), vt.rows(b, 1), by_row[b].rows(slot[b], 1));
      }
    }
    f.be->store_kv_rows(kt, vt, dst);
    for (int64_t b = 0; b < B; ++b) {
      std::vector<uint8_t> hb(by_batch[b].packed.bytes()), hr(hb.size());
      f.be->copy_to_host(hb.data(), by_batch[b].packed);
      f.be->copy_to_host(hr.data(), by_row[b].packed);
      EXPECT_EQ(hb, hr) << "document " << b;
      const bool untouched = std::all_of(hb.begin(), hb.end(), [](uint8_t c) { return c == 0xa5; });
      EXPECT_EQ(untouched, !owned[b]) << "document " << b;
    }
    std::vector<KvBlock> two_rows(B);
    two_rows[2] = by_batch[2].rows(0, 2);
    EXPECT_THROW(f.be->store_kv_rows(kt, vt, two_rows), Error);
    EXPECT_THROW(f.be->store_kv_rows(kt, vt, std::vector<KvBlock>(B - 1)), Error);
  }
}

TEST(CpuBackend, RopeInvFreqScalings) {
  RopeConfig rc;
  rc.theta = 10000.0;
  auto base = rope_inv_freq(rc, 8);
  for (int i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(base[i], std::pow(10000.0, -2.0 * i / 8));
  rc.scaling = RopeScalingType::linear;
  rc.factor = 4.0;
  auto lin = rope_inv_freq(rc, 8);
  for (int i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(lin[i], base[i] / 4.0);
  // llama3 with original 64, factors 1 / 4: wavelength < 16 kept, > 64 divided by factor,
  // in between interpolated. theta 10000, D 8: wavelengths 6.28, 62.8, 628, 6283.
  rc.scaling = RopeScalingType::llama3;
  rc.factor = 8.0;
  rc.low_freq_factor = 1.0;
  rc.high_freq_factor = 4.0;
  rc.original_max_position = 64;
  auto l3 = rope_inv_freq(rc, 8);
  EXPECT_DOUBLE_EQ(l3[0], base[0]);
  const double wl = 2 * M_PI / base[1], sm = (64.0 / wl - 1.0) / 3.0;
  EXPECT_NEAR(l3[1], (1 - sm) * base[1] / 8 + sm * base[1], 1e-15);
  EXPECT_DOUBLE_EQ(l3[2], base[2] / 8);
  EXPECT_DOUBLE_EQ(l3[3], base[3] / 8);
  // yarn, original 64, factor 4, beta 32 / 1: the dimensions turning 32 and 1 times over
  // 64 positions are 8 ln(64 / (2 pi n)) / (2 ln 10000) = -0.497 and 1.008, truncated
  // outwards to [0, 2]: frequency 0 kept, 1 half-way, 2 and 3 divided by 4.
  rc = RopeConfig();
  rc.scaling = RopeScalingType::yarn;
  rc.factor = 4.0;
  rc.original_max_position = 64;
  auto y = rope_inv_freq(rc, 8);
  EXPECT_DOUBLE_EQ(y[0], base[0]);
  EXPECT_NEAR(y[1], 0.5 * base[1] + 0.5 * base[1] / 4, 1e-15);
  EXPECT_DOUBLE_EQ(y[2], base[2] / 4);
  EXPECT_DOUBLE_EQ(y[3], base[3] / 4);
  rc.truncate = false;  // the ramp runs over [0, 1.008]
  const double high = 8 * std::log(64 / (2 * M_PI)) / (2 * std::log(10000.0)), r1 = 1 / high;
  y = rope_inv_freq(rc, 8);
  EXPECT_NEAR(y[1], (1 - r1) * base[1] + r1 * base[1] / 4, 1e-15);
  EXPECT_DOUBLE_EQ(y[2], base[2] / 4);
  // YaRN's attention factor m scales cos and sin, so the logits by m^2.
  rc.attention_factor = 1.2;
  EXPECT_DOUBLE_EQ(rope_softmax_scale(rc, 16), 1.2 * 1.2 / 4);
  rc.scaling = RopeScalingType::none;
  EXPECT_DOUBLE_EQ(rope_softmax_scale(rc, 16), 0.25);
  // A GGUF's rope_freqs, verbatim: one divisor per frequency.
  rc.scaling = RopeScalingType::freq_factors;
  rc.freq_divisors = {1.0, 1.5, 3.25, 8.0};
  auto ff = rope_inv_freq(rc, 8);
  for (int i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(ff[i], base[i] / rc.freq_divisors[i]);
  rc.freq_divisors.pop_back();
  EXPECT_THROW(rope_inv_freq(rc, 8), Error);
}

TEST(CpuBackend, SwigluAndCopy) {
  Fixture f;
  const int64_t n = 4, m = 37;
  auto g = f.randn(n * m, 2.0f), u = f.randn(n * m);
  Tensor tg = f.put(g, n, m);
  f.be->swiglu(tg, f.put(u, n, m));
  std::vector<double> want(n * m);
  for (size_t i = 0; i < want.size(); ++i) want[i] = g[i] / (1.0 + std::exp(-double(g[i]))) * u[i];
  EXPECT_LT(rel_err(f.get(tg), want), kRelTol);
  Tensor c = f.be->alloc(n, m, DType::f32);
  f.be->copy(tg, c);
  EXPECT_EQ(f.get(c), f.get(tg));
}

TEST(CpuBackend, TargetLogprobsAndSample) {
  Fixture f;
  const int64_t n = 6, V = 301;
  auto l = f.randn(n * V, 4.0f);
  Tensor tl = f.put(l, n, V), tg = f.be->alloc(n, 1, DType::i32), out = f.be->alloc(n, 1, DType::f32);
  std::vector<int32_t> tgt = {0, 300, 17, 150, 17, 2};
  f.be->copy_from_host(tg, tgt.data());
  f.be->target_logprobs(tl, tg, out);
  auto got = f.get(out);
  for (int64_t i = 0; i < n; ++i) {
    double m = -1e300, z = 0;
    for (int64_t k = 0; k < V; ++k) m = std::max(m, double(l[i * V + k]));
    for (int64_t k = 0; k < V; ++k) z += std::exp(l[i * V + k] - m);
    const double want = l[i * V + tgt[i]] - m - std::log(z);
    EXPECT_NEAR(got[i], want, 1e-5 * std::max(1.0, std::fabs(want)));
  }
  Tensor tok = f.be->alloc(1, 1, DType::i32);
  SamplingParams sp;
  f.be->sample(tl.rows(2, 1), sp, 0.5, Tensor(), tok);
  int32_t id = -1;
  f.be->copy_to_host(&id, tok);
  EXPECT_EQ(id, argmax_token(l.data() + 2 * V, V));
  sp.temperature = 0.9;
  sp.top_p = 0.8;
  f.be->sample(tl.rows(2, 1), sp, 0.37, Tensor(), tok);
  f.be->copy_to_host(&id, tok);
  EXPECT_EQ(id, sample_token(l.data() + 2 * V, V, sp, 0.37));
  // Penalties change the logits in place, by the rule of sampling.h, before the pick.
  std::vector<int32_t> counts(static_cast<size_t>(V), 0);
  counts[1] = 2;
  counts[3] = 1;
  Tensor tc = f.be->alloc(1, V, DType::i32);
  f.be->copy_from_host(tc, counts.data());
  sp.temperature = 0.0;
  sp.repetition_penalty = 1.3;
  sp.frequency_penalty = 0.25;
  f.be->sample(tl.rows(1, 1), sp, 0.5, tc, tok);
  std::vector<float> want(l.begin() + V, l.begin() + 2 * V);
  apply_penalties(want.data(), V, counts.data(), sp);
  EXPECT_EQ(f.get(tl.rows(1, 1)), want);
  f.be->copy_to_host(&id, tok);
  EXPECT_EQ(id, argmax_token(want.data(), V));
}

// Reference attention in double for one (query block, key block) pair under key_visible,
// merged into a running (O, LSE) in double.
static void reference_attention(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                                int64_t nq, int64_t nk, const AttentionShape& sh, std::vector<double>& o,
                                std::vector<double>& lse) {
  const int64_t H = sh.n_heads, Hkv = sh.n_kv_heads, D = sh.head_dim, g = H / Hkv;
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> s;
      std::vector<int64_t> js;
      for (int64_t j = 0; j < nk; ++j) {
        if (!key_visible(sh.q_start + i, sh.q_rank, j, sh.k_rank, sh.n_ranks)) continue;
        double d = 0;
        for (int64_t c = 0; c < D; ++c) d += double(q[(i * H + h) * D + c]) * k[(j * Hkv + h / g) * D + c];
        s.push_back(d * sh.scale);
        js.push_back(j);
      }
      if (s.empty()) continue;  // identity
      double m = -1e300, z = 0;
      for (double x : s) m = std::max(m, x);
      for (double x : s) z += std::exp(x - m);
      const double l2 = m + std::log(z), l1 = lse[i * H + h];
      const double L = std::isinf(l1) ? l2 : std::max(l1, l2) + std::log1p(std::exp(-std::fabs(l1 - l2)));
      for (int64_t c = 0; c < D; ++c) {
        double acc = 0;
        for (size_t t = 0; t < s.size(); ++t) acc += std::exp(s[t] - m) / z * v[(js[t] * Hkv + h / g) * D + c];
        double& oc = o[(i * H + h) * D + c];
        oc = (std::isinf(l1) ? 0.0 : oc * std::exp(l1 - L)) + acc * std::exp(l2 - L);
      }
      lse[i * H + h] = L;
    }
}

TEST(CpuBackend, AttentionBlocksUnderStripedMaskGqa) {
  for (bool portable : {false, true}) {
    SCOPED_TRACE(portable ? "portable kernels" : "default kernels");
    Fixture f(portable);
    struct Case {
      int64_t H, Hkv, D, nq, nk, q_start;
      int r, s, N;
      bool from_reset;
    };
    const Case cases[] = {
        {4, 2, 16, 37, 150, 0, 0, 0, 1, true},   // N = 1 causal, crosses query and key tiles
        {4, 2, 16, 40, 40, 0, 1, 2, 3, true},    // s > r: no diagonal; row 0 sees nothing
        {6, 3, 8, 21, 21, 0, 2, 0, 3, false},    // s < r, merged into a random running result
        {4, 1, 32, 1, 70, 69, 1, 1, 2, false},   // decode form: one query at local 69
        {2, 2, 16, 17, 90, 40, 0, 3, 4, true},   // queries q_start.. against a longer block
        {3, 1, 16, 150, 300, 0, 1, 0, 2, true},  // several query (64) and key (128) tiles, GQA 3:1
    };
    for (const Case& c : cases) {
      AttentionShape sh;
      sh.n_heads = c.H, sh.n_kv_heads = c.Hkv, sh.head_dim = c.D, sh.q_start = c.q_start;
      sh.q_rank = c.r, sh.k_rank = c.s, sh.n_ranks = c.N, sh.scale = float(1.0 / std::sqrt(double(c.D)));
      auto q = f.randn(c.nq * c.H * c.D, 1.5f), k = f.randn(c.nk * c.Hkv * c.D, 1.5f), v = f.randn(c.nk * c.Hkv * c.D);
      Tensor o = f.be->alloc(c.nq, c.H * c.D, DType::f32), lse = f.be->alloc(c.nq, c.H, DType::f32);
      std::vector<double> ro(c.nq * c.H * c.D, 0.0), rl(c.nq * c.H, -std::numeric_limits<double>::infinity());
      if (c.from_reset) {
        f.be->attention_reset(o, lse);
      } else {
        auto o0 = f.randn(ro.size()), l0 = f.randn(rl.size(), 2.0f);
        f.be->copy_from_host(o, o0.data());
        f.be->copy_from_host(lse, l0.data());
        for (size_t i = 0; i < ro.size(); ++i) ro[i] = o0[i];
        for (size_t i = 0; i < rl.size(); ++i) rl[i] = l0[i];
      }
      f.be->attention(f.put(q, c.nq, c.H * c.D), f.put_kv(k, v, c.nk, c.Hkv, c.D), sh, o, lse);
      reference_attention(q, k, v, c.nq, c.nk, sh, ro, rl);
      auto go = f.get(o), gl = f.get(lse);
      EXPECT_LT(rel_err(go, ro), kRelTol) << "case r=" << c.r << " s=" << c.s << " N=" << c.N;
      for (size_t i = 0; i < rl.size(); ++i) {
        ASSERT_FALSE(std::isnan(gl[i]));
        if (std::isinf(rl[i])) {
          EXPECT_EQ(gl[i], -std::numeric_limits<float>::infinity());
        } else {
          EXPECT_NEAR(gl[i], rl[i], 1e-5 * std::max(1.0, std::fabs(rl[i])));
        }
      }
      for (float x : go) ASSERT_FALSE(std::isnan(x));
    }
  }
}

// bf16 and fp8 caches: attention equals the float64 reference over the dequantized
// values the block holds (read back through kv_quant.h), and differs from attention over
// the unrounded values (so the rounding really happened).
TEST(CpuBackend, AttentionReadsBf16AndFp8KvAsTheirDequantizedValues) {
  for (bool portable : {false, true}) {
    SCOPED_TRACE(portable ? "portable kernels" : "default kernels");
    Fixture f(portable);
    struct Case {
      int64_t H, Hkv, D, nq, nk, q_start;
      int r, s, N;
    };
    const Case cases[] = {
        {4, 2, 16, 37, 150, 0, 0, 0, 1},  // causal, crosses key tiles
        {4, 2, 16, 40, 40, 0, 1, 2, 3},   // s > r
        {4, 1, 32, 1, 70, 69, 1, 1, 2},   // decode form
        {3, 1, 16, 150, 300, 0, 1, 0, 2}, // query heads of a KV head grouped, several query and key tiles
    };
    for (KvDtype dt : {KvDtype::bf16, KvDtype::fp8}) {
      for (const Case& c : cases) {
        AttentionShape sh;
        sh.n_heads = c.H, sh.n_kv_heads = c.Hkv, sh.head_dim = c.D, sh.q_start = c.q_start;
        sh.q_rank = c.r, sh.k_rank = c.s, sh.n_ranks = c.N, sh.scale = float(1.0 / std::sqrt(double(c.D)));
        auto q = f.randn(c.nq * c.H * c.D, 1.5f), k = f.randn(c.nk * c.Hkv * c.D, 1.5f), v = f.randn(c.nk * c.Hkv * c.D);
        for (size_t i = 0; i < k.size(); ++i) k[i] *= float(1 + (i / c.D) % 5);  // rows of different scales
        KvBlock b = f.be->alloc_kv(c.nk, c.Hkv, c.D, dt);
        f.be->store_kv(f.put(k, c.nk, c.Hkv * c.D), f.put(v, c.nk, c.Hkv * c.D), b);
        // The stored values, dequantized on the host.
        std::vector<float> kd(k.size()), vd(v.size());
        if (dt == KvDtype::bf16) {
          std::vector<uint16_t> kb(k.size()), vb(v.size());
          f.be->copy_to_host(kb.data(), b.k);
          f.be->copy_to_host(vb.data(), b.v);
          for (size_t i = 0; i < k.size(); ++i) kd[i] = kvq::bf16_value(kb[i]), vd[i] = kvq::bf16_value(vb[i]);
        } else {
          std::vector<uint8_t> kq(k.size()), vq(v.size());
          std::vector<float> ks(c.nk * c.Hkv), vs(ks.size());
          f.be->copy_to_host(kq.data(), b.k);
          f.be->copy_to_host(vq.data(), b.v);
          f.be->copy_to_host(ks.data(), b.k_scale);
          f.be->copy_to_host(vs.data(), b.v_scale);
          for (size_t i = 0; i < k.size(); ++i) {
            kd[i] = kvq::fp8_e4m3_value(kq[i]) * ks[i / c.D];
            vd[i] = kvq::fp8_e4m3_value(vq[i]) * vs[i / c.D];
          }
        }
        Tensor o = f.be->alloc(c.nq, c.H * c.D, DType::f32), lse = f.be->alloc(c.nq, c.H, DType::f32);
        f.be->attention_reset(o, lse);
        f.be->attention(f.put(q, c.nq, c.H * c.D), b, sh, o, lse);
        std::vector<double> ro(c.nq * c.H * c.D, 0.0), rl(c.nq * c.H, -std::numeric_limits<double>::infinity());
        std::vector<double> uo = ro, ul = rl;
        reference_attention(q, kd, vd, c.nq, c.nk, sh, ro, rl);
        reference_attention(q, k, v, c.nq, c.nk, sh, uo, ul);
        const auto go = f.get(o), gl = f.get(lse);
        EXPECT_LT(rel_err(go, ro), kRelTol) << kv_dtype_name(dt) << " N=" << c.N;
        EXPECT_GT(rel_err(go, uo), 10 * kRelTol) << kv_dtype_name(dt) << ": no rounding visible";
        for (size_t i = 0; i < rl.size(); ++i)
          if (!std::isinf(rl[i])) {
            ASSERT_NEAR(gl[i], rl[i], 1e-5 * std::max(1.0, std::fabs(rl[i])));
          }
      }
    }
  }
}

TEST(CpuBackend, StripedBlocksMergeToFullCausalAttention) {
  // The whole point of the layout: for N ranks, each rank's queries against every rank's
  // key stripe, merged, equal ordinary causal attention over the sequence in global order.
  Fixture f;
  const int64_t S = 29, H = 2, Hkv = 1, D = 8;
  auto q = f.randn(S * H * D, 1.5f), k = f.randn(S * Hkv * D, 1.5f), v = f.randn(S * Hkv * D);
  AttentionShape full;
  full.n_heads = H, full.n_kv_heads = Hkv, full.head_dim = D, full.scale = float(1 / std::sqrt(double(D)));
  std::vector<double> ro(S * H * D, 0.0), rl(S * H, -std::numeric_limits<double>::infinity());
  reference_attention(q, k, v, S, S, full, ro, rl);
  for (int N : {2, 3, 4}) {
    auto stripe = [&](const std::vector<float>& src, int r, int64_t width) {
      std::vector<float> out;
      for (int64_t i = 0; i < local_len(S, r, N); ++i)
        out.insert(out.end(), src.begin() + global_pos(i, r, N) * width, src.begin() + (global_pos(i, r, N) + 1) * width);
      return out;
    };
    for (int r = 0; r < N; ++r) {
      const int64_t n = local_len(S, r, N);
      Tensor o = f.be->alloc(n, H * D, DType::f32), lse = f.be->alloc(n, H, DType::f32);
      f.be->attention_reset(o, lse);
      Tensor tq = f.put(stripe(q, r, H * D), n, H * D);
      for (int step = 0; step < N; ++step) {  // ring order
        const int s = (r - step + N) % N;
        const int64_t m = local_len(S, s, N);
        AttentionShape sh = full;
        sh.q_rank = r, sh.k_rank = s, sh.n_ranks = N;
        f.be->attention(tq, f.put_kv(stripe(k, s, Hkv * D), stripe(v, s, Hkv * D), m, Hkv, D), sh, o, lse);
      }
      auto go = f.get(o);
      std::vector<double> want;
      for (int64_t i = 0; i < n; ++i)
        want.insert(want.end(), ro.begin() + global_pos(i, r, N) * H * D, ro.begin() + (global_pos(i, r, N) + 1) * H * D);
      EXPECT_LT(rel_err(go, want), kRelTol) << "N=" << N << " r=" << r;
    }
  }
}
