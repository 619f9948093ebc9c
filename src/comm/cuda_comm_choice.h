#pragma once
// RINGINFER_CUDA_COMM: how the device buffers of a CUDA group of more than one rank move
// between ranks. An environment variable, not an option: a test and fallback switch, not
// a tuning knob. Read by `ringinfer run` / `score` (cli/cmd_run.cpp), the multi-rank GPU
// tests (tests/support/gpu_mpi_env.h) and tools/bench/bench_model.cu.
//   nccl   NCCL over device buffers, one rank per GPU (make_nccl_comm)
//   mpi    host-staged MPI (make_staged_comm): ranks may share a GPU, slower
// Host-only (no CUDA types): compiles in CPU-only builds too.
#include "ringinfer/comm.h"

namespace ringinfer {

enum class CudaCommChoice {
  unset,       // RINGINFER_CUDA_COMM unset or empty
  nccl,        // =nccl
  staged_mpi,  // =mpi
};

// "unset" | "nccl" | "mpi" (the variable's own spelling), for messages.
const char* to_string(CudaCommChoice choice);

// The choice a value of RINGINFER_CUDA_COMM names (null: unset). Throws Error
// "RINGINFER_CUDA_COMM=<value>: unknown communicator (use nccl or mpi)" for any other.
CudaCommChoice parse_cuda_comm(const char* value);

// This rank's RINGINFER_CUDA_COMM, parsed (parse_cuda_comm).
CudaCommChoice cuda_comm_from_env();

// Collective over `comm` (every rank must call it): this rank's RINGINFER_CUDA_COMM, with
// `if_unset` in place of an unset value, checked to be the same on every rank, so no rank
// picks another communicator than its peers (a rank that mpirun did not pass the variable
// to, without -x, would wait in a communicator the others never join). Every rank returns
// the same choice, or every rank throws: the rank with an unknown value its own
// parse_cuda_comm Error, the others "RINGINFER_CUDA_COMM: another rank has an unknown
// value (use nccl or mpi)"; ranks that differ "RINGINFER_CUDA_COMM differs between ranks
// (pass it to every rank: mpirun -x RINGINFER_CUDA_COMM)". One all_reduce on host buffers:
// `comm` is an MpiComm (its timeout applies).
CudaCommChoice agreed_cuda_comm(Comm& comm, CudaCommChoice if_unset = CudaCommChoice::unset);

}  // namespace ringinfer
