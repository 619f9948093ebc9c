#pragma once
// Progress of a run, reported by rank 0 (the caller makes a reporter on rank 0 only, or
// passes quiet elsewhere). Events: job start, document start, prefill layer k of L done,
// decode token g of G done, document done (or skipped: already journaled), job done.
// With batched decode (run --max-batch) several documents are in flight: token and done
// events name their document; a prefill layer is the last started document's (a prefill
// runs alone); the bar shows the document of the latest event.
//
// Formats:
//   bar   one line rewritten in place with '\r' (a terminal), at most ~5 updates per
//         second; each finished document leaves one permanent summary line.
//   json  one JSON object per line (`{"event": "prefill_layer", "doc": 3, ...}`) for logs
//         and tools. Start/done events are always written; the frequent layer and token
//         events are throttled to one per `json_interval_s` (the last layer of a prefill
//         and the last token of a document always pass), so a Slurm log does not get a
//         line per generated token. json_interval_s = 0 writes every event.
//   none  nothing (--quiet).
//
// Rates and ETA: prefill tokens/s = prompt tokens x (k / L) / seconds since the document
// started; decode tokens/s = g / seconds since its prefill ended. The job ETA comes from
// recent rates, phase by phase: each document in flight has its layers left at its own
// seconds per layer and its tokens left at the recent seconds per token (a moving average
// over its last tokens, or the previous document's); those in flight together (a batch)
// take the longest of theirs; then the documents still to start go at the
// seconds per unit of work of the last finished one, with work = prompt tokens +
// generation budget (max_new_tokens). Until those rates exist (the first document's
// prefill) it is the remaining work at the job's average rate so far. A document that
// stops early (eos) gives back its unused budget. Skipped documents count as done but
// not as work.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

namespace ringinfer {

enum class ProgressFormat { none, bar, json };

struct ProgressOptions {
  ProgressFormat format = ProgressFormat::json;
  double bar_interval_s = 0.2;    // bar: minimum seconds between redraws (~5/s)
  double json_interval_s = 1.0;   // json: minimum seconds between layer/token events
  int bar_width = 24;             // bar: characters of the [####....] gauge
  // Where the text goes (each call is whole lines, or a '\r'-led bar redraw). Default: stderr.
  std::function<void(const std::string&)> sink;
  // Seconds from any fixed origin (monotonic). Default: std::chrono::steady_clock.
  std::function<double()> clock;
};

// Whether this process's stderr ends on a terminal: its own, or, under mpirun (whose
// ranks write to a pipe it forwards), the launcher's. srun's ranks cannot see the
// submitting terminal: --log-format bar asks for the bar there.
bool stderr_reaches_terminal();

// The format for a real run: none when quiet, bar when stderr reaches a terminal, else json.
ProgressFormat default_progress_format(bool quiet);
// --log-format: "auto" (default_progress_format), "bar" or "json"; quiet wins. Throws
// Error for any other name.
ProgressFormat progress_format(const std::string& name, bool quiet);

class Progress {
 public:
  explicit Progress(ProgressOptions options);
  // A reporter on stderr with default_progress_format(quiet).
  static std::unique_ptr<Progress> to_stderr(bool quiet);
  static std::unique_ptr<Progress> to_stderr(ProgressFormat format);

  // Once, before any document: documents this job will run or skip, and the work of those
  // it will run (sum over them of prompt tokens + max_new_tokens).
  void job_start(int64_t documents_total, int64_t work_total);
  // A document already in the resume journal: counted as done, costs no time.
  void document_skipped(int64_t doc, const std::string& doc_id);
  // `doc` is the document's index in input order (for the JSON "doc" field).
  void document_start(int64_t doc, const std::string& doc_id, int64_t prompt_tokens, int64_t max_new_tokens);
  // Prefill of layer `layer` (1-based) of `layers` has finished.
  void prefill_layer(int layer, int layers);
  // Generated token `generated` (1-based) of at most `max_new_tokens` of document `doc`.
  void decode_token(int64_t doc, int64_t generated);
  // Document `doc` is finished (journaled) with `generated` tokens; reason "eos" or "length".
  void document_done(int64_t doc, int64_t generated, const std::string& finish_reason);
  // Once, at the end (also after a stop on a signal: `stopped` = true).
  void job_done(bool stopped = false);

  // Figures of the current state (for tests and for the caller's own summary).
  int64_t documents_done() const { return docs_done_; }
  double eta_seconds() const;  // < 0 when unknown (no work done yet)

 private:
  struct Doc {
    int64_t index = -1;
    std::string id;
    int64_t prompt_tokens = 0;
    int64_t max_new_tokens = 0;
    double start = 0;         // clock at document_start
    double decode_start = 0;  // clock when prefill ended (or document_start)
    int layer = 0, layers = 0;
    int64_t generated = 0;
    double token_s = -1;      // moving average of seconds per decoded token; -1 before one
    double last_token = 0;    // clock at the last decode_token
    int64_t last_generated = 0;
  };

  double now() const { return options_.clock(); }
  double work_done() const;  // finished work + the share of the documents in flight
  double prefill_rate(const Doc& d) const;
  double decode_rate(const Doc& d) const;
  Doc* in_flight(int64_t doc);  // null when `doc` was not started or is done
  bool due(double& last, double interval, bool force);
  void emit_json(const std::string& event, const std::string& fields);
  void draw_bar(bool force);
  std::string common_json() const;

  ProgressOptions options_;
  int64_t docs_total_ = 0, docs_done_ = 0;
  double work_total_ = 0, work_finished_ = 0;
  double job_start_ = 0;
  std::map<int64_t, Doc> docs_;  // documents started and not done, by index
  int64_t current_ = -1;         // the document of the latest event (the bar's)
  double prev_token_s_ = -1;  // seconds per token at the end of the last document that decoded
  double prev_work_s_ = -1;   // seconds per unit of work of the last finished document
  double last_bar_ = -1e300, last_json_ = -1e300;
  size_t bar_len_ = 0;  // length of the bar last drawn, to blank its tail
};

// "1h02m", "3m05s", "12s"; "--" for a negative (unknown) duration.
std::string format_duration(double seconds);

}  // namespace ringinfer
