// Output files of `run` and `score`: writers and validating readers (layout in
// ringinfer/output.h).
#include "ringinfer/output.h"

#include <set>

#include "io/h5_util.h"
#include "ringinfer/error.h"

namespace ringinfer {

namespace {

// The reasons a generation ends (engine.h FinishReason; an empty prompt is written as
// length), and "error" for a document that could not run (run --on-error skip).
bool known_finish_reason(const std::string& f) { return f == "eos" || f == "stop" || f == "length" || f == "error"; }

void check_attributes(const std::string& path, const OutputAttributes& attributes) {
  std::set<std::string> seen;
  for (const auto& [key, value] : attributes) {
    if (key.empty()) throw Error(path + ": empty output attribute name");
    if (key == "format" || key == "version") throw Error(path + ": output attribute name " + key + " is reserved");
    if (!seen.insert(key).second) throw Error(path + ": output attribute " + key + " given twice");
  }
}

void write_header(hid_t f, const char* format, const OutputAttributes& attributes) {
  h5::write_string_attr(f, "format", format);
  h5::write_int_attr(f, "version", kOutputVersion);
  for (const auto& [key, value] : attributes) h5::write_string_attr(f, key, value);
}

// Checks format and version; returns the caller's attributes.
OutputAttributes read_header(hid_t f, const std::string& path, const char* format) {
  std::string found = h5::read_string_attr(f, path, "format");
  if (found != format)
    throw Error(path + ": format attribute is \"" + found + "\", expected \"" + format + "\"");
  int64_t version = h5::read_int_attr(f, path, "version");
  if (version != kOutputVersion)
    throw Error(path + ": unsupported version " + std::to_string(version) + " (this build reads version " +
                std::to_string(kOutputVersion) + ")");
  OutputAttributes attrs;
  for (auto& kv : h5::read_all_string_attrs(f))
    if (kv.first != "format" && kv.first != "version") attrs.push_back(std::move(kv));
  return attrs;
}

// Opens a rank-1 dataset that must have `expected` entries.
h5::Handle open_sized(hid_t f, const std::string& path, const std::string& name, h5::Kind kind, int64_t expected,
                      const std::string& why) {
  int64_t n = 0;
  h5::Handle d = h5::open_dataset_1d(f, path, name, kind, &n);
  if (n != expected)
    throw Error(path + ": " + name + " has " + std::to_string(n) + " entries, expected " + std::to_string(expected) +
                " (" + why + ")");
  return d;
}

// A per-document metric that files written before it existed lack: reads as zeros when
// missing, otherwise validated like the other per-document datasets.
std::vector<int64_t> read_optional_int64(hid_t f, const std::string& path, const std::string& name, int64_t D) {
  if (!h5::exists(f, name)) return std::vector<int64_t>(static_cast<size_t>(D), 0);
  h5::Handle d = open_sized(f, path, name, h5::Kind::AnyInt, D, "one per /doc_ids");
  return h5::read_int64(d.get(), D);
}

std::vector<double> read_optional_float64(hid_t f, const std::string& path, const std::string& name, int64_t D) {
  if (!h5::exists(f, name)) return std::vector<double>(static_cast<size_t>(D), 0.0);
  h5::Handle d = open_sized(f, path, name, h5::Kind::Float64, D, "one per /doc_ids");
  return h5::read_float64(d.get(), D);
}

// tokens_per_rank is a count: never negative, and never more than the document.
void check_tokens_per_rank(const std::string& where, int64_t value, int64_t limit, const std::string& limit_name) {
  if (value < 0) throw Error(where + " is " + std::to_string(value) + ", expected a count >= 0");
  if (limit >= 0 && value > limit)
    throw Error(where + " is " + std::to_string(value) + ", more than " + limit_name + " (" + std::to_string(limit) +
                ")");
}

h5::Handle create_timing(hid_t fid) {
  return h5::group(H5_CHECK(H5Gcreate2(fid, "/timing", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)));
}

}  // namespace

// ---------------------------------------------------------------- run

void write_run_output(const std::string& path, const std::vector<RunResult>& results,
                      const OutputAttributes& attributes) {
  check_attributes(path, attributes);
  const size_t D = results.size();
  std::vector<std::string> ids(D), text(D), finish(D);
  std::vector<int64_t> prompt(D), offsets(D + 1, 0);
  std::vector<int32_t> gen;
  std::vector<double> prefill(D), decode(D);
  std::vector<int64_t> per_rank(D);
  for (size_t d = 0; d < D; ++d) {
    const RunResult& r = results[d];
    if (!known_finish_reason(r.finish_reason))
      throw Error(path + ": document \"" + r.id + "\" has finish_reason \"" + r.finish_reason +
                  "\", expected eos, stop, length or error");
    check_tokens_per_rank(path + ": document \"" + r.id + "\" tokens_per_rank", r.tokens_per_rank, r.prompt_tokens,
                          "its prompt_tokens");
    ids[d] = r.id;
    text[d] = r.text;
    finish[d] = r.finish_reason;
    prompt[d] = r.prompt_tokens;
    gen.insert(gen.end(), r.generated.begin(), r.generated.end());
    offsets[d + 1] = static_cast<int64_t>(gen.size());
    prefill[d] = r.prefill_seconds;
    decode[d] = r.decode_tokens_per_second;
    per_rank[d] = r.tokens_per_rank;
  }

  h5::TempFile tmp(path);
  {
    h5::Handle f = h5::create(tmp.tmp_path());
    hid_t fid = f.get();
    write_header(fid, kRunFormat, attributes);
    h5::write_strings(fid, "/doc_ids", ids);
    h5::write_int64(fid, "/prompt_tokens", prompt);
    h5::write_int64(fid, "/gen_offsets", offsets);
    h5::write_int32(fid, "/gen_tokens", gen);
    h5::write_strings(fid, "/text", text);
    h5::write_strings(fid, "/finish_reason", finish);
    h5::Handle timing = create_timing(fid);
    h5::write_float64(timing.get(), "prefill_seconds", prefill);
    h5::write_float64(timing.get(), "decode_tokens_per_second", decode);
    h5::write_int64(timing.get(), "tokens_per_rank", per_rank);
    timing.reset();
    H5_CHECK(H5Fflush(fid, H5F_SCOPE_GLOBAL));
  }
  tmp.commit();
}

RunOutput read_run_output(const std::string& path) {
  h5::Handle f = h5::open_readonly(path);
  hid_t fid = f.get();
  RunOutput out;
  out.attributes = read_header(fid, path, kRunFormat);

  int64_t D = 0, G = 0;
  h5::Handle ids_d = h5::open_dataset_1d(fid, path, "/doc_ids", h5::Kind::VlenString, &D);
  const std::string per_doc = "one per /doc_ids";
  h5::Handle prompt_d = open_sized(fid, path, "/prompt_tokens", h5::Kind::AnyInt, D, per_doc);
  h5::Handle off_d = open_sized(fid, path, "/gen_offsets", h5::Kind::AnyInt, D + 1, "one more than /doc_ids");
  h5::Handle gen_d = h5::open_dataset_1d(fid, path, "/gen_tokens", h5::Kind::AnyInt, &G);
  h5::Handle text_d = open_sized(fid, path, "/text", h5::Kind::VlenString, D, per_doc);
  h5::Handle finish_d = open_sized(fid, path, "/finish_reason", h5::Kind::VlenString, D, per_doc);
  h5::Handle prefill_d = open_sized(fid, path, "/timing/prefill_seconds", h5::Kind::Float64, D, per_doc);
  h5::Handle decode_d = open_sized(fid, path, "/timing/decode_tokens_per_second", h5::Kind::Float64, D, per_doc);

  std::vector<int64_t> offsets = h5::read_int64(off_d.get(), D + 1);
  h5::check_offsets(path, "/gen_offsets", offsets, G, "/gen_tokens");
  std::vector<std::string> ids = h5::read_strings(ids_d.get(), D);
  std::vector<int64_t> prompt = h5::read_int64(prompt_d.get(), D);
  std::vector<int32_t> gen = h5::read_int32(gen_d.get(), G);
  std::vector<std::string> text = h5::read_strings(text_d.get(), D);
  std::vector<std::string> finish = h5::read_strings(finish_d.get(), D);
  std::vector<double> prefill = h5::read_float64(prefill_d.get(), D);
  std::vector<double> decode = h5::read_float64(decode_d.get(), D);
  std::vector<int64_t> per_rank = read_optional_int64(fid, path, "/timing/tokens_per_rank", D);

  out.results.resize(static_cast<size_t>(D));
  for (size_t d = 0; d < static_cast<size_t>(D); ++d) {
    RunResult& r = out.results[d];
    r.id = std::move(ids[d]);
    r.prompt_tokens = prompt[d];
    r.generated.assign(gen.begin() + offsets[d], gen.begin() + offsets[d + 1]);
    r.text = std::move(text[d]);
    r.finish_reason = std::move(finish[d]);
    if (!known_finish_reason(r.finish_reason))
      throw Error(path + ": /finish_reason[" + std::to_string(d) + "] is \"" + r.finish_reason +
                  "\", expected eos, stop, length or error");
    r.prefill_seconds = prefill[d];
    r.decode_tokens_per_second = decode[d];
    r.tokens_per_rank = per_rank[d];
    check_tokens_per_rank(path + ": /timing/tokens_per_rank[" + std::to_string(d) + "]", r.tokens_per_rank,
                          r.prompt_tokens, "/prompt_tokens[" + std::to_string(d) + "]");
  }
  return out;
}

// ---------------------------------------------------------------- score

void write_score_output(const std::string& path, const std::vector<ScoreResult>& results,
                        const OutputAttributes& attributes) {
  check_attributes(path, attributes);
  const size_t D = results.size();
  std::vector<std::string> ids(D);
  std::vector<int64_t> offsets(D + 1, 0);
  std::vector<float> logprobs;
  std::vector<double> ppl(D), seconds(D);
  std::vector<int64_t> per_rank(D);
  for (size_t d = 0; d < D; ++d) {
    check_tokens_per_rank(path + ": document \"" + results[d].id + "\" tokens_per_rank", results[d].tokens_per_rank,
                          -1, "");
    ids[d] = results[d].id;
    logprobs.insert(logprobs.end(), results[d].token_logprobs.begin(), results[d].token_logprobs.end());
    offsets[d + 1] = static_cast<int64_t>(logprobs.size());
    ppl[d] = results[d].perplexity;
    seconds[d] = results[d].seconds;
    per_rank[d] = results[d].tokens_per_rank;
  }

  h5::TempFile tmp(path);
  {
    h5::Handle f = h5::create(tmp.tmp_path());
    hid_t fid = f.get();
    write_header(fid, kScoreFormat, attributes);
    h5::write_strings(fid, "/doc_ids", ids);
    h5::write_int64(fid, "/logprob_offsets", offsets);
    h5::write_float32(fid, "/token_logprobs", logprobs);
    h5::write_float64(fid, "/perplexity", ppl);
    h5::Handle timing = create_timing(fid);
    h5::write_float64(timing.get(), "seconds", seconds);
    h5::write_int64(timing.get(), "tokens_per_rank", per_rank);
    timing.reset();
    H5_CHECK(H5Fflush(fid, H5F_SCOPE_GLOBAL));
  }
  tmp.commit();
}

ScoreOutput read_score_output(const std::string& path) {
  h5::Handle f = h5::open_readonly(path);
  hid_t fid = f.get();
  ScoreOutput out;
  out.attributes = read_header(fid, path, kScoreFormat);

  int64_t D = 0, L = 0;
  h5::Handle ids_d = h5::open_dataset_1d(fid, path, "/doc_ids", h5::Kind::VlenString, &D);
  h5::Handle off_d = open_sized(fid, path, "/logprob_offsets", h5::Kind::AnyInt, D + 1, "one more than /doc_ids");
  h5::Handle lp_d = h5::open_dataset_1d(fid, path, "/token_logprobs", h5::Kind::Float32, &L);
  h5::Handle ppl_d = open_sized(fid, path, "/perplexity", h5::Kind::Float64, D, "one per /doc_ids");

  std::vector<int64_t> offsets = h5::read_int64(off_d.get(), D + 1);
  h5::check_offsets(path, "/logprob_offsets", offsets, L, "/token_logprobs");
  std::vector<std::string> ids = h5::read_strings(ids_d.get(), D);
  std::vector<float> lp = h5::read_float32(lp_d.get(), L);
  std::vector<double> ppl = h5::read_float64(ppl_d.get(), D);
  std::vector<double> seconds = read_optional_float64(fid, path, "/timing/seconds", D);
  std::vector<int64_t> per_rank = read_optional_int64(fid, path, "/timing/tokens_per_rank", D);

  out.results.resize(static_cast<size_t>(D));
  for (size_t d = 0; d < static_cast<size_t>(D); ++d) {
    ScoreResult& r = out.results[d];
    r.id = std::move(ids[d]);
    r.token_logprobs.assign(lp.begin() + offsets[d], lp.begin() + offsets[d + 1]);
    r.perplexity = ppl[d];
    r.seconds = seconds[d];
    r.tokens_per_rank = per_rank[d];
    check_tokens_per_rank(path + ": /timing/tokens_per_rank[" + std::to_string(d) + "]", r.tokens_per_rank, -1, "");
  }
  return out;
}

}  // namespace ringinfer
