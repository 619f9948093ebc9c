#include "cli/result_store.h"

#include "ringinfer/comm.h"

#include <mpi.h>

#include <cstring>
#include <filesystem>

#include "cli/file_digest.h"
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

}  // namespace

std::string job_fingerprint(const RunConfig& c) {
  RunConfig key = c;
  key.cp = 0;  // the rank layout may change between attempts (requeue on other nodes)
  key.tp = 1;
  key.comm_timeout_s = kDefaultCommTimeoutSeconds;  // how long to wait changes no result
  key.log_format = "auto";
  key.quiet = false;
  key.memory_limit_gb = -1;
  key.max_batch = 0;  // tokens do not depend on the batch: a resume may use another
  key.offload_residual = false;  // where x waits between layers changes no bit of a result
  key.no_decode_graph = false;   // nor how a decode step is launched
  key.output.clear();
  // A dry run reads no weights and writes empty generations: the model changes nothing.
  key.model = c.model.empty() || c.dry_run ? std::string() : model_identity(c.model, c.output);
  for (auto& in : key.inputs) in = content_identity(in);
  return std::string(kJournalFormat) + "\n" + format_config(key);
}

std::string job_fingerprint(const RunConfig& config, Comm& world) {
  return agree_on_root(world, [&] { return job_fingerprint(config); });
}

ResultStore::ResultStore(const std::string& output, const std::string& fingerprint, int group, bool leader)
    : output_(output), fingerprint_(fingerprint) {
  std::vector<std::string> damaged;
  for (const std::string& path : find_journals(output)) {
    JournalDamage damage;
    for (const Bytes& r : read_journal(path, fingerprint, nullptr, &damage)) done_.insert(record_index(r, path));
    if (damage.damaged()) damaged.push_back(describe_damage(path, damage));
  }
  // Nobody may truncate a damaged tail while another rank is still reading it.
  MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
  // Group 0's journal is the lock of the whole output: when another job holds it, this
  // leader throws and the job aborts before any other leader creates its journal.
  if (leader && group == 0) writer_ = std::make_unique<JournalWriter>(journal_path(output, group), fingerprint);
  MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
  if (leader && group != 0) writer_ = std::make_unique<JournalWriter>(journal_path(output, group), fingerprint);
  int world_rank = 0;
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank));
  // Warned once, after the lock: another job's half-written record is not ours to report.
  if (world_rank == 0)
    for (const std::string& w : damaged) log::warn(w);
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
