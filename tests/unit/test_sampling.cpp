// Counter-based sampling RNG, argmax and top-p (include/ringinfer/sampling.h).
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "ringinfer/error.h"
#include "ringinfer/sampling.h"

using namespace ringinfer;

TEST(Sampling, KnownHashValues) {
  EXPECT_EQ(splitmix64(0), 0xe220a8397b1dcdafULL);  // first output of splitmix64 seeded with 0
  EXPECT_EQ(doc_key(""), 0xcbf29ce484222325ULL);     // FNV-1a offset basis
  EXPECT_EQ(doc_key("a"), 0xaf63dc4c8601ec8cULL);
}

TEST(Sampling, UniformIsReproducibleAndKeyed) {
  const uint64_t d = doc_key("doc-17");
  EXPECT_EQ(sampling_uniform(42, d, 5), sampling_uniform(42, d, 5));
  EXPECT_NE(sampling_uniform(42, d, 5), sampling_uniform(42, d, 6));
  EXPECT_NE(sampling_uniform(42, d, 5), sampling_uniform(43, d, 5));
  EXPECT_NE(sampling_uniform(42, d, 5), sampling_uniform(42, doc_key("doc-18"), 5));
  double sum = 0, sq = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const double u = sampling_uniform(1, d, i);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    sq += u * u;
  }
  EXPECT_NEAR(sum / n, 0.5, 0.01);
  EXPECT_NEAR(sq / n - (sum / n) * (sum / n), 1.0 / 12, 0.005);
}

TEST(Sampling, ArgmaxBreaksTiesByLowestId) {
  const std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(argmax_token(l.data(), 4), 1);
  EXPECT_EQ(sample_token(l.data(), 4, 0.0, 1.0, 0.99), 1);  // temperature 0 is argmax
  EXPECT_EQ(sample_token(l.data(), 4, 0.7, 1e-9, 0.99), 1);  // tiny nucleus keeps the top token
}

TEST(Sampling, TopPNucleusAndTieOrder) {
  // Three equal logits: the order is by id, so with top_p = 0.5 the nucleus is ids {0, 1}
  // (mass 2/3 >= 1/2) and u splits it in halves.
  const std::vector<float> eq = {1.0f, 1.0f, 1.0f};
  EXPECT_EQ(sample_token(eq.data(), 3, 1.0, 0.5, 0.10), 0);
  EXPECT_EQ(sample_token(eq.data(), 3, 1.0, 0.5, 0.49), 0);
  EXPECT_EQ(sample_token(eq.data(), 3, 1.0, 0.5, 0.51), 1);
  EXPECT_EQ(sample_token(eq.data(), 3, 1.0, 0.5, 0.999), 1);
  EXPECT_EQ(sample_token(eq.data(), 3, 1.0, 1.0, 0.999), 2);
  // A token outside the nucleus is never drawn.
  const std::vector<float> l = {3.0f, 0.0f, 2.5f, -1.0f};  // probs ~ .58 .03 .35 .01
  std::set<int> seen;
  for (int i = 0; i < 2000; ++i) seen.insert(sample_token(l.data(), 4, 1.0, 0.9, sampling_uniform(9, 1, i)));
  EXPECT_EQ(seen, (std::set<int>{0, 2}));
}

TEST(Sampling, FrequenciesFollowTemperedSoftmax) {
  const std::vector<float> l = {1.0f, 0.2f, -0.5f, 1.3f, 0.0f};
  const double T = 0.8;
  std::vector<double> p(l.size());
  double z = 0;
  for (size_t i = 0; i < l.size(); ++i) z += p[i] = std::exp(l[i] / T);
  std::vector<int> count(l.size());
  const int n = 40000;
  for (int i = 0; i < n; ++i) ++count[sample_token(l.data(), 5, T, 1.0, sampling_uniform(3, 4, i))];
  for (size_t i = 0; i < l.size(); ++i) {
    const double want = p[i] / z, sd = std::sqrt(want * (1 - want) / n);
    EXPECT_NEAR(double(count[i]) / n, want, 5 * sd) << "token " << i;
  }
}

// NaN or inf logits (NaN weights, overflowed activations) must stop the job with a
// message, never pick a token: greedy would silently emit id 0 on every step.
TEST(Sampling, NonFiniteLogitsAreAnError) {
  for (const float bad : {std::nanf(""), INFINITY, -INFINITY}) {
    std::vector<float> l = {0.5f, 2.0f, -1.0f, 1.0f};
    l[2] = bad;
    for (const double temperature : {0.0, 0.8}) {
      try {
        (void)sample_token(l.data(), 4, temperature, 0.9, 0.5);
        ADD_FAILURE() << "no error for logit " << bad << " at temperature " << temperature;
      } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()), "sample: " + non_finite_logits_message(2));
        EXPECT_NE(std::string(e.what()).find("NaN or inf (vocabulary id 2)"), std::string::npos);
      }
    }
    EXPECT_THROW((void)argmax_token(l.data(), 4), Error);
  }
}
