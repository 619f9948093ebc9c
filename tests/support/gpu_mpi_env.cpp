#include "gpu_mpi_env.h"

#include <mpi.h>

#include <cstdio>
#include <cstdlib>

#include "ringinfer/error.h"

namespace ringinfer::test {

bool on_every_rank(bool ok) {
  int v = ok ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return v != 0;
}

void skip_every_rank_unless(bool ok, const std::string& why) {
  if (on_every_rank(ok)) return;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0) std::printf("skipped: %s\n", why.c_str());
  std::fflush(stdout);
  MPI_Finalize();
  std::exit(77);
}

const char* to_string(DeviceComm kind) { return kind == DeviceComm::nccl ? "nccl" : "staged"; }

bool gpu_per_rank(const RankInfo& info, int visible_gpus) { return on_every_rank(visible_gpus >= info.local_size); }

DeviceComm choose_device_comm(const RankInfo& info, int visible_gpus) {
  const char* env = std::getenv("RINGINFER_CUDA_COMM");
  const std::string v = env ? env : "";
  // Decided collectively even when named, so a rank that was not given the variable
  // (mpirun without -x) cannot pick another communicator than its peers.
  const bool own_gpus = gpu_per_rank(info, visible_gpus);
  int pick = v.empty() ? (own_gpus ? 0 : 1) : v == "nccl" ? 0 : v == "mpi" ? 1 : 2;
  int lo = pick, hi = pick;
  MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (pick == 2) throw Error("RINGINFER_CUDA_COMM=" + v + ": unknown communicator (use nccl or mpi)");
  if (hi == 2) throw Error("RINGINFER_CUDA_COMM: another rank has an unknown value (use nccl or mpi)");
  if (lo != hi)
    throw Error("RINGINFER_CUDA_COMM differs between ranks (pass it to every rank: mpirun -x RINGINFER_CUDA_COMM)");
  return pick == 0 ? DeviceComm::nccl : DeviceComm::staged;
}

}  // namespace ringinfer::test
