// Inputs the fuzzers (tests/fuzz) found crashing, kept as regression tests. Each runs in
// the ordinary unit build and, more usefully, under tools/sanitize.sh (ASan + UBSan).
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "ringinfer/error.h"
#include "ringinfer/result_codec.h"

namespace ringinfer {
namespace {

// fuzz_result: a run record with zero generated tokens made Reader::vec memcpy into
// an empty vector's null data() (UBSan: null pointer passed to memcpy).
TEST(FuzzRegressions, RunResultWithNoGeneratedTokens) {
  const std::vector<uint8_t> bytes = {
      0x32, 0x4e, 0x55, 0x52,                          // "RUN2"
      0x07, 0, 0, 0, 0, 0, 0, 0,                       // doc index 7
      0x01, 0, 0, 0, 0, 0, 0, 0, 'd',                  // id "d"
      0x05, 0, 0, 0, 0, 0, 0, 0,                       // prompt_tokens 5
      0, 0, 0, 0, 0, 0, 0, 0,                          // generated: 0 tokens
      0, 0, 0, 0, 0, 0, 0, 0,                          // text ""
      0x03, 0, 0, 0, 0, 0, 0, 0, 'e', 'o', 's',        // finish_reason "eos"
      0, 0, 0, 0, 0, 0, 0xe0, 0x3f,                    // prefill_seconds 0.5
      0, 0, 0, 0, 0, 0, 0x45, 0x40,                    // decode tokens/s 42
      0x03, 0, 0, 0, 0, 0, 0, 0,                       // tokens_per_rank 3
  };
  RunResult r;
  EXPECT_EQ(decode_result(bytes.data(), bytes.size(), r, "regression"), 7);
  EXPECT_EQ(r.id, "d");
  EXPECT_EQ(r.prompt_tokens, 5);
  EXPECT_TRUE(r.generated.empty());
  EXPECT_EQ(r.finish_reason, "eos");
  EXPECT_DOUBLE_EQ(r.prefill_seconds, 0.5);
  EXPECT_DOUBLE_EQ(r.decode_tokens_per_second, 42.0);
  EXPECT_EQ(r.tokens_per_rank, 3);
  // The same record cut short is an Error, not a crash.
  try {
    decode_result(bytes.data(), 40, r, "cut");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "cut: record truncated or corrupt");
  }
}

// The same for a score record with no log-probabilities (a one-token document).
TEST(FuzzRegressions, ScoreResultWithNoLogprobs) {
  const std::vector<uint8_t> bytes = {
      0x32, 0x4f, 0x43, 0x53,                          // "SCO2"
      0x02, 0, 0, 0, 0, 0, 0, 0,                       // doc index 2
      0x01, 0, 0, 0, 0, 0, 0, 0, 'x',                  // id "x"
      0, 0, 0, 0, 0, 0, 0, 0,                          // token_logprobs: 0
      0, 0, 0, 0, 0, 0, 0xf0, 0x3f,                    // perplexity 1.0
      0, 0, 0, 0, 0, 0, 0xe0, 0x3f,                    // seconds 0.5
      0x01, 0, 0, 0, 0, 0, 0, 0,                       // tokens_per_rank 1
  };
  ScoreResult s;
  EXPECT_EQ(decode_result(bytes.data(), bytes.size(), s, "regression"), 2);
  EXPECT_EQ(s.id, "x");
  EXPECT_TRUE(s.token_logprobs.empty());
  EXPECT_DOUBLE_EQ(s.perplexity, 1.0);
  EXPECT_DOUBLE_EQ(s.seconds, 0.5);
  EXPECT_EQ(s.tokens_per_rank, 1);
}

}  // namespace
}  // namespace ringinfer
