// `ringinfer dump`: print a run or score output as readable text or JSONL.
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <ostream>

#include "io/h5_util.h"
#include "ringinfer/error.h"
#include "ringinfer/output.h"
#include "ringinfer/shard.h"

namespace ringinfer {

namespace {

using ojson = nlohmann::ordered_json;

// Output text is model-generated: never let a broken UTF-8 sequence abort the dump.
std::string json_line(const ojson& j) { return j.dump(-1, ' ', false, ojson::error_handler_t::replace); }

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

void print_attributes(const OutputAttributes& attrs, size_t n_docs, const char* kind, std::ostream& out) {
  out << "# " << kind << " output, " << n_docs << " documents\n";
  for (const auto& [k, v] : attrs) {
    // Multi-line values (the run configuration) stay inside the comment block.
    std::string value = v;
    while (!value.empty() && value.back() == '\n') value.pop_back();
    out << "# " << k << ":";
    size_t start = 0;
    const bool multi = value.find('\n') != std::string::npos;
    while (start <= value.size()) {
      size_t nl = value.find('\n', start);
      std::string line = value.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
      out << (multi ? "\n#   " : " ") << line;
      if (nl == std::string::npos) break;
      start = nl + 1;
    }
    out << "\n";
  }
}

// The model's name for OpenAI lines: the file or folder name of the model attribute.
std::string model_name(const OutputAttributes& attrs) {
  for (const auto& [k, v] : attrs)
    if (k == "model") {
      std::string m = v;
      while (m.size() > 1 && m.back() == '/') m.pop_back();
      return m.substr(m.find_last_of('/') == std::string::npos ? 0 : m.find_last_of('/') + 1);
    }
  return "";
}

ojson openai_line(const RunResult& r, size_t d, const std::string& model) {
  ojson j;
  j["id"] = "batch_req_" + std::to_string(d);
  j["custom_id"] = r.id;
  if (r.finish_reason == "error") {
    j["response"] = nullptr;
    j["error"] = {{"code", "document_failed"}, {"message", r.text}};
    return j;
  }
  const int64_t completion = static_cast<int64_t>(r.generated.size());
  ojson choice;
  choice["index"] = 0;
  choice["message"] = {{"role", "assistant"}, {"content", r.text}};
  choice["finish_reason"] = r.finish_reason == "length" ? "length" : "stop";  // eos and stop strings
  ojson body;
  body["object"] = "chat.completion";
  body["model"] = model;
  body["choices"] = ojson::array({choice});
  body["usage"] = {{"prompt_tokens", r.prompt_tokens},
                   {"completion_tokens", completion},
                   {"total_tokens", r.prompt_tokens + completion}};
  j["response"] = {{"status_code", 200}, {"body", body}};
  j["error"] = nullptr;
  return j;
}

void dump_run(const std::string& path, std::ostream& out, bool jsonl, bool openai) {
  RunOutput o = read_run_output(path);
  if (openai) {
    const std::string model = model_name(o.attributes);
    for (size_t d = 0; d < o.results.size(); ++d) out << json_line(openai_line(o.results[d], d, model)) << "\n";
    return;
  }
  if (!jsonl) print_attributes(o.attributes, o.results.size(), "run", out);
  for (size_t d = 0; d < o.results.size(); ++d) {
    const RunResult& r = o.results[d];
    if (jsonl) {
      ojson j;
      j["id"] = r.id;
      j["summary"] = r.text;
      j["prompt_tokens"] = r.prompt_tokens;
      j["generated_tokens"] = r.generated.size();
      j["token_ids"] = r.generated;
      j["finish_reason"] = r.finish_reason;
      j["prefill_seconds"] = r.prefill_seconds;
      j["decode_tokens_per_second"] = r.decode_tokens_per_second;
      j["tokens_per_rank"] = r.tokens_per_rank;
      out << json_line(j) << "\n";
      continue;
    }
    out << "\n=== [" << d << "] " << r.id << "\n"
        << "prompt " << r.prompt_tokens << " tokens (" << r.tokens_per_rank << " per rank), generated " << r.generated.size() << " (" << r.finish_reason
        << "), prefill " << fixed(r.prefill_seconds, 3) << " s, decode " << fixed(r.decode_tokens_per_second, 1)
        << " tokens/s\n";
    if (!r.text.empty()) {
      out << r.text << "\n";
    } else if (r.generated.empty()) {
      out << "(nothing generated)\n";
    } else {
      out << "token ids:";
      for (int32_t t : r.generated) out << " " << t;
      out << "\n";
    }
  }
}

void dump_score(const std::string& path, std::ostream& out, bool jsonl, bool logprobs) {
  ScoreOutput o = read_score_output(path);
  if (!jsonl) print_attributes(o.attributes, o.results.size(), "score", out);
  for (size_t d = 0; d < o.results.size(); ++d) {
    const ScoreResult& r = o.results[d];
    double sum = 0;
    for (float v : r.token_logprobs) sum += v;
    const size_t n = r.token_logprobs.size();
    if (jsonl) {
      ojson j;
      j["id"] = r.id;
      j["tokens"] = n;
      j["perplexity"] = r.perplexity;  // NaN/inf print as null
      if (n > 0) {
        j["mean_logprob"] = sum / static_cast<double>(n);
      } else {
        j["mean_logprob"] = nullptr;
      }
      j["seconds"] = r.seconds;
      j["tokens_per_rank"] = r.tokens_per_rank;
      if (logprobs) j["logprobs"] = r.token_logprobs;
      out << json_line(j) << "\n";
      continue;
    }
    out << "[" << d << "] " << r.id << "  scored tokens " << n << "  perplexity " << fixed(r.perplexity, 4)
        << "  mean logprob " << (n > 0 ? fixed(sum / static_cast<double>(n), 6) : std::string("n/a"))
        << "  tokens per rank " << r.tokens_per_rank << "  " << fixed(r.seconds, 3) << " s\n";
  }
}

}  // namespace

void dump_output(const std::string& path, std::ostream& out, bool jsonl, bool logprobs, bool openai) {
  std::string format;
  {
    h5::Handle f = h5::open_readonly(path);
    format = h5::read_string_attr(f.get(), path, "format");
  }
  if (format == kRunFormat) return dump_run(path, out, jsonl, openai);
  if (openai && format == kScoreFormat)
    throw Error(path + ": --format openai prints run outputs (chat completions); this is a score output");
  if (format == kScoreFormat) return dump_score(path, out, jsonl, logprobs);
  if (format == kShardFormat)
    throw Error(path + ": is an input shard (" + format + "), not a run or score output");
  throw Error(path + ": format attribute is \"" + format + "\", expected \"" + kRunFormat + "\" or \"" +
              kScoreFormat + "\"");
}

}  // namespace ringinfer
