// check_shards_isolated under mpirun -np 1..4: rank 0 validates in a child process and
// every rank throws the same Error (or none), including while rank 0 waits on a child
// that hangs (the other ranks keep receiving heartbeats, not a comm timeout).
#include <gtest/gtest.h>
#include <mpi.h>

#include <filesystem>
#include <string>
#include <vector>

#include "ringinfer/comm.h"
#include "ringinfer/error.h"
#include "ringinfer/shard_isolation.h"
#include "mpi_world.h"
#include "shard_fixture.h"
#include "test_paths.h"

namespace fs = std::filesystem;

namespace ringinfer {
namespace {

using test::world_rank;

// What each rank got: "" or the Error's message; gathered so rank 0 can compare.
std::string outcome(const std::vector<std::string>& paths, int64_t vocab, Comm& world, const ShardCheckOptions& o) {
  try {
    check_shards_isolated(paths, vocab, world, o);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_same_everywhere(const std::string& mine, const std::string& expected) {
  EXPECT_EQ(mine, expected) << "on rank " << world_rank();
}

class MpiShardIsolation : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::shared_temp_dir("ri-mpi-iso");
    good_ = dir_ + "/good.h5";
    hang_ = dir_ + "/hang.h5";
    if (world_rank() == 0) {
      test::write_valid_shard(good_, test::random_shard_data({7, 1, 40}, 1000, 3, "g"));
      test::write_valid_shard(hang_, test::random_shard_data({2}, 1000, 4, "h"));
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
  void TearDown() override { test::remove_shared_temp_dir(dir_); }
  std::string dir_, good_, hang_;
};

TEST_F(MpiShardIsolation, GoodShardPassesOnEveryRank) {
  MpiComm world(MPI_COMM_WORLD);
  ShardCheckOptions o;
  o.exe = test::ringinfer_binary();
  expect_same_everywhere(outcome({good_}, 1000, world, o), "");
}

TEST_F(MpiShardIsolation, CrashingShardIsTheSameErrorOnEveryRank) {
  MpiComm world(MPI_COMM_WORLD);
  ShardCheckOptions o;
  o.exe = test::ringinfer_binary();
  const std::string crash =
      test::source_dir() + "/tests/fuzz/libhdf5-crashes/crash-a3d0fff0ad61428cae04276719a299ce2d52b4a7";
  const std::string msg = outcome({good_, crash}, 1000, world, o);
  EXPECT_EQ(msg.rfind(crash + ": ", 0), 0u) << msg;
  // Every rank has rank 0's text, byte for byte.
  int len = static_cast<int>(msg.size());
  std::string root = msg;
  MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
  root.resize(static_cast<size_t>(len));
  MPI_Bcast(root.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD);
  expect_same_everywhere(msg, root);
}

// The child hangs for 3 s of stall while the comm timeout is 1 s: the other ranks must
// wait on heartbeats, then all get the hang message (not "did not complete within 1 s").
TEST_F(MpiShardIsolation, HangOutlastsTheCommTimeoutThroughHeartbeats) {
  const double saved = comm_timeout();
  set_comm_timeout(1.0);
  {
    MpiComm world(MPI_COMM_WORLD);
    ShardCheckOptions o;
    o.exe = (fs::read_symlink("/proc/self/exe").parent_path() / "shard_check_stub").string();
    o.stall_timeout_s = 3.0;
    o.tick_interval_s = 0.2;
    const std::string msg = outcome({good_, hang_}, -1, world, o);
    expect_same_everywhere(msg, hang_ +
                                    ": validating this shard made no progress for 3 s (libhdf5 hangs on it, or "
                                    "the file system stalls) and was stopped; if the file is corrupt, re-create it "
                                    "with `ringinfer prep`");
  }
  set_comm_timeout(saved);
}

}  // namespace
}  // namespace ringinfer
