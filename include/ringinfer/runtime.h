#pragma once
// Process runtime: MPI start-up and shut-down, who am I (world and node-local rank),
// which GPU this rank drives, and how a rank leaves on error.
#include <mpi.h>

#include <functional>
#include <string>

namespace ringinfer {

struct RankInfo {
  int world_rank = 0;  // rank in MPI_COMM_WORLD
  int world_size = 1;
  int local_rank = 0;  // rank among the ranks of this node (MPI_Comm_split_type SHARED)
  int local_size = 1;
  std::string host;    // processor name, for messages
};

// This rank's place in MPI_COMM_WORLD and on its node (MPI must be initialized).
RankInfo query_rank_info();

// Owns MPI for the life of the program: MPI_Init_thread (MPI_THREAD_FUNNELED or better),
// MPI_ERRORS_RETURN on MPI_COMM_WORLD so MPI_CHECK reports failures, and
// MPI_Finalize in the destructor.
class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  const RankInfo& info() const { return info_; }

 private:
  RankInfo info_;
  bool finalize_ = false;
};

// libgomp's default barrier spins for up to ~1 ms before sleeping: on a loaded or shared
// machine a spinning thread takes the core its peer needs (measured on 2 shared cores:
// decode 4.4 tok/s spinning, 29 passive). libgomp reads the policy once, when it loads,
// so this re-executes the program with OMP_WAIT_POLICY=passive unless the user set
// OMP_WAIT_POLICY or GOMP_SPINCOUNT. Call first thing in main, before MPI_Init.
void exec_with_passive_omp_wait(char** argv);

// Sets this rank's OpenMP team size to the CPUs of its affinity mask divided by the
// ranks of this node whose masks overlap it (at least 1; OMP_NUM_THREADS, when set, wins)
// and OpenBLAS to one thread per caller; returns the team size. Collective over the node.
int configure_cpu_threads();

// Number of GPUs visible to this process (respects CUDA_VISIBLE_DEVICES); 0 in builds
// without CUDA or when the driver finds none.
int visible_gpu_count();

// Binds this rank to GPU (local_rank mod visible GPUs) and returns its index. Throws
// Error when there are fewer visible GPUs than ranks on this node, unless allow_shared:
// then ranks share GPUs round-robin (logged once), which only the host-staged
// communicator supports (make_staged_comm; NCCL refuses two ranks on one GPU).
int bind_gpu(const RankInfo& info, bool allow_shared = false);

// Runs body; on ringinfer::Error (or any exception) returns exit_code (1 for a non-Error
// exception). When every rank fails (they agree within seconds, on a communicator of
// their own), rank 0 alone prints "[rank 0] error: ..." and every rank returns, so the
// job ends by MPI_Finalize without MPI_Abort's banner; when only some ranks fail, each
// prints its error and calls MPI_Abort so the others cannot hang in a collective.
int run_guarded(const std::function<int()>& body, int exit_code_on_error = 2);

}  // namespace ringinfer
