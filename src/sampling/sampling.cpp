#include "ringinfer/sampling.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <numeric>
#include <vector>

#include "ringinfer/error.h"

namespace ringinfer {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t doc_key(const std::string& doc_id) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : doc_id) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

double sampling_uniform(uint64_t seed, uint64_t doc, uint64_t step) {
  // Chained mixing: each key word passes through a full bijective mix before the next is
  // folded in, so nearby (seed, doc, step) triples give unrelated outputs.
  uint64_t h = splitmix64(seed);
  h = splitmix64(h ^ doc);
  h = splitmix64(h ^ step);
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

std::string non_finite_logits_message(int64_t id) {
  return "the logits hold NaN or inf (vocabulary id " + std::to_string(id) +
         "): the model's weights hold NaN/inf values, or its activations overflowed";
}

namespace {

void check_finite(const float* logits, int64_t V) {
  for (int64_t i = 0; i < V; ++i)
    if (!std::isfinite(logits[i])) throw Error("sample: " + non_finite_logits_message(i));
}

}  // namespace

int32_t argmax_token(const float* logits, int64_t V) {
  check_finite(logits, V);
  int64_t best = 0;
  for (int64_t i = 1; i < V; ++i)
    if (logits[i] > logits[best]) best = i;
  return static_cast<int32_t>(best);
}

void apply_penalties(float* logits, int64_t V, const int32_t* counts, const SamplingParams& p) {
  if (!p.penalized()) return;
  for (int64_t v = 0; v < V; ++v)
    logits[v] = penalized_logit(logits[v], counts[v], p.repetition_penalty, p.frequency_penalty, p.presence_penalty);
}

size_t find_stop(const std::string& text, const std::vector<std::string>& stops) {
  size_t best = std::string::npos;
  for (const std::string& st : stops)
    if (!st.empty()) best = std::min(best, text.find(st));
  return best;
}

size_t find_sentence_end(const std::string& text, int64_t n) {
  int64_t seen = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c != '.' && c != '!' && c != '?') continue;
    size_t end = i + 1;
    while (end < text.size() && (text[end] == '"' || text[end] == '\'' || text[end] == ')' || text[end] == ']')) ++end;
    if (end < text.size() && std::isspace(static_cast<unsigned char>(text[end])) && ++seen == n) return end;
    i = end - 1;
  }
  return std::string::npos;
}

void check_sampling_params(const SamplingParams& p, const std::string& what) {
  auto need = [&](bool ok, const std::string& msg) {
    if (!ok) throw Error(what + ": " + msg);
  };
  need(std::isfinite(p.temperature) && p.temperature >= 0.0, "--temperature must be >= 0 and finite");
  need(p.top_p > 0.0 && p.top_p <= 1.0, "--top-p must be in (0, 1]");
  need(p.top_k >= 0, "--top-k must be >= 0");
  need(p.min_p >= 0.0 && p.min_p <= 1.0, "--min-p must be in [0, 1]");
  need(std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0.0, "--repetition-penalty must be > 0 and finite");
  need(std::isfinite(p.frequency_penalty) && std::fabs(p.frequency_penalty) <= 100.0,
       "--frequency-penalty must be in [-100, 100]");
  need(std::isfinite(p.presence_penalty) && std::fabs(p.presence_penalty) <= 100.0,
       "--presence-penalty must be in [-100, 100]");
}

int32_t sample_token(const float* logits, int64_t V, const SamplingParams& sp, double u) {
  const double temperature = sp.temperature;
  if (temperature <= 0.0 || V == 1) return argmax_token(logits, V);
  check_finite(logits, V);
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  // A strict total order (logit descending, id ascending), so the result is unique.
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  const double m = logits[order[0]];
  // Top-k and min-p each keep a prefix of `order` (p_max = p[0] is always kept).
  const int64_t n = sp.top_k > 0 ? std::min<int64_t>(sp.top_k, V) : V;
  std::vector<double> p(static_cast<size_t>(n));
  double total = 0.0;
  int64_t cand = 0;
  for (; cand < n; ++cand) {
    p[cand] = std::exp((static_cast<double>(logits[order[cand]]) - m) / temperature);
    if (p[cand] < sp.min_p) break;  // p[0] = 1, so this is p < min_p * p_max
    total += p[cand];
  }
  const double want = std::min(sp.top_p, 1.0) * total;
  double mass = 0.0;
  int64_t kept = 0;
  while (kept < cand) {
    mass += p[kept++];
    if (mass >= want) break;
  }
  const double target = u * mass;
  double run = 0.0;
  for (int64_t k = 0; k < kept; ++k) {
    run += p[k];
    if (run > target) return order[k];
  }
  return order[kept - 1];  // rounding left target at the very top
}

}  // namespace ringinfer
