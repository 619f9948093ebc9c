// The process-wide communication timeout (comm.h) and its --comm-timeout option: what
// is accepted, what is refused and with which message. (The timeout firing is tested
// under mpirun: tests/mpi/mpi_comm.cpp, tests/e2e/rank_failure.sh.) Also the host-only
// part of the bounded wait for device work (runtime/device_wait.h), driven by a fake
// "done?" poll; its CUDA wrappers are tested on a GPU (tests/gpu/test_stream_watchdog.cu).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "cli/options.h"
#include "comm/comm_checks.h"
#include "ringinfer/comm.h"
#include "ringinfer/error.h"
#include "runtime/device_wait.h"

namespace ringinfer {
namespace {

struct RestoreTimeout {
  double saved = comm_timeout();
  ~RestoreTimeout() { set_comm_timeout(saved); }
};

std::string error_of(double seconds) {
  try {
    set_comm_timeout(seconds);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(CommTimeout, DefaultIsFiveMinutes) { EXPECT_EQ(comm_timeout(), 300.0); }

TEST(CommTimeout, SetAndRead) {
  RestoreTimeout restore;
  set_comm_timeout(2.5);
  EXPECT_EQ(comm_timeout(), 2.5);
  set_comm_timeout(1e-3);
  EXPECT_EQ(comm_timeout(), 1e-3);
}

TEST(CommTimeout, RejectsNonPositiveAndNonFinite) {
  RestoreTimeout restore;
  set_comm_timeout(7);
  EXPECT_EQ(error_of(0), "--comm-timeout must be a positive number of seconds, not 0");
  EXPECT_EQ(error_of(-3), "--comm-timeout must be a positive number of seconds, not -3");
  EXPECT_EQ(error_of(std::nan("")), "--comm-timeout must be a positive number of seconds, not nan");
  EXPECT_EQ(error_of(std::numeric_limits<double>::infinity()),
            "--comm-timeout must be a positive number of seconds, not inf");
  EXPECT_EQ(comm_timeout(), 7.0) << "a refused value must not replace the timeout";
}

TEST(CommTimeout, DeadlineFollowsTheTimeout) {
  RestoreTimeout restore;
  set_comm_timeout(1e300);  // saturates instead of overflowing the clock
  EXPECT_FALSE(comm_detail::Deadline().passed());
  set_comm_timeout(1e-6);
  const comm_detail::Deadline short_one;
  comm_detail::Backoff backoff;
  for (int i = 0; i < 1000 && !short_one.passed(); ++i) backoff.pause();
  EXPECT_TRUE(short_one.passed());
  EXPECT_EQ(short_one.seconds(), 1e-6);
}

// Records device_wait::destructor_seconds() as seen from a destructor.
struct DestructorSeconds {
  double& seen;
  ~DestructorSeconds() { seen = device_wait::destructor_seconds(); }
};

// Clears device_wait::stuck() after a test that sets it.
struct RestoreStuck {
  ~RestoreStuck() { device_wait::stuck().store(false); }
};

TEST(DeviceWait, ReturnsOnceDoneWithoutMarkingStuck) {
  RestoreStuck restore;
  device_wait::stuck().store(false);
  int polls = 0;
  device_wait::wait("unit: the fake stream", device_wait::Deadline(60), [&] { return ++polls == 5; });
  EXPECT_EQ(polls, 5) << "polled until done, and not after";
  polls = 0;
  device_wait::wait("unit: the fake stream", [&] { return ++polls == 1; });
  EXPECT_EQ(polls, 1) << "a finished wait costs one poll";
  EXPECT_FALSE(device_wait::stuck().load());
}

TEST(DeviceWait, TimesOutWithTheMessageAndMarksStuck) {
  RestoreStuck restore;
  device_wait::stuck().store(false);
  int polls = 0;
  std::string error = "no error";
  try {
    device_wait::wait("cuda backend synchronize: the compute stream", device_wait::Deadline(0.02), [&] {
      ++polls;
      return false;
    });
  } catch (const Error& e) {
    error = e.what();
  }
  EXPECT_EQ(error,
            "cuda backend synchronize: the compute stream did not finish within 0.02 s (--comm-timeout): a peer rank "
            "may have died or its GPU hung");
  EXPECT_GT(polls, 1);
  EXPECT_TRUE(device_wait::stuck().load());
}

TEST(DeviceWait, DefaultDeadlineIsTheCommTimeout) {
  RestoreTimeout restore_timeout;
  RestoreStuck restore;
  set_comm_timeout(0.01);
  std::string error = "no error";
  try {
    device_wait::wait("staged mpi barrier: the host -> device copies", [] { return false; });
  } catch (const Error& e) {
    error = e.what();
  }
  EXPECT_EQ(error,
            "staged mpi barrier: the host -> device copies did not finish within 0.01 s (--comm-timeout): a peer "
            "rank may have died or its GPU hung");
  set_comm_timeout(7);
  EXPECT_EQ(device_wait::destructor_seconds(), 7.0) << "no exception unwinding: the full timeout";
  double unwinding = 0;
  try {
    DestructorSeconds probe{unwinding};
    throw Error("unwind");
  } catch (const Error&) {
  }
  EXPECT_EQ(unwinding, 1.0) << "while an exception unwinds: at most 1 s";
}

// --comm-timeout on run and score: parsed, checked, printed by --print-config.
std::string parse_error(const std::vector<std::string>& args) {
  std::ostringstream out;
  try {
    cli::parse_options("score", args, out);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(CommTimeout, Option) {
  std::ostringstream out;
  const std::vector<std::string> base = {"-m", "model", "-i", "in.h5", "-o", "out.h5"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  auto config = cli::parse_options("score", with({"--comm-timeout", "4.5"}), out);
  ASSERT_TRUE(config.has_value());
  EXPECT_EQ(config->comm_timeout_s, 4.5);
  config = cli::parse_options("run", base, out);
  ASSERT_TRUE(config.has_value());
  EXPECT_EQ(config->comm_timeout_s, 300.0);
  EXPECT_NE(cli::format_config(*config).find("\ncomm-timeout = 300\n"), std::string::npos);
  EXPECT_EQ(parse_error(with({"--comm-timeout", "0"})), "ringinfer score: --comm-timeout must be a positive number of seconds");
  EXPECT_EQ(parse_error(with({"--comm-timeout=-1"})), "ringinfer score: --comm-timeout must be a positive number of seconds");
  EXPECT_EQ(parse_error(with({"--comm-timeout", "nan"})), "ringinfer score: --comm-timeout must be a positive number of seconds");
}

}  // namespace
}  // namespace ringinfer
