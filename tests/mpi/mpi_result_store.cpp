// The job's fingerprint and --output check under mpirun -np 1..4: world rank 0 reads the
// files and every rank gets its answer (or its Error), so ranks can never disagree about
// which journals are reusable, and a large input is not read once per rank.
#include <gtest/gtest.h>
#include <mpi.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cli/output_path.h"
#include "cli/result_store.h"
#include "ringinfer/comm.h"
#include "ringinfer/error.h"
#include "test_paths.h"

namespace ringinfer::cli {
namespace {

namespace fs = std::filesystem;

// Each rank's own folder, with inputs whose content depends on the rank: only rank 0's
// may show up in the agreed fingerprint.
struct RankFiles {
  explicit RankFiles(int rank) : dir("mpi-fp") {
    std::ofstream(dir.file("config.json")) << "{\"rank\": " << rank << "}";
    std::ofstream(dir.file("in.h5")) << "tokens of rank " << rank;
    config.command = "score";
    config.model = dir.file("config.json");
    config.inputs = {dir.file("in.h5")};
    config.output = dir.file("out.h5");
  }
  test::TempDir dir;
  RunConfig config;
};

std::string broadcast_string(Comm& comm, std::string s) {
  int64_t n = static_cast<int64_t>(s.size());
  comm.broadcast(&n, 1, CommDtype::int64, 0, Stream{});
  s.resize(static_cast<size_t>(n));
  comm.broadcast(s.data(), s.size(), CommDtype::uint8, 0, Stream{});
  return s;
}

TEST(MpiResultStore, FingerprintIsRankZeros) {
  MpiComm world(MPI_COMM_WORLD);
  RankFiles files(world.rank());
  const std::string local = job_fingerprint(files.config);
  const std::string agreed = job_fingerprint(files.config, world);
  EXPECT_EQ(agreed, broadcast_string(world, local));
  EXPECT_EQ(agreed.substr(0, agreed.find('\n')), "ringinfer journal v3");
  if (world.rank() != 0) {
    EXPECT_NE(agreed, local) << "rank " << world.rank() << " read its own files";
  }
}

TEST(MpiResultStore, RankZerosErrorIsThrownEverywhere) {
  MpiComm world(MPI_COMM_WORLD);
  RankFiles files(world.rank());
  // Only rank 0's input is missing: every rank fails, with rank 0's message.
  if (world.rank() == 0) fs::remove(files.dir.file("in.h5"));
  std::string message = "(no error)";
  try {
    job_fingerprint(files.config, world);
  } catch (const Error& e) {
    message = e.what();
  }
  const std::string expected = broadcast_string(world, files.dir.file("in.h5") + ": cannot read: ");
  EXPECT_EQ(message.substr(0, expected.size()), expected) << message;

  // --output checked on rank 0 only: its output is its own input.
  RunConfig c = files.config;
  if (world.rank() == 0) {
    std::ofstream(files.dir.file("in.h5")) << "x";
    c.output = c.inputs[0];
  }
  message = "(no error)";
  try {
    check_output_path(c, world);
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_EQ(message, broadcast_string(world, "--output " + files.dir.file("in.h5") + " is the input " +
                                                 files.dir.file("in.h5") + ": choose another output path"));
  // And a good output passes on every rank.
  EXPECT_NO_THROW(check_output_path(files.config, world));
}

}  // namespace
}  // namespace ringinfer::cli
