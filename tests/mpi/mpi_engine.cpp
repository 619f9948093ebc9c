// Striped context parallelism under mpirun -np 1..4: for every --cp divisor of the world
// size, each CP group runs the engine on its stripes only. Score logprobs must equal the
// single-rank engine's within 1e-5 relative (|a - b| <= 1e-5 max(1, |b|): float32 sums in
// another order differ by a few ulps of logprobs near -10) and the float64 reference (tests/fixtures/models) within
// 1e-4; greedy tokens must be identical to N = 1; each rank's KV cache must hold exactly
// ceil((S - r) / N) tokens; peak backend memory must fall as N grows; a flipped mask
// diagonal must fail the 1e-4 check.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <omp.h>

#include <random>

#include <cblas.h>

#include "ringinfer/comm.h"
#include "ringinfer/engine.h"
#include "ringinfer/memory_plan.h"
#include "ringinfer/model_loader.h"
#include "ringinfer/signals.h"
#include "ringinfer/striped.h"
#include "gtest_helpers.h"
#include "reference_models.h"
#include "test_paths.h"

namespace ringinfer {
namespace {

using namespace test;  // reference_models.h: the fixture models, stripes, world rank and size

const OneThreadPerRank kOneThread;


EngineOptions cp_options(const CpGroup& g) {
  EngineOptions o;
  o.cp_rank = g.comm->rank();
  o.cp_size = g.comm->size();
  o.cp_comm = g.comm.get();
  o.chunk_tokens = 64;  // several chunks per stripe, so test() runs between attention blocks
  return o;
}

class MpiEngine : public ::testing::TestWithParam<std::string> {};

TEST_P(MpiEngine, ScoreMatchesSingleRankAndReferenceForEveryCp) {
  const ReferenceModel& f = reference_model(GetParam());
  const int np = world_size();
  auto be = make_cpu_backend();
  Engine single(*be, f.model.config, f.model.weights);
  std::vector<size_t> lengths = {0, 1, 2, size_t(np > 1 ? np - 1 : 1), size_t(np), size_t(np + 1), f.longest().size()};
  for (int cp = 1; cp <= np; ++cp) {
    if (np % cp) continue;
    CpGroup g(cp);
    Engine engine(*be, f.model.config, f.model.weights, cp_options(g));
    const int r = g.comm->rank();
    for (size_t S : lengths) {
      const std::vector<int32_t> doc = prefix(f.longest(), S);
      // Only this rank's stripe and the next rank's go in.
      const DocumentScore got =
          engine.score_stripes(stripe_of(doc, r, cp), stripe_of(doc, (r + 1) % cp, cp), static_cast<int64_t>(S));
      const DocumentScore want = single.score(doc);
      ASSERT_EQ(got.logprobs.size(), S < 2 ? 0 : S - 1) << "cp " << cp << " S " << S;
      double vs_single = 0, vs_ref = 0;
      for (size_t k = 0; k < got.logprobs.size(); ++k) {
        vs_single = std::max(vs_single, rel_diff(got.logprobs[k], want.logprobs[k]));
        vs_ref = std::max(vs_ref, std::fabs(double(got.logprobs[k]) - f.longest_logprobs()[k]));
      }
      EXPECT_LT(vs_single, 1e-5) << GetParam() << " cp " << cp << " S " << S;
      EXPECT_LT(vs_ref, 1e-4) << GetParam() << " cp " << cp << " S " << S;
      if (S >= 2) {
        EXPECT_NEAR(got.sum_logprob, want.sum_logprob, 1e-5 * S);
      } else {
        EXPECT_TRUE(std::isnan(got.perplexity));
      }
      EXPECT_EQ(engine.kv_cache_tokens(), local_len(static_cast<int64_t>(S), r, cp)) << "cp " << cp << " S " << S;
      EXPECT_EQ(engine.last_stats().tokens_held, local_len(static_cast<int64_t>(S), r, cp));
    }
  }
}

TEST_P(MpiEngine, GreedyTokensIdenticalForEveryCp) {
  const ReferenceModel& f = reference_model(GetParam());
  const int np = world_size();
  auto be = make_cpu_backend();
  ModelConfig cfg = f.model.config;
  cfg.eos_token_ids.clear();
  Engine single(*be, cfg, f.model.weights);
  GenerateOptions opt;
  opt.max_new_tokens = 9;
  for (size_t S : {size_t(0), size_t(1), size_t(np), f.greedy_prompt.size()}) {
    const std::vector<int32_t> prompt = prefix(f.greedy_prompt, S);
    const GenerateResult want = single.generate(prompt, opt);
    for (int cp = 1; cp <= np; ++cp) {
      if (np % cp) continue;
      CpGroup g(cp);
      Engine engine(*be, cfg, f.model.weights, cp_options(g));
      const int r = g.comm->rank();
      const GenerateResult got = engine.generate_stripe(stripe_of(prompt, r, cp), static_cast<int64_t>(S), opt);
      EXPECT_EQ(got.tokens, want.tokens) << GetParam() << " cp " << cp << " S " << S;
      EXPECT_EQ(got.finish, want.finish);
      const int64_t ran = S == 0 ? 0 : static_cast<int64_t>(S + opt.max_new_tokens - 1);
      EXPECT_EQ(engine.kv_cache_tokens(), local_len(ran, r, cp)) << "cp " << cp << " S " << S;
    }
  }
}

// Penalties, top-k and min-p read the document's generated-token history: the sampling
// rank changes from the last prompt position's owner to CP rank 0 after the first token,
// so every rank must count every token. Tokens must equal the single rank's at every CP.
TEST_P(MpiEngine, PenalizedSamplingIdenticalForEveryCp) {
  const ReferenceModel& f = reference_model(GetParam());
  const int np = world_size();
  auto be = make_cpu_backend();
  ModelConfig cfg = f.model.config;
  cfg.eos_token_ids.clear();
  Engine single(*be, cfg, f.model.weights);
  GenerateOptions opt;
  opt.max_new_tokens = 12;
  opt.seed = 5;
  opt.doc_key = 9;
  opt.sampling.temperature = 1.2;
  opt.sampling.top_k = 40;
  opt.sampling.min_p = 0.01;
  opt.sampling.repetition_penalty = 1.3;
  opt.sampling.frequency_penalty = 0.4;
  opt.sampling.presence_penalty = 0.2;
  const std::vector<int32_t> prompt = prefix(f.greedy_prompt, f.greedy_prompt.size());
  const GenerateResult want = single.generate(prompt, opt);
  GenerateOptions plain = opt;
  plain.sampling = SamplingParams();
  plain.sampling.temperature = 1.2;
  EXPECT_NE(single.generate(prompt, plain).tokens, want.tokens) << "the controls changed nothing";
  for (int cp = 1; cp <= np; ++cp) {
    if (np % cp) continue;
    CpGroup g(cp);
    Engine engine(*be, cfg, f.model.weights, cp_options(g));
    const GenerateResult got =
        engine.generate_stripe(stripe_of(prompt, g.comm->rank(), cp), static_cast<int64_t>(prompt.size()), opt);
    EXPECT_EQ(got.tokens, want.tokens) << GetParam() << " cp " << cp;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, MpiEngine, ::testing::ValuesIn(test::reference_model_names()), test::param_name);
INSTANTIATE_TEST_SUITE_P(Gguf, MpiEngine, ::testing::ValuesIn(test::gguf_reference_model_names()), test::param_name);

TEST(MpiEngineLong, LongDocumentMatchesAndPeakMemoryFalls) {
  const ReferenceModel& f = reference_model("llama3-gqa");
  const int np = world_size();
  std::mt19937 rng(7);
  // Several thousand tokens, at every rank count (issue 4's acceptance).
  const int64_t S = 4099;
  std::vector<int32_t> doc(S);
  for (auto& t : doc) t = static_cast<int32_t>(rng() % f.model.config.vocab_size);
  std::vector<float> base;
  int64_t peak1 = 0;
  for (int cp : {1, np}) {
    if (cp == np && np == 1 && !base.empty()) break;
    auto be = make_cpu_backend();
    CpGroup g(cp);
    Engine engine(*be, f.model.config, f.model.weights, cp_options(g));
    const int r = g.comm->rank();
    be->reset_peak_bytes();
    const int64_t before = be->allocated_bytes();
    const DocumentScore got = engine.score_stripes(stripe_of(doc, r, cp), stripe_of(doc, (r + 1) % cp, cp), S);
    const int64_t peak = be->peak_allocated_bytes() - before;
    ASSERT_EQ(got.logprobs.size(), doc.size() - 1);
    if (cp == 1) {
      base = got.logprobs;
      peak1 = peak;
    } else {
      double worst = 0;
      for (size_t k = 0; k < base.size(); ++k) worst = std::max(worst, rel_diff(got.logprobs[k], base[k]));
      EXPECT_LT(worst, 1e-5);
      EXPECT_LT(peak, peak1 * 0.8) << "peak bytes at cp " << cp << " vs 1: " << peak << " vs " << peak1;
      if (world_rank() == 0)
        std::printf("[ engine   ] %lld tokens: peak %lld B at cp 1, %lld B at cp %d; max rel diff %.3g\n",
                    static_cast<long long>(S), static_cast<long long>(peak1), static_cast<long long>(peak), cp, worst);
    }
  }
}

// `plan` counts what prefill allocates (issue 17): rank 0 holds ceil(S/N) tokens, so its
// peak backend bytes during score, less the KV cache, are the plan's activations_per_rank,
// up to the 256-byte padding alloc_kv gives each part of the KV cache and ring buffers.
// S is not a multiple of any rank count > 1; chunks of 64 rows end mid-stripe.
TEST(MpiEngineLong, PrefillPeakIsThePlansActivations) {
  const ReferenceModel& f = reference_model("llama3-gqa");
  const ModelConfig& c = f.model.config;
  const int np = world_size();
  const int64_t S = 1201;
  std::mt19937 rng(11);
  std::vector<int32_t> doc(S);
  for (auto& t : doc) t = static_cast<int32_t>(rng() % c.vocab_size);
  for (int cp = 1; cp <= np; ++cp) {
    if (np % cp) continue;
    auto be = make_cpu_backend();
    CpGroup g(cp);
    Engine engine(*be, c, f.model.weights, cp_options(g));
    const int r = g.comm->rank();
    be->reset_peak_bytes();
    const int64_t before = be->allocated_bytes();
    (void)engine.score_stripes(stripe_of(doc, r, cp), stripe_of(doc, (r + 1) % cp, cp), S);
    const int64_t activations = be->peak_allocated_bytes() - before - engine.last_stats().kv_bytes;
    PlanInput in = plan_input(engine.kv_dtype(), /*on_gpu=*/false, c.head_dim);
    in.context = S;
    in.ranks = cp;
    const MemoryPlan plan = plan_memory(c, in);
    const int64_t padding = 256 * 4 * (c.n_layers + 2);  // 4 parts (k, v, scales) per KV allocation
    if (r != 0) continue;
    EXPECT_GE(activations, plan.activations_per_rank) << "cp " << cp;
    EXPECT_LE(activations, plan.activations_per_rank + padding) << "cp " << cp;
  }
}

// --offload-residual on every rank count, lengths not divisible by it: score logprobs and
// greedy tokens bitwise the same as with x on the backend, and the prefill peak is the
// plan's with offload_residual (on the CPU backend x's host memory is the backend's, so it
// counts there too) plus the two chunk buffers x streams through.
TEST(MpiEngineLong, OffloadedResidualIsBitwiseTheSameAndPlanned) {
  const ReferenceModel& f = reference_model("llama3-gqa");
  ModelConfig c = f.model.config;
  c.eos_token_ids.clear();
  const int np = world_size();
  std::mt19937 rng(13);
  for (int cp = 1; cp <= np; ++cp) {
    if (np % cp) continue;
    CpGroup g(cp);
    const int r = g.comm->rank();
    auto be = make_cpu_backend();
    EngineOptions o = cp_options(g);
    Engine plain(*be, c, f.model.weights, o);
    o.offload_residual = true;
    Engine offloaded(*be, c, f.model.weights, o);
    for (int64_t S : {int64_t(1), int64_t(cp + 1), int64_t(4 * cp + 3), int64_t(301)}) {
      std::vector<int32_t> doc(static_cast<size_t>(S));
      for (auto& t : doc) t = static_cast<int32_t>(rng() % c.vocab_size);
      const auto mine = stripe_of(doc, r, cp), next = stripe_of(doc, (r + 1) % cp, cp);
      const DocumentScore a = plain.score_stripes(mine, next, S);
      be->reset_peak_bytes();
      const int64_t before = be->allocated_bytes();
      const DocumentScore b = offloaded.score_stripes(mine, next, S);
      const int64_t activations = be->peak_allocated_bytes() - before - offloaded.last_stats().kv_bytes;
      ASSERT_EQ(a.logprobs.size(), b.logprobs.size());
      EXPECT_TRUE(a.logprobs.empty() ||  // (memcmp of null data is undefined: S = 1 has none)
                  std::memcmp(a.logprobs.data(), b.logprobs.data(), a.logprobs.size() * sizeof(float)) == 0)
          << "cp " << cp << " S " << S;
      GenerateOptions gen;
      gen.max_new_tokens = 4;
      EXPECT_EQ(plain.generate_stripe(mine, S, gen).tokens, offloaded.generate_stripe(mine, S, gen).tokens)
          << "cp " << cp << " S " << S;
      if (r != 0 || S < 2) continue;
      PlanInput in = plan_input(KvDtype::f32, /*on_gpu=*/false, c.head_dim);
      in.context = S;
      in.ranks = cp;
      in.offload_residual = true;
      const MemoryPlan plan = plan_memory(c, in);
      const int64_t n = local_len(S, 0, cp), chunk_rows = std::min<int64_t>(n, std::max(o.chunk_tokens, o.logits_chunk));
      const int64_t expected = plan.activations_per_rank + n * c.hidden_size * 4 + 2 * chunk_rows * c.hidden_size * 4;
      EXPECT_GE(activations, expected) << "cp " << cp << " S " << S;
      EXPECT_LE(activations, expected + 256 * 4 * (c.n_layers + 2)) << "cp " << cp << " S " << S;
    }
  }
}

TEST(MpiEngineLong, FlippedMaskDiagonalIsCaught) {
  const ReferenceModel& f = reference_model("llama3-gqa");
  const int np = world_size();
  CpuBackendOptions bad;
  bad.flip_mask_diagonal = true;
  auto be = make_cpu_backend(bad);
  CpGroup g(np);
  Engine engine(*be, f.model.config, f.model.weights, cp_options(g));
  const DocumentScore got = engine.score(f.longest());
  double worst = 0;
  for (size_t k = 0; k < got.logprobs.size(); ++k)
    worst = std::max(worst, std::fabs(double(got.logprobs[k]) - f.longest_logprobs()[k]));
  EXPECT_GT(worst, 1e-2);
  EXPECT_TRUE(all_ranks(worst > 1e-4));
}

}  // namespace
}  // namespace ringinfer

namespace ringinfer {
namespace {

// Progress and stop hooks: every rank reports each prefill layer and each generated token;
// a stop asked on one rank only (the last of the group), at a different point on each
// call, makes every rank of the group throw StopRequested at the same checkpoint, and the
// engine serves the next document normally afterwards.
TEST(MpiEngineHooks, StopOnOneRankStopsTheWholeGroupAtTheSameStep) {
  const ReferenceModel& f = reference_model("llama3-gqa");
  const int np = world_size();
  auto be = make_cpu_backend();
  ModelConfig cfg = f.model.config;
  cfg.eos_token_ids.clear();
  for (int cp = 1; cp <= np; ++cp) {
    if (np % cp) continue;
    CpGroup g(cp);
    const int r = g.comm->rank();
    std::vector<EngineProgress> seen;
    int64_t checks = 0, stop_at = -1;
    EngineOptions o = cp_options(g);
    o.on_progress = [&](const EngineProgress& p) { seen.push_back(p); };
    o.should_stop = [&] { return r == cp - 1 && checks++ == stop_at; };
    Engine engine(*be, cfg, f.model.weights, o);
    GenerateOptions opt;
    opt.max_new_tokens = 5;
    const std::vector<int32_t> prompt = prefix(f.longest(), 40);
    const int L = static_cast<int>(cfg.n_layers);
    // Checkpoints: after each of the L layers, then before each of the 4 decode steps.
    for (int64_t at : {int64_t(-1), int64_t(0), int64_t(L - 1), int64_t(L), int64_t(L + 3)}) {
      seen.clear();
      checks = 0;
      stop_at = at;
      bool threw = false;
      try {
        engine.generate_stripe(stripe_of(prompt, r, cp), 40, opt);
      } catch (const StopRequested&) {
        threw = true;
      }
      // Every rank saw the same events and stopped (or not) together.
      const int64_t events = static_cast<int64_t>(seen.size());
      int64_t lo = 0, hi = 0;
      MPI_Allreduce(&events, &lo, 1, MPI_INT64_T, MPI_MIN, g.raw);
      MPI_Allreduce(&events, &hi, 1, MPI_INT64_T, MPI_MAX, g.raw);
      EXPECT_EQ(lo, hi) << "cp " << cp << " stop at " << at;
      EXPECT_EQ(threw, at >= 0) << "cp " << cp << " stop at " << at;
      const int64_t want_events = at < 0 ? L + opt.max_new_tokens : at < L ? at + 1 : L + (at - L) + 1;
      EXPECT_EQ(events, want_events) << "cp " << cp << " stop at " << at;
      for (int64_t i = 0; i < events; ++i) {
        const EngineProgress& p = seen[i];
        if (i < L) {
          EXPECT_EQ(p.kind, EngineProgress::Kind::prefill_layer);
          EXPECT_EQ(p.layer, i + 1);
          EXPECT_EQ(p.layers, L);
        } else {
          EXPECT_EQ(p.kind, EngineProgress::Kind::decode_token);
          EXPECT_EQ(p.generated, i - L + 1);
        }
      }
    }
    // Still usable: a normal call gives the unstopped result.
    stop_at = -1;
    const GenerateResult again = engine.generate_stripe(stripe_of(prompt, r, cp), 40, opt);
    EXPECT_EQ(static_cast<int64_t>(again.tokens.size()), opt.max_new_tokens);
  }
}

}  // namespace
}  // namespace ringinfer
