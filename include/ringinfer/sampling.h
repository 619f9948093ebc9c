#pragma once
// Token sampling (DESIGN §4): a counter-based RNG keyed on (seed, document, step), so a
// token never depends on scheduling, rank count or resume; penalties on the document's
// generated tokens; greedy argmax; top-k, min-p and top-p with a stable order (probability
// descending, ties by lower token id). The CPU backend calls these directly; a device
// kernel must implement the same rule (penalized_logit is shared with it).
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#ifdef __CUDACC__
#define RI_HOST_DEVICE __host__ __device__
#else
#define RI_HOST_DEVICE
#endif

namespace ringinfer {

// What a user can set about sampling (run's options, or per document from the JSONL body).
// The neutral values (the defaults) leave the logits and the nucleus as they are.
struct SamplingParams {
  double temperature = 0.0;         // 0 = greedy argmax (after penalties)
  double top_p = 1.0;               // nucleus mass in (0, 1]
  int64_t top_k = 0;                // keep the k most likely tokens; 0 = all
  double min_p = 0.0;               // keep tokens with p >= min_p * p_max; 0 = all
  double repetition_penalty = 1.0;  // > 0; a generated token's logit l becomes l / rp (l > 0) or l * rp
  double frequency_penalty = 0.0;   // subtracted once per earlier occurrence of the token
  double presence_penalty = 0.0;    // subtracted once when the token occurred at all
  // Whether the penalties change anything (then the generated-token counts are needed).
  bool penalized() const {
    return repetition_penalty != 1.0 || frequency_penalty != 0.0 || presence_penalty != 0.0;
  }
};

// The penalty rule for one logit of a token generated `count` times so far in this
// document (the prompt is not counted: a summary may quote its document). Repetition
// penalty first (Keskar et al. 2019, as Hugging Face and vLLM apply it), then
// frequency * count + presence (OpenAI's rule). In double, each step one rounded operation
// (an explicit fma), so host and device give the same bits.
RI_HOST_DEVICE inline float penalized_logit(float logit, int32_t count, double repetition, double frequency,
                                            double presence) {
  if (count <= 0) return logit;
  double l = logit;
  l = l > 0.0 ? l / repetition : l * repetition;
  l = fma(-frequency, static_cast<double>(count), l);
  l = l - presence;
  return static_cast<float>(l);
}

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

// logits[v] = penalized_logit(logits[v], counts[v], ...) for the V tokens; counts[v] is how
// often v was generated so far. Nothing to do when !p.penalized().
void apply_penalties(float* logits, int64_t V, const int32_t* counts, const SamplingParams& p);

// Samples from softmax(logits / temperature) restricted to a prefix of the tokens in order
// of logit descending (ties: lower id first): the first top_k (when > 0), of those the ones
// with probability >= min_p * p_max, and of those the shortest prefix whose mass reaches
// top_p * (their mass) (at least one token); then the first token of that prefix whose
// running mass exceeds u * (prefix mass). temperature <= 0 is argmax. Probabilities and
// sums in float64. Penalties are applied before (apply_penalties).
int32_t sample_token(const float* logits, int64_t V, const SamplingParams& p, double u);

// Where the earliest of the stop strings starts in `text` (the text is cut there), or
// std::string::npos when none shows. Empty stop strings never match.
size_t find_stop(const std::string& text, const std::vector<std::string>& stops);

// Where the text is cut after its n-th sentence (n >= 1): just past the n-th '.', '!' or '?'
// (with any closing quotes or brackets) that is followed by whitespace; npos while fewer
// sentences have ended. A sentence end is known only once the next character shows, so
// "3.5" and a closing '.' at the very end of the text are not ends yet.
size_t find_sentence_end(const std::string& text, int64_t n);

// Refuses values outside the ranges above: Error "<what>: --<option> must ...".
void check_sampling_params(const SamplingParams& p, const std::string& what);

}  // namespace ringinfer
