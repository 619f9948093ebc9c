// Continuous batching (DESIGN §5) under mpirun -np 1..4: for every --cp divisor of the
// world size and max_batch 1, 3 and 8, documents of different lengths and budgets join the
// decode batch as others leave it; each document's tokens and finish must equal the
// single-rank engine's one-document-at-a-time result, greedy and sampled (temperature,
// top-k, penalties: the RNG is keyed on (seed, document, step) and penalties count the
// document's own tokens). A stop on one rank mid-batch stops the whole group at the same
// step and drops the batch; the engine serves documents normally afterwards.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <map>
#include <set>

#include "ringinfer/comm.h"
#include "ringinfer/engine.h"
#include "ringinfer/signals.h"
#include "ringinfer/striped.h"
#include "gtest_helpers.h"
#include "reference_models.h"

namespace ringinfer {
namespace {

using namespace test;

const OneThreadPerRank kOneThread;


using Doc = BatchDoc;

// Ten documents: prompt lengths from 0 to the longest fixture document, budgets 0 to 11,
// one with a stop hook, each with its own RNG key.
std::vector<Doc> documents(const ReferenceModel& f, const SamplingParams& sampling) {
  const size_t lens[] = {f.greedy_prompt.size(), 1, 5, 0, 17, f.longest().size(), 3, 40, 2, 9};
  const int64_t budgets[] = {11, 4, 7, 3, 9, 5, 1, 10, 0, 8};
  std::vector<Doc> docs;
  for (size_t i = 0; i < 10; ++i) {
    Doc d;
    d.prompt = i == 0 ? f.greedy_prompt : prefix(f.longest(), lens[i]);
    d.options.max_new_tokens = budgets[i];
    d.options.sampling = sampling;
    d.options.seed = 7;
    d.options.doc_key = 100 + i;
    if (i == 4)  // stops after its 6th token
      d.options.stop_here = [](const std::vector<int32_t>& t) { return t.size() == 6; };
    docs.push_back(std::move(d));
  }
  return docs;
}

// decode_batched, checking each finished document's KV tokens (its stripe of prompt +
// tokens - 1 positions) and that it finishes once. Returns each document's result by index
// and the largest batch seen.
std::map<uint64_t, GenerateResult> run_batched(Engine& engine, const std::vector<Doc>& docs, int r, int N,
                                               int64_t* largest) {
  std::set<uint64_t> seen;
  return decode_batched(
      engine, docs, r, N,
      [&](const FinishedDocument& f) {
        EXPECT_TRUE(seen.insert(f.tag).second);
        EXPECT_EQ(f.stats.kv_tokens,
                  docs[f.tag].prompt.empty()
                      ? 0
                      : local_len(static_cast<int64_t>(docs[f.tag].prompt.size() +
                                                       std::max<size_t>(f.result.tokens.size(), 1) - 1),
                                  r, N));
      },
      largest);
}

class MpiBatchedDecode : public ::testing::TestWithParam<std::string> {};

TEST_P(MpiBatchedDecode, TokensEqualOneDocumentAtATimeForEveryBatchAndCp) {
  const ReferenceModel& f = reference_model(GetParam());
  const int np = world_size();
  auto be = make_cpu_backend();
  ModelConfig cfg = f.model.config;
  cfg.eos_token_ids = {cfg.vocab_size - 1};  // rare: lengths and stops decide most documents
  SamplingParams sampled;
  sampled.temperature = 1.1;
  sampled.top_k = 40;
  sampled.repetition_penalty = 1.2;
  sampled.frequency_penalty = 0.3;
  for (const SamplingParams& sp : {SamplingParams(), sampled}) {
    const std::vector<Doc> docs = documents(f, sp);
    Engine single(*be, cfg, f.model.weights);
    std::vector<GenerateResult> want;
    for (const Doc& d : docs) want.push_back(single.generate(d.prompt, d.options));
    EXPECT_EQ(want[4].finish, FinishReason::stop);
    EXPECT_EQ(want[3].finish, FinishReason::empty_prompt);
    for (int cp = 1; cp <= np; ++cp) {
      if (np % cp) continue;
      CpGroup g(cp);
      for (int64_t B : {1, 3, 8}) {
        EngineOptions o;
        o.cp_rank = g.comm->rank();
        o.cp_size = cp;
        o.cp_comm = g.comm.get();
        o.chunk_tokens = 16;
        o.max_batch = B;
        Engine engine(*be, cfg, f.model.weights, o);
        int64_t largest = 0;
        const auto got = run_batched(engine, docs, g.comm->rank(), cp, &largest);
        ASSERT_EQ(got.size(), docs.size());
        for (size_t i = 0; i < docs.size(); ++i) {
          EXPECT_EQ(got.at(i).tokens, want[i].tokens)
              << GetParam() << " T " << sp.temperature << " cp " << cp << " B " << B << " doc " << i;
          EXPECT_EQ(got.at(i).finish, want[i].finish) << "cp " << cp << " B " << B << " doc " << i;
        }
        // Seven documents reach decode (the others finish at join: no prompt, budget 0 or 1).
        EXPECT_EQ(largest, std::min<int64_t>(B, 7)) << "the batch never filled";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, MpiBatchedDecode, ::testing::ValuesIn(test::reference_model_names()),
                         test::param_name);

// A stop asked on the last rank of the group during a batched step: every rank throws at
// the same step, the batch is dropped, and the engine runs the documents again to the
// unstopped result.
TEST(MpiBatchedDecodeStop, StopMidBatchStopsTheGroupAndDropsTheBatch) {
  const ReferenceModel& f = reference_model("llama3-gqa");
  const int np = world_size();
  auto be = make_cpu_backend();
  ModelConfig cfg = f.model.config;
  cfg.eos_token_ids.clear();
  const std::vector<Doc> docs = documents(f, SamplingParams());
  for (int cp = 1; cp <= np; ++cp) {
    if (np % cp) continue;
    CpGroup g(cp);
    const int r = g.comm->rank();
    int64_t checks = 0, stop_at = -1;
    EngineOptions o;
    o.cp_rank = r;
    o.cp_size = cp;
    o.cp_comm = g.comm.get();
    o.max_batch = 3;
    o.should_stop = [&] { return r == cp - 1 && checks++ == stop_at; };
    Engine engine(*be, cfg, f.model.weights, o);
    int64_t largest = 0;
    const auto want = run_batched(engine, docs, r, cp, &largest);
    checks = 0;
    stop_at = 3 * cfg.n_layers + 1;  // past three prefills: the second step of a full batch
    bool threw = false;
    try {
      (void)run_batched(engine, docs, r, cp, &largest);
    } catch (const StopRequested&) {
      threw = true;
    }
    EXPECT_TRUE(threw) << "cp " << cp;
    EXPECT_EQ(engine.batch_size(), 0) << "the batch is dropped on a stop";
    if (r == cp - 1) {
      EXPECT_EQ(checks, stop_at + 1);
    }
    stop_at = -1;
    int64_t dummy = 0;
    const auto again = run_batched(engine, docs, r, cp, &dummy);
    ASSERT_EQ(again.size(), want.size());
    for (size_t i = 0; i < docs.size(); ++i) EXPECT_EQ(again.at(i).tokens, want.at(i).tokens) << "doc " << i;
  }
}

}  // namespace
}  // namespace ringinfer
