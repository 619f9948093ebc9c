#pragma once
// Output files of `run` and `score` (DESIGN §6), their readers, and `ringinfer dump`.
//
// run output:                              score output:
//   /doc_ids        vlen UTF-8 [D]           /doc_ids          vlen UTF-8 [D]
//   /prompt_tokens  int64 [D]                /logprob_offsets  int64 [D+1]
//   /gen_offsets    int64 [D+1]              /token_logprobs   float32 [L]
//   /gen_tokens     int32 [G]                /perplexity       float64 [D]
//   /text           vlen UTF-8 [D]           /timing/seconds          float64 [D]
//   /finish_reason  vlen UTF-8 [D]           /timing/tokens_per_rank  int64 [D]
//                   ("eos", "stop", "length", or "error": /text then holds the reason)
//   /timing/prefill_seconds           float64 [D]
//   /timing/decode_tokens_per_second  float64 [D]
//   /timing/tokens_per_rank           int64 [D]
// Root attributes: format ("ringinfer.run" / "ringinfer.score"), version (1), and the
// caller's string key/value pairs (model path, configuration, program version, ranks).
// Everything in /timing is a per-document metric that may differ between runs (wall
// times, and tokens_per_rank, which depends on the rank count), so a resumed run is
// identical to an uninterrupted one outside /timing. Files written before
// /timing/tokens_per_rank and the score /timing group existed are still read: a missing
// tokens_per_rank or score seconds dataset reads as zeros.
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
  std::string finish_reason;       // "eos", "stop" (a --stop string), "length", or "error" (text = why)
  double prefill_seconds = 0;           // wall time of the prefill
  double decode_tokens_per_second = 0;  // generated tokens after the first / decode wall time
  int64_t tokens_per_rank = 0;          // most prompt tokens any rank of the document's CP group
                                        // held: ceil(prompt_tokens / CP size); 0 = not recorded
};

// One document's result of `score`.
struct ScoreResult {
  std::string id;
  std::vector<float> token_logprobs;  // [n-1]: entry k = log p(tokens[k+1] | tokens[0..k])
  double perplexity = 0;              // exp(-mean(token_logprobs))
  double seconds = 0;                 // wall time of the document's score call; 0 = not recorded
  int64_t tokens_per_rank = 0;        // most tokens any rank of the document's CP group held:
                                      // ceil(n / CP size); 0 = not recorded
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

// Read and validate an output file (types, shapes, offsets, counts; tokens_per_rank
// non-negative, and for run at most prompt_tokens).
RunOutput read_run_output(const std::string& path);
ScoreOutput read_score_output(const std::string& path);

// `ringinfer dump`: detects run or score output from the format attribute and prints a
// readable block per document, or with jsonl one JSON object per line:
//   run:   {"id", "summary", "prompt_tokens", "generated_tokens", "token_ids",
//           "finish_reason", "prefill_seconds", "decode_tokens_per_second",
//           "tokens_per_rank"}
//   score: {"id", "tokens", "perplexity", "mean_logprob", "seconds", "tokens_per_rank"}
// where "tokens" is the number of scored tokens (logprob entries, n-1 for n tokens) and
// "mean_logprob" is null for a document with none.
// logprobs: score outputs in JSONL also carry "logprobs", the per-token list.
// openai (with jsonl, run outputs only): OpenAI batch output lines, as vLLM's run-batch
// writes them: {"id": "batch_req_<d>", "custom_id": doc id, "response": {"status_code": 200,
// "body": {"object": "chat.completion", "model", "choices": [{"index": 0, "message":
// {"role": "assistant", "content"}, "finish_reason"}], "usage": {"prompt_tokens",
// "completion_tokens", "total_tokens"}}}, "error": null}; finish_reason "stop" for eos and
// stop strings, "length"; a document that could not run: "response": null, "error":
// {"code": "document_failed", "message"}.
void dump_output(const std::string& path, std::ostream& out, bool jsonl, bool logprobs = false, bool openai = false);

}  // namespace ringinfer
