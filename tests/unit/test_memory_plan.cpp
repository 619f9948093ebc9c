// Plan figures against hand-computed cases (DESIGN §3 and the issues' worked examples).
#include <gtest/gtest.h>

#include "ringinfer/error.h"
#include "ringinfer/memory_plan.h"
#include "model_shapes.h"

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
  EXPECT_NEAR(p8.total_per_rank / 1e9, 43.0, 3.0);
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

}  // namespace
}  // namespace ringinfer
