#pragma once
// Set-up shared by the multi-rank GPU tests (tests/gpu/mpi_*.cpp, run under mpirun -np 2):
// the skip that every rank takes together, and the choice of the device communicator.
// Compiles in CPU-only builds too (tests/support is linked into every test); there
// visible_gpu_count() is 0, so the tests skip.
#include <string>

#include "ringinfer/runtime.h"

namespace ringinfer::test {

// Collective over MPI_COMM_WORLD: true when `ok` holds on every rank.
bool on_every_rank(bool ok);

// Collective over MPI_COMM_WORLD. When `ok` is false on any rank, every rank leaves
// together with exit code 77 (CTest's "skipped"): rank 0 prints "skipped: <why>", MPI is
// finalized first (otherwise mpirun reports the exit as a failure, not the 77). A rank
// that skipped alone would leave the others hanging in their next collective.
void skip_every_rank_unless(bool ok, const std::string& why);

// How the device buffers of a multi-rank CUDA test or benchmark move between ranks.
enum class DeviceComm {
  nccl,    // make_nccl_comm: one GPU per rank (bind_gpu(info, false))
  staged,  // make_staged_comm: host-staged MPI; ranks may share a GPU (bind_gpu(info, true))
};
const char* to_string(DeviceComm kind);  // "nccl" | "staged"

// Collective over MPI_COMM_WORLD. RINGINFER_CUDA_COMM=nccl or =mpi names the communicator;
// unset (or empty), NCCL when every rank has a GPU of its own (on every node, visible
// GPUs >= ranks of the node), else staged. Every rank returns the same, or every rank
// throws the Error of agreed_cuda_comm (comm/cuda_comm_choice.h), e.g.
// "RINGINFER_CUDA_COMM=x: unknown communicator (use nccl or mpi)".
DeviceComm choose_device_comm(const RankInfo& info, int visible_gpus);

// True when every rank of every node has a GPU of its own (collective).
bool gpu_per_rank(const RankInfo& info, int visible_gpus);

}  // namespace ringinfer::test
