#include "ringinfer/memory_plan.h"

#include <algorithm>

#include "ringinfer/error.h"
#include "ringinfer/model_family.h"
#include "ringinfer/model_loader.h"

namespace ringinfer {
namespace {

// Thrown by the checked arithmetic below; plan_memory turns it into an Error naming the
// context, smallest_fitting_ranks into "does not fit".
struct Overflow {};

int64_t mul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) throw Overflow{};
  return r;
}
template <typename... Rest>
int64_t mul(int64_t a, int64_t b, Rest... rest) {
  return mul(mul(a, b), rest...);
}
int64_t add(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) throw Overflow{};
  return r;
}
template <typename... Rest>
int64_t add(int64_t a, int64_t b, Rest... rest) {
  return add(add(a, b), rest...);
}

// Every tensor of the family's table (model_family.h) that the config uses.
int64_t parameter_count(const ModelConfig& c) {
  int64_t layer = 0, global = 0;
  for (const TensorSpec& s : *family_of(c).tensors) {
    if (!tensor_present(s, c)) continue;
    int64_t n = 1;
    for (int64_t d : tensor_shape(s, c)) n = mul(n, d);
    int64_t& sum = is_global_slot(s.slot) ? global : layer;
    sum = add(sum, n);
  }
  return add(mul(c.n_layers, layer), global);
}

// Tensor parallelism splits every matrix by T (vocabulary-parallel LM head included);
// more CP ranks do not shrink it. At T = 1 a GGUF the CPU keeps quantized holds its own
// byte count (T > 1 slices are read as fp32).
int64_t weights_per_rank(const ModelConfig& c, const PlanInput& in) {
  if (in.stored_weight_bytes > 0 && in.tp == 1) return in.stored_weight_bytes;
  return mul((parameter_count(c) + in.tp - 1) / in.tp, in.weight_bytes);
}

MemoryPlan plan_unchecked(const ModelConfig& c, const PlanInput& in) {
  MemoryPlan p;
  const int64_t T = in.tp, N = in.ranks / in.tp, D = c.head_dim, L = c.n_layers;
  p.cp = static_cast<int>(N);
  p.params_total = parameter_count(c);
  p.weights_per_rank = weights_per_rank(c, in);

  // KV heads per TP rank: Hkv/T, or one replicated head when T > Hkv (DESIGN §5).
  const int64_t kv_heads_local = std::max<int64_t>(1, c.n_kv_heads / T);
  const int64_t head_bytes = add(mul(D, in.kv_bytes), in.kv_scale_bytes);  // one token's K (or V) of one head
  p.kv_bytes_per_token = mul(2, L, c.n_kv_heads, head_bytes);
  p.kv_total = mul(p.kv_bytes_per_token, in.context);
  p.local_tokens = in.context / N + (in.context % N != 0 ? 1 : 0);  // ceil without overflow
  p.kv_per_rank = mul(2, L, kv_heads_local, head_bytes, p.local_tokens);
  p.kv_batch_per_rank = mul(p.kv_per_rank, in.batch);

  // Per local token, layer-major prefill allocates (Engine's prefill, exactly these
  // buffers; mpi_engine ties the two): the residual stream x (fp32, replicated over TP; in
  // host memory instead with offload_residual),
  // Q of one layer (q_bytes) and its (O, LSE) (fp32 for the merge; with state_bytes also
  // the wider running state they are rounded from), two ring buffers of one layer's K and V
  // when N > 1 (DESIGN §3; none on one rank), and with kv_copy_bytes the dequantized copy of
  // the block attention reads (CUDA fp8 prefill).
  const int64_t q_heads = c.n_heads / T, q_local = mul(q_heads, D);
  const int64_t ring_buffers = N > 1 ? 2 : 0;
  p.activation_bytes_per_local_token =
      add(in.offload_residual ? 0 : mul(c.hidden_size, 4), mul(q_local, in.q_bytes), mul(q_local, 4), mul(q_heads, 4),
          mul(ring_buffers, 2, kv_heads_local, head_bytes), mul(2, kv_heads_local, D, in.kv_copy_bytes),
          mul(add(q_local, q_heads), in.state_bytes));
  p.activations_per_rank = mul(p.activation_bytes_per_local_token, p.local_tokens);
  // Bounded scratch, independent of S: one chunk of tokens through the MLP (fp32 gate and
  // up, I/T wide, and on CUDA the bf16 silu(gate) * up the down projection reads) and three
  // hidden-wide fp32 temporaries (with offload_residual also the two chunk buffers x streams
  // through), and one logits chunk of fp32 LM-head logits (vocabulary-parallel: V/T wide)
  // reduced at once to logprobs (DESIGN §3); and where cuDNN may take an attention block,
  // its O and its copy of the queries (sdpa_out_bytes each) and fp32 statistics of one query
  // chunk.
  const int64_t chunk = std::min<int64_t>(in.token_chunk, std::max<int64_t>(1, p.local_tokens));
  const int64_t hidden_rows = in.offload_residual ? 5 : 3;
  const int64_t sdpa_bytes_per_row = in.sdpa_out_bytes > 0 ? mul(q_heads, add(mul(2, D, in.sdpa_out_bytes), 4)) : 0;
  p.scratch_per_rank =
      add(mul(chunk, add(mul(c.intermediate_size / T, add(8, in.act_bytes)), mul(hidden_rows, c.hidden_size, 4),
                         sdpa_bytes_per_row)),
          mul(in.logits_chunk, (c.vocab_size + T - 1) / T, 4));
  p.total_per_rank = add(p.weights_per_rank, p.kv_batch_per_rank, p.activations_per_rank, p.scratch_per_rank);
  p.host_per_rank = in.offload_residual ? mul(p.local_tokens, c.hidden_size, 4) : 0;

  p.ring_step_bytes = mul(2, kv_heads_local, head_bytes, p.local_tokens);
  // Causal striped blocks are lower-triangular: half of n x n scores, two matmuls (QK^T, PV).
  p.ring_step_flops = 4.0 * static_cast<double>(c.n_heads / T) * D * static_cast<double>(p.local_tokens) *
                      static_cast<double>(p.local_tokens) / 2.0;
  return p;
}

void check_input(const ModelConfig& c, const PlanInput& in) {
  RI_CHECK(in.ranks >= 1 && in.tp >= 1 && in.ranks % in.tp == 0,
           "plan: --ranks " + std::to_string(in.ranks) + " is not a multiple of --tp " + std::to_string(in.tp));
  RI_CHECK(in.context >= 0 && in.context <= kMaxContextTokens,
           "plan: a context of " + std::to_string(in.context) + " tokens is outside [0, " +
               std::to_string(kMaxContextTokens) + "], the longest context ringinfer supports");
  RI_CHECK(in.weight_bytes > 0 && in.kv_bytes > 0 && in.q_bytes > 0 && in.token_chunk > 0 && in.logits_chunk > 0 &&
               in.batch > 0,
           "plan: element sizes, the token and logits chunks and the batch must be positive");
  RI_CHECK(in.kv_scale_bytes >= 0 && in.kv_copy_bytes >= 0, "plan: KV scale and copy sizes must not be negative");
  // The divisibility rule of the tensor-parallel loader: plan and run agree on which
  // --tp values split the model.
  (void)tensor_parallel_slice(c, 0, in.tp);
}

}  // namespace

PlanInput plan_input(KvDtype kv, bool on_gpu, int64_t head_dim) {
  PlanInput in;
  in.weight_bytes = on_gpu ? 2 : 4;
  in.q_bytes = static_cast<int>(dtype_bytes(default_attention_query_dtype(on_gpu, head_dim)));
  in.kv_bytes = kv == KvDtype::fp8 ? 1 : kv == KvDtype::bf16 ? 2 : 4;
  in.state_bytes = on_gpu ? 0 : 8;
  in.act_bytes = on_gpu ? 2 : 0;
  in.sdpa_out_bytes = on_gpu ? 2 : 0;
  if (kv == KvDtype::fp8) {
    in.kv_scale_bytes = 4;
    in.kv_copy_bytes = on_gpu ? 2 : 0;
  }
  return in;
}

MemoryPlan plan_memory(const ModelConfig& c, const PlanInput& in) {
  check_input(c, in);
  try {
    return plan_unchecked(c, in);
  } catch (const Overflow&) {
    throw Error("plan: the memory of a " + std::to_string(in.context) + "-token context on " +
                std::to_string(in.ranks) + " ranks (--tp " + std::to_string(in.tp) +
                ") does not fit in 64-bit byte counts: it fits no machine");
  }
}

int64_t largest_fitting_batch(const ModelConfig& c, PlanInput in, int64_t capacity, int64_t max_batch) {
  in.batch = 1;
  const MemoryPlan one = plan_memory(c, in);
  if (one.total_per_rank > capacity) return 0;
  // Each document more adds one KV cache; everything else is held once.
  if (one.kv_per_rank == 0) return max_batch;
  return std::min(max_batch, 1 + (capacity - one.total_per_rank) / one.kv_per_rank);
}

int smallest_fitting_ranks(const ModelConfig& c, PlanInput in, int64_t capacity) {
  in.ranks = in.tp;
  check_input(c, in);
  try {
    (void)weights_per_rank(c, in);  // weights too large to count fit on no rank count: no search
  } catch (const Overflow&) {
    return -1;
  }
  for (int64_t ranks = in.tp; ranks <= kMaxPlanRanks; ranks += in.tp) {
    in.ranks = static_cast<int>(ranks);
    try {
      const MemoryPlan p = plan_unchecked(c, in);
      if (p.weights_per_rank >= capacity) return -1;
      if (p.total_per_rank <= capacity) return in.ranks;
    } catch (const Overflow&) {
      // Too large to count on this many ranks: does not fit; more ranks may.
    }
  }
  return -1;
}

}  // namespace ringinfer
