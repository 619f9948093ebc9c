#pragma once
// Deadlines of host waits for other ranks: a communicator's collective, a device wait
// behind one (device_wait.h), a supervised child process (shard_isolation). They share
// --comm-timeout (comm_timeout(), ringinfer/comm.h) and the way a message prints seconds.
#include <chrono>
#include <cstdio>
#include <string>

#include "ringinfer/comm.h"  // comm_timeout

namespace ringinfer {

// "5", "0.25", "1e+09": seconds as the user wrote them, for messages.
inline std::string format_seconds(double seconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", seconds);
  return text;
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
  Clock::time_point end() const { return end_; }

 private:
  double seconds_;
  Clock::time_point end_;
};

}  // namespace ringinfer
