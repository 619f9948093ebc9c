#pragma once
// The transformer forward, written once against Backend (DESIGN §3, §4, §7):
//   prefill  layer-major over this rank's stripe of a document: QKV projection in token
//            chunks, RoPE at true global positions iN + r, K,V appended to the local
//            cache, then attention over KV blocks merged by LSE (one block per ring step;
//            with N = 1 the only block is the local one), output projection and MLP in chunks
//   score    per-token logprobs of tokens[k+1] given tokens[..k], LM head in row chunks
//   generate prefill, then decode steps with the KV cache; greedy or top-p sampling with
//            a counter-based RNG keyed on (seed, document, step); stops at EOS or length
// One Engine serves many documents one after another; its buffers are sized per document.
#include <cstdint>
#include <memory>
#include <vector>

#include "ringinfer/backend.h"
#include "ringinfer/model.h"

namespace ringinfer {

struct EngineOptions {
  int cp_rank = 0;              // r, this rank's place in its CP group
  int cp_size = 1;              // N; only 1 until the ring exchange exists
  int64_t chunk_tokens = 256;   // rows per projection / MLP chunk (bounds scratch memory)
  int64_t logits_chunk = 32;    // rows per LM-head chunk in score (logits_chunk x vocab fp32)
};

struct ScoreResult {
  std::vector<float> logprobs;  // S-1 entries: log p(tokens[k+1] | tokens[..k]); empty when S < 2
  double sum_logprob = 0.0;     // summed in double
  double perplexity = 0.0;      // exp(-sum / (S-1)); NaN when S < 2 (nothing was predicted)
  double seconds = 0.0;         // wall time of the whole call
};

enum class FinishReason { eos, length, empty_prompt };
const char* to_string(FinishReason f);  // "eos" | "length" | "empty_prompt"

struct GenerateOptions {
  int64_t max_new_tokens = 256;
  double temperature = 0.0;  // 0 = greedy
  double top_p = 1.0;
  uint64_t seed = 0;
  uint64_t doc_key = 0;      // sampling.h doc_key(doc_id): the per-document RNG key
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids, the EOS token included when one ended it
  FinishReason finish = FinishReason::length;
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;  // time of the steps after the first token
};

class Engine {
 public:
  // Uploads the weights to the backend (the caller may free `weights` afterwards). Throws
  // Error when a weight's shape does not match the config, or for an unsupported option.
  Engine(Backend& backend, const ModelConfig& config, const ModelWeights& weights, const EngineOptions& options = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // tokens: the whole document (N = 1). Throws Error for a token outside the vocabulary.
  ScoreResult score(const std::vector<int32_t>& tokens);
  // prompt: the whole document. An empty prompt generates nothing (finish empty_prompt).
  GenerateResult generate(const std::vector<int32_t>& prompt, const GenerateOptions& options);

  const ModelConfig& config() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace ringinfer
