// Output files of run and score: round trips on random data, validation, dump.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "io/h5_util.h"
#include "ringinfer/error.h"
#include "ringinfer/output.h"
#include "gtest_helpers.h"
#include "shard_fixture.h"
#include "test_paths.h"

namespace fs = std::filesystem;
using namespace ringinfer;

namespace {

class OutputTest : public ::testing::Test {
 protected:
  std::string file(const std::string& name) const { return dir_.file(name); }
  ringinfer::test::TempDir dir_{"ri-out"};
};

const OutputAttributes kAttrs = {{"model", "/models/llama"}, {"config", "max_new_tokens=8\ntemperature=0"},
                                 {"program_version", "0.1.0"}, {"ranks", "4"}};

std::vector<RunResult> random_run(uint64_t seed, size_t n) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> len(0, 40), tok(0, 128000);
  std::uniform_real_distribution<double> secs(0.001, 20.0);
  const char* texts[] = {"plain summary", "quotes \" and \\ backslash\nnew line\ttab",
                         "UTF-8: caf\xC3\xA9, \xE6\x97\xA5\xE6\x9C\xAC, \xF0\x9F\x98\x80", ""};
  std::vector<RunResult> out(n);
  for (size_t d = 0; d < n; ++d) {
    RunResult& r = out[d];
    r.id = "doc/" + std::to_string(d) + (d % 2 ? "-\xC3\xA9" : "");
    r.prompt_tokens = len(rng) * 1000 + 1;
    r.generated.resize(static_cast<size_t>(d == 1 ? 0 : len(rng)));
    for (auto& t : r.generated) t = tok(rng);
    r.text = texts[d % 4];
    r.finish_reason = d % 3 ? "length" : "eos";
    r.prefill_seconds = secs(rng);
    r.decode_tokens_per_second = secs(rng) * 10;
    const int64_t ranks = 1 + static_cast<int64_t>(d % 4);
    r.tokens_per_rank = (r.prompt_tokens + ranks - 1) / ranks;
  }
  return out;
}

std::vector<ScoreResult> random_score(uint64_t seed, size_t n) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> len(0, 60);
  std::uniform_real_distribution<float> lp(-12.0f, -0.01f);
  std::uniform_real_distribution<double> secs(0.001, 20.0);
  std::vector<ScoreResult> out(n);
  for (size_t d = 0; d < n; ++d) {
    ScoreResult& r = out[d];
    r.id = "s" + std::to_string(d);
    r.token_logprobs.resize(static_cast<size_t>(d == 2 ? 0 : len(rng) + 1));
    double sum = 0;
    for (auto& v : r.token_logprobs) sum += (v = lp(rng));
    r.perplexity = r.token_logprobs.empty() ? NAN : std::exp(-sum / r.token_logprobs.size());
    r.seconds = secs(rng);
    const int64_t tokens = static_cast<int64_t>(r.token_logprobs.size()) + 1, ranks = 1 + static_cast<int64_t>(d % 3);
    r.tokens_per_rank = (tokens + ranks - 1) / ranks;
  }
  return out;
}

void expect_same(const RunResult& a, const RunResult& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.prompt_tokens, b.prompt_tokens);
  EXPECT_EQ(a.generated, b.generated);
  EXPECT_EQ(a.text, b.text);
  EXPECT_EQ(a.finish_reason, b.finish_reason);
  EXPECT_EQ(a.prefill_seconds, b.prefill_seconds);  // float64 stored exactly
  EXPECT_EQ(a.decode_tokens_per_second, b.decode_tokens_per_second);
  EXPECT_EQ(a.tokens_per_rank, b.tokens_per_rank);
}

// Opens an output file read-write to break it.
h5::Handle open_rw(const std::string& path) { return h5::file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)); }

using ringinfer::test::error_of;

// What `dump --jsonl` (with --logprobs: logprobs) writes for path: one parsed object per
// line, its keys in the order written.
std::vector<nlohmann::ordered_json> dump_jsonl(const std::string& path, bool logprobs = false) {
  std::ostringstream out;
  dump_output(path, out, true, logprobs);
  std::istringstream lines(out.str());
  std::vector<nlohmann::ordered_json> rows;
  for (std::string line; std::getline(lines, line);) rows.push_back(nlohmann::ordered_json::parse(line));
  return rows;
}

std::vector<std::string> keys_of(const nlohmann::ordered_json& j) {
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  return keys;
}

}  // namespace

TEST_F(OutputTest, RunRoundTrip) {
  const auto results = random_run(1, 9);
  write_run_output(file("run.h5"), results, kAttrs);
  EXPECT_FALSE(fs::exists(file("run.h5.tmp")));
  RunOutput back = read_run_output(file("run.h5"));
  EXPECT_EQ(back.attributes, kAttrs);
  ASSERT_EQ(back.results.size(), results.size());
  for (size_t d = 0; d < results.size(); ++d) expect_same(back.results[d], results[d]);
}

TEST_F(OutputTest, RunLayoutMatchesDesign) {
  const auto results = random_run(2, 4);
  write_run_output(file("run.h5"), results, kAttrs);
  h5::Handle f = h5::open_readonly(file("run.h5"));
  const std::string p = "run.h5";
  int64_t n = 0;
  h5::open_dataset_1d(f.get(), p, "/doc_ids", h5::Kind::VlenString, &n);
  EXPECT_EQ(n, 4);
  h5::open_dataset_1d(f.get(), p, "/prompt_tokens", h5::Kind::Int64, &n);
  h5::open_dataset_1d(f.get(), p, "/gen_offsets", h5::Kind::Int64, &n);
  EXPECT_EQ(n, 5);
  h5::open_dataset_1d(f.get(), p, "/gen_tokens", h5::Kind::Int32, &n);
  size_t g = 0;
  for (const auto& r : results) g += r.generated.size();
  EXPECT_EQ(n, static_cast<int64_t>(g));
  h5::open_dataset_1d(f.get(), p, "/text", h5::Kind::VlenString, &n);
  h5::open_dataset_1d(f.get(), p, "/finish_reason", h5::Kind::VlenString, &n);
  h5::open_dataset_1d(f.get(), p, "/timing/prefill_seconds", h5::Kind::Float64, &n);
  h5::open_dataset_1d(f.get(), p, "/timing/decode_tokens_per_second", h5::Kind::Float64, &n);
  h5::open_dataset_1d(f.get(), p, "/timing/tokens_per_rank", h5::Kind::Int64, &n);
  EXPECT_EQ(n, 4);
  EXPECT_FALSE(h5::exists(f.get(), "/tokens_per_rank"));
  EXPECT_FALSE(h5::exists(f.get(), "/prefill_seconds"));  // timings only under /timing
  EXPECT_EQ(h5::read_string_attr(f.get(), p, "format"), "ringinfer.run");
  EXPECT_EQ(h5::read_int_attr(f.get(), p, "version"), 1);
  EXPECT_EQ(h5::read_string_attr(f.get(), p, "ranks"), "4");
}

TEST_F(OutputTest, ScoreRoundTrip) {
  const auto results = random_score(3, 7);
  write_score_output(file("score.h5"), results, kAttrs);
  ScoreOutput back = read_score_output(file("score.h5"));
  EXPECT_EQ(back.attributes, kAttrs);
  ASSERT_EQ(back.results.size(), results.size());
  for (size_t d = 0; d < results.size(); ++d) {
    EXPECT_EQ(back.results[d].id, results[d].id);
    EXPECT_EQ(back.results[d].token_logprobs, results[d].token_logprobs);
    if (std::isnan(results[d].perplexity)) {
      EXPECT_TRUE(std::isnan(back.results[d].perplexity));
    } else {
      EXPECT_EQ(back.results[d].perplexity, results[d].perplexity);
    }
    EXPECT_EQ(back.results[d].seconds, results[d].seconds);
    EXPECT_EQ(back.results[d].tokens_per_rank, results[d].tokens_per_rank);
    EXPECT_GT(results[d].tokens_per_rank, 0);  // the round trip is not of defaults
  }
}

TEST_F(OutputTest, ScoreLayoutMatchesDesign) {
  write_score_output(file("score.h5"), random_score(4, 3), {});
  h5::Handle f = h5::open_readonly(file("score.h5"));
  const std::string p = "score.h5";
  int64_t n = 0;
  h5::open_dataset_1d(f.get(), p, "/perplexity", h5::Kind::Float64, &n);
  EXPECT_EQ(n, 3);
  h5::open_dataset_1d(f.get(), p, "/timing/seconds", h5::Kind::Float64, &n);
  EXPECT_EQ(n, 3);
  h5::open_dataset_1d(f.get(), p, "/timing/tokens_per_rank", h5::Kind::Int64, &n);
  EXPECT_EQ(n, 3);
  EXPECT_FALSE(h5::exists(f.get(), "/seconds"));  // metrics only under /timing
}

// Files written before /timing/tokens_per_rank and the score /timing group existed stay
// readable: the missing metrics read as zeros, everything else as written.
TEST_F(OutputTest, FilesWithoutNewMetricsReadAsZeros) {
  const auto run_results = random_run(21, 5);
  write_run_output(file("run.h5"), run_results, kAttrs);
  {
    h5::Handle f = open_rw(file("run.h5"));
    ASSERT_GE(H5Ldelete(f.get(), "/timing/tokens_per_rank", H5P_DEFAULT), 0);
  }
  RunOutput run = read_run_output(file("run.h5"));
  ASSERT_EQ(run.results.size(), run_results.size());
  for (size_t d = 0; d < run_results.size(); ++d) {
    RunResult want = run_results[d];
    EXPECT_GT(want.tokens_per_rank, 0);
    want.tokens_per_rank = 0;
    expect_same(run.results[d], want);
  }

  const auto score_results = random_score(22, 4);
  write_score_output(file("s.h5"), score_results, kAttrs);
  {
    h5::Handle f = open_rw(file("s.h5"));
    ASSERT_GE(H5Ldelete(f.get(), "/timing", H5P_DEFAULT), 0);
  }
  ScoreOutput score = read_score_output(file("s.h5"));
  ASSERT_EQ(score.results.size(), score_results.size());
  for (size_t d = 0; d < score_results.size(); ++d) {
    EXPECT_EQ(score.results[d].id, score_results[d].id);
    EXPECT_EQ(score.results[d].token_logprobs, score_results[d].token_logprobs);
    EXPECT_EQ(score.results[d].seconds, 0.0);
    EXPECT_EQ(score.results[d].tokens_per_rank, 0);
  }
  // dump prints them as zeros too.
  std::ostringstream out;
  dump_output(file("s.h5"), out, true);
  const auto j = nlohmann::json::parse(out.str().substr(0, out.str().find('\n')));
  EXPECT_EQ(j["seconds"].get<double>(), 0.0);
  EXPECT_EQ(j["tokens_per_rank"].get<int64_t>(), 0);
}

TEST_F(OutputTest, TokensPerRankValidated) {
  auto results = random_run(23, 3);
  results[1].tokens_per_rank = -1;
  EXPECT_EQ(error_of([&] { write_run_output(file("r.h5"), results, {}); }),
            file("r.h5") + ": document \"" + results[1].id + "\" tokens_per_rank is -1, expected a count >= 0");
  results[1].tokens_per_rank = results[1].prompt_tokens + 1;
  EXPECT_EQ(error_of([&] { write_run_output(file("r.h5"), results, {}); }),
            file("r.h5") + ": document \"" + results[1].id + "\" tokens_per_rank is " +
                std::to_string(results[1].prompt_tokens + 1) + ", more than its prompt_tokens (" +
                std::to_string(results[1].prompt_tokens) + ")");
  EXPECT_FALSE(fs::exists(file("r.h5")));
  auto scores = random_score(24, 2);
  scores[0].tokens_per_rank = -5;
  EXPECT_EQ(error_of([&] { write_score_output(file("s.h5"), scores, {}); }),
            file("s.h5") + ": document \"s0\" tokens_per_rank is -5, expected a count >= 0");

  // Readers: wrong size, wrong type, out of range.
  const std::string run = file("run.h5");
  results = random_run(25, 3);
  write_run_output(run, results, {});
  {
    h5::Handle f = open_rw(run);
    H5Ldelete(f.get(), "/timing/tokens_per_rank", H5P_DEFAULT);
    h5::write_int64(f.get(), "/timing/tokens_per_rank", {1, 2});
  }
  EXPECT_EQ(error_of([&] { read_run_output(run); }),
            run + ": /timing/tokens_per_rank has 2 entries, expected 3 (one per /doc_ids)");
  write_run_output(run, results, {});
  {
    h5::Handle f = open_rw(run);
    H5Ldelete(f.get(), "/timing/tokens_per_rank", H5P_DEFAULT);
    h5::write_float64(f.get(), "/timing/tokens_per_rank", {1, 2, 3});
  }
  EXPECT_EQ(error_of([&] { read_run_output(run); }).rfind(run + ": /timing/tokens_per_rank is not", 0), 0u);
  write_run_output(run, results, {});
  {
    h5::Handle f = open_rw(run);
    H5Ldelete(f.get(), "/timing/tokens_per_rank", H5P_DEFAULT);
    h5::write_int64(f.get(), "/timing/tokens_per_rank", {0, 0, results[2].prompt_tokens + 7});
  }
  EXPECT_EQ(error_of([&] { read_run_output(run); }),
            run + ": /timing/tokens_per_rank[2] is " + std::to_string(results[2].prompt_tokens + 7) +
                ", more than /prompt_tokens[2] (" + std::to_string(results[2].prompt_tokens) + ")");

  const std::string score = file("score.h5");
  write_score_output(score, random_score(26, 3), {});
  {
    h5::Handle f = open_rw(score);
    H5Ldelete(f.get(), "/timing/seconds", H5P_DEFAULT);
    h5::write_float64(f.get(), "/timing/seconds", {1.0, 2.0, 3.0, 4.0});
  }
  EXPECT_EQ(error_of([&] { read_score_output(score); }),
            score + ": /timing/seconds has 4 entries, expected 3 (one per /doc_ids)");
  write_score_output(score, random_score(26, 3), {});
  {
    h5::Handle f = open_rw(score);
    H5Ldelete(f.get(), "/timing/tokens_per_rank", H5P_DEFAULT);
    h5::write_int64(f.get(), "/timing/tokens_per_rank", {1, -2, 3});
  }
  EXPECT_EQ(error_of([&] { read_score_output(score); }),
            score + ": /timing/tokens_per_rank[1] is -2, expected a count >= 0");
}

TEST_F(OutputTest, EmptyOutputs) {
  write_run_output(file("r.h5"), {}, {});
  write_score_output(file("s.h5"), {}, {});
  EXPECT_TRUE(read_run_output(file("r.h5")).results.empty());
  EXPECT_TRUE(read_score_output(file("s.h5")).results.empty());
  std::ostringstream out;
  dump_output(file("r.h5"), out, true);
  EXPECT_EQ(out.str(), "");
}

TEST_F(OutputTest, RewriteReplacesAndFailureLeavesNothing) {
  write_run_output(file("run.h5"), random_run(4, 3), kAttrs);
  auto second = random_run(5, 2);
  write_run_output(file("run.h5"), second, {});
  EXPECT_EQ(read_run_output(file("run.h5")).results.size(), 2u);

  auto bad = random_run(6, 2);
  bad[1].finish_reason = "halted";
  EXPECT_EQ(error_of([&] { write_run_output(file("bad.h5"), bad, {}); }),
            file("bad.h5") + ": document \"" + bad[1].id + "\" has finish_reason \"halted\", expected eos, stop, length or error");
  EXPECT_FALSE(fs::exists(file("bad.h5")));
  EXPECT_FALSE(fs::exists(file("bad.h5.tmp")));

  EXPECT_EQ(error_of([&] { write_run_output(file("x.h5"), second, {{"format", "x"}}); }),
            file("x.h5") + ": output attribute name format is reserved");
  EXPECT_EQ(error_of([&] { write_run_output(file("x.h5"), second, {{"a", "1"}, {"a", "2"}}); }),
            file("x.h5") + ": output attribute a given twice");
  const std::string nodir = file("no/such/dir/out.h5");
  const std::string msg = error_of([&] { write_score_output(nodir, random_score(1, 2), {}); });
  EXPECT_EQ(msg.rfind(nodir + ".tmp: cannot create file", 0), 0u) << msg;
}

TEST_F(OutputTest, ReadersValidate) {
  const std::string run = file("run.h5");
  write_run_output(run, random_run(7, 3), kAttrs);
  EXPECT_EQ(error_of([&] { read_score_output(run); }),
            run + ": format attribute is \"ringinfer.run\", expected \"ringinfer.score\"");
  {
    h5::Handle f = open_rw(run);
    H5Ldelete(f.get(), "/gen_tokens", H5P_DEFAULT);
  }
  EXPECT_EQ(error_of([&] { read_run_output(run); }), run + ": missing dataset /gen_tokens");

  write_run_output(run, random_run(7, 3), kAttrs);
  {
    h5::Handle f = open_rw(run);
    H5Ldelete(f.get(), "/timing", H5P_DEFAULT);
  }
  EXPECT_EQ(error_of([&] { read_run_output(run); }), run + ": missing dataset /timing/prefill_seconds");

  auto results = random_run(7, 3);
  write_run_output(run, results, kAttrs);
  int64_t g = 0;
  for (const auto& r : results) g += static_cast<int64_t>(r.generated.size());
  {
    h5::Handle f = open_rw(run);
    H5Ldelete(f.get(), "/gen_offsets", H5P_DEFAULT);
    h5::write_int64(f.get(), "/gen_offsets", {0, 3, 2, g});
  }
  EXPECT_EQ(error_of([&] { read_run_output(run); }), run + ": /gen_offsets decreases at index 2 (2 after 3)");

  write_run_output(run, results, kAttrs);
  {
    h5::Handle f = open_rw(run);
    H5Ldelete(f.get(), "/prompt_tokens", H5P_DEFAULT);
    h5::write_int64(f.get(), "/prompt_tokens", {1, 2});
  }
  EXPECT_EQ(error_of([&] { read_run_output(run); }),
            run + ": /prompt_tokens has 2 entries, expected 3 (one per /doc_ids)");

  write_run_output(run, results, kAttrs);
  {
    h5::Handle f = open_rw(run);
    H5Ldelete(f.get(), "/finish_reason", H5P_DEFAULT);
    h5::write_strings(f.get(), "/finish_reason", {"eos", "maybe", "length"});
  }
  EXPECT_EQ(error_of([&] { read_run_output(run); }),
            run + ": /finish_reason[1] is \"maybe\", expected eos, stop, length or error");

  const std::string score = file("score.h5");
  write_score_output(score, random_score(8, 3), {});
  {
    h5::Handle f = open_rw(score);
    H5Ldelete(f.get(), "/token_logprobs", H5P_DEFAULT);
    h5::write_float64(f.get(), "/token_logprobs", {1.0, 2.0});
  }
  EXPECT_EQ(error_of([&] { read_score_output(score); }),
            score + ": /token_logprobs is not a 32-bit float dataset (found 64-bit float)");
  EXPECT_EQ(error_of([&] { read_score_output(file("none.h5")); }), file("none.h5") + ": no such file");
}

TEST_F(OutputTest, DumpRunJsonl) {
  const auto results = random_run(9, 6);
  write_run_output(file("run.h5"), results, kAttrs);
  auto rows = dump_jsonl(file("run.h5"));
  ASSERT_EQ(rows.size(), results.size());
  for (size_t d = 0; d < rows.size(); ++d) {
    const RunResult& r = results[d];
    auto& j = rows[d];
    EXPECT_EQ(keys_of(j), (std::vector<std::string>{"id", "summary", "prompt_tokens", "generated_tokens", "token_ids",
                                              "finish_reason", "prefill_seconds", "decode_tokens_per_second",
                                              "tokens_per_rank"}));
    EXPECT_EQ(j["id"], r.id);
    EXPECT_EQ(j["summary"], r.text);
    EXPECT_EQ(j["prompt_tokens"], r.prompt_tokens);
    EXPECT_EQ(j["generated_tokens"], r.generated.size());
    EXPECT_EQ(j["token_ids"].get<std::vector<int32_t>>(), r.generated);
    EXPECT_EQ(j["finish_reason"], r.finish_reason);
    EXPECT_EQ(j["prefill_seconds"].get<double>(), r.prefill_seconds);
    EXPECT_EQ(j["decode_tokens_per_second"].get<double>(), r.decode_tokens_per_second);
    EXPECT_EQ(j["tokens_per_rank"].get<int64_t>(), r.tokens_per_rank);
  }
}

TEST_F(OutputTest, DumpScoreJsonl) {
  const auto results = random_score(10, 5);
  write_score_output(file("s.h5"), results, kAttrs);
  auto rows = dump_jsonl(file("s.h5"));
  ASSERT_EQ(rows.size(), results.size());
  for (size_t d = 0; d < rows.size(); ++d) {
    const ScoreResult& r = results[d];
    auto& j = rows[d];
    EXPECT_EQ(keys_of(j), (std::vector<std::string>{"id", "tokens", "perplexity", "mean_logprob", "seconds",
                                              "tokens_per_rank"}));
    EXPECT_EQ(j["id"], r.id);
    EXPECT_EQ(j["tokens"], r.token_logprobs.size());
    EXPECT_EQ(j["seconds"].get<double>(), r.seconds);
    EXPECT_EQ(j["tokens_per_rank"].get<int64_t>(), r.tokens_per_rank);
    if (r.token_logprobs.empty()) {
      EXPECT_TRUE(j["mean_logprob"].is_null());
      EXPECT_TRUE(j["perplexity"].is_null());  // NaN is not JSON
    } else {
      long double sum = 0;  // independent reference
      for (float v : r.token_logprobs) sum += v;
      const double mean = static_cast<double>(sum / r.token_logprobs.size());
      EXPECT_NEAR(j["mean_logprob"].get<double>(), mean, 1e-12 * std::abs(mean));
      EXPECT_EQ(j["perplexity"].get<double>(), r.perplexity);
      EXPECT_NEAR(std::exp(-j["mean_logprob"].get<double>()), r.perplexity, 1e-9 * r.perplexity);
    }
    EXPECT_FALSE(j.contains("logprobs"));  // only with --logprobs
  }
}

TEST_F(OutputTest, DumpScoreJsonlLogprobs) {
  const auto results = random_score(7, 4);
  write_score_output(file("s.h5"), results, kAttrs);
  const auto rows = dump_jsonl(file("s.h5"), /*logprobs=*/true);
  ASSERT_EQ(rows.size(), results.size());
  for (size_t d = 0; d < rows.size(); ++d)  // floats round-trip exactly
    EXPECT_EQ(rows[d].at("logprobs").get<std::vector<float>>(), results[d].token_logprobs);
}

TEST_F(OutputTest, DumpText) {
  const auto results = random_run(11, 3);
  write_run_output(file("run.h5"), results, kAttrs);
  std::ostringstream out;
  dump_output(file("run.h5"), out, false);
  const std::string s = out.str();
  EXPECT_NE(s.find("# run output, 3 documents"), std::string::npos);
  EXPECT_NE(s.find("# model: /models/llama"), std::string::npos);
  EXPECT_NE(s.find("# config:\n#   max_new_tokens=8\n#   temperature=0\n"), std::string::npos) << s;
  for (const auto& r : results) {
    EXPECT_NE(s.find("] " + r.id + "\n"), std::string::npos) << r.id;
    EXPECT_NE(s.find("prompt " + std::to_string(r.prompt_tokens) + " tokens (" + std::to_string(r.tokens_per_rank) +
                     " per rank)"),
              std::string::npos)
        << s;
    if (!r.text.empty()) {
      EXPECT_NE(s.find(r.text), std::string::npos);
    }
  }

  auto scores = random_score(12, 2);
  scores[1].seconds = 1.25;
  write_score_output(file("s.h5"), scores, {});
  std::ostringstream out2;
  dump_output(file("s.h5"), out2, false);
  EXPECT_NE(out2.str().find("[1] s1  scored tokens"), std::string::npos) << out2.str();
  EXPECT_NE(out2.str().find("  tokens per rank " + std::to_string(scores[1].tokens_per_rank) + "  1.250 s\n"),
            std::string::npos)
      << out2.str();
}

TEST_F(OutputTest, DumpRejectsOtherFiles) {
  ringinfer::test::write_valid_shard(file("shard.h5"), ringinfer::test::random_shard_data({3}, 10, 1, "x"));
  std::ostringstream out;
  EXPECT_EQ(error_of([&] { dump_output(file("shard.h5"), out, true); }),
            file("shard.h5") + ": is an input shard (ringinfer.tokens), not a run or score output");
  EXPECT_EQ(error_of([&] { dump_output(file("missing.h5"), out, true); }), file("missing.h5") + ": no such file");
}

// Invalid UTF-8 in generated text must not abort the JSONL dump.
TEST_F(OutputTest, DumpSurvivesInvalidUtf8) {
  auto results = random_run(13, 1);
  results[0].text = "broken \xC3 byte";
  write_run_output(file("run.h5"), results, {});
  std::ostringstream out;
  EXPECT_NO_THROW(dump_output(file("run.h5"), out, true));
  auto j = nlohmann::json::parse(out.str());
  EXPECT_EQ(j["summary"], "broken \xEF\xBF\xBD byte");
}
