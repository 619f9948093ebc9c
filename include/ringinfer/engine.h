#pragma once
// The transformer forward, written once against Backend (DESIGN §3, §4, §7):
//   prefill  layer-major over this rank's stripe of a document: QKV projection in token
//            chunks, RoPE at true global positions iN + r, K,V appended to the local
//            cache, then N ring steps: the KV block in hand goes to rank r+1 while local
//            queries attend to it (double buffer), partial results merged by LSE;
//            output projection and MLP in chunks
//   score    per-token logprobs of tokens[k+1] given tokens[..k], LM head in row chunks;
//            each rank scores its own positions (targets from the next rank's stripe),
//            then one all-gather gives every rank the whole document's logprobs
//   generate prefill, then decode steps (DESIGN §4): the token is replicated, the owner
//            rank appends its K,V, each rank attends over its cache, one all-gather of
//            (O, LSE) per layer and a fixed-order merge; penalties, then greedy or top-k /
//            min-p / top-p sampling with a counter-based RNG keyed on (seed, document, step);
//            one rank samples and broadcasts; stops at EOS, a stop string or length
//   batch    continuous batching (DESIGN §5): join() prefills a document alone on the
//            whole ring and adds it to the decode batch (up to max_batch documents); each
//            step() runs one token of every document of the batch: one GEMM per projection
//            for the B rows, attention of each row over its own document's stripe, one
//            merge collective for all rows; documents leave as they finish
//            (take_finished()). A document's tokens do not depend on the batch: the RNG is
//            keyed on (seed, document, step) and penalties count its own tokens.
// With N > 1 every rank of the CP group calls the same method for the same document (the
// calls are collective over options.cp_comm); ranks holding no token (S < N) take part too.
// Tensor parallel (DESIGN §5, T = tp_size > 1): the T ranks of a TP group hold the same
// stripe and call the same methods (collective over options.tp_comm too). Each owns H/T
// query heads, their max(1, Hkv/T) KV heads, I/T FFN channels and ceil(V/T) LM-head rows
// (TensorParallelSlice, model_loader.h); o_proj and down_proj end in one sum all-reduce
// each over tp_comm; ring attention and the decode merge run per TP rank over cp_comm with
// the local heads only (T rings side by side); score combines the vocabulary parts'
// log-sum-exp by a max and a sum all-reduce; sampling all-gathers the logits row.
// One Engine serves many documents one after another; its buffers are sized per document.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "ringinfer/backend.h"
#include "ringinfer/comm.h"
#include "ringinfer/model.h"
#include "ringinfer/sampling.h"

namespace ringinfer {

// What the engine reports, on every rank, after each prefill layer and each generated token.
struct EngineProgress {
  enum class Kind { prefill_layer, decode_token } kind = Kind::prefill_layer;
  int layer = 0, layers = 0;  // prefill_layer: layer (1-based) of layers has finished
  int64_t generated = 0;      // decode_token: tokens generated so far (1-based)
  uint64_t tag = 0;           // decode_token: the document's tag (join())
};

struct EngineOptions {
  int cp_rank = 0;              // r, this rank's place in its CP group
  int cp_size = 1;              // N, the CP group size
  Comm* cp_comm = nullptr;      // the CP group (rank() == cp_rank, size() == cp_size); needed when N > 1.
                                // Buffers it moves are backend tensors (host on CPU, device on CUDA).
  int tp_rank = 0;              // this rank's place in its TP group
  int tp_size = 1;              // T, the TP group size (must split the model: tensor_parallel_slice)
  Comm* tp_comm = nullptr;      // the TP group (rank() == tp_rank, size() == tp_size); needed when T > 1.
                                // Moves backend tensors, like cp_comm.
  int64_t chunk_tokens = 256;   // rows per projection / MLP chunk (bounds scratch memory)
  int64_t logits_chunk = 32;    // rows per LM-head chunk in score (logits_chunk x vocab fp32)
  int64_t max_batch = 1;        // documents decoded together (1..chunk_tokens); each holds its own KV cache
  // Decode steps run back to back before the host reads their tokens (1..64): each step's
  // sampled ids stay on the backend and feed the next step's embedding, and the host takes
  // the tokens (EOS, stop strings, lengths, progress) every decode_burst steps. A document
  // that ends inside a burst has its later tokens discarded, so outputs do not depend on it.
  // Documents with repetition/frequency/presence penalties run one step at a time (their
  // counts are kept on the host).
  int64_t decode_burst = 8;
  // Each decode step as one recorded launch (Backend::begin_recording; a CUDA graph) where
  // the backend records and nothing in the step waits for the host: one rank (N = T = 1:
  // the communicators' calls are not recorded) and every document's sampling on the
  // backend (greedy on CUDA). A burst's first step launches op by op (the device starts
  // on it while the host records the next). Outputs are the same either way; the CUDA
  // launch overhead it saves is 1.4-1.8% of an 8B decode step (docs/PERFORMANCE.md).
  bool decode_graph = true;
  // The KV cache's element type; empty: the backend's default (f32 CPU, bf16 CUDA). The
  // constructor throws Error when the backend does not store it.
  std::optional<KvDtype> kv_dtype;
  // Keep the fp32 residual stream of the document being prefilled in host memory between
  // layers (pinned on CUDA), streaming it through two chunk buffers on the backend
  // (--offload-residual; DESIGN §3): S/N x hidden x 4 bytes off the device. Results are
  // bitwise the same either way. Decode is unaffected (its B rows stay on the backend).
  bool offload_residual = false;
  // Called after each prefill layer and each generated token (may be empty).
  std::function<void(const EngineProgress&)> on_progress;
  // Asked at the same points (may be empty). When it is true on any rank of the CP x TP
  // group, every rank of the group throws StopRequested (signals.h) at the same point: the
  // group agrees through one small all-reduce over cp_comm, then one over tp_comm, per check.
  std::function<bool()> should_stop;
};

// (Named apart from output.h's ScoreResult, the per-document record of the output file.)
struct DocumentScore {
  std::vector<float> logprobs;  // S-1 entries: log p(tokens[k+1] | tokens[..k]), on every rank; empty when S < 2
  double sum_logprob = 0.0;     // summed in double
  double perplexity = 0.0;      // exp(-sum / (S-1)); NaN when S < 2 (nothing was predicted)
  double seconds = 0.0;         // wall time of the whole call
};

enum class FinishReason { eos, length, empty_prompt, stop };
const char* to_string(FinishReason f);  // "eos" | "length" | "empty_prompt" | "stop"

struct GenerateOptions {
  int64_t max_new_tokens = 256;
  SamplingParams sampling;   // temperature 0 = greedy; penalties count this document's generated tokens
  uint64_t seed = 0;
  uint64_t doc_key = 0;      // sampling.h doc_key(doc_id): the per-document RNG key
  // Asked after each generated token with all tokens so far (may be empty): true ends the
  // generation there with finish `stop` (a stop string showed in the decoded text). It must
  // answer the same on every rank; it sees the same tokens everywhere.
  std::function<bool(const std::vector<int32_t>& tokens)> stop_here;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids, the EOS token included when one ended it
  FinishReason finish = FinishReason::length;
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;  // time of the steps after the first token
};

// This rank's share of the last score/generate call.
struct EngineStats {
  int64_t tokens_held = 0;  // prompt tokens in this rank's stripe: ceil((S - r) / N)
  int64_t kv_tokens = 0;    // tokens in the local KV cache of each layer at the end
  int64_t kv_bytes = 0;     // bytes allocated for the KV cache (all layers, K and V, full capacity):
                            // per layer capacity * kv_bytes_per_token(dtype, max(1, Hkv/T), D) (the
                            // allocation pads each of its parts to 256 bytes besides)
  int64_t bytes_sent = 0;   // payload bytes this rank handed to cp_comm (ring blocks, gathers, broadcasts)
  int64_t tp_bytes_sent = 0;  // payload bytes this rank handed to tp_comm (all-reduces, logits gathers)
};

// A document the decode batch finished.
struct FinishedDocument {
  uint64_t tag = 0;       // join()'s tag
  GenerateResult result;  // decode_seconds counts from its first token to its last, other
                          // documents' prefills in between included
  EngineStats stats;      // this rank's share of its work
};

struct ModelSource;  // model_loader.h

class Engine {
 public:
  // Uploads the weights to the backend (the caller may free `weights` afterwards). With
  // T > 1 `weights` may be whole (this rank's slice is cut out) or already this rank's slice
  // (read_weights(model, slice)). Throws Error when a weight's shape does not match the
  // config, when the model cannot be split over T ranks (the same message on every rank,
  // before any communication), or for an unsupported option.
  Engine(Backend& backend, const ModelConfig& config, const ModelWeights& weights, const EngineOptions& options = {});
  // Reads this rank's slice of `model` and uploads it one tensor at a time, each freed on
  // the host before the next is read: loading needs the rank's share of the weights on the
  // backend plus about one tensor of host memory, never the whole shard twice. The same
  // checks and errors as read_weights(model, slice) and the constructor above. `model`
  // may be closed afterwards.
  Engine(Backend& backend, const ModelSource& model, const EngineOptions& options = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // The striped entry points. stripe: tokens t = r (mod N) of an S-token document, in
  // order; next_stripe: those of rank (r+1) mod N (score targets; with N = 1 the same
  // tokens). Throws Error for a token outside the vocabulary (on every rank) or stripes
  // of the wrong length.
  DocumentScore score_stripes(const std::vector<int32_t>& stripe, const std::vector<int32_t>& next_stripe, int64_t S);
  // An empty prompt (S = 0) generates nothing (finish empty_prompt). Every rank returns
  // the same tokens. join() + step() until it finishes; the batch must be empty.
  GenerateResult generate_stripe(const std::vector<int32_t>& stripe, int64_t S, const GenerateOptions& options);

  // Continuous batching (collective like the calls above; every rank of the group makes
  // the same calls in the same order). join: validates the document, prefills it alone on
  // the ring (stop checks after each layer; a stop drops the batch, as in step()) and
  // samples its first token; the document then joins the decode batch, or is finished at
  // once (empty prompt, max_new_tokens 0, or a first token that ends it). Needs
  // batch_size() < max_batch.
  void join(const std::vector<int32_t>& stripe, int64_t S, const GenerateOptions& options, uint64_t tag);
  // One burst of decode steps for the batch (EngineOptions::decode_burst: up to that many
  // tokens per document, 1 where a document counts penalties on the host, never past a
  // document's max_new_tokens); first the group's stop check (StopRequested drops the
  // whole batch: those documents restart on resume). No-op on an empty batch.
  void step();
  int64_t batch_size() const;  // documents in decode now
  int64_t max_batch() const;   // options.max_batch
  // The documents finished since the last call, in the order they finished (within a
  // step, in the order they joined). last_stats() is then the last one's.
  std::vector<FinishedDocument> take_finished();

  // Conveniences taking the whole document; they cut this rank's stripes out of it.
  DocumentScore score(const std::vector<int32_t>& tokens);
  GenerateResult generate(const std::vector<int32_t>& prompt, const GenerateOptions& options);

  // Tokens in this rank's KV cache per layer after the last call: ceil((S - r) / N) after
  // score, ceil((S + G - 1 - r) / N) after generating G tokens (the last is never run).
  int64_t kv_cache_tokens() const;
  const EngineStats& last_stats() const;
  const ModelConfig& config() const;
  KvDtype kv_dtype() const;  // the KV cache's element type

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace ringinfer
