#include "cli/result_store.h"

#include "ringinfer/comm.h"

#include <mpi.h>

#include <cstring>
#include <filesystem>

#include "cli/options.h"
#include "ringinfer/error.h"
#include "ringinfer/log.h"

namespace ringinfer::cli {
namespace {

int64_t record_index(const Bytes& record, const std::string& where) {
  // Every encoded result starts with a 4-byte kind tag and the int64 document index.
  RI_CHECK(record.size() >= 12, where + ": journal record too short");
  int64_t index;
  std::memcpy(&index, record.data() + 4, 8);
  return index;
}

std::string file_identity(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path abs = fs::absolute(path, ec);
  std::string id = abs.lexically_normal().string();
  if (fs::is_regular_file(abs, ec)) id += " size=" + std::to_string(fs::file_size(abs, ec));
  return id;
}

}  // namespace

std::string job_fingerprint(const RunConfig& c) {
  RunConfig key = c;
  key.cp = 0;  // the rank layout may change between attempts (requeue on other nodes)
  key.tp = 1;
  key.comm_timeout_s = kDefaultCommTimeoutSeconds;  // how long to wait changes no result
  key.log_format = "auto";
  key.quiet = false;
  key.memory_limit_gb = -1;
  key.output.clear();
  key.model = file_identity(c.model);
  for (auto& in : key.inputs) in = file_identity(in);
  return "ringinfer journal v2\n" + format_config(key);
}

ResultStore::ResultStore(const std::string& output, const std::string& fingerprint, int group, bool leader)
    : output_(output), fingerprint_(fingerprint) {
  for (const std::string& path : find_journals(output)) {
    for (const Bytes& r : read_journal(path, fingerprint)) done_.insert(record_index(r, path));
  }
  // Nobody may truncate a torn tail while another rank is still reading it.
  MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
  if (leader) {
    writer_ = std::make_unique<JournalWriter>(journal_path(output, group), fingerprint);
    if (writer_->dropped_bytes() > 0)
      log::warn(writer_->path() + ": dropped a torn last record (" + std::to_string(writer_->dropped_bytes()) +
                " bytes); that document runs again");
  }
  if (!done_.empty()) log::info("resuming: " + std::to_string(done_.size()) + " documents already done");
}

void ResultStore::add(const Bytes& encoded_result) {
  RI_CHECK(writer_ != nullptr, "internal: journal append on a rank that is not a group leader");
  writer_->append(encoded_result);
}

std::map<int64_t, Bytes> ResultStore::collect() const {
  std::map<int64_t, Bytes> all;
  for (const std::string& path : find_journals(output_)) {
    for (Bytes& r : read_journal(path, fingerprint_)) {
      const int64_t index = record_index(r, path);
      all.emplace(index, std::move(r));  // a document journaled twice (killed after the append): keep one
    }
  }
  return all;
}

void ResultStore::remove_journals() const {
  for (const std::string& path : find_journals(output_)) std::filesystem::remove(path);
}

}  // namespace ringinfer::cli
