// The process-wide communication timeout (comm.h) and its --comm-timeout option: what
// is accepted, what is refused and with which message. (The timeout firing is tested
// under mpirun: tests/mpi/mpi_comm.cpp, tests/e2e/rank_failure.sh.)
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
