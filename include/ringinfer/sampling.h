#pragma once
// Token sampling (DESIGN §4): a counter-based RNG keyed on (seed, document, step), so a
// token never depends on scheduling, rank count or resume; greedy argmax; top-p with a
// stable order (probability descending, ties by lower token id). The CPU backend calls
// these directly; a device kernel must implement the same rule.
#include <cstdint>
#include <string>

namespace ringinfer {

// splitmix64's output function (Steele, Lea, Flood 2014): a bijective 64-bit mix.
uint64_t splitmix64(uint64_t x);

// 64-bit FNV-1a of the document id, the per-document RNG key.
uint64_t doc_key(const std::string& doc_id);

// Uniform double in [0, 1) for sampling step `step` (0 = first generated token).
double sampling_uniform(uint64_t seed, uint64_t doc_key, uint64_t step);

// NaN or inf logits mean the model's weights hold NaN/inf or its activations overflowed:
// any token picked from them would be a silent wrong answer, so both pickers below throw
// Error(non_finite_logits_message(id)) for them.
std::string non_finite_logits_message(int64_t id);

// Index of the largest logit; the lowest index among equal maxima. V >= 1.
int32_t argmax_token(const float* logits, int64_t V);

// Samples from softmax(logits / temperature) restricted to the top-p nucleus: tokens in
// order of logit descending (ties: lower id first), the shortest prefix whose
// probability mass reaches top_p * total (at least one token); then the first token of
// that prefix whose running mass exceeds u * (prefix mass). temperature <= 0 is argmax.
// Probabilities and sums in float64.
int32_t sample_token(const float* logits, int64_t V, double temperature, double top_p, double u);

}  // namespace ringinfer
