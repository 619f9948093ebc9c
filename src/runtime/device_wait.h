#pragma once
// Host waits for device work, bounded by the communication timeout.
//
// Work queued on a CUDA stream after NCCL (or a staged copy behind it) never finishes if a
// peer rank died: cudaStreamSynchronize would block the host forever. CUDA code therefore
// polls (cudaStreamQuery / cudaEventQuery) through wait(), which gives up after
// comm_timeout() seconds. Host-only, free of CUDA types: the stream and event wrappers that
// the CUDA backend and the device communicators call are in runtime/cuda/device_wait_cuda.h.
// The deadline is the communicators' (runtime/deadline.h): a device wait is a wait for
// other ranks, with the same --comm-timeout.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "ringinfer/comm.h"
#include "ringinfer/error.h"
#include "runtime/deadline.h"

namespace ringinfer::device_wait {

using ringinfer::Deadline;

// The Error text of a host wait for device work that did not finish in time, e.g.
// "cuda backend synchronize: the compute stream did not finish within 5 s
// (--comm-timeout): a peer rank may have died or its GPU hung".
inline std::string timeout_message(std::string_view what, double seconds) {
  return std::string(what) + " did not finish within " + format_seconds(seconds) +
         " s (--comm-timeout): a peer rank may have died or its GPU hung";
}

// Set when a device wait timed out: some stream holds work that may never finish, and
// calls that wait for the whole device (cudaFree, cudaFreeHost, cublasDestroy) would hang
// while the Error unwinds. Destructors and buffer deleters of CUDA code leak instead of
// freeing while it is set (the job is ending; the NCCL communicator's destructor aborts
// the stuck kernels). CudaBackend::synchronize clears it once its streams have drained.
inline std::atomic<bool>& stuck() {
  static std::atomic<bool> flag{false};
  return flag;
}

// How long a destructor may wait for device work: the full timeout normally, at most
// 1 s while an exception unwinds (the job is ending: a second wait of the full timeout
// would only delay the abort).
inline double destructor_seconds() {
  return std::uncaught_exceptions() > 0 ? std::min(1.0, comm_timeout()) : comm_timeout();
}

// Pauses between polls of device work. A host wait usually spans a whole GPU step (the
// decode step's token read-back waits for every layer), so the poll must not add latency
// to it: for the first kSpin the host polls back to back, yielding the core between polls
// (CUDA's own default wait spins too; the yield lets ranks that share a core progress).
// Past that the wait is long (prefill, a slow peer): it sleeps, at most 1/100 of the time
// already waited and at most kMaxSleep, so the added latency stays under 1%.
class Backoff {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kSpin{100};
  static constexpr std::chrono::microseconds kMaxSleep{1000};
  void pause() {
    const Clock::duration waited = Clock::now() - start_;
    if (waited < kSpin) {
      std::this_thread::yield();
      return;
    }
    const auto sleep = std::chrono::duration_cast<std::chrono::microseconds>(waited / 100);
    std::this_thread::sleep_for(sleep < kMaxSleep ? sleep : kMaxSleep);
  }

 private:
  Clock::time_point start_ = Clock::now();
};

// Polls `done` (true once the device work has finished; it throws on a device error)
// until it says so. After `deadline` passes, marks the device stuck and throws the
// timeout Error naming `what`. The first poll reads no clock: a finished wait costs one
// query.
template <class Done>
void wait(std::string_view what, const Deadline& deadline, Done&& done) {
  if (done()) return;
  Backoff backoff;
  while (!done()) {
    if (deadline.passed()) {
      stuck().store(true);
      throw Error(timeout_message(what, deadline.seconds()));
    }
    backoff.pause();
  }
}

// As above with a deadline of comm_timeout() from the first unsuccessful poll.
template <class Done>
void wait(std::string_view what, Done&& done) {
  if (done()) return;  // before reading the timeout and the clock
  wait(what, Deadline(), std::forward<Done>(done));
}

}  // namespace ringinfer::device_wait
