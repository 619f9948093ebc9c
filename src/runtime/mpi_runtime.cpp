#include <unistd.h>

#include <cstdlib>
#include <exception>

#include "ringinfer/error.h"
#include "ringinfer/log.h"
#include "ringinfer/runtime.h"

namespace ringinfer {

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    finalize_ = true;
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
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
  if (finalize_) MPI_Finalize();
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
  log::error(message);
  // Abort the whole job: a rank that did not fail may be waiting in a collective this
  // rank will never enter, and MPI_Finalize would hang. mpirun then exits non-zero.
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) {
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > 1) MPI_Abort(MPI_COMM_WORLD, exit_code_on_error);
  }
  return exit_code_on_error;
}

}  // namespace ringinfer
