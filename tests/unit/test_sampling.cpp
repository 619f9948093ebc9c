// Counter-based sampling RNG, argmax and top-p (include/ringinfer/sampling.h).
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "ringinfer/error.h"
#include "ringinfer/sampling.h"

using namespace ringinfer;

namespace {
SamplingParams params(double temperature, double top_p) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_p = top_p;
  return p;
}
// The temperature and top-p rule alone (no top-k, min-p or penalties).
int32_t sample(const float* logits, int64_t V, double temperature, double top_p, double u) {
  return sample_token(logits, V, params(temperature, top_p), u);
}
}  // namespace

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
  EXPECT_EQ(sample(l.data(), 4, 0.0, 1.0, 0.99), 1);  // temperature 0 is argmax
  EXPECT_EQ(sample(l.data(), 4, 0.7, 1e-9, 0.99), 1);  // tiny nucleus keeps the top token
}

TEST(Sampling, TopPNucleusAndTieOrder) {
  // Three equal logits: the order is by id, so with top_p = 0.5 the nucleus is ids {0, 1}
  // (mass 2/3 >= 1/2) and u splits it in halves.
  const std::vector<float> eq = {1.0f, 1.0f, 1.0f};
  EXPECT_EQ(sample(eq.data(), 3, 1.0, 0.5, 0.10), 0);
  EXPECT_EQ(sample(eq.data(), 3, 1.0, 0.5, 0.49), 0);
  EXPECT_EQ(sample(eq.data(), 3, 1.0, 0.5, 0.51), 1);
  EXPECT_EQ(sample(eq.data(), 3, 1.0, 0.5, 0.999), 1);
  EXPECT_EQ(sample(eq.data(), 3, 1.0, 1.0, 0.999), 2);
  // A token outside the nucleus is never drawn.
  const std::vector<float> l = {3.0f, 0.0f, 2.5f, -1.0f};  // probs ~ .58 .03 .35 .01
  std::set<int> seen;
  for (int i = 0; i < 2000; ++i) seen.insert(sample(l.data(), 4, 1.0, 0.9, sampling_uniform(9, 1, i)));
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
  for (int i = 0; i < n; ++i) ++count[sample(l.data(), 5, T, 1.0, sampling_uniform(3, 4, i))];
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
        (void)sample(l.data(), 4, temperature, 0.9, 0.5);
        ADD_FAILURE() << "no error for logit " << bad << " at temperature " << temperature;
      } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()), "sample: " + non_finite_logits_message(2));
        EXPECT_NE(std::string(e.what()).find("NaN or inf (vocabulary id 2)"), std::string::npos);
      }
    }
    EXPECT_THROW((void)argmax_token(l.data(), 4), Error);
  }
}

// ---------------------------------------------------------------- the controls of issue 19
// Each rule against a small reference written from its definition, on given logits.

namespace {
// Reference: the surviving tokens and their probabilities (temperature, then top-k, then
// min-p, then top-p over what is left), as plain sets computed by brute force.
std::vector<double> reference_distribution(const std::vector<float>& l, double T, int64_t k, double min_p,
                                           double top_p) {
  const size_t V = l.size();
  std::vector<double> p(V);
  double pmax = 0;
  for (size_t i = 0; i < V; ++i) pmax = std::max(pmax, std::exp(l[i] / T));
  for (size_t i = 0; i < V; ++i) p[i] = std::exp(l[i] / T) / pmax;
  auto rank_of = [&](size_t i) {  // how many tokens come before i (higher logit, or equal and lower id)
    size_t r = 0;
    for (size_t j = 0; j < V; ++j) r += l[j] > l[i] || (l[j] == l[i] && j < i);
    return r;
  };
  std::vector<bool> keep(V, true);
  for (size_t i = 0; i < V; ++i) {
    if (k > 0 && rank_of(i) >= static_cast<size_t>(k)) keep[i] = false;
    if (p[i] < min_p) keep[i] = false;
  }
  double mass = 0;
  for (size_t i = 0; i < V; ++i) mass += keep[i] ? p[i] : 0;
  // Top-p: token i stays when the kept mass strictly before it is below top_p * mass.
  std::vector<bool> nucleus(V, false);
  for (size_t i = 0; i < V; ++i) {
    if (!keep[i]) continue;
    double before = 0;
    for (size_t j = 0; j < V; ++j)
      if (keep[j] && rank_of(j) < rank_of(i)) before += p[j];
    nucleus[i] = before < top_p * mass;
  }
  std::vector<double> out(V, 0.0);
  double z = 0;
  for (size_t i = 0; i < V; ++i) z += nucleus[i] ? p[i] : 0;
  for (size_t i = 0; i < V; ++i) out[i] = nucleus[i] ? p[i] / z : 0;
  return out;
}

// The draws of sample_token over many uniforms, as frequencies.
std::vector<double> drawn(const std::vector<float>& l, const SamplingParams& sp, int n) {
  std::vector<double> f(l.size(), 0.0);
  for (int i = 0; i < n; ++i) f[sample_token(l.data(), static_cast<int64_t>(l.size()), sp, sampling_uniform(5, 6, i))] += 1.0 / n;
  return f;
}

void expect_follows(const std::vector<double>& got, const std::vector<double>& want, int n, const std::string& what) {
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i] == 0.0) {
      EXPECT_EQ(got[i], 0.0) << what << ": token " << i << " is outside the kept set";
    } else {
      const double sd = std::sqrt(want[i] * (1 - want[i]) / n);
      EXPECT_NEAR(got[i], want[i], 5 * sd + 1e-12) << what << ": token " << i;
    }
  }
}
}  // namespace

TEST(SamplingControls, TopKMinPTopPFollowTheReference) {
  const std::vector<float> l = {1.0f, 0.2f, -0.5f, 1.3f, 0.0f, 1.3f, -2.0f, 0.9f};
  const int n = 30000;
  struct Case {
    int64_t k;
    double min_p, top_p;
  };
  for (const Case c : {Case{3, 0.0, 1.0}, Case{1, 0.0, 1.0}, Case{0, 0.5, 1.0}, Case{0, 0.9, 1.0}, Case{5, 0.3, 0.8},
                       Case{6, 0.0, 0.5}, Case{100, 0.0, 1.0}}) {
    SamplingParams sp = params(0.9, c.top_p);
    sp.top_k = c.k;
    sp.min_p = c.min_p;
    const std::string what = "top-k " + std::to_string(c.k) + " min-p " + std::to_string(c.min_p) + " top-p " +
                             std::to_string(c.top_p);
    expect_follows(drawn(l, sp, n), reference_distribution(l, 0.9, c.k, c.min_p, c.top_p), n, what);
  }
  // Top-k 2 over the tie at 1.3 keeps ids 3 and 5 (ties by lower id; both before 0 at 1.0).
  SamplingParams two = params(1.0, 1.0);
  two.top_k = 2;
  std::set<int> seen;
  for (int i = 0; i < 500; ++i) seen.insert(sample_token(l.data(), 8, two, sampling_uniform(1, 2, i)));
  EXPECT_EQ(seen, (std::set<int>{3, 5}));
}

TEST(SamplingControls, PenaltiesFollowTheirRule) {
  // Reference, from the definitions: repetition (l > 0 ? l / r : l * r) for a token seen at
  // least once, then minus frequency * count, minus presence once.
  const std::vector<float> l = {2.0f, -1.0f, 0.5f, 0.0f, -3.0f, 4.0f};
  const std::vector<int32_t> counts = {0, 2, 1, 3, 0, 1};
  SamplingParams sp;
  sp.repetition_penalty = 1.5;
  sp.frequency_penalty = 0.25;
  sp.presence_penalty = 0.5;
  std::vector<float> got = l;
  apply_penalties(got.data(), 6, counts.data(), sp);
  const std::vector<double> want = {2.0, -1.0 * 1.5 - 0.5 - 0.5, 0.5 / 1.5 - 0.25 - 0.5, 0.0 - 0.75 - 0.5, -3.0,
                                    4.0 / 1.5 - 0.25 - 0.5};
  for (size_t i = 0; i < l.size(); ++i) EXPECT_FLOAT_EQ(got[i], static_cast<float>(want[i])) << "token " << i;
  // Greedy after the penalty: token 5 (4.0) drops to 1.92, so token 0 (2.0, never generated) wins.
  EXPECT_EQ(argmax_token(got.data(), 6), 0);
  // Neutral values change nothing, whatever the counts.
  std::vector<float> same = l;
  apply_penalties(same.data(), 6, counts.data(), SamplingParams());
  EXPECT_EQ(same, l);
  EXPECT_FALSE(SamplingParams().penalized());
}

TEST(SamplingControls, NeutralControlsReproduceTheOldRule) {
  // Top-k off, min-p 0 and top-k >= V are the plain temperature / top-p rule, draw by draw.
  std::vector<float> l(300);
  for (size_t i = 0; i < l.size(); ++i) l[i] = static_cast<float>(std::sin(i * 1.7) * 4.0);
  for (int i = 0; i < 500; ++i) {
    const double u = sampling_uniform(11, 12, i);
    SamplingParams sp = params(0.8, 0.9);
    const int32_t plain = sample_token(l.data(), 300, sp, u);
    sp.top_k = 300;
    EXPECT_EQ(sample_token(l.data(), 300, sp, u), plain);
    sp.top_k = 0;
    sp.min_p = 1e-30;
    EXPECT_EQ(sample_token(l.data(), 300, sp, u), plain);
  }
}

TEST(SamplingControls, StopStringsAndRanges) {
  EXPECT_EQ(find_stop("one. two\n\nthree", {"\n\n"}), 8u);
  EXPECT_EQ(find_stop("one. two\n\nthree", {"three", "two"}), 5u);  // the earliest wins
  EXPECT_EQ(find_stop("abc", {"x", ""}), std::string::npos);
  // Sentence ends: punctuation (with closing quotes) then whitespace; "3.5" is not one, nor a
  // final '.' whose next character has not come yet.
  const std::string t = "It rose 3.5 m. \"Why?\" she asked. Then";
  EXPECT_EQ(find_sentence_end(t, 1), t.find(" \"Why"));
  EXPECT_EQ(find_sentence_end(t, 2), t.find(" she"));
  EXPECT_EQ(find_sentence_end(t, 3), t.find(" Then"));
  EXPECT_EQ(find_sentence_end(t, 4), std::string::npos);
  EXPECT_EQ(find_sentence_end("One. Two.", 2), std::string::npos);
  EXPECT_EQ(find_sentence_end("One. Two.\n", 2), 9u);
  SamplingParams bad;
  bad.top_k = -1;
  EXPECT_THROW(check_sampling_params(bad, "t"), Error);
  bad = SamplingParams();
  bad.repetition_penalty = 0.0;
  try {
    check_sampling_params(bad, "ringinfer run");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "ringinfer run: --repetition-penalty must be > 0 and finite");
  }
  bad = SamplingParams();
  bad.min_p = 1.5;
  EXPECT_THROW(check_sampling_params(bad, "t"), Error);
  EXPECT_NO_THROW(check_sampling_params(SamplingParams(), "t"));
}
