// Striped layout math, the mask rule and the (O, LSE) merge (include/ringinfer/striped.h).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "ringinfer/striped.h"

using namespace ringinfer;

namespace {
const float kInf = std::numeric_limits<float>::infinity();
}

TEST(Striped, LayoutPartitionsEveryPosition) {
  for (int N = 1; N <= 5; ++N) {
    for (int64_t S = 0; S <= 23; ++S) {
      int64_t total = 0;
      for (int r = 0; r < N; ++r) {
        const int64_t n = local_len(S, r, N);
        total += n;
        // ceil((S - r) / N), clamped at 0
        EXPECT_EQ(n, S > r ? (S - r + N - 1) / N : 0) << "S=" << S << " r=" << r << " N=" << N;
        for (int64_t i = 0; i < n; ++i) {
          const int64_t t = global_pos(i, r, N);
          EXPECT_LT(t, S);
          EXPECT_EQ(stripe_owner(t, N), r);
          EXPECT_EQ(local_index(t, N), i);
        }
      }
      EXPECT_EQ(total, S);
    }
  }
  EXPECT_EQ(local_len(10, 3, 4), 2);  // positions 3, 7
  EXPECT_EQ(local_len(3, 3, 4), 0);
  EXPECT_EQ(local_len(1000001, 0, 8), 125001);
}

TEST(Striped, MaskIsCausalInGlobalPositions) {
  for (int N = 1; N <= 5; ++N)
    for (int r = 0; r < N; ++r)
      for (int s = 0; s < N; ++s)
        for (int64_t qi = 0; qi < 9; ++qi) {
          int64_t count = 0;
          bool prefix = true;
          for (int64_t kj = 0; kj < 12; ++kj) {
            const bool vis = key_visible(qi, r, kj, s, N);
            EXPECT_EQ(vis, kj * N + s <= qi * N + r);
            // Design's block form: j <= i when s <= r, j < i when s > r.
            EXPECT_EQ(vis, s <= r ? kj <= qi : kj < qi);
            if (vis) {
              EXPECT_TRUE(prefix) << "visible keys are not a prefix";
              ++count;
            } else {
              prefix = false;
            }
          }
          EXPECT_EQ(visible_key_count(qi, r, s, N), count) << "qi=" << qi << " r=" << r << " s=" << s;
        }
}

TEST(Striped, MergeMatchesDoubleReference) {
  std::mt19937 gen(7);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  const int d = 8;
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> o1(d), o2(d);
    for (int k = 0; k < d; ++k) o1[k] = nd(gen), o2[k] = nd(gen);
    float l1 = nd(gen) * 10, l2 = nd(gen) * 10;
    const double L = std::log(std::exp(double(l1)) + std::exp(double(l2)));
    std::vector<float> o = o1;
    float l = l1;
    merge_lse(o.data(), &l, o2.data(), l2, d);
    EXPECT_NEAR(l, L, 1e-5 * std::max(1.0, std::fabs(L)));
    for (int k = 0; k < d; ++k) {
      const double want = o1[k] * std::exp(l1 - L) + o2[k] * std::exp(l2 - L);
      EXPECT_NEAR(o[k], want, 1e-5 * (std::fabs(o1[k]) + std::fabs(o2[k]) + 1e-3));
    }
  }
}

TEST(Striped, MergeOfSoftmaxPartsEqualsWholeSoftmax) {
  // Softmax-weighted average of values split into two key sets, each normalised with its
  // own LSE, merges to the softmax over the union.
  std::mt19937 gen(11);
  std::normal_distribution<double> nd(0.0, 2.0);
  const int n = 40, split = 13;
  std::vector<double> sc(n), val(n);
  for (int j = 0; j < n; ++j) sc[j] = nd(gen), val[j] = nd(gen);
  auto part = [&](int b, int e, float* o, float* l) {
    double m = -1e300, z = 0, acc = 0;
    for (int j = b; j < e; ++j) m = std::max(m, sc[j]);
    for (int j = b; j < e; ++j) z += std::exp(sc[j] - m), acc += std::exp(sc[j] - m) * val[j];
    *o = float(acc / z);
    *l = float(m + std::log(z));
  };
  float o_all, l_all, o1, l1, o2, l2;
  part(0, n, &o_all, &l_all);
  part(0, split, &o1, &l1);
  part(split, n, &o2, &l2);
  merge_lse(&o1, &l1, &o2, l2, 1);
  EXPECT_NEAR(o1, o_all, 1e-5 * std::fabs(o_all) + 1e-6);
  EXPECT_NEAR(l1, l_all, 1e-5 * std::fabs(l_all));
}

TEST(Striped, MergeWithEmptyPartsIsIdentityNeverNaN) {
  float o[2] = {0.0f, 0.0f}, l = -kInf;
  const float e[2] = {0.0f, 0.0f};
  merge_lse(o, &l, e, -kInf, 2);  // -inf with -inf
  EXPECT_EQ(l, -kInf);
  EXPECT_EQ(o[0], 0.0f);
  EXPECT_EQ(o[1], 0.0f);
  EXPECT_FALSE(std::isnan(o[0]) || std::isnan(l));

  const float b[2] = {1.5f, -2.0f};
  merge_lse(o, &l, b, 0.25f, 2);  // empty running result takes the part as is
  EXPECT_EQ(l, 0.25f);
  EXPECT_EQ(o[0], 1.5f);
  EXPECT_EQ(o[1], -2.0f);

  merge_lse(o, &l, e, -kInf, 2);  // an empty part leaves it unchanged
  EXPECT_EQ(l, 0.25f);
  EXPECT_EQ(o[0], 1.5f);
  EXPECT_EQ(o[1], -2.0f);

  float w1, w2, lm;
  merge_lse_weights(-kInf, -kInf, &lm, &w1, &w2);
  EXPECT_EQ(lm, -kInf);
  EXPECT_EQ(w1, 0.0f);
  EXPECT_EQ(w2, 0.0f);
}
