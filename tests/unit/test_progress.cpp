// Progress reporter: JSON lines (parsed back with nlohmann), the terminal bar, throttling,
// rates and ETA against figures computed by hand from an injected clock.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ringinfer/error.h"
#include "ringinfer/progress.h"

namespace ringinfer {
namespace {

struct Capture {
  double t = 100.0;  // fake clock, seconds (non-zero origin on purpose)
  std::vector<std::string> writes;
  ProgressOptions options(ProgressFormat f) {
    ProgressOptions o;
    o.format = f;
    o.sink = [this](const std::string& s) { writes.push_back(s); };
    o.clock = [this] { return t; };
    return o;
  }
  std::vector<nlohmann::json> json_lines() const {
    std::vector<nlohmann::json> out;
    for (auto& w : writes) {
      EXPECT_EQ(w.back(), '\n') << w;
      EXPECT_EQ(w.find('\n'), w.size() - 1) << "one object per line: " << w;
      out.push_back(nlohmann::json::parse(w));
    }
    return out;
  }
};

TEST(Progress, JsonEventsRatesAndEta) {
  Capture c;
  auto o = c.options(ProgressFormat::json);
  o.json_interval_s = 0;  // every event
  Progress p(o);
  // Two documents of 1000 prompt tokens, budget 10 each: work 2020.
  p.job_start(3, 2020);
  p.document_skipped(0, "already-done");
  p.document_start(1, "doc \"one\"", 1000, 10);
  for (int k = 1; k <= 4; ++k) {
    c.t += 1.0;
    p.prefill_layer(k, 4);
  }
  for (int g = 1; g <= 10; ++g) {
    c.t += 0.1;
    p.decode_token(1, g);
  }
  p.document_done(1, 10, "length");
  p.document_start(2, "two", 1000, 10);
  c.t += 2.0;
  p.prefill_layer(1, 1);
  c.t += 0.5;
  p.decode_token(2, 1);
  p.document_done(2, 1, "eos");
  p.job_done();

  const auto lines = c.json_lines();
  std::vector<std::string> events;
  for (auto& j : lines) events.push_back(j.at("event"));
  std::vector<std::string> want = {"job_start", "document_skipped", "document_start"};
  for (int k = 0; k < 4; ++k) want.push_back("prefill_layer");
  for (int g = 0; g < 10; ++g) want.push_back("decode_token");
  for (const char* e : {"document_done", "document_start", "prefill_layer", "decode_token", "document_done",
                        "job_done"})
    want.push_back(e);
  ASSERT_EQ(events, want);

  EXPECT_EQ(lines[0].at("docs_total"), 3);
  EXPECT_EQ(lines[0].at("work_total"), 2020);
  EXPECT_TRUE(lines[0].at("eta_s").is_null());  // nothing done yet
  EXPECT_EQ(lines[1].at("docs_done"), 1);        // skipped counts as done
  EXPECT_EQ(lines[2].at("doc_id"), "doc \"one\"");  // escaped and read back intact
  EXPECT_EQ(lines[2].at("doc"), 1);

  // Layer 2 of 4 at t+2 s: 500 tokens in 2 s = 250 tok/s; ETA (2020-500) * 2 / 500.
  const auto& l2 = lines[4];
  EXPECT_EQ(l2.at("layer"), 2);
  EXPECT_EQ(l2.at("layers"), 4);
  EXPECT_NEAR(l2.at("tokens_per_s").get<double>(), 250.0, 1e-3);
  EXPECT_NEAR(l2.at("eta_s").get<double>(), 1520.0 * 2 / 500, 1e-3);
  EXPECT_NEAR(l2.at("elapsed_s").get<double>(), 2.0, 1e-3);

  // Token 5: 0.5 s after prefill ended = 10 tok/s.
  const auto& t5 = lines[3 + 4 + 4];
  EXPECT_EQ(t5.at("token"), 5);
  EXPECT_EQ(t5.at("max_new_tokens"), 10);
  EXPECT_NEAR(t5.at("tokens_per_s").get<double>(), 10.0, 1e-3);

  const auto& d1 = lines[3 + 4 + 10];
  EXPECT_EQ(d1.at("generated"), 10);
  EXPECT_EQ(d1.at("finish_reason"), "length");
  EXPECT_NEAR(d1.at("prefill_s").get<double>(), 4.0, 1e-3);
  EXPECT_NEAR(d1.at("decode_tokens_per_s").get<double>(), 10.0, 1e-3);
  EXPECT_EQ(d1.at("docs_done"), 2);
  // 1010 of 2020 done in 5 s: 5 s left.
  EXPECT_NEAR(d1.at("eta_s").get<double>(), 5.0, 1e-3);

  // The second document stops at eos after 1 token: its 9 unused tokens leave the total,
  // so the job is complete and the ETA is 0.
  const auto& d2 = lines[lines.size() - 2];
  EXPECT_EQ(d2.at("finish_reason"), "eos");
  EXPECT_NEAR(d2.at("prefill_s").get<double>(), 2.0, 1e-3);
  EXPECT_NEAR(d2.at("decode_tokens_per_s").get<double>(), 2.0, 1e-3);
  EXPECT_NEAR(d2.at("eta_s").get<double>(), 0.0, 1e-9);
  EXPECT_EQ(lines.back().at("docs_done"), 3);
  EXPECT_EQ(lines.back().at("stopped"), false);
  EXPECT_NEAR(lines.back().at("elapsed_s").get<double>(), 7.5, 1e-3);
}

// The ETA follows the recent rates, phase by phase (the case: 22 tokens left at
// 2.9 tok/s read 0.9 s when prefill tokens and decode tokens were averaged together).
TEST(Progress, EtaFromRecentRates) {
  Capture c;
  Progress p(c.options(ProgressFormat::none));
  p.job_start(2, 2 * (1000 + 50));
  p.document_start(0, "a", 1000, 50);
  EXPECT_LT(p.eta_seconds(), 0);  // nothing known yet
  for (int k = 1; k <= 10; ++k) {  // prefill: 10 layers, 0.1 s each
    c.t += 0.1;
    p.prefill_layer(k, 10);
  }
  for (int g = 1; g <= 10; ++g) {  // a first burst at 10 tok/s, then 20 tokens at 2.9 tok/s
    c.t += 0.1;
    p.decode_token(0, g);
  }
  for (int g = 11; g <= 28; ++g) {
    c.t += 1 / 2.9;
    p.decode_token(0, g);
  }
  // 22 tokens left at ~2.9 tok/s (moving average) = 7.6 s, then the second document:
  // its 1050 units of work at this document's seconds per unit so far... the recent
  // token rate rules this document's part:
  const double token_s = 1 / 2.9;
  const double this_doc = 22 * token_s;
  const double eta = p.eta_seconds();
  EXPECT_GT(eta, this_doc * 0.97);
  // The next document is estimated from this one's time per unit of work, projected to its end.
  const double elapsed = 1.0 + 1.0 + 18 / 2.9;
  const double projected = (elapsed + this_doc) / 1050.0 * 1050.0;
  EXPECT_NEAR(eta, this_doc + projected, 0.05 * (this_doc + projected));
  for (int g = 29; g <= 50; ++g) {
    c.t += 1 / 2.9;
    p.decode_token(0, g);
  }
  p.document_done(0, 50, "length");
  const double doc_s = c.t - 100.0;
  // The second document: at the first one's seconds per unit of work.
  EXPECT_NEAR(p.eta_seconds(), doc_s, 1e-6);
  p.document_start(1, "b", 1000, 50);
  c.t += 0.5;
  p.prefill_layer(5, 10);  // half the layers in 0.5 s; 50 tokens at the last rate (~2.9/s)
  EXPECT_NEAR(p.eta_seconds(), 0.5 + 50 / 2.9, 0.3);
}

// Batched decode: several documents in flight; token and done events name their document,
// a finished document's line and rates are its own, and the others stay in the work done.
TEST(Progress, DocumentsInFlightTogether) {
  Capture c;
  auto o = c.options(ProgressFormat::json);
  o.json_interval_s = 0;
  Progress p(o);
  p.job_start(2, 240);  // two documents of 100 prompt tokens, budget 20 each
  p.document_start(4, "a", 100, 20);
  c.t += 1.0;
  p.prefill_layer(1, 1);
  p.document_start(7, "b", 100, 20);
  c.t += 1.0;
  p.prefill_layer(1, 1);
  c.t += 1.0;
  p.decode_token(4, 2);
  p.decode_token(7, 1);
  p.document_done(7, 1, "eos");  // b leaves first; a is still decoding
  c.t += 1.0;
  p.decode_token(4, 3);
  p.document_done(4, 3, "eos");
  p.decode_token(7, 2);  // b is done: ignored
  p.job_done();
  const auto lines = c.json_lines();
  std::vector<nlohmann::json> done, tokens;
  for (auto& j : lines) {
    if (j.at("event") == "document_done") done.push_back(j);
    if (j.at("event") == "decode_token") tokens.push_back(j);
  }
  ASSERT_EQ(done.size(), 2u);
  ASSERT_EQ(tokens.size(), 3u);
  EXPECT_EQ(tokens[0].at("doc"), 4);
  EXPECT_EQ(tokens[1].at("doc"), 7);
  EXPECT_EQ(done[0].at("doc"), 7);
  EXPECT_EQ(done[0].at("doc_id"), "b");
  EXPECT_NEAR(done[0].at("prefill_s").get<double>(), 1.0, 1e-3);  // (the JSON rounds to 3 decimals)
  EXPECT_NEAR(done[0].at("decode_tokens_per_s").get<double>(), 1.0, 1e-3);  // 1 token 1 s after its prefill
  // The ETA from recent rates: a's 18 tokens left at its 1 s per token (2 tokens in the 2 s
  // since its prefill); no document left to start (work 240 - b's unused 19 = b's 101 done
  // + a's 120 in flight).
  EXPECT_NEAR(done[0].at("eta_s").get<double>(), 18.0, 1e-3);
  EXPECT_EQ(done[1].at("doc"), 4);
  EXPECT_EQ(done[1].at("doc_id"), "a");
  EXPECT_NEAR(done[1].at("decode_tokens_per_s").get<double>(), 1.0, 1e-3);  // 3 tokens in 3 s
  EXPECT_EQ(p.documents_done(), 2);
}

TEST(Progress, JsonThrottlesLayerAndTokenEvents) {
  Capture c;
  auto o = c.options(ProgressFormat::json);
  o.json_interval_s = 1.0;
  Progress p(o);
  p.job_start(1, 1030);
  p.document_start(0, "a", 1000, 30);
  // Steps that are exact in binary, so the 1 s boundaries are hit exactly.
  for (int k = 1; k <= 8; ++k) {
    c.t += 0.25;
    p.prefill_layer(k, 8);  // layer 1, then 1 s later layer 5, and 8 (the last, forced)
  }
  for (int g = 1; g <= 30; ++g) {
    c.t += 0.125;
    p.decode_token(0, g);
  }
  p.document_done(0, 30, "length");
  p.job_done(true);
  std::vector<int> layers, tokens;
  for (auto& j : c.json_lines()) {
    if (j["event"] == "prefill_layer") layers.push_back(j["layer"]);
    if (j["event"] == "decode_token") tokens.push_back(j["token"]);
  }
  EXPECT_EQ(layers, (std::vector<int>{1, 5, 8}));
  // Last write at layer 8; then one token per second of 0.125 s steps; 30 forced.
  EXPECT_EQ(tokens, (std::vector<int>{8, 16, 24, 30}));
  EXPECT_EQ(c.json_lines().back()["stopped"], true);
}

TEST(Progress, BarRedrawsInPlaceThrottledWithSummaryLines) {
  Capture c;
  auto o = c.options(ProgressFormat::bar);
  o.bar_width = 10;
  Progress p(o);
  p.job_start(2, 2 * (4000 + 100));
  p.document_start(0, "first-document", 4000, 100);
  c.t += 1.0;
  p.prefill_layer(1, 2);
  ASSERT_EQ(c.writes.size(), 2u);  // start + layer 1 (1 s later)
  EXPECT_EQ(c.writes[1][0], '\r');
  EXPECT_NE(c.writes[1].find("doc 1/2 first-document prefill 1/2 [#####.....] 2000.0 tok/s  ETA "),
            std::string::npos)
      << c.writes[1];
  EXPECT_EQ(c.writes[1].find('\n'), std::string::npos);
  c.t += 1.0;
  p.prefill_layer(2, 2);
  // 100 tokens over 1 s: at most one redraw per 0.2 s.
  const size_t before = c.writes.size();
  for (int g = 1; g <= 100; ++g) {
    c.t += 0.01;
    p.decode_token(0, g);
  }
  const size_t redraws = c.writes.size() - before;
  EXPECT_GE(redraws, 4u);
  EXPECT_LE(redraws, 6u);
  for (size_t i = before; i < c.writes.size(); ++i) EXPECT_NE(c.writes[i].find("decode "), std::string::npos);
  const std::string last_bar = c.writes.back();
  p.document_done(0, 100, "eos");
  const std::string& done = c.writes.back();
  EXPECT_EQ(done.front(), '\r');
  EXPECT_EQ(done.back(), '\n');
  EXPECT_NE(done.find("doc 1/2 first-document: 4000 prompt tokens, prefill 2.0 s, 100 tokens at 100.0 tok/s (eos)"),
            std::string::npos)
      << done;
  EXPECT_GE(done.size(), last_bar.size() + 1);  // covers the longer bar it replaces
  // The second document draws at once (no throttle carried over), and a shorter bar
  // is padded with spaces to blank the previous one.
  p.document_start(1, "b", 10, 1);
  EXPECT_NE(c.writes.back().find("doc 2/2 b prefill 0/0"), std::string::npos) << c.writes.back();
  p.job_done(true);
  EXPECT_NE(c.writes.back().find("stopped: 1/2 documents in"), std::string::npos);
  EXPECT_NE(c.writes.back().find("re-run the same command to resume"), std::string::npos);
}

TEST(Progress, BarPadsAShorterLine) {
  Capture c;
  Progress p(c.options(ProgressFormat::bar));
  p.job_start(1, 2000);
  p.document_start(0, "a-rather-long-document-id", 1000, 1000);
  EXPECT_NE(c.writes.back().find(" a-rather-long-documen... prefill"), std::string::npos) << c.writes.back();
  c.t += 1;
  p.prefill_layer(1, 2);
  const size_t bar = c.writes.back().size();
  p.job_done(true);  // a stop in mid-document: the summary replaces a longer bar
  const std::string& last = c.writes.back();
  EXPECT_EQ(last.rfind("\rstopped: 0/1 documents in 1s; re-run", 0), 0u) << last;
  EXPECT_EQ(last.back(), '\n');
  EXPECT_GE(last.size(), bar + 1);
  EXPECT_EQ(last.substr(last.size() - 4), "   \n");
}

TEST(Progress, QuietWritesNothing) {
  Capture c;
  Progress p(c.options(ProgressFormat::none));
  p.job_start(1, 10);
  p.document_start(0, "a", 5, 5);
  p.prefill_layer(1, 1);
  p.decode_token(0, 1);
  p.document_done(0, 1, "eos");
  p.job_done();
  EXPECT_TRUE(c.writes.empty());
  EXPECT_EQ(default_progress_format(true), ProgressFormat::none);
}

TEST(Progress, EventsOutsideADocumentAreIgnored) {
  Capture c;
  auto o = c.options(ProgressFormat::json);
  o.json_interval_s = 0;
  Progress p(o);
  p.job_start(1, 10);
  p.prefill_layer(1, 2);
  p.decode_token(0, 3);
  p.document_done(0, 3, "eos");
  ASSERT_EQ(c.writes.size(), 1u);
  EXPECT_EQ(p.documents_done(), 0);
  EXPECT_LT(p.eta_seconds(), 0);
}

TEST(Progress, FormatDuration) {
  EXPECT_EQ(format_duration(-1), "--");
  EXPECT_EQ(format_duration(0.4), "0s");
  EXPECT_EQ(format_duration(59.4), "59s");
  EXPECT_EQ(format_duration(185), "3m05s");
  EXPECT_EQ(format_duration(3600 + 2 * 60 + 20), "1h02m");
  EXPECT_EQ(format_duration(50 * 3600.0), "50h00m");
}

}  // namespace
}  // namespace ringinfer

namespace ringinfer {
namespace {

TEST(Progress, LogFormatNames) {
  EXPECT_EQ(progress_format("json", false), ProgressFormat::json);
  EXPECT_EQ(progress_format("bar", false), ProgressFormat::bar);
  EXPECT_EQ(progress_format("auto", false), default_progress_format(false));
  EXPECT_EQ(progress_format("json", true), ProgressFormat::none);  // --quiet wins
  try {
    progress_format("xml", false);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "--log-format must be auto, bar or json, not 'xml'");
  }
}

}  // namespace
}  // namespace ringinfer
