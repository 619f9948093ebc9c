#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <exception>
#include <thread>

#include "ringinfer/error.h"
#include "ringinfer/log.h"
#include "ringinfer/runtime.h"

namespace ringinfer {

namespace {
// A duplicate of MPI_COMM_WORLD used only by run_guarded's agreement on failure, so its
// barrier can never match a collective of the normal flow.
MPI_Comm g_error_comm = MPI_COMM_NULL;

// Ranks that fail on the same input (a bad model path, a corrupt shard, a bad flag
// combination) reach run_guarded within moments of each other.
constexpr double kAgreeSeconds = 5.0;

// Whether every rank is failing too: all enter a barrier on g_error_comm within
// kAgreeSeconds. A rank that did not fail never enters it.
bool every_rank_failed() {
  if (g_error_comm == MPI_COMM_NULL) return false;
  MPI_Request req = MPI_REQUEST_NULL;
  if (MPI_Ibarrier(g_error_comm, &req) != MPI_SUCCESS) return false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(kAgreeSeconds);
  for (;;) {
    int done = 0;
    if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return false;
    if (done) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}
}  // namespace

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    finalize_ = true;
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  if (g_error_comm == MPI_COMM_NULL) MPI_Comm_dup(MPI_COMM_WORLD, &g_error_comm);
  info_ = query_rank_info();
  set_this_rank(info_.world_rank);
}

RankInfo query_rank_info() {
  RankInfo info;
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &info.world_rank));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &info.world_size));
  MPI_Comm node = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, info.world_rank, MPI_INFO_NULL, &node));
  MPI_CHECK(MPI_Comm_rank(node, &info.local_rank));
  MPI_CHECK(MPI_Comm_size(node, &info.local_size));
  MPI_Comm_free(&node);
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int len = 0;
  MPI_Get_processor_name(name, &len);
  info.host.assign(name, len);
  return info;
}

MpiRuntime::~MpiRuntime() {
  if (!finalize_) return;
  if (g_error_comm != MPI_COMM_NULL) MPI_Comm_free(&g_error_comm);
  MPI_Finalize();
}

int run_guarded(const std::function<int()>& body, int exit_code_on_error) {
  std::string message;
  try {
    return body();
  } catch (const Error& e) {
    message = e.what();
  } catch (const std::exception& e) {
    message = std::string("internal error: ") + e.what();
    exit_code_on_error = 1;
  }
  // A problem every rank found is printed once, by rank 0, and every rank returns to an
  // orderly MPI_Finalize. One found by some ranks only aborts the whole job: the others
  // may wait in a collective this rank will never enter, and MPI_Finalize would hang.
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  int size = 1, rank = 0;
  if (initialized && !finalized) {
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  }
  if (size > 1 && every_rank_failed()) {
    if (rank == 0) log::error(message);
    return exit_code_on_error;
  }
  log::error(message);
  if (size > 1) MPI_Abort(MPI_COMM_WORLD, exit_code_on_error);
  return exit_code_on_error;
}

}  // namespace ringinfer
