#include "ringinfer/progress.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ringinfer/error.h"

namespace ringinfer {
namespace {

using Json = nlohmann::ordered_json;

// null when the figure is not known yet (no time elapsed, no work done).
Json number_or_null(double v) { return v >= 0 && std::isfinite(v) ? Json(v) : Json(nullptr); }

double round3(double v) { return v >= 0 && std::isfinite(v) ? std::round(v * 1000) / 1000 : v; }

std::string format_rate(double tokens_per_s) {
  if (!(tokens_per_s >= 0) || !std::isfinite(tokens_per_s)) return "-- tok/s";
  char b[32];
  if (tokens_per_s >= 1e6) std::snprintf(b, sizeof b, "%.1fM tok/s", tokens_per_s / 1e6);
  else if (tokens_per_s >= 1e4) std::snprintf(b, sizeof b, "%.1fk tok/s", tokens_per_s / 1e3);
  else std::snprintf(b, sizeof b, "%.1f tok/s", tokens_per_s);
  return b;
}

std::string short_id(const std::string& id) { return id.size() <= 24 ? id : id.substr(0, 21) + "..."; }

}  // namespace

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || !std::isfinite(seconds)) return "--";
  const long s = std::lround(seconds);
  char b[32];
  if (s >= 3600) std::snprintf(b, sizeof b, "%ldh%02ldm", s / 3600, (s / 60) % 60);
  else if (s >= 60) std::snprintf(b, sizeof b, "%ldm%02lds", s / 60, s % 60);
  else std::snprintf(b, sizeof b, "%lds", s);
  return b;
}

bool stderr_reaches_terminal() {
  if (isatty(STDERR_FILENO)) return true;
  if (!std::getenv("OMPI_COMM_WORLD_SIZE") && !std::getenv("PMIX_RANK") && !std::getenv("PMI_RANK")) return false;
  // Walk up to the launcher (mpirun forks the ranks of its own node; a daemon in between
  // on others) and look at where its stderr goes.
  pid_t pid = getppid();
  for (int depth = 0; depth < 4 && pid > 1; ++depth) {
    const std::string proc = "/proc/" + std::to_string(pid);
    std::ifstream comm(proc + "/comm");
    std::string name;
    std::getline(comm, name);
    if (name == "mpirun" || name == "mpiexec" || name == "orterun" || name == "prterun" || name == "mpiexec.hydra") {
      char target[256];
      const ssize_t n = readlink((proc + "/fd/2").c_str(), target, sizeof(target) - 1);
      if (n <= 0) return false;
      const std::string t(target, static_cast<size_t>(n));
      return t.rfind("/dev/pts/", 0) == 0 || t.rfind("/dev/tty", 0) == 0;
    }
    std::ifstream stat(proc + "/stat");  // "pid (comm) state ppid ...": comm may hold spaces
    std::string line;
    std::getline(stat, line);
    const size_t close = line.rfind(')');
    if (close == std::string::npos) return false;
    std::istringstream rest(line.substr(close + 1));
    char state = 0;
    rest >> state >> pid;
  }
  return false;
}

ProgressFormat default_progress_format(bool quiet) {
  if (quiet) return ProgressFormat::none;
  return stderr_reaches_terminal() ? ProgressFormat::bar : ProgressFormat::json;
}

Progress::Progress(ProgressOptions options) : options_(std::move(options)) {
  if (!options_.sink)
    options_.sink = [](const std::string& text) {
      std::fwrite(text.data(), 1, text.size(), stderr);
      std::fflush(stderr);
    };
  if (!options_.clock)
    options_.clock = [] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    };
  job_start_ = now();
}

ProgressFormat progress_format(const std::string& name, bool quiet) {
  if (quiet) return ProgressFormat::none;
  if (name == "auto") return default_progress_format(false);
  if (name == "bar") return ProgressFormat::bar;
  if (name == "json") return ProgressFormat::json;
  throw Error("--log-format must be auto, bar or json, not '" + name + "'");
}

std::unique_ptr<Progress> Progress::to_stderr(ProgressFormat format) {
  ProgressOptions o;
  o.format = format;
  return std::make_unique<Progress>(std::move(o));
}

std::unique_ptr<Progress> Progress::to_stderr(bool quiet) { return to_stderr(default_progress_format(quiet)); }

// ---- figures

double Progress::work_done() const {
  double w = work_finished_;
  for (const auto& [index, d] : docs_) {
    if (d.generated > 0 || (d.layers > 0 && d.layer >= d.layers))
      w += d.prompt_tokens + d.generated;
    else if (d.layers > 0)
      w += double(d.prompt_tokens) * d.layer / d.layers;
  }
  return w;
}

double Progress::eta_seconds() const {
  const double t = now();
  // The documents in flight decode together (a batch): their time left is the longest
  // of theirs; doc_work is their whole work, `first` the earliest start among them.
  double left = 0, doc_work = 0, first = t;
  bool known = true;
  for (const auto& [index, doc_] : docs_) {
    double l = 0;
    doc_work += double(doc_.prompt_tokens + doc_.max_new_tokens);
    first = std::min(first, doc_.start);
    const bool decoding = doc_.generated > 0 || (doc_.layers > 0 && doc_.layer >= doc_.layers);
    if (!decoding) {
      if (doc_.layer > 0) l += (doc_.layers - doc_.layer) * (t - doc_.start) / doc_.layer;
      else known = false;
    }
    const double token_s = doc_.token_s > 0 ? doc_.token_s : prev_token_s_;
    if (doc_.max_new_tokens > doc_.generated) {
      if (token_s > 0) l += double(doc_.max_new_tokens - doc_.generated) * token_s;
      else known = false;
    }
    left = std::max(left, l);
  }
  const double later = std::max(0.0, work_total_ - work_finished_ - doc_work);  // documents not started
  double work_s = prev_work_s_;
  if (later > 0 && work_s <= 0) {
    if (!docs_.empty() && known && doc_work > 0) work_s = (t - first + left) / doc_work;
    else known = false;
  }
  if (known) return left + later * std::max(0.0, work_s);
  const double done = work_done(), elapsed = t - job_start_;
  if (done <= 0 || elapsed <= 0) return -1;
  return std::max(0.0, work_total_ - done) * elapsed / done;
}

double Progress::prefill_rate(const Doc& d) const {
  const double t = (d.layer >= d.layers && d.layers > 0 ? d.decode_start : now()) - d.start;
  if (d.layers <= 0 || t <= 0) return -1;
  return double(d.prompt_tokens) * d.layer / d.layers / t;
}

double Progress::decode_rate(const Doc& d) const {
  const double t = now() - d.decode_start;
  return t > 0 ? d.generated / t : -1;
}

Progress::Doc* Progress::in_flight(int64_t doc) {
  const auto it = docs_.find(doc);
  return it == docs_.end() ? nullptr : &it->second;
}

bool Progress::due(double& last, double interval, bool force) {
  const double t = now();
  if (!force && t - last < interval) return false;
  last = t;
  return true;
}

// ---- JSON lines

std::string Progress::common_json() const {
  Json j;
  j["docs_done"] = docs_done_;
  j["docs_total"] = docs_total_;
  j["elapsed_s"] = round3(now() - job_start_);
  j["eta_s"] = number_or_null(round3(eta_seconds()));
  return j.dump();
}

void Progress::emit_json(const std::string& event, const std::string& fields) {
  // fields is a JSON object text; merged after "event" and before the common figures.
  // (parsed into locals: a range-for over a temporary's items() would dangle)
  const Json f = Json::parse(fields), common = Json::parse(common_json());
  Json j;
  j["event"] = event;
  for (auto& [k, v] : f.items()) j[k] = v;
  for (auto& [k, v] : common.items()) j[k] = v;
  options_.sink(j.dump() + "\n");
}

// ---- bar

void Progress::draw_bar(bool force) {
  const Doc* cur = in_flight(current_);
  if (!cur || !due(last_bar_, options_.bar_interval_s, force)) return;
  const Doc& doc_ = *cur;
  double frac = 0;
  std::string phase, rate;
  if (doc_.generated > 0 || (doc_.layers > 0 && doc_.layer >= doc_.layers)) {
    frac = doc_.max_new_tokens > 0 ? double(doc_.generated) / doc_.max_new_tokens : 1.0;
    phase = "decode " + std::to_string(doc_.generated) + "/" + std::to_string(doc_.max_new_tokens);
    rate = format_rate(decode_rate(doc_));
  } else {
    frac = doc_.layers > 0 ? double(doc_.layer) / doc_.layers : 0.0;
    phase = "prefill " + std::to_string(doc_.layer) + "/" + std::to_string(doc_.layers);
    rate = format_rate(prefill_rate(doc_));
  }
  const int w = std::max(1, options_.bar_width);
  const int filled = std::clamp(int(frac * w), 0, w);
  const std::string also = docs_.size() > 1 ? " (+" + std::to_string(docs_.size() - 1) + " in decode)" : "";
  std::string line = "doc " + std::to_string(docs_done_ + 1) + "/" + std::to_string(docs_total_) + " " +
                     short_id(doc_.id) + also + " " + phase + " [" + std::string(filled, '#') +
                     std::string(w - filled, '.') + "] " + rate + "  ETA " + format_duration(eta_seconds());
  const size_t len = line.size();
  if (len < bar_len_) line += std::string(bar_len_ - len, ' ');  // blank the previous, longer bar
  bar_len_ = len;
  options_.sink("\r" + line);
}

// ---- events

void Progress::job_start(int64_t documents_total, int64_t work_total) {
  docs_total_ = documents_total;
  work_total_ = double(work_total);
  job_start_ = now();
  if (options_.format == ProgressFormat::json)
    emit_json("job_start", Json{{"work_total", work_total}}.dump());
}

void Progress::document_skipped(int64_t doc, const std::string& doc_id) {
  ++docs_done_;
  if (options_.format == ProgressFormat::json)
    emit_json("document_skipped", Json{{"doc", doc}, {"doc_id", doc_id}}.dump());
}

void Progress::document_start(int64_t doc, const std::string& doc_id, int64_t prompt_tokens,
                              int64_t max_new_tokens) {
  current_ = doc;
  Doc& doc_ = docs_[doc] = Doc{};
  doc_.index = doc;
  doc_.id = doc_id;
  doc_.prompt_tokens = prompt_tokens;
  doc_.max_new_tokens = max_new_tokens;
  doc_.start = doc_.decode_start = doc_.last_token = now();
  if (options_.format == ProgressFormat::json) {
    Json f;
    f["doc"] = doc;
    f["doc_id"] = doc_id;
    f["prompt_tokens"] = prompt_tokens;
    f["max_new_tokens"] = max_new_tokens;
    emit_json("document_start", f.dump());
  } else if (options_.format == ProgressFormat::bar) {
    draw_bar(true);
  }
}

void Progress::prefill_layer(int layer, int layers) {
  Doc* d = in_flight(current_);  // a prefill runs alone: the last started document's
  if (!d) return;
  Doc& doc_ = *d;
  doc_.layer = layer;
  doc_.layers = layers;
  const bool last = layer >= layers;
  if (last) doc_.decode_start = doc_.last_token = now();
  if (options_.format == ProgressFormat::json) {
    if (!due(last_json_, options_.json_interval_s, last)) return;
    Json f;
    f["doc"] = doc_.index;
    f["layer"] = layer;
    f["layers"] = layers;
    f["tokens_per_s"] = number_or_null(round3(prefill_rate(doc_)));
    emit_json("prefill_layer", f.dump());
  } else if (options_.format == ProgressFormat::bar) {
    draw_bar(false);
  }
}

void Progress::decode_token(int64_t doc, int64_t generated) {
  Doc* d = in_flight(doc);
  if (!d) return;
  Doc& doc_ = *d;
  current_ = doc;
  const double t = now();
  if (generated > doc_.last_generated) {  // seconds per token, averaged over the last ~5 tokens
    const double s = (t - doc_.last_token) / double(generated - doc_.last_generated);
    doc_.token_s = doc_.token_s < 0 ? s : 0.8 * doc_.token_s + 0.2 * s;
    doc_.last_token = t;
    doc_.last_generated = generated;
  }
  doc_.generated = generated;
  const bool last = generated >= doc_.max_new_tokens;
  if (options_.format == ProgressFormat::json) {
    if (!due(last_json_, options_.json_interval_s, last)) return;
    Json f;
    f["doc"] = doc_.index;
    f["token"] = generated;
    f["max_new_tokens"] = doc_.max_new_tokens;
    f["tokens_per_s"] = number_or_null(round3(decode_rate(doc_)));
    emit_json("decode_token", f.dump());
  } else if (options_.format == ProgressFormat::bar) {
    draw_bar(false);
  }
}

void Progress::document_done(int64_t doc, int64_t generated, const std::string& finish_reason) {
  Doc* d = in_flight(doc);
  if (!d) return;
  const Doc doc_ = *d;  // a copy: it leaves docs_ below
  d->generated = generated;
  if (d->layers == 0) d->decode_start = d->start;  // no layer events: count it all as decode
  const double prefill_s = d->decode_start - d->start;
  const double dec_rate = decode_rate(*d);
  work_finished_ += doc_.prompt_tokens + generated;
  if (doc_.token_s > 0) prev_token_s_ = doc_.token_s;
  if (doc_.prompt_tokens + generated > 0) prev_work_s_ = (now() - doc_.start) / double(doc_.prompt_tokens + generated);
  work_total_ -= std::max<int64_t>(0, doc_.max_new_tokens - generated);  // unused budget
  docs_.erase(doc);
  ++docs_done_;
  if (options_.format == ProgressFormat::json) {
    Json f;
    f["doc"] = doc_.index;
    f["doc_id"] = doc_.id;
    f["prompt_tokens"] = doc_.prompt_tokens;
    f["generated"] = generated;
    f["finish_reason"] = finish_reason;
    f["prefill_s"] = round3(prefill_s);
    f["decode_tokens_per_s"] = number_or_null(round3(dec_rate));
    emit_json("document_done", f.dump());
  } else if (options_.format == ProgressFormat::bar) {
    char b[160];
    std::snprintf(b, sizeof b, ": %lld prompt tokens, prefill %.1f s, %lld tokens at %s (%s)",
                  static_cast<long long>(doc_.prompt_tokens), prefill_s, static_cast<long long>(generated),
                  format_rate(dec_rate).c_str(), finish_reason.c_str());
    std::string line = "doc " + std::to_string(docs_done_) + "/" + std::to_string(docs_total_) + " " + doc_.id + b;
    if (line.size() < bar_len_) line += std::string(bar_len_ - line.size(), ' ');
    bar_len_ = 0;
    options_.sink("\r" + line + "\n");
    last_bar_ = -1e300;  // the next document's first bar shows at once
  }
}

void Progress::job_done(bool stopped) {
  const double elapsed = now() - job_start_;
  if (options_.format == ProgressFormat::json) {
    emit_json("job_done", Json{{"stopped", stopped}}.dump());
  } else if (options_.format == ProgressFormat::bar) {
    std::string line = (stopped ? "stopped: " : "done: ") + std::to_string(docs_done_) + "/" +
                       std::to_string(docs_total_) + " documents in " + format_duration(elapsed) +
                       (stopped ? "; re-run the same command to resume" : "");
    if (line.size() < bar_len_) line += std::string(bar_len_ - line.size(), ' ');
    bar_len_ = 0;
    options_.sink("\r" + line + "\n");
  }
}

}  // namespace ringinfer
