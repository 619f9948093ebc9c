// Tensor parallelism inside context-parallel groups (DESIGN §5) under mpirun -np 2 and 4
// (other sizes skip): for every (cp, tp) with cp * tp dividing the world, each rank runs
// the engine on its stripe with its slice of the weights (read sharded from the file).
// Score logprobs must equal the single-rank engine's within 1e-5 relative
// (|a - b| <= 1e-5 max(1, |b|)) and the float64 reference (tests/fixtures/models) within
// 1e-4; greedy and top-p tokens must be identical to the single rank's; each rank must
// hold exactly 1/T of each sharded weight and 2 max(1, Hkv/T) D ceil((S - r)/N) KV values
// per layer; a T that cannot split the model fails with the same message on every rank.
// The fixtures cover GQA (4/2 heads), Qwen2 bias + tied embeddings, MQA (one KV head:
// T > Hkv replicates it) and a GGUF of k-quant blocks read in column slices.
#include <gtest/gtest.h>
#include <mpi.h>
#include <omp.h>
#include <sys/resource.h>

#include <cblas.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "engine/engine_weights.h"
#include "gtest_helpers.h"
#include "model_files.h"
#include "ringinfer/comm.h"
#include "ringinfer/engine.h"
#include "ringinfer/model_loader.h"
#include "ringinfer/parallel_layout.h"
#include "ringinfer/signals.h"
#include "ringinfer/striped.h"
#include "reference_models.h"
#include "test_paths.h"

namespace ringinfer {
namespace {

using namespace test;  // reference_models.h: the fixture models, stripes, world rank and size

const OneThreadPerRank kOneThread;

// Every (cp, tp) with cp * tp dividing the world size.
std::vector<std::pair<int, int>> shapes(int np) {
  std::vector<std::pair<int, int>> out;
  for (int cp = 1; cp <= np; ++cp)
    for (int tp = 1; cp * tp <= np; ++tp)
      if (np % (cp * tp) == 0) out.push_back({cp, tp});
  return out;
}

bool skip_world() { return world_size() != 2 && world_size() != 4; }

EngineOptions options(const ParallelGroups& g) {
  EngineOptions o = test::group_engine_options(g);
  o.chunk_tokens = 64;  // several chunks per stripe
  o.logits_chunk = 32;
  return o;
}

// This rank's weights as run/score reads them: only its slice when T > 1.
ModelWeights sharded_weights(const std::string& name, const ParallelLayout& l) {
  const ReferenceModel& f = reference_model(name);
  if (l.tp == 1) return f.model.weights;
  return read_weights(open_model(reference_model_path(name)), tensor_parallel_slice(f.model.config, l.tp_rank, l.tp));
}

std::string label(const std::string& model, int cp, int tp) {
  return model + " cp " + std::to_string(cp) + " tp " + std::to_string(tp);
}

class MpiTensorParallel : public ::testing::TestWithParam<std::string> {};

TEST_P(MpiTensorParallel, ScoreMatchesSingleRankAndReference) {
  if (skip_world()) GTEST_SKIP() << "runs under np 2 and 4";
  const ReferenceModel& f = reference_model(GetParam());
  const ModelConfig& cfg = f.model.config;
  const int np = world_size();
  auto be = make_cpu_backend();
  Engine single(*be, cfg, f.model.weights);
  const std::vector<size_t> lengths = {0, 1, 2, size_t(np - 1), size_t(np), size_t(np + 1), f.longest().size()};
  std::map<size_t, DocumentScore> want;
  for (size_t S : lengths) want[S] = single.score(prefix(f.longest(), S));
  for (const auto& shape : shapes(np)) {
    const int cp = shape.first, tp = shape.second;
    ParallelGroups g = world_groups(cp, tp);
    const int r = g.layout.cp_rank;
    Engine engine(*be, cfg, sharded_weights(GetParam(), g.layout), options(g));
    const std::string at = label(GetParam(), cp, tp);
    for (size_t S : lengths) {
      const std::vector<int32_t> doc = prefix(f.longest(), S);
      const DocumentScore got =
          engine.score_stripes(stripe_of(doc, r, cp), stripe_of(doc, (r + 1) % cp, cp), static_cast<int64_t>(S));
      ASSERT_EQ(got.logprobs.size(), S < 2 ? 0 : S - 1) << at << " S " << S;
      double vs_single = 0, vs_ref = 0;
      for (size_t k = 0; k < got.logprobs.size(); ++k) {
        vs_single = std::max(vs_single, rel_diff(got.logprobs[k], want[S].logprobs[k]));
        vs_ref = std::max(vs_ref, std::fabs(double(got.logprobs[k]) - f.longest_logprobs()[k]));
      }
      EXPECT_LT(vs_single, 1e-5) << at << " S " << S;
      EXPECT_LT(vs_ref, 1e-4) << at << " S " << S;
      if (S >= 2) {
        EXPECT_NEAR(got.sum_logprob, want[S].sum_logprob, 1e-5 * S) << at;
      } else {
        EXPECT_TRUE(std::isnan(got.perplexity));
      }
      // KV cache: 2 max(1, Hkv/T) D ceil((S - r)/N) fp32 values per layer.
      const int64_t kv_heads = std::max<int64_t>(1, cfg.n_kv_heads / tp);
      const int64_t held = local_len(static_cast<int64_t>(S), r, cp);
      if (S >= 2) {
        EXPECT_EQ(engine.last_stats().kv_bytes,
                  cfg.n_layers * 2 * kv_heads * cfg.head_dim * held * static_cast<int64_t>(sizeof(float)))
            << at << " S " << S;
      }
      EXPECT_EQ(engine.kv_cache_tokens(), held) << at << " S " << S;
      if (tp > 1 && S >= 2) {
        EXPECT_GT(engine.last_stats().tp_bytes_sent, 0) << at;
      }
    }
  }
}

TEST_P(MpiTensorParallel, GreedyAndTopPTokensIdenticalToSingleRank) {
  if (skip_world()) GTEST_SKIP() << "runs under np 2 and 4";
  const ReferenceModel& f = reference_model(GetParam());
  ModelConfig cfg = f.model.config;
  cfg.eos_token_ids.clear();
  const int np = world_size();
  auto be = make_cpu_backend();
  Engine single(*be, cfg, f.model.weights);
  GenerateOptions greedy;
  greedy.max_new_tokens = 9;
  GenerateOptions top_p = greedy;
  top_p.sampling.temperature = 1.3;  // flat enough that the draws wander through the vocabulary
  top_p.sampling.top_p = 0.95;
  top_p.seed = 1234;
  top_p.doc_key = 77;
  GenerateOptions penalized = top_p;  // the counts live on every rank; TP ranks sample the gathered row
  penalized.sampling.top_k = 50;
  penalized.sampling.min_p = 0.02;
  penalized.sampling.repetition_penalty = 1.4;
  penalized.sampling.frequency_penalty = 0.3;
  penalized.sampling.presence_penalty = 0.2;
  const std::vector<size_t> lengths = {0, 1, size_t(np), f.greedy_prompt.size()};
  for (const auto& shape : shapes(np)) {
    const int cp = shape.first, tp = shape.second;
    ParallelGroups g = world_groups(cp, tp);
    const int r = g.layout.cp_rank;
    // Whole weights here (the engine cuts its slice); the score test reads them sharded.
    Engine engine(*be, cfg, f.model.weights, options(g));
    for (size_t S : lengths) {
      const std::vector<int32_t> prompt = prefix(f.greedy_prompt, S);
      for (const GenerateOptions* opt : {&greedy, &top_p, &penalized}) {
        const GenerateResult want = single.generate(prompt, *opt);
        const GenerateResult got = engine.generate_stripe(stripe_of(prompt, r, cp), static_cast<int64_t>(S), *opt);
        const std::string at = label(GetParam(), cp, tp) + " S " + std::to_string(S) +
                               (opt == &greedy ? " greedy" : opt == &top_p ? " top-p" : " penalized");
        EXPECT_EQ(got.tokens, want.tokens) << at;
        EXPECT_EQ(got.finish, want.finish) << at;
        const int64_t ran = S == 0 ? 0 : static_cast<int64_t>(S + opt->max_new_tokens - 1);
        EXPECT_EQ(engine.kv_cache_tokens(), local_len(ran, r, cp)) << at;
      }
    }
  }
}

// Each rank's backend tensors hold exactly its 1/T of each sharded weight (and those
// values), the vocabulary rows of the group add up to V, and the rest is whole.
TEST_P(MpiTensorParallel, EachRankHoldsOneTthOfEachShardedWeight) {
  if (skip_world()) GTEST_SKIP() << "runs under np 2 and 4";
  const ReferenceModel& f = reference_model(GetParam());
  const ModelConfig& c = f.model.config;
  const int np = world_size();
  auto be = make_cpu_backend();
  const int64_t hid = c.hidden_size, D = c.head_dim, H = c.n_heads, Hkv = c.n_kv_heads, I = c.intermediate_size;
  for (int tp = 1; tp <= np; tp *= 2) {
    ParallelGroups g = world_groups(1, tp);
    const TensorParallelSlice sl = tensor_parallel_slice(c, g.layout.tp_rank, tp);
    const ModelWeights part = sharded_weights(GetParam(), g.layout);
    const engine::BackendWeights bw = engine::upload_weights(*be, c, part, sl);
    const std::string at = label(GetParam(), 1, tp);
    const int64_t kvh = std::max<int64_t>(1, Hkv / tp);
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const engine::BackendLayer& L = bw.layers[l];
      const LayerWeights& W = f.model.weights.layers[l];
      EXPECT_EQ(L.wq.rows() * tp, H * D) << at;
      EXPECT_EQ(L.wq.cols(), hid) << at;
      EXPECT_EQ(L.wk.rows(), kvh * D) << at;
      EXPECT_EQ(L.wv.rows(), kvh * D) << at;
      if (tp <= Hkv) {
        EXPECT_EQ(L.wk.rows() * tp, Hkv * D) << at;
      }
      EXPECT_EQ(L.wo.rows(), hid) << at;
      EXPECT_EQ(L.wo.cols() * tp, H * D) << at;
      EXPECT_EQ(L.w_gate.rows() * tp, I) << at;
      EXPECT_EQ(L.w_up.rows() * tp, I) << at;
      EXPECT_EQ(L.w_down.rows(), hid) << at;
      EXPECT_EQ(L.w_down.cols() * tp, I) << at;
      if (c.qkv_bias) {
        EXPECT_EQ(L.bq.rows() * tp, H * D) << at;
        EXPECT_EQ(L.bk.rows(), kvh * D) << at;
      }
      // The values: K rows of this rank's KV head(s) (the replicated head when T > Hkv),
      // and down_proj's column block.
      const int64_t k0 = sl.kv_head_begin * D;
      for (int64_t i = 0; i < L.wk.rows(); ++i)
        for (int64_t j = 0; j < hid; ++j)
          ASSERT_EQ(L.wk.f32()[i * hid + j], W.wk.data[(k0 + i) * hid + j]) << at;
      for (int64_t i = 0; i < hid; ++i)
        for (int64_t j = 0; j < L.w_down.cols(); ++j)
          ASSERT_EQ(L.w_down.f32()[i * L.w_down.cols() + j], W.w_down.data[i * I + sl.inter_begin + j]) << at;
    }
    EXPECT_EQ(bw.embed.rows(), c.vocab_size) << at;
    int64_t rows = bw.lm_head.rows(), total = 0;
    EXPECT_EQ(rows, sl.vocab_rows) << at;
    EXPECT_LE(rows, (c.vocab_size + tp - 1) / tp) << at;
    g.tp->all_reduce(&rows, &total, 1, CommDtype::int64, ReduceOp::sum, Stream{});
    EXPECT_EQ(total, c.vocab_size) << at;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, MpiTensorParallel, ::testing::ValuesIn(test::reference_model_names()),
                         test::param_name);
// k-quant blocks of 256 values: a T-way slice of a row-parallel matrix cuts blocks in two.
INSTANTIATE_TEST_SUITE_P(KQuants, MpiTensorParallel, ::testing::Values(std::string("llama-kquants/model.gguf")),
                         test::param_name);

std::string engine_error(const ModelConfig& cfg, const ModelWeights& w, const EngineOptions& o) {
  auto be = make_cpu_backend();
  try {
    Engine e(*be, cfg, w, o);
  } catch (const Error& err) {
    return err.what();
  }
  return "";
}

// A T that cannot split the model: every rank throws the same clear Error, before any
// communication (this test returning at all shows none was left waiting).
TEST(MpiTensorParallelErrors, InvalidTpFailsTheSameWayOnEveryRank) {
  if (skip_world()) GTEST_SKIP() << "runs under np 2 and 4";
  const ReferenceModel& f = reference_model("llama3-gqa");
  const int np = world_size();
  ParallelGroups g = world_groups(1, np);
  EngineOptions o = options(g);
  o.tp_size = 3;  // 4 query heads
  o.tp_rank = std::min(g.layout.tp_rank, 2);
  const std::string heads = engine_error(f.model.config, f.model.weights, o);
  EXPECT_EQ(heads, "--tp 3: the model's 4 query heads are not divisible by 3");
  ModelConfig odd = f.model.config;
  odd.intermediate_size = 130;  // not divisible by 4; by 2 but the weights do not match
  const std::string inter = engine_error(odd, f.model.weights, options(g));
  const std::string want_inter = np == 4 ? "--tp 4: the model's intermediate size 130 is not divisible by 4"
                                         : "model: model.layers.0.mlp.gate_proj.weight has shape [128, 64], expected [130, 64] or "
                                           "this rank's part [65, 64]";
  EXPECT_EQ(inter, want_inter);
  EXPECT_TRUE(all_ranks(heads == "--tp 3: the model's 4 query heads are not divisible by 3" && inter == want_inter));
}

// A stop asked on the last TP rank only stops every rank of the CP x TP group at the same
// checkpoint.
TEST(MpiTensorParallelErrors, StopOnOneTpRankStopsTheWholeGroup) {
  if (skip_world()) GTEST_SKIP() << "runs under np 2 and 4";
  const ReferenceModel& f = reference_model("llama3-gqa");
  const int np = world_size();
  ModelConfig cfg = f.model.config;
  cfg.eos_token_ids.clear();
  auto be = make_cpu_backend();
  for (const auto& shape : shapes(np)) {
    const int cp = shape.first, tp = shape.second;
    if (tp == 1) continue;
    ParallelGroups g = world_groups(cp, tp);
    int64_t checks = 0;
    const int64_t stop_at = cfg.n_layers + 1;  // the second decode step
    EngineOptions o = options(g);
    o.should_stop = [&] { return g.layout.tp_rank == tp - 1 && checks++ == stop_at; };
    int64_t events = 0;
    o.on_progress = [&](const EngineProgress&) { ++events; };
    Engine engine(*be, cfg, f.model.weights, o);
    GenerateOptions opt;
    opt.max_new_tokens = 5;
    bool threw = false;
    try {
      engine.generate_stripe(stripe_of(prefix(f.longest(), 40), g.layout.cp_rank, cp), 40, opt);
    } catch (const StopRequested&) {
      threw = true;
    }
    EXPECT_TRUE(all_ranks(threw)) << label("llama3-gqa", cp, tp);
    int64_t lo = 0, hi = 0;
    MPI_Allreduce(&events, &lo, 1, MPI_INT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&events, &hi, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
    EXPECT_EQ(lo, hi);
    EXPECT_EQ(events, cfg.n_layers + 2);
  }
}

}  // namespace
}  // namespace ringinfer
