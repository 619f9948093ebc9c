#include "ringinfer/sampling.h"

#include <algorithm>
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

int32_t sample_token(const float* logits, int64_t V, double temperature, double top_p, double u) {
  if (temperature <= 0.0 || V == 1) return argmax_token(logits, V);
  check_finite(logits, V);
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  // A strict total order (logit descending, id ascending), so the result is unique.
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  const double m = logits[order[0]];
  std::vector<double> p(static_cast<size_t>(V));
  double total = 0.0;
  for (int64_t k = 0; k < V; ++k) {
    p[k] = std::exp((static_cast<double>(logits[order[k]]) - m) / temperature);
    total += p[k];
  }
  const double want = std::min(top_p, 1.0) * total;
  double mass = 0.0;
  int64_t kept = 0;
  while (kept < V) {
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
