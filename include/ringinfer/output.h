#pragma once
// Output files of `run` and `score` (DESIGN §6), their readers, and `ringinfer dump`.
//
// run output:                              score output:
//   /doc_ids        vlen UTF-8 [D]           /doc_ids          vlen UTF-8 [D]
//   /prompt_tokens  int64 [D]                /logprob_offsets  int64 [D+1]
//   /gen_offsets    int64 [D+1]              /token_logprobs   float32 [L]
//   /gen_tokens     int32 [G]                /perplexity       float64 [D]
//   /text           vlen UTF-8 [D]
//   /finish_reason  vlen UTF-8 [D]  ("eos" or "length")
//   /timing/prefill_seconds           float64 [D]
//   /timing/decode_tokens_per_second  float64 [D]
// Root attributes: format ("ringinfer.run" / "ringinfer.score"), version (1), and the
// caller's string key/value pairs (model path, configuration, program version, ranks).
// Timings live in /timing so a resumed run is identical to an uninterrupted one outside it.
// Files are written as "<path>.tmp" and renamed, so a crash never leaves a partial output.
#include <cstdint>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

namespace ringinfer {

inline constexpr const char* kRunFormat = "ringinfer.run";
inline constexpr const char* kScoreFormat = "ringinfer.score";
inline constexpr int64_t kOutputVersion = 1;

// String attributes on the output's root group, in order.
using OutputAttributes = std::vector<std::pair<std::string, std::string>>;

// One document's result of `run`.
struct RunResult {
  std::string id;
  int64_t prompt_tokens = 0;       // document length
  std::vector<int32_t> generated;  // [G_d] generated token ids
  std::string text;                // generated text, decoded (empty without a tokenizer)
  std::string finish_reason;       // "eos" or "length"
  double prefill_seconds = 0;
  double decode_tokens_per_second = 0;
};

// One document's result of `score`.
struct ScoreResult {
  std::string id;
  std::vector<float> token_logprobs;  // [n-1]: entry k = log p(tokens[k+1] | tokens[0..k])
  double perplexity = 0;              // exp(-mean(token_logprobs))
};

struct RunOutput {
  OutputAttributes attributes;  // the caller's attributes (format and version left out)
  std::vector<RunResult> results;
};

struct ScoreOutput {
  OutputAttributes attributes;
  std::vector<ScoreResult> results;
};

void write_run_output(const std::string& path, const std::vector<RunResult>& results,
                      const OutputAttributes& attributes);
void write_score_output(const std::string& path, const std::vector<ScoreResult>& results,
                        const OutputAttributes& attributes);

// Read and validate an output file (types, shapes, offsets, counts).
RunOutput read_run_output(const std::string& path);
ScoreOutput read_score_output(const std::string& path);

// `ringinfer dump`: detects run or score output from the format attribute and prints a
// readable block per document, or with jsonl one JSON object per line:
//   run:   {"id", "summary", "prompt_tokens", "generated_tokens", "token_ids",
//           "finish_reason", "prefill_seconds", "decode_tokens_per_second"}
//   score: {"id", "tokens", "perplexity", "mean_logprob"}
// where "tokens" is the number of scored tokens (logprob entries, n-1 for n tokens) and
// "mean_logprob" is null for a document with none.
// logprobs: score outputs in JSONL also carry "logprobs", the per-token list.
void dump_output(const std::string& path, std::ostream& out, bool jsonl, bool logprobs = false);

}  // namespace ringinfer
