#pragma once
// Bounded host waits for a CUDA stream or event (runtime/device_wait.h explains why no
// host wait may block in the CUDA runtime). Used by the CUDA backend, the staged MPI
// communicator and the NCCL communicator. CUDA builds only.
#include <cuda_runtime.h>

#include <string_view>

#include "ringinfer/cuda_check.h"
#include "runtime/device_wait.h"

namespace ringinfer::device_wait {

// cudaStreamQuery / cudaEventQuery as "done?": not ready is false, an error throws.
inline bool finished(cudaError_t rc) {
  if (rc == cudaErrorNotReady) return false;
  CUDA_CHECK(rc);
  return true;
}

// Poll until all work queued on `s` (or the work before `e` was recorded) has finished;
// past the deadline (comm_timeout() when none is given) mark the device stuck and throw
// the timeout Error naming `what`, e.g. "staged mpi barrier: the host -> device copies".
// A finished wait costs one query: no clock read, no string built.
inline void wait_stream(cudaStream_t s, std::string_view what, const Deadline& deadline) {
  wait(what, deadline, [s] { return finished(cudaStreamQuery(s)); });
}
inline void wait_stream(cudaStream_t s, std::string_view what) {
  wait(what, [s] { return finished(cudaStreamQuery(s)); });
}
inline void wait_event(cudaEvent_t e, std::string_view what, const Deadline& deadline) {
  wait(what, deadline, [e] { return finished(cudaEventQuery(e)); });
}
inline void wait_event(cudaEvent_t e, std::string_view what) {
  wait(what, [e] { return finished(cudaEventQuery(e)); });
}

}  // namespace ringinfer::device_wait
