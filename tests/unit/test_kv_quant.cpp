// The KV cache codecs (ringinfer/kv_quant.h) and the CPU backend's store_kv: e4m3 against
// an independent float64 decoding and a brute-force nearest-value search, the fp8 row
// rule (scale, zero rows, batching-independent bytes), bf16 rounding, and KvBlock views.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "ringinfer/backend.h"
#include "ringinfer/kv_quant.h"

using namespace ringinfer;

namespace {

// The e4m3 value of b computed in float64 from the format's definition (bias 7, 3
// mantissa bits, subnormals at exponent field 0, S.1111.111 = NaN).
double e4m3_reference(int b) {
  const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
  if (e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
  const double a = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return s ? -a : a;
}

// The bits round-to-nearest-even with saturation should give, by search over all
// finite codes: the nearest value; on a tie the one with an even mantissa.
int e4m3_nearest(double x) {
  if (x > 448) return 0x7e;
  if (x < -448) return 0xfe;
  int best = -1;
  double best_d = 1e300;
  for (int b = 0; b < 256; ++b) {
    const double v = e4m3_reference(b);
    if (std::isnan(v) || b == 0x80) continue;  // -0 is never produced
    const double d = std::fabs(v - x);
    if (d < best_d || (d == best_d && (b & 1) == 0)) best = b, best_d = d;
  }
  return best;
}

}  // namespace

TEST(KvQuant, E4m3ValuesMatchTheFormat) {
  for (int b = 0; b < 256; ++b) {
    const double want = e4m3_reference(b);
    const float got = kvq::fp8_e4m3_value(static_cast<uint8_t>(b));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << b;
    } else {
      EXPECT_EQ(double(got), want) << b;
      EXPECT_EQ(kvq::fp8_e4m3_bits(got), b == 0x80 ? 0 : b) << "round trip of " << b;
    }
  }
  EXPECT_EQ(kvq::fp8_e4m3_value(0x7e), 448.0f);
  EXPECT_EQ(kvq::fp8_e4m3_value(0x01), std::ldexp(1.0f, -9));
}

TEST(KvQuant, E4m3RoundsToNearestEvenAndSaturates) {
  std::mt19937 gen(17);
  std::uniform_real_distribution<double> expo(-12.0, 10.0);
  for (int i = 0; i < 200000; ++i) {
    const float x = static_cast<float>((i % 2 ? -1 : 1) * std::exp2(expo(gen)));
    ASSERT_EQ(kvq::fp8_e4m3_bits(x), e4m3_nearest(x)) << "x = " << x;
  }
  // Exact midpoints: between 1 and 1.125 (mantissa 0 even), 1.125 and 1.25 (goes to 1.25).
  EXPECT_EQ(kvq::fp8_e4m3_value(kvq::fp8_e4m3_bits(1.0625f)), 1.0f);
  EXPECT_EQ(kvq::fp8_e4m3_value(kvq::fp8_e4m3_bits(1.1875f)), 1.25f);
  EXPECT_EQ(kvq::fp8_e4m3_bits(460.0f), 0x7e);
  EXPECT_EQ(kvq::fp8_e4m3_bits(-1e30f), 0xfe);
  EXPECT_EQ(kvq::fp8_e4m3_bits(std::numeric_limits<float>::infinity()), 0x7e);
  EXPECT_EQ(kvq::fp8_e4m3_bits(std::numeric_limits<float>::quiet_NaN()) & 0x7f, 0x7f);
  EXPECT_EQ(kvq::fp8_e4m3_bits(-0.0f), 0x00);
  EXPECT_EQ(kvq::fp8_e4m3_bits(std::ldexp(1.0f, -10)), 0x00);      // half the smallest subnormal: a tie, to even 0
  EXPECT_EQ(kvq::fp8_e4m3_bits(3 * std::ldexp(1.0f, -10)), 0x02);  // 1.5 steps: a tie, to even 2
}

TEST(KvQuant, Bf16RoundsToNearestEven) {
  EXPECT_EQ(kvq::bf16_bits(1.0f), 0x3f80);
  EXPECT_EQ(kvq::bf16_value(kvq::bf16_bits(1.0f + std::ldexp(1.0f, -8))), 1.0f);  // tie -> even
  EXPECT_EQ(kvq::bf16_value(kvq::bf16_bits(1.0f + 3 * std::ldexp(1.0f, -8))), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(kvq::bf16_value(kvq::bf16_bits(std::numeric_limits<float>::quiet_NaN()))));
}

namespace {

struct Stored {
  std::vector<uint8_t> kq, vq;    // fp8 bytes
  std::vector<uint16_t> kb, vb;   // bf16 bits
  std::vector<float> ks, vs;      // scales
};

Stored read_back(Backend& be, const KvBlock& b) {
  Stored s;
  const size_t n = static_cast<size_t>(b.k.numel());
  if (b.dtype == KvDtype::fp8) {
    s.kq.resize(n), s.vq.resize(n), s.ks.resize(b.k_scale.numel()), s.vs.resize(b.v_scale.numel());
    be.copy_to_host(s.kq.data(), b.k);
    be.copy_to_host(s.vq.data(), b.v);
    be.copy_to_host(s.ks.data(), b.k_scale);
    be.copy_to_host(s.vs.data(), b.v_scale);
  } else {
    s.kb.resize(n), s.vb.resize(n);
    be.copy_to_host(s.kb.data(), b.k);
    be.copy_to_host(s.vb.data(), b.v);
  }
  return s;
}

}  // namespace

TEST(KvQuant, CpuStoreFollowsTheFp8RowRule) {
  auto be = make_cpu_backend();
  const int64_t n = 9, Hkv = 3, D = 16;
  std::mt19937 gen(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> k(n * Hkv * D), v(k.size());
  for (size_t i = 0; i < k.size(); ++i) {
    const float row_mag = std::exp2(static_cast<float>(static_cast<int>(i / D) % 7) * 3.0f - 9.0f);
    k[i] = nd(gen) * row_mag;
    v[i] = nd(gen) / row_mag;
  }
  for (int64_t d = 0; d < D; ++d) k[(4 * Hkv + 1) * D + d] = 0.0f;  // a zero row: token 4, head 1
  Tensor tk = be->alloc(n, Hkv * D, DType::f32), tv = be->alloc(n, Hkv * D, DType::f32);
  be->copy_from_host(tk, k.data());
  be->copy_from_host(tv, v.data());
  KvBlock all = be->alloc_kv(n, Hkv, D, KvDtype::fp8), one = be->alloc_kv(n, Hkv, D, KvDtype::fp8);
  be->store_kv(tk, tv, all);
  for (int64_t i = n - 1; i >= 0; --i) be->store_kv(tk.rows(i, 1), tv.rows(i, 1), one.rows(i, 1));  // other order
  const Stored a = read_back(*be, all), b = read_back(*be, one);
  EXPECT_EQ(a.kq, b.kq);
  EXPECT_EQ(a.vq, b.vq);
  EXPECT_EQ(a.ks, b.ks);
  EXPECT_EQ(a.vs, b.vs);
  for (int part = 0; part < 2; ++part) {
    const std::vector<float>& x = part ? v : k;
    const std::vector<uint8_t>& q = part ? a.vq : a.kq;
    const std::vector<float>& sc = part ? a.vs : a.ks;
    for (int64_t row = 0; row < n * Hkv; ++row) {
      float amax = 0.0f;
      for (int64_t d = 0; d < D; ++d) amax = std::max(amax, std::fabs(x[row * D + d]));
      ASSERT_EQ(sc[row], amax / 448.0f) << "row " << row;
      for (int64_t d = 0; d < D; ++d) {
        const double xv = x[row * D + d], deq = double(kvq::fp8_e4m3_value(q[row * D + d])) * sc[row];
        // Half a step: 2^-4 relative for normals, 2^-10 scale for subnormals.
        ASSERT_LE(std::fabs(deq - xv), std::max(std::ldexp(std::fabs(xv), -4), std::ldexp(double(sc[row]), -10)) * 1.0001)
            << "row " << row << " d " << d;
        if (amax == 0.0f) {
          ASSERT_EQ(q[row * D + d], 0);
        }
      }
      // The row's largest value is stored as +-448 (exactly amax after scaling, up to the division).
      if (amax > 0.0f) {
        uint8_t top = 0;
        for (int64_t d = 0; d < D; ++d) top = std::max<uint8_t>(top, q[row * D + d] & 0x7f);
        ASSERT_EQ(top, 0x7e) << "row " << row;
      }
    }
  }
  EXPECT_EQ(a.ks[4 * Hkv + 1], 0.0f);
}

TEST(KvQuant, CpuStoreRoundsBf16AndKeepsF32) {
  auto be = make_cpu_backend();
  const int64_t n = 5, Hkv = 2, D = 8;
  std::mt19937 gen(8);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> k(n * Hkv * D), v(k.size());
  for (float& x : k) x = nd(gen);
  for (float& x : v) x = nd(gen);
  Tensor tk = be->alloc(n, Hkv * D, DType::f32), tv = be->alloc(n, Hkv * D, DType::f32);
  be->copy_from_host(tk, k.data());
  be->copy_from_host(tv, v.data());
  KvBlock b = be->alloc_kv(n, Hkv, D, KvDtype::bf16);
  be->store_kv(tk, tv, b);
  const Stored s = read_back(*be, b);
  for (size_t i = 0; i < k.size(); ++i) {
    ASSERT_EQ(s.kb[i], kvq::bf16_bits(k[i]));
    ASSERT_EQ(s.vb[i], kvq::bf16_bits(v[i]));
  }
  KvBlock f = be->alloc_kv(n, Hkv, D, KvDtype::f32);
  be->store_kv(tk, tv, f);
  std::vector<float> back(k.size());
  be->copy_to_host(back.data(), f.k);
  EXPECT_EQ(back, k);
}

TEST(KvQuant, BlocksPackValuesAndScalesInOneAllocation) {
  auto be = make_cpu_backend();
  const int64_t n = 7, Hkv = 2, D = 8;
  KvBlock b = be->alloc_kv(n, Hkv, D, KvDtype::fp8);
  EXPECT_GE(b.packed.bytes(), static_cast<size_t>(n * kv_bytes_per_token(KvDtype::fp8, Hkv, D)));
  EXPECT_EQ(kv_bytes_per_token(KvDtype::fp8, Hkv, D), 2 * (Hkv * D + 4 * Hkv));
  EXPECT_EQ(kv_bytes_per_token(KvDtype::bf16, Hkv, D), 2 * Hkv * D * 2);
  const char* lo = static_cast<const char*>(b.packed.data());
  for (const Tensor* t : {&b.k, &b.v, &b.k_scale, &b.v_scale}) {
    EXPECT_GE(static_cast<const char*>(t->data()), lo);
    EXPECT_LE(static_cast<const char*>(t->data()) + t->bytes(), lo + b.packed.bytes());
  }
  // A copy of the packed bytes carries the scales too: what the ring sends.
  std::vector<float> k(n * Hkv * D), v(k.size());
  for (size_t i = 0; i < k.size(); ++i) k[i] = float(i) - 50.0f, v[i] = 0.25f * float(i);
  Tensor tk = be->alloc(n, Hkv * D, DType::f32), tv = be->alloc(n, Hkv * D, DType::f32);
  be->copy_from_host(tk, k.data());
  be->copy_from_host(tv, v.data());
  be->store_kv(tk, tv, b);
  KvBlock c = be->alloc_kv(n, Hkv, D, KvDtype::fp8);
  be->copy(b.packed, c.packed);
  const Stored sb = read_back(*be, b), sc = read_back(*be, c);
  EXPECT_EQ(sb.kq, sc.kq);
  EXPECT_EQ(sb.vs, sc.vs);
  // rows(): views of the same storage; copy_kv of a row range.
  KvBlock d = be->alloc_kv(n, Hkv, D, KvDtype::fp8);
  be->copy_kv(b.rows(2, 3), d.rows(0, 3));
  const Stored sd = read_back(*be, d);
  for (int64_t i = 0; i < 3 * Hkv * D; ++i) ASSERT_EQ(sd.kq[i], sb.kq[2 * Hkv * D + i]);
  for (int64_t i = 0; i < 3 * Hkv; ++i) ASSERT_EQ(sd.ks[i], sb.ks[2 * Hkv + i]);
  EXPECT_TRUE(b.rows(2, 3).packed.empty());
  EXPECT_THROW(b.rows(5, 3), Error);
  EXPECT_THROW(parse_kv_dtype("fp16"), Error);
  EXPECT_EQ(parse_kv_dtype("fp8"), KvDtype::fp8);
}
