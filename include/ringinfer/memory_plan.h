#pragma once
// Memory and transfer plan of one document on one rank (DESIGN §3 "Memory per rank", §5):
// what `ringinfer plan` prints and what the memory check before work compares with the
// device. Every figure is in bytes and counts only what scales with the model or the
// context; the formulas are spelled out in memory_plan.cpp. Every figure is computed with
// overflow-checked 64-bit arithmetic: a plan too large to count refuses, it never wraps.
#include <cstdint>

#include "ringinfer/backend.h"  // KvDtype
#include "ringinfer/model.h"

namespace ringinfer {

// The longest document ringinfer handles, prompt and generated tokens together: positions
// and per-rank lengths are int32 on the devices. run refuses --max-new-tokens (and prompt +
// generation) beyond it, plan refuses --context beyond it.
inline constexpr int64_t kMaxContextTokens = (int64_t(1) << 31) - 1;

// The decode batch run picks without --max-batch: as many documents as memory holds, at
// most this many (DESIGN §4: past a few dozen rows a step is no longer bound by the weights).
inline constexpr int64_t kAutoMaxBatch = 32;

struct PlanInput {
  int64_t context = 0;          // S: tokens of the document (prompt + generated)
  int ranks = 1;                // ranks in the job
  int tp = 1;                   // tensor-parallel size T (CP size N = ranks / T)
  int weight_bytes = 2;         // bytes per weight element (bf16 = 2, fp32 = 4)
  int kv_bytes = 2;             // bytes per KV element (bf16 = 2, fp8 = 1)
  int kv_scale_bytes = 0;       // bytes of scale per token and KV head, for K and for V (fp8: 4)
  int kv_copy_bytes = 0;        // per KV element of the copy attention reads of one ring block
                                // (CUDA fp8 prefill: a bf16 copy, 2); 0 = attention reads the cache
  int q_bytes = 2;              // bytes per element of a layer's stored Q (Backend::attention_query_dtype:
                                // bf16 = 2 on CUDA at head_dim 64/128, else f32 = 4)
  int state_bytes = 0;          // per element of the wider running attention state the ring keeps beside the
                                // fp32 (O, LSE) (Backend::attention_state_dtype: the CPU's f64, 8); 0 where it is f32
  int act_bytes = 0;            // per element of prefill's narrow copy of the MLP's silu(gate) * up, one token
                                // chunk of it (Backend::gemm_input_dtype: bf16 = 2 on CUDA); 0 where it is f32
                                // (the gate buffer holds it)
  int sdpa_out_bytes = 0;       // per element of the cuDNN attention path's O of one query chunk before
                                // the merge and of its copy of the chunk's queries (bf16 = 2 on CUDA, where
                                // auto or --attention cudnn may take a block), beside its fp32 softmax
                                // statistics; 0 on the CPU. cuDNN's own workspace and handle are not counted
  int64_t token_chunk = 256;    // tokens per chunk of the projections and MLP (EngineOptions::chunk_tokens)
  int64_t logits_chunk = 32;    // rows per chunk of score's LM head (EngineOptions::logits_chunk)
  int64_t batch = 1;            // documents decoded together (run --max-batch): B KV caches of `context`
  int64_t stored_weight_bytes = 0;  // > 0 at --tp 1: the weights' bytes as the backend holds them (a GGUF the CPU
                                    // keeps quantized: TensorSource::kept_weight_bytes) instead of
                                    // the parameters x weight_bytes
  bool offload_residual = false;  // --offload-residual: the residual stream x waits in host memory between
                                  // layers: not counted here; two token chunks of it on the device instead
};

// A PlanInput with the element sizes of a run (context, ranks and batch left to fill in):
// bf16 weights on the GPU, fp32 on the CPU; the CPU's f64 attention state; Q stored as the backend's attention reads it at
// this head_dim (default_attention_query_dtype); a KV cache of `kv` (fp8: an f32 scale per
// token and head, and on the GPU prefill's bf16 copy of the ring block it attends over); on
// the GPU the cuDNN path's bf16 O of a query chunk.
// head_dim defaults to the 8B shape's 128 for callers that plan that shape only (benchmarks).
PlanInput plan_input(KvDtype kv, bool on_gpu, int64_t head_dim);

struct MemoryPlan {
  int cp = 1;                        // N = ranks / T
  int64_t params_total = 0;          // parameters of the whole model
  int64_t weights_per_rank = 0;      // bytes: params_total x weight_bytes / T (norms, embeddings: see .cpp)
  int64_t kv_bytes_per_token = 0;    // bytes of K and V of one token over all layers, whole model
  int64_t kv_total = 0;              // bytes of the whole document's KV cache (all ranks)
  int64_t local_tokens = 0;          // ceil(S / N): tokens held by the fullest rank
  int64_t kv_per_rank = 0;           // 2 L max(1, Hkv/T) (D kv_bytes + kv_scale_bytes) ceil(S/N): one document's
  int64_t kv_batch_per_rank = 0;     // batch x kv_per_rank: the caches of the decode batch
  int64_t activation_bytes_per_local_token = 0;
  int64_t activations_per_rank = 0;  // what prefill allocates per local token, times local_tokens: the fp32
                                     // residual stream, Q (q_bytes) and fp32 (O, LSE) of one layer, two ring
                                     // KV buffers when N > 1, and the dequantized copy of one (kv_copy_bytes)
  int64_t scratch_per_rank = 0;      // one token chunk of MLP (and its narrow copy, act_bytes) and norm, one logits
                                     // chunk of fp32 LM-head logits (and with offload_residual two chunks of x),
                                     // one query chunk of the cuDNN path's O, query copy and statistics
  int64_t total_per_rank = 0;        // weights + the batch's KV + activations + scratch (one prefill at a time)
  int64_t host_per_rank = 0;         // offload_residual: the fp32 residual stream in pinned host memory
                                     // (local_tokens x hidden x 4), beside total_per_rank; else 0
  int64_t ring_step_bytes = 0;       // bytes one rank sends per ring step of one layer (its local K and V)
  double ring_step_flops = 0;        // FLOPs of one ring step of one layer on one rank (QK^T and PV)
};

// Throws Error when in.context is outside [0, kMaxContextTokens], when --tp does not divide
// the model (the rule of tensor_parallel_slice, which run applies too), or when a figure
// would overflow 64 bits ("... does not fit in 64-bit byte counts").
MemoryPlan plan_memory(const ModelConfig& config, const PlanInput& in);

// Largest batch B in [1, max_batch] whose plan (in with batch = B) fits in `capacity`
// bytes; 0 when not even one document fits.
int64_t largest_fitting_batch(const ModelConfig& config, PlanInput in, int64_t capacity, int64_t max_batch);

// Smallest rank count (a multiple of in.tp, at most kMaxPlanRanks) whose per-rank total
// fits in `capacity` bytes, or -1 when none does (e.g. the weights alone do not fit).
// Counts whose figures overflow count as not fitting.
constexpr int kMaxPlanRanks = 1 << 20;
int smallest_fitting_ranks(const ModelConfig& config, PlanInput in, int64_t capacity);

}  // namespace ringinfer
