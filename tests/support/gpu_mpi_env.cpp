#include "gpu_mpi_env.h"

#include <mpi.h>

#include <cstdio>
#include <cstdlib>

#include "comm/cuda_comm_choice.h"
#include "ringinfer/comm.h"

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
  // The default is decided collectively too, so every rank that was not given the variable
  // defaults alike; agreed_cuda_comm then checks every rank resolved to the same one.
  const bool own_gpus = gpu_per_rank(info, visible_gpus);
  MpiComm world(MPI_COMM_WORLD);
  const CudaCommChoice choice =
      agreed_cuda_comm(world, own_gpus ? CudaCommChoice::nccl : CudaCommChoice::staged_mpi);
  return choice == CudaCommChoice::nccl ? DeviceComm::nccl : DeviceComm::staged;
}

}  // namespace ringinfer::test
