#pragma once
// Where finished documents go during `run` and `score`: the resume journals (DESIGN §6).
// Every rank learns up front which documents earlier attempts already finished (any
// group's journal, whatever the group count was then) and skips them; each group leader
// appends its documents to its own journal as they finish; at the end world rank 0
// assembles the output from all journals, in input order, and removes them.
#include <map>
#include <memory>
#include <set>
#include <string>

#include "cli/output_path.h"
#include "ringinfer/comm.h"
#include "ringinfer/journal.h"
#include "ringinfer/run_config.h"

namespace ringinfer::cli {

// The journal format, the first line of every fingerprint. v3: files are identified by
// content (file_digest.h), not by path; a journal of another format is refused.
constexpr const char* kJournalFormat = "ringinfer journal v3";

// What must match for journaled results to be reused: everything that changes results
// (command, the content of the model's files and of each input in order, generation
// options, device), not the rank layout, the paths or the mtimes. Reads the files.
std::string job_fingerprint(const RunConfig& config);
// The same computed once, on rank 0 of `world`, and broadcast (an Error reading a file
// is thrown on every rank). Collective over `world`.
std::string job_fingerprint(const RunConfig& config, Comm& world);

class ResultStore {
 public:
  // Collective over MPI_COMM_WORLD: reads existing journals on every rank, then the
  // leader of `group` opens (and locks) its journal for appending, repairing a damaged
  // tail; group 0's leader first, so a second job on the same output fails before any
  // of its leaders creates a journal. World rank 0 warns about every damaged journal.
  ResultStore(const std::string& output, const std::string& fingerprint, int group, bool leader);

  bool done(int64_t doc_index) const { return done_.count(doc_index) != 0; }
  size_t done_count() const { return done_.size(); }
  // Leader only: journal one finished document (fsynced before returning).
  void add(const Bytes& encoded_result);
  // Every journaled record, by document index (reads the journals again; call after a barrier).
  std::map<int64_t, Bytes> collect() const;
  void remove_journals() const;

 private:
  std::string output_;
  std::string fingerprint_;
  std::set<int64_t> done_;
  std::unique_ptr<JournalWriter> writer_;
};

}  // namespace ringinfer::cli
