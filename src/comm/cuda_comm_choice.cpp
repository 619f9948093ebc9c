#include "comm/cuda_comm_choice.h"

#include <cstdint>
#include <cstdlib>
#include <exception>
#include <string>

#include "ringinfer/error.h"

namespace ringinfer {
namespace {

constexpr char kVariable[] = "RINGINFER_CUDA_COMM";

// A rank's vote in agreed_cuda_comm: a CudaCommChoice, or kUnknown for a value that did
// not parse (the largest, so a max-reduction finds it).
constexpr int32_t kUnknown = 3;

}  // namespace

const char* to_string(CudaCommChoice choice) {
  switch (choice) {
    case CudaCommChoice::unset: return "unset";
    case CudaCommChoice::nccl: return "nccl";
    case CudaCommChoice::staged_mpi: return "mpi";
  }
  return "?";
}

CudaCommChoice parse_cuda_comm(const char* value) {
  const std::string v = value ? value : "";
  if (v.empty()) return CudaCommChoice::unset;
  if (v == "nccl") return CudaCommChoice::nccl;
  if (v == "mpi") return CudaCommChoice::staged_mpi;
  throw Error(std::string(kVariable) + "=" + v + ": unknown communicator (use nccl or mpi)");
}

CudaCommChoice cuda_comm_from_env() { return parse_cuda_comm(std::getenv(kVariable)); }

CudaCommChoice agreed_cuda_comm(Comm& comm, CudaCommChoice if_unset) {
  // Every rank joins the reduction before any throws: a rank that threw alone would leave
  // its peers waiting in their next collective.
  std::exception_ptr own_error;
  CudaCommChoice mine = if_unset;
  int32_t vote = kUnknown;
  try {
    const CudaCommChoice named = cuda_comm_from_env();
    if (named != CudaCommChoice::unset) mine = named;
    vote = static_cast<int32_t>(mine);
  } catch (const Error&) {
    own_error = std::current_exception();
  }
  const Int32Range votes = range_over_ranks(comm, vote);
  if (own_error) std::rethrow_exception(own_error);
  RI_CHECK(votes.highest != kUnknown,
           std::string(kVariable) + ": another rank has an unknown value (use nccl or mpi)");
  RI_CHECK(votes.uniform(), std::string(kVariable) + " differs between ranks (pass it to every rank: mpirun -x " +
                                kVariable + ")");
  return mine;
}

}  // namespace ringinfer
