#pragma once
// Argument checks shared by every communicator (MpiComm, NcclComm, staged MPI), so all reject the same calls with
// the same message; the backoff and message of their timeouts (the deadline is
// runtime/deadline.h, shared with the host waits for device work); and MpiComm's
// message tag and chunking rule (exposed for its test).
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>

#include "ringinfer/comm.h"
#include "ringinfer/error.h"
#include "runtime/deadline.h"

namespace ringinfer::comm_detail {

using ringinfer::Deadline;        // runtime/deadline.h
using ringinfer::format_seconds;

namespace checks {

inline void rank_in_group(const Comm& comm, const char* call, const char* role, int r) {
  RI_CHECK(r >= 0 && r < comm.size(), std::string(comm.name()) + " " + call + ": " + role + " " +
                                          std::to_string(r) + " is not a rank of this group of " +
                                          std::to_string(comm.size()));
}

inline void buffer(const Comm& comm, const char* call, const void* buf, size_t count) {
  RI_CHECK(buf != nullptr || count == 0,
           std::string(comm.name()) + " " + call + ": null buffer for " + std::to_string(count) + " elements");
}

// [a, a + a_bytes) and [b, b + b_bytes) must not overlap.
inline void disjoint(const Comm& comm, const char* call, const void* a, size_t a_bytes, const void* b,
                     size_t b_bytes) {
  const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  RI_CHECK(a_bytes == 0 || b_bytes == 0 || pa + a_bytes <= pb || pb + b_bytes <= pa,
           std::string(comm.name()) + " " + call + ": the send and receive buffers overlap");
}

}  // namespace checks

// The argument checks of each Comm operation (ringinfer/comm.h states the contracts).
inline void check_send_recv(const Comm& comm, const void* send_buf, int dest, const void* recv_buf, int source,
                            size_t count, CommDtype dtype) {
  checks::rank_in_group(comm, "send_recv", "dest", dest);
  checks::rank_in_group(comm, "send_recv", "source", source);
  checks::buffer(comm, "send_recv", send_buf, count);
  checks::buffer(comm, "send_recv", recv_buf, count);
  const size_t bytes = count * dtype_size(dtype);
  checks::disjoint(comm, "send_recv", send_buf, bytes, recv_buf, bytes);
}

// True when the call is in place: send_buf is this rank's block of recv_buf.
inline bool check_all_gather(const Comm& comm, const void* send_buf, const void* recv_buf, size_t count,
                             CommDtype dtype) {
  checks::buffer(comm, "all_gather", send_buf, count);
  checks::buffer(comm, "all_gather", recv_buf, count);
  const size_t bytes = count * dtype_size(dtype);
  const bool in_place = send_buf == static_cast<const char*>(recv_buf) + size_t(comm.rank()) * bytes;
  if (!in_place) checks::disjoint(comm, "all_gather", send_buf, bytes, recv_buf, bytes * size_t(comm.size()));
  return in_place;
}

// True when the call is in place (send_buf == recv_buf).
inline bool check_all_reduce(const Comm& comm, const void* send_buf, const void* recv_buf, size_t count,
                             CommDtype dtype) {
  RI_CHECK(dtype == CommDtype::float32 || dtype == CommDtype::float64 || dtype == CommDtype::int32 ||
               dtype == CommDtype::int64,
           std::string(comm.name()) + " all_reduce: " + dtype_name(dtype) +
               " cannot be reduced (float32, float64, int32 and int64 can)");
  checks::buffer(comm, "all_reduce", send_buf, count);
  checks::buffer(comm, "all_reduce", recv_buf, count);
  const bool in_place = send_buf == recv_buf;
  const size_t bytes = count * dtype_size(dtype);
  if (!in_place) checks::disjoint(comm, "all_reduce", send_buf, bytes, recv_buf, bytes);
  return in_place;
}

inline void check_broadcast(const Comm& comm, const void* buf, size_t count, int root) {
  checks::rank_in_group(comm, "broadcast", "root", root);
  checks::buffer(comm, "broadcast", buf, count);
}

// The Error text of an operation that did not complete within the timeout.
inline std::string timeout_message(const Comm& comm, const char* call, double seconds) {
  return std::string(comm.name()) + " " + call + " over " + std::to_string(comm.size()) +
         " ranks did not complete within " + format_seconds(seconds) +
         " s (--comm-timeout): a rank has died or hangs";
}

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
