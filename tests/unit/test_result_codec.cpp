// Result records (resume journal, rank-to-rank gathering): round trips on random results,
// truncation, wrong kinds, and records of the older RUN1/SCO1 layout.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <random>

#include "ringinfer/error.h"
#include "ringinfer/result_codec.h"
#include "gtest_helpers.h"

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
  const int64_t ranks = 1 + rng() % 8;
  r.tokens_per_rank = (r.prompt_tokens + ranks - 1) / ranks;
  return r;
}

ScoreResult random_score(std::mt19937& rng) {
  ScoreResult r;
  r.id = "s-" + std::to_string(rng());
  r.token_logprobs.resize(rng() % 40);
  for (auto& v : r.token_logprobs) v = std::uniform_real_distribution<float>(-12.0f, -0.01f)(rng);
  r.perplexity = std::uniform_real_distribution<double>(1, 1000)(rng);
  r.seconds = std::uniform_real_distribution<double>(0.001, 30)(rng);
  r.tokens_per_rank = 1 + static_cast<int64_t>(rng() % 100000);
  return r;
}

using test::error_of;

// Little-endian appends, to build records of the older layout by hand.
template <class T>
void put(Bytes& b, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  b.insert(b.end(), p, p + sizeof(T));
}
void put_str(Bytes& b, const std::string& s) {
  put<uint64_t>(b, s.size());
  b.insert(b.end(), s.begin(), s.end());
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
    EXPECT_EQ(c.tokens_per_rank, a.tokens_per_rank);
  }
}

TEST(ResultCodec, ScoreRoundTrip) {
  std::mt19937 rng(3);
  for (int i = 0; i < 20; ++i) {
    const ScoreResult a = random_score(rng);
    const Bytes b = encode_result(i * 5 + 1, a);
    ScoreResult c;
    EXPECT_EQ(decode_result(b.data(), b.size(), c, "test"), i * 5 + 1);
    EXPECT_EQ(c.id, a.id);
    EXPECT_EQ(c.token_logprobs, a.token_logprobs);
    EXPECT_EQ(c.perplexity, a.perplexity);
    EXPECT_EQ(c.seconds, a.seconds);
    EXPECT_EQ(c.tokens_per_rank, a.tokens_per_rank);
  }
}

// The new fields sit at the end of each record: they must be read from there, not left at
// their defaults (a decoder that skipped them would fail done()'s trailing-byte check,
// but one that read them from the wrong offset would not).
TEST(ResultCodec, NewFieldsAreTheRecordTail) {
  RunResult a;
  a.id = "d";
  a.finish_reason = "eos";
  a.prompt_tokens = 1001;
  a.tokens_per_rank = 251;
  const Bytes b = encode_result(0, a);
  int64_t tail;
  std::memcpy(&tail, b.data() + b.size() - 8, 8);
  EXPECT_EQ(tail, 251);

  ScoreResult s;
  s.id = "s";
  s.seconds = 2.75;
  s.tokens_per_rank = 4099;
  const Bytes sb = encode_result(0, s);
  double secs;
  std::memcpy(&secs, sb.data() + sb.size() - 16, 8);
  std::memcpy(&tail, sb.data() + sb.size() - 8, 8);
  EXPECT_EQ(secs, 2.75);
  EXPECT_EQ(tail, 4099);
}

TEST(ResultCodec, EveryTruncationAndWrongKindIsAnError) {
  std::mt19937 rng(2);
  const Bytes b = encode_result(5, random_run(rng));
  for (size_t n = 0; n < b.size(); ++n) {
    RunResult c;
    EXPECT_THROW(decode_result(b.data(), n, c, "journal"), Error) << "length " << n;
  }
  ScoreResult s;
  EXPECT_EQ(error_of([&] { decode_result(b.data(), b.size(), s, "journal"); }),
            "journal: not a score result record");
  Bytes longer = b;
  longer.push_back(0);
  RunResult c;
  EXPECT_EQ(error_of([&] { decode_result(longer.data(), longer.size(), c, "journal"); }),
            "journal: record has 1 trailing bytes");

  const Bytes sb = encode_result(6, random_score(rng));
  for (size_t n = 0; n < sb.size(); ++n) {
    ScoreResult t;
    EXPECT_THROW(decode_result(sb.data(), n, t, "journal"), Error) << "length " << n;
  }
  EXPECT_EQ(error_of([&] { decode_result(sb.data(), sb.size(), c, "journal"); }), "journal: not a run result record");
}

// A journal left by a build before the per-document metrics holds RUN1/SCO1 records: they
// are refused by name, never misread as the new layout.
TEST(ResultCodec, OlderLayoutIsRefused) {
  Bytes run1;
  put<uint32_t>(run1, 0x52554e31);  // "RUN1"
  put<int64_t>(run1, 7);
  put_str(run1, "d");
  put<int64_t>(run1, 5);            // prompt_tokens
  put<uint64_t>(run1, 1);           // one generated token
  put<int32_t>(run1, 42);
  put_str(run1, "");
  put_str(run1, "eos");
  put<double>(run1, 0.5);           // prefill_seconds
  put<double>(run1, 42.0);          // decode tokens/s
  put<int64_t>(run1, 3);            // 8 more bytes: the size of a RUN2 record, still refused
  RunResult r;
  EXPECT_EQ(error_of([&] { decode_result(run1.data(), run1.size(), r, "out.h5.journal.0"); }),
            "out.h5.journal.0: not a run result record of this version (found an older RUN1 record, written by an "
            "earlier ringinfer; delete the journal to start over)");

  Bytes sco1;
  put<uint32_t>(sco1, 0x53434f31);  // "SCO1"
  put<int64_t>(sco1, 2);
  put_str(sco1, "x");
  put<uint64_t>(sco1, 0);           // no logprobs
  put<double>(sco1, 1.0);           // perplexity
  ScoreResult s;
  EXPECT_EQ(error_of([&] { decode_result(sco1.data(), sco1.size(), s, "gathered result"); }),
            "gathered result: not a score result record of this version (found an older SCO1 record, written by an "
            "earlier ringinfer; delete the journal to start over)");
  // An old record of the other kind is just the wrong kind.
  EXPECT_EQ(error_of([&] { decode_result(sco1.data(), sco1.size(), r, "j"); }), "j: not a run result record");

  // The new tags are the old ones with the digit bumped.
  const Bytes now = encode_result(0, RunResult{});
  EXPECT_EQ(std::string(now.begin(), now.begin() + 4), "2NUR");  // little-endian "RUN2"
  const Bytes snow = encode_result(0, ScoreResult{});
  EXPECT_EQ(std::string(snow.begin(), snow.begin() + 4), "2OCS");
}

}  // namespace
}  // namespace ringinfer
