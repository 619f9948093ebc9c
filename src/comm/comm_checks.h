#pragma once
// Argument checks shared by MpiComm and NcclComm, so both reject the same calls with
// the same message; the deadline, backoff and message of their timeouts; and MpiComm's
// message tag and chunking rule (exposed for its test).
// Also the polled, bounded host wait for device work that CUDA code uses instead of
// cudaStreamSynchronize (wait_device).
#include <atomic>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <utility>

#include "ringinfer/comm.h"
#include "ringinfer/error.h"

namespace ringinfer::comm_detail {

inline void check_rank(const Comm& comm, const char* call, const char* role, int r) {
  RI_CHECK(r >= 0 && r < comm.size(), std::string(comm.name()) + " " + call + ": " + role + " " +
                                          std::to_string(r) + " is not a rank of this group of " +
                                          std::to_string(comm.size()));
}

inline void check_buffer(const Comm& comm, const char* call, const void* buf, size_t count) {
  RI_CHECK(buf != nullptr || count == 0,
           std::string(comm.name()) + " " + call + ": null buffer for " + std::to_string(count) + " elements");
}

inline void check_reducible(const Comm& comm, CommDtype dtype) {
  RI_CHECK(dtype == CommDtype::float32 || dtype == CommDtype::float64 || dtype == CommDtype::int32 ||
               dtype == CommDtype::int64,
           std::string(comm.name()) + " all_reduce: " + dtype_name(dtype) +
               " cannot be reduced (float32, float64, int32 and int64 can)");
}

// [a, a + a_bytes) and [b, b + b_bytes) must not overlap.
inline void check_disjoint(const Comm& comm, const char* call, const void* a, size_t a_bytes, const void* b,
                           size_t b_bytes) {
  const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  RI_CHECK(a_bytes == 0 || b_bytes == 0 || pa + a_bytes <= pb || pb + b_bytes <= pa,
           std::string(comm.name()) + " " + call + ": the send and receive buffers overlap");
}

// "5", "0.25", "1e+09": seconds as the user wrote them, for messages.
inline std::string format_seconds(double seconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", seconds);
  return text;
}

// The Error text of an operation that did not complete within the timeout.
inline std::string timeout_message(const Comm& comm, const char* call, double seconds) {
  return std::string(comm.name()) + " " + call + " over " + std::to_string(comm.size()) +
         " ranks did not complete within " + format_seconds(seconds) +
         " s (--comm-timeout): a rank has died or hangs";
}

// comm_timeout() seconds from construction (read once, so a wait has one deadline).
class Deadline {
 public:
  using Clock = std::chrono::steady_clock;
  Deadline() : Deadline(comm_timeout()) {}
  // A deadline of its own length (destructors that must not wait the full timeout).
  explicit Deadline(double seconds) : seconds_(seconds) {
    // Far-future timeouts saturate instead of overflowing the clock (30 years is forever).
    const double s = seconds_ < 1e9 ? seconds_ : 1e9;
    end_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  }
  bool passed() const { return Clock::now() >= end_; }
  double seconds() const { return seconds_; }

 private:
  double seconds_;
  Clock::time_point end_;
};

// Pauses between polls: spins briefly (a collective that is about to complete keeps its
// latency), then sleeps for doubling intervals up to half a millisecond, so a rank
// waiting for a slow or dead peer does not burn a core. A sleep is never longer than the
// time already waited, which bounds the added latency at about 2x a short wait.
class Backoff {
 public:
  void pause() {
    if (++polls_ <= kSpinPolls) return;
    if (sleep_us_ < kMaxSleepUs) sleep_us_ = sleep_us_ == 0 ? 1 : sleep_us_ * 2;
    std::this_thread::sleep_for(std::chrono::microseconds(sleep_us_));
  }

 private:
  static constexpr int kSpinPolls = 200;
  static constexpr int kMaxSleepUs = 512;
  int polls_ = 0;
  int sleep_us_ = 0;
};

// ---------------------------------------------------------------- host waits for device work
// Work queued on a CUDA stream after NCCL (or a staged copy behind it) never finishes if a
// peer rank died: cudaStreamSynchronize would block the host forever. CUDA code therefore
// polls (cudaStreamQuery / cudaEventQuery) through wait_device, which gives up after
// comm_timeout() seconds. Kept free of CUDA types so this header stays host-only.

// The Error text of a host wait for device work that did not finish in time, e.g.
// "cuda backend synchronize: the compute stream did not finish within 5 s
// (--comm-timeout): a peer rank may have died or its GPU hung".
inline std::string device_timeout_message(const std::string& what, double seconds) {
  return what + " did not finish within " + format_seconds(seconds) +
         " s (--comm-timeout): a peer rank may have died or its GPU hung";
}

// Set when a device wait timed out: some stream holds work that may never finish, and
// calls that wait for the whole device (cudaFree, cudaFreeHost, cublasDestroy) would hang
// while the Error unwinds. Destructors and buffer deleters of CUDA code leak instead of
// freeing while it is set (the job is ending; the NCCL communicator's destructor aborts
// the stuck kernels). CudaBackend::synchronize clears it once its streams have drained.
inline std::atomic<bool>& device_stuck() {
  static std::atomic<bool> stuck{false};
  return stuck;
}

// Pauses between polls of device work. A host wait usually spans a whole GPU step (the
// decode step's token read-back waits for every layer), so the poll must not add latency
// to it: for the first kSpin the host polls back to back, yielding the core between polls
// (CUDA's own default wait spins too; the yield lets ranks that share a core progress).
// Past that the wait is long (prefill, a slow peer): it sleeps, at most 1/100 of the time
// already waited and at most kMaxSleep, so the added latency stays under 1%.
class DeviceBackoff {
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
void wait_device(const std::string& what, const Deadline& deadline, Done&& done) {
  if (done()) return;
  DeviceBackoff backoff;
  while (!done()) {
    if (deadline.passed()) {
      device_stuck().store(true);
      throw Error(device_timeout_message(what, deadline.seconds()));
    }
    backoff.pause();
  }
}

template <class Done>
void wait_device(const std::string& what, Done&& done) {
  if (done()) return;  // before reading the timeout and the clock
  wait_device(what, Deadline(), std::forward<Done>(done));
}

// The tag of MpiComm's point-to-point messages. Its duplicate communicator carries only
// its own messages, so one tag is enough; MPI keeps messages between two ranks in order,
// which keeps the chunks of a transfer in order.
constexpr int kMpiTag = 0x52;

// Elements per MPI call: as many as fit in max_message_bytes, at least one, and never
// more than an MPI count (int) can say.
inline size_t chunk_elements(size_t elem_size, size_t max_message_bytes) {
  size_t n = max_message_bytes / elem_size;
  if (n < 1) n = 1;
  if (n > size_t(INT_MAX)) n = size_t(INT_MAX);
  return n;
}

// Number of MPI calls a transfer of `count` elements takes.
inline size_t chunk_count(size_t count, size_t elem_size, size_t max_message_bytes) {
  const size_t per = chunk_elements(elem_size, max_message_bytes);
  return (count + per - 1) / per;
}

}  // namespace ringinfer::comm_detail
