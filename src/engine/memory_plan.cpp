#include "ringinfer/memory_plan.h"

#include <algorithm>

#include "ringinfer/error.h"

namespace ringinfer {
namespace {

int64_t parameter_count(const ModelConfig& c) {
  const int64_t h = c.hidden_size, q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  int64_t layer = h * q + 2 * h * kv + q * h + 3 * h * c.intermediate_size + 2 * h;
  if (c.qkv_bias) layer += q + 2 * kv;
  if (c.o_bias) layer += h;
  int64_t total = c.n_layers * layer + c.vocab_size * h + h;
  if (!c.tie_word_embeddings) total += c.vocab_size * h;
  return total;
}

}  // namespace

MemoryPlan plan_memory(const ModelConfig& c, const PlanInput& in) {
  RI_CHECK(in.ranks >= 1 && in.tp >= 1 && in.ranks % in.tp == 0,
           "plan: --ranks " + std::to_string(in.ranks) + " is not a multiple of --tp " + std::to_string(in.tp));
  RI_CHECK(in.context >= 0, "plan: negative context");
  MemoryPlan p;
  const int64_t T = in.tp, N = in.ranks / in.tp, D = c.head_dim, L = c.n_layers;
  p.cp = static_cast<int>(N);
  p.params_total = parameter_count(c);
  // Tensor parallelism splits every matrix by T (vocabulary-parallel LM head included).
  p.weights_per_rank = (p.params_total + T - 1) / T * in.weight_bytes;

  // KV heads per TP rank: Hkv/T, or one replicated head when T > Hkv (DESIGN §5).
  const int64_t kv_heads_local = std::max<int64_t>(1, c.n_kv_heads / T);
  p.kv_bytes_per_token = 2 * L * c.n_kv_heads * D * in.kv_bytes;
  p.kv_total = p.kv_bytes_per_token * in.context;
  p.local_tokens = (in.context + N - 1) / N;
  p.kv_per_rank = 2 * L * kv_heads_local * D * p.local_tokens * in.kv_bytes;

  // Per local token, layer-major prefill keeps: the residual stream (fp32, replicated
  // over TP), Q of one layer and its output O (fp32 for the LSE merge), and two ring
  // buffers of one layer's K and V (DESIGN §3).
  const int64_t q_local = c.n_heads / T * D;
  p.activation_bytes_per_local_token = c.hidden_size * 4 + q_local * in.act_bytes + q_local * 4 +
                                       2 * (2 * kv_heads_local * D * in.kv_bytes);
  p.activations_per_rank = p.activation_bytes_per_local_token * p.local_tokens;
  // Bounded scratch, independent of S: one chunk of tokens through the MLP (gate and up,
  // I/T wide), three hidden-wide fp32 temporaries, and fp32 logits of the LM head
  // (vocabulary-parallel: V/T wide) reduced at once to logprobs (DESIGN §3).
  const int64_t chunk = std::min<int64_t>(in.token_chunk, std::max<int64_t>(1, p.local_tokens));
  p.scratch_per_rank = chunk * (2 * (c.intermediate_size / T) * in.act_bytes + 3 * c.hidden_size * 4 +
                                (c.vocab_size + T - 1) / T * 4);
  p.total_per_rank = p.weights_per_rank + p.kv_per_rank + p.activations_per_rank + p.scratch_per_rank;

  p.ring_step_bytes = 2 * kv_heads_local * D * p.local_tokens * in.kv_bytes;
  // Causal striped blocks are lower-triangular: half of n x n scores, two matmuls (QK^T, PV).
  p.ring_step_flops = 4.0 * static_cast<double>(c.n_heads / T) * D * static_cast<double>(p.local_tokens) *
                      static_cast<double>(p.local_tokens) / 2.0;
  return p;
}

int smallest_fitting_ranks(const ModelConfig& c, PlanInput in, int64_t capacity) {
  for (int ranks = in.tp; ranks <= (1 << 20); ranks += in.tp) {
    in.ranks = ranks;
    const MemoryPlan p = plan_memory(c, in);
    if (p.weights_per_rank >= capacity) return -1;
    if (p.total_per_rank <= capacity) return ranks;
  }
  return -1;
}

}  // namespace ringinfer
