#include <gtest/gtest.h>

#include <random>

#include "ringinfer/error.h"
#include "ringinfer/result_codec.h"

namespace ringinfer {
namespace {

RunResult random_run(std::mt19937& rng) {
  RunResult r;
  r.id = "doc-" + std::to_string(rng()) + " \xc3\xa9\xe2\x9c\x93";
  r.prompt_tokens = rng() % 100000;
  r.generated.resize(rng() % 50);
  for (auto& t : r.generated) t = static_cast<int32_t>(rng() % 50000);
  r.text = "summary\nwith \"quotes\"";
  r.finish_reason = rng() % 2 ? "eos" : "length";
  r.prefill_seconds = std::uniform_real_distribution<double>(0, 10)(rng);
  r.decode_tokens_per_second = std::uniform_real_distribution<double>(0, 100)(rng);
  return r;
}

TEST(ResultCodec, RunRoundTrip) {
  std::mt19937 rng(1);
  for (int i = 0; i < 20; ++i) {
    const RunResult a = random_run(rng);
    const Bytes b = encode_result(i * 7, a);
    RunResult c;
    EXPECT_EQ(decode_result(b.data(), b.size(), c, "test"), i * 7);
    EXPECT_EQ(c.id, a.id);
    EXPECT_EQ(c.prompt_tokens, a.prompt_tokens);
    EXPECT_EQ(c.generated, a.generated);
    EXPECT_EQ(c.text, a.text);
    EXPECT_EQ(c.finish_reason, a.finish_reason);
    EXPECT_EQ(c.prefill_seconds, a.prefill_seconds);
    EXPECT_EQ(c.decode_tokens_per_second, a.decode_tokens_per_second);
  }
}

TEST(ResultCodec, ScoreRoundTrip) {
  ScoreResult a;
  a.id = "x";
  a.token_logprobs = {-1.5f, -0.25f, -7.0f};
  a.perplexity = 12.5;
  const Bytes b = encode_result(3, a);
  ScoreResult c;
  EXPECT_EQ(decode_result(b.data(), b.size(), c, "test"), 3);
  EXPECT_EQ(c.token_logprobs, a.token_logprobs);
  EXPECT_EQ(c.perplexity, a.perplexity);
}

TEST(ResultCodec, EveryTruncationAndWrongKindIsAnError) {
  std::mt19937 rng(2);
  const Bytes b = encode_result(5, random_run(rng));
  for (size_t n = 0; n < b.size(); ++n) {
    RunResult c;
    EXPECT_THROW(decode_result(b.data(), n, c, "journal"), Error) << "length " << n;
  }
  ScoreResult s;
  EXPECT_THROW(decode_result(b.data(), b.size(), s, "journal"), Error);
  Bytes longer = b;
  longer.push_back(0);
  RunResult c;
  EXPECT_THROW(decode_result(longer.data(), longer.size(), c, "journal"), Error);
}

}  // namespace
}  // namespace ringinfer
