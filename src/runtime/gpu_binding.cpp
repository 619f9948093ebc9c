#include <string>

#include "ringinfer/error.h"
#include "ringinfer/log.h"
#include "ringinfer/runtime.h"

#ifdef RINGINFER_HAVE_CUDA
#include "ringinfer/cuda_check.h"
#endif

namespace ringinfer {

int visible_gpu_count() {
#ifdef RINGINFER_HAVE_CUDA
  int n = 0;
  // No driver or no device is "0 GPUs", not an error: the CPU backend still runs.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

int bind_gpu(const RankInfo& info, bool allow_shared) {
#ifdef RINGINFER_HAVE_CUDA
  const int n = visible_gpu_count();
  RI_CHECK(n > 0, "no GPU visible on host " + info.host + " (CUDA_VISIBLE_DEVICES?); use --device cpu");
  if (allow_shared && info.local_size > n && info.local_rank == 0)
    log::warn(std::to_string(info.local_size) + " ranks share " + std::to_string(n) + " visible GPU(s) on host " +
              info.host + " (host-staged communication; slower than NCCL, meant for tests)");
  RI_CHECK(allow_shared || info.local_size <= n,
           std::to_string(info.local_size) + " ranks on host " + info.host + " but only " + std::to_string(n) +
               " visible GPUs: one GPU per rank is required (under Slurm use --gpus-per-node with --gpu-bind=none; "
                                "RINGINFER_CUDA_COMM=mpi lets ranks share a GPU, slower)");
  const int device = info.local_rank % n;
  CUDA_CHECK(cudaSetDevice(device));
  return device;
#else
  (void)info;
  (void)allow_shared;
  throw Error("this ringinfer was built without CUDA; use --device cpu");
#endif
}

}  // namespace ringinfer
