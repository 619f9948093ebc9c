// Plan figures against hand-computed cases (DESIGN §3 and the issues' worked examples).
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "ringinfer/engine.h"
#include "ringinfer/error.h"
#include "ringinfer/gguf.h"
#include "ringinfer/memory_plan.h"
#include "ringinfer/model_loader.h"
#include "model_shapes.h"
#include "test_paths.h"

namespace ringinfer {
namespace {

using test::llama_8b;

ModelConfig llama_70b() {
  ModelConfig c = llama_8b();
  c.hidden_size = 8192; c.n_layers = 80; c.n_heads = 64; c.intermediate_size = 28672;
  return c;
}

TEST(MemoryPlan, Llama8BOneMillionTokensOnTwoRanks) {
  PlanInput in; in.context = 1 << 20; in.ranks = 2;
  const MemoryPlan p = plan_memory(llama_8b(), in);
  // 8.03e9 parameters (the published count), bf16.
  EXPECT_NEAR(p.params_total / 1e9, 8.03, 0.01);
  EXPECT_EQ(p.kv_bytes_per_token, 2 * 32 * 8 * 128 * 2);  // 128 KiB
  EXPECT_NEAR(p.kv_per_rank / 1e9, 68.7, 0.1);              // DESIGN §3
  EXPECT_NEAR(p.activations_per_rank / 1e9, 26.0, 1.5);     // ~50 KB per local token
  EXPECT_NEAR(p.total_per_rank / 1e9, 114.0, 4.0);
  in.ranks = 8;
  const MemoryPlan p8 = plan_memory(llama_8b(), in);
  EXPECT_NEAR(p8.kv_per_rank / 1e9, 17.2, 0.1);
  // DESIGN §3 says ~43 GB: it counted a 4096-row scratch chunk with 4096 rows of logits;
  // the engine's chunks (256 rows, 32 of logits) leave 16.1 + 17.2 + 6.5 GB.
  EXPECT_NEAR(p8.total_per_rank / 1e9, 39.8, 1.0);
}

// Batched decode (DESIGN §5) holds one KV cache per document of the batch and everything
// else once; the largest fitting batch is the last B whose total fits.
TEST(MemoryPlan, DecodeBatchCountsOneKvCachePerDocument) {
  PlanInput in; in.context = 8192; in.ranks = 1;
  const MemoryPlan one = plan_memory(llama_8b(), in);
  in.batch = 3;
  const MemoryPlan three = plan_memory(llama_8b(), in);
  EXPECT_EQ(three.kv_per_rank, one.kv_per_rank);
  EXPECT_EQ(three.kv_batch_per_rank, 3 * one.kv_per_rank);
  EXPECT_EQ(three.total_per_rank, one.total_per_rank + 2 * one.kv_per_rank);
  const int64_t cap = one.total_per_rank + one.kv_per_rank * 5 / 2;  // room for 2.5 more caches
  EXPECT_EQ(largest_fitting_batch(llama_8b(), in, cap, 32), 3);
  EXPECT_EQ(largest_fitting_batch(llama_8b(), in, cap, 2), 2);  // capped
  EXPECT_EQ(largest_fitting_batch(llama_8b(), in, one.total_per_rank - 1, 32), 0);
  // The job: 32 documents of 8K tokens fit one 80 GB H100 (34 GB of bf16 KV).
  EXPECT_EQ(largest_fitting_batch(llama_8b(), in, int64_t(80e9), 32), 32);
}

// fp8 KV: one byte per value plus a 4-byte scale per token and KV head (for K and for V),
// and on CUDA a bf16 copy of one ring block for prefill's attention.
TEST(MemoryPlan, Fp8KvCountsScalesAndTheDequantizedBlock) {
  PlanInput bf16; bf16.context = 1 << 20; bf16.ranks = 2;
  PlanInput fp8 = bf16; fp8.kv_bytes = 1; fp8.kv_scale_bytes = 4; fp8.kv_copy_bytes = 2;
  const MemoryPlan a = plan_memory(llama_8b(), bf16), b = plan_memory(llama_8b(), fp8);
  EXPECT_EQ(b.kv_bytes_per_token, 2 * 32 * 8 * (128 + 4));  // 66 KiB against bf16's 128 KiB
  EXPECT_EQ(b.kv_per_rank, int64_t(2) * 32 * 8 * (128 + 4) * (1 << 19));
  EXPECT_EQ(b.ring_step_bytes, int64_t(2) * 8 * (128 + 4) * (1 << 19));
  // Per local token fp8's two ring buffers (2 x 2 x 8 x 132 bytes) and the block copy
  // (2 x 8 x 128 x 2) replace bf16's two ring buffers (2 x 2 x 8 x 256); the rest is the same.
  EXPECT_EQ(a.activation_bytes_per_local_token - b.activation_bytes_per_local_token,
            2 * 2 * 8 * (128 * 2) - (2 * 2 * 8 * (128 + 4) + 2 * 8 * 128 * 2));
  EXPECT_LT(b.total_per_rank, a.total_per_rank - a.kv_per_rank / 3);
}

// Per local token, exactly the buffers prefill allocates (mpi_engine ties them to the CPU
// backend's peak): x fp32, Q in the backend's query dtype, O fp32, LSE fp32 per head, two
// ring buffers of K and V only when N > 1, and on CUDA the bf16 copy of an fp8 block.
TEST(MemoryPlan, ActivationsPerLocalTokenAreThePrefillBuffers) {
  const int64_t x = 4096 * 4, o = 4096 * 4, lse = 32 * 4;
  PlanInput gpu_bf16 = plan_input(KvDtype::bf16, true, 128);
  gpu_bf16.context = 1 << 20; gpu_bf16.ranks = 2;
  EXPECT_EQ(gpu_bf16.q_bytes, 2);
  EXPECT_EQ(plan_memory(llama_8b(), gpu_bf16).activation_bytes_per_local_token,
            x + 4096 * 2 + o + lse + 2 * (2 * 8 * 128 * 2));  // 49280
  PlanInput gpu_fp8 = plan_input(KvDtype::fp8, true, 128);
  gpu_fp8.context = 524288; gpu_fp8.ranks = 1;
  EXPECT_EQ(plan_memory(llama_8b(), gpu_fp8).activation_bytes_per_local_token,
            x + 4096 * 2 + o + lse + 2 * 8 * 128 * 2);  // 45184: no ring buffers on one rank
  PlanInput cpu = plan_input(KvDtype::f32, false, 128);
  cpu.context = 3000; cpu.ranks = 3;
  EXPECT_EQ(cpu.q_bytes, 4);
  EXPECT_EQ(cpu.state_bytes, 8);  // the CPU's float64 (O, LSE) beside the fp32 ones
  EXPECT_EQ(plan_memory(llama_8b(), cpu).activation_bytes_per_local_token,
            x + 4096 * 4 + o + lse + 2 * (o + lse) + 2 * (2 * 8 * 128 * 4));  // 98688
  // A head_dim the CUDA tensor-core kernels do not take: the generic kernel reads fp32 Q.
  EXPECT_EQ(plan_input(KvDtype::bf16, true, 96).q_bytes, 4);
  EXPECT_EQ(plan_input(KvDtype::bf16, true, 64).q_bytes, 2);
}

// The plan's chunks are the engine's (what `run` uses): its scratch is one chunk of MLP
// rows and one logits chunk of vocabulary-wide fp32 rows (8B: 128256 x 4 bytes a row).
TEST(MemoryPlan, ScratchIsTheEnginesChunks) {
  const EngineOptions engine;
  PlanInput in;
  EXPECT_EQ(in.token_chunk, engine.chunk_tokens);
  EXPECT_EQ(in.logits_chunk, engine.logits_chunk);
  in.context = 8192; in.ranks = 1;
  const MemoryPlan a = plan_memory(llama_8b(), in);
  in.logits_chunk = 64;
  const MemoryPlan b = plan_memory(llama_8b(), in);
  EXPECT_EQ(b.scratch_per_rank - a.scratch_per_rank, int64_t(32) * 128256 * 4);
  in.token_chunk = 512;
  const MemoryPlan c = plan_memory(llama_8b(), in);
  EXPECT_EQ(c.scratch_per_rank - b.scratch_per_rank, int64_t(256) * (2 * 14336 + 3 * 4096) * 4);
  // On CUDA the chunk also holds the bf16 silu(gate) * up the down projection reads.
  EXPECT_EQ(plan_input(KvDtype::bf16, true, 128).act_bytes, 2);
  EXPECT_EQ(plan_input(KvDtype::f32, false, 128).act_bytes, 0);
  in.act_bytes = 2;
  const MemoryPlan d = plan_memory(llama_8b(), in);
  EXPECT_EQ(d.scratch_per_rank - c.scratch_per_rank, int64_t(512) * 14336 * 2);
  // And cuDNN's bf16 O and query copy of a query chunk with its fp32 statistics (32 heads x 128).
  EXPECT_EQ(plan_input(KvDtype::bf16, true, 128).sdpa_out_bytes, 2);
  EXPECT_EQ(plan_input(KvDtype::f32, false, 128).sdpa_out_bytes, 0);
  in.sdpa_out_bytes = 2;
  const MemoryPlan e = plan_memory(llama_8b(), in);
  EXPECT_EQ(e.scratch_per_rank - d.scratch_per_rank, int64_t(512) * 32 * (2 * 128 * 2 + 4));
}

// --offload-residual: x (hidden x 4 bytes per local token) leaves the device; two token
// chunks of it (the buffers it streams through) join the scratch.
TEST(MemoryPlan, OffloadedResidualLeavesTheDevice) {
  PlanInput in = plan_input(KvDtype::fp8, true, 128);
  in.context = 524288; in.ranks = 1; in.token_chunk = 256;
  const MemoryPlan on = plan_memory(llama_8b(), in);
  in.offload_residual = true;
  const MemoryPlan off = plan_memory(llama_8b(), in);
  EXPECT_EQ(off.activation_bytes_per_local_token, 45184 - 4096 * 4);
  EXPECT_EQ(off.scratch_per_rank - on.scratch_per_rank, 2 * 256 * 4096 * 4);
  EXPECT_EQ(on.total_per_rank - off.total_per_rank, int64_t(524288) * 4096 * 4 - 2 * 256 * 4096 * 4);
}

// A GGUF the CPU backend keeps quantized: at --tp 1 the plan counts the weights' stored
// bytes (TensorSource::kept_weight_bytes), which are what the backend holds once the engine
// has loaded them (llama-kquants: k-quant, Q5_x and IQ4 blocks, ~7x smaller than fp32);
// at --tp 2 slices are read as fp32 and the plan counts 4 bytes a weight.
TEST(MemoryPlan, QuantizedGgufOnTheCpuCountsItsStoredBytes) {
  const std::string path = test::source_dir() + "/tests/fixtures/models/llama-kquants/model.gguf";
  const ModelSource m = open_model(path);
  const int64_t kept = m.tensors->kept_weight_bytes();
  int64_t values = 0;  // every tensor's values: 4 bytes each in fp32
  const GgufFile file(path);
  for (const GgufTensorInfo& t : file.tensors()) values += t.numel();
  // The engine's other buffers are the same for both: the difference is the weights'.
  int64_t held_stored = 0, held_fp32 = 0;
  {
    auto be = make_cpu_backend();
    ASSERT_TRUE(be->takes_quantized_weights());
    Engine e(*be, m);
    held_stored = be->allocated_bytes();
  }
  {
    auto be = make_cpu_backend();
    const LoadedModel fp32 = load_model(path);
    Engine e(*be, fp32.config, fp32.weights);
    held_fp32 = be->allocated_bytes();
  }
  EXPECT_GT(kept, 0);
  EXPECT_EQ(held_fp32 - held_stored, 4 * values - kept);
  PlanInput in = plan_input(KvDtype::f32, false, m.config.head_dim);
  in.context = 1000;
  const MemoryPlan fp32 = plan_memory(m.config, in);
  EXPECT_GT(fp32.weights_per_rank, 5 * kept);
  in.stored_weight_bytes = kept;
  const MemoryPlan stored = plan_memory(m.config, in);
  EXPECT_EQ(stored.weights_per_rank, kept);
  EXPECT_EQ(fp32.total_per_rank - stored.total_per_rank, fp32.weights_per_rank - kept);
  in.ranks = in.tp = 2;
  EXPECT_EQ(plan_memory(m.config, in).weights_per_rank, (fp32.params_total + 1) / 2 * 4);
  // A safetensors folder keeps nothing.
  EXPECT_EQ(open_model(test::source_dir() + "/tests/fixtures/models/llama3-gqa").tensors->kept_weight_bytes(), -1);
}

TEST(MemoryPlan, Llama70BKvTotalAtOneMillion) {
  PlanInput in; in.context = 1000000; in.ranks = 1;
  EXPECT_NEAR(plan_memory(llama_70b(), in).kv_total / 1e9, 327.7, 0.1);  // "about 328 GB"
}

TEST(MemoryPlan, Llama70BTensorParallel) {
  PlanInput in; in.context = 1000000; in.ranks = 16; in.tp = 8;
  const MemoryPlan p = plan_memory(llama_70b(), in);
  EXPECT_EQ(p.cp, 2);
  EXPECT_NEAR(p.weights_per_rank / 1e9, 17.6, 0.1);
  EXPECT_NEAR(p.kv_per_rank / 1e9, 20.5, 0.05);
}

TEST(MemoryPlan, KvHeadsReplicatedWhenTpExceedsKvHeads) {
  ModelConfig c = llama_8b();
  c.n_kv_heads = 1;
  PlanInput in; in.context = 1000; in.ranks = 4; in.tp = 4;
  // One KV head per TP rank (replicated), all 1000 tokens on the single CP rank.
  EXPECT_EQ(plan_memory(c, in).kv_per_rank, 2 * 32 * 1 * 128 * 1000 * 2);
}

TEST(MemoryPlan, SmallestFittingRanks) {
  PlanInput in; in.context = 1 << 20;
  const int64_t h200 = 141'000'000'000;
  const int n = smallest_fitting_ranks(llama_8b(), in, h200);
  EXPECT_EQ(n, 2);
  EXPECT_EQ(smallest_fitting_ranks(llama_70b(), in, 10'000'000'000), -1);
  in.ranks = 3; in.tp = 2;
  EXPECT_THROW(plan_memory(llama_8b(), in), Error);
}

std::string error_of(const ModelConfig& c, const PlanInput& in) {
  try {
    plan_memory(c, in);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

using i128 = __int128;

// Figures over random contexts and rank counts up to the longest context, against the same
// formulas in 128-bit integers: no figure may wrap or go negative.
TEST(MemoryPlan, FiguresMatch128BitReferenceUpToTheLongestContext) {
  std::mt19937_64 rng(7);
  const ModelConfig c = llama_70b();
  const i128 L = c.n_layers, Hkv = c.n_kv_heads, D = c.head_dim;
  for (int iter = 0; iter < 2000; ++iter) {
    PlanInput in;
    in.context = iter == 0 ? kMaxContextTokens : int64_t(rng() % uint64_t(kMaxContextTokens)) + 1;
    in.tp = std::vector<int>{1, 2, 4, 8, 16, 32, 64}[rng() % 7];
    in.ranks = in.tp * int(1 + rng() % 4096);
    in.kv_bytes = 1 + int(rng() % 2);
    const MemoryPlan p = plan_memory(c, in);
    const i128 N = in.ranks / in.tp, local = (i128(in.context) + N - 1) / N;
    const i128 kv_local_heads = std::max<i128>(1, Hkv / in.tp);
    ASSERT_EQ(i128(p.local_tokens), local);
    ASSERT_EQ(i128(p.kv_total), 2 * L * Hkv * D * in.kv_bytes * i128(in.context));
    ASSERT_EQ(i128(p.kv_per_rank), 2 * L * kv_local_heads * D * local * in.kv_bytes);
    ASSERT_EQ(i128(p.activations_per_rank), i128(p.activation_bytes_per_local_token) * local);
    ASSERT_EQ(i128(p.total_per_rank), i128(p.weights_per_rank) + p.kv_per_rank + p.activations_per_rank +
                                          p.scratch_per_rank);
    ASSERT_GT(p.total_per_rank, p.kv_per_rank);
  }
}

TEST(MemoryPlan, RefusesContextsBeyondTheLongest) {
  PlanInput in; in.context = kMaxContextTokens + 1; in.ranks = 1;
  EXPECT_EQ(error_of(llama_8b(), in),
            "plan: a context of 2147483648 tokens is outside [0, 2147483647], the longest context ringinfer supports");
  in.context = int64_t(1) << 60;
  EXPECT_THROW(plan_memory(llama_8b(), in), Error);
  in.context = -5;
  EXPECT_THROW(plan_memory(llama_8b(), in), Error);
}

// A model whose figures cannot be counted in 64 bits does not fit; it never wraps to a
// small (or negative) number that "fits".
TEST(MemoryPlan, OverflowingFiguresRefuse) {
  ModelConfig c = llama_8b();
  c.hidden_size = int64_t(1) << 50;  // h x intermediate alone is 2^50 x 14336 > 2^63
  PlanInput in; in.context = 1000; in.ranks = 1;
  EXPECT_EQ(error_of(c, in),
            "plan: the memory of a 1000-token context on 1 ranks (--tp 1) does not fit in 64-bit byte counts: it fits "
            "no machine");
  EXPECT_EQ(smallest_fitting_ranks(c, in, INT64_MAX), -1);
  // Per-token KV bytes near 2^63: one token fits the count, the longest context does not.
  ModelConfig k = llama_8b();
  k.n_layers = int64_t(1) << 40;
  in.context = kMaxContextTokens;
  EXPECT_NE(error_of(k, in).find("does not fit in 64-bit byte counts"), std::string::npos) << error_of(k, in);
}

// plan applies run's tensor-parallel rule (tensor_parallel_slice): the same --tp values are
// refused, with the same message.
TEST(MemoryPlan, TensorParallelRuleIsRuns) {
  for (int tp : {3, 5, 64, 12}) {
    PlanInput in; in.context = 1000; in.ranks = tp; in.tp = tp;
    std::string run_msg;
    try {
      tensor_parallel_slice(llama_8b(), 0, tp);
    } catch (const Error& e) {
      run_msg = e.what();
    }
    ASSERT_FALSE(run_msg.empty()) << tp;
    EXPECT_EQ(error_of(llama_8b(), in), run_msg) << tp;
    EXPECT_THROW(smallest_fitting_ranks(llama_8b(), in, int64_t(1) << 40), Error);
  }
  for (int tp : {1, 2, 4, 8, 16, 32}) {
    PlanInput in; in.context = 1000; in.ranks = tp; in.tp = tp;
    EXPECT_EQ(error_of(llama_8b(), in), "no error") << tp;
  }
}

}  // namespace
}  // namespace ringinfer
