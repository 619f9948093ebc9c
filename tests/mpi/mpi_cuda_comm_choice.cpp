// RINGINFER_CUDA_COMM (comm/cuda_comm_choice.h) under mpirun -np 1..4: what the parser
// accepts and refuses, and that agreed_cuda_comm makes every rank return the same choice
// or every rank throw, when one rank's value differs (set with setenv before the call).
// After each refusal the ranks must still be in step: the next collective completes.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdlib>
#include <functional>
#include <optional>
#include <string>

#include "comm/cuda_comm_choice.h"
#include "ringinfer/comm.h"
#include "ringinfer/error.h"
#include "gtest_helpers.h"

namespace ringinfer {
namespace {

constexpr char kVar[] = "RINGINFER_CUDA_COMM";

using test::error_of;

// Sets this rank's RINGINFER_CUDA_COMM (nullopt: unset); restores the variable and the
// timeout afterwards. A short timeout turns a rank left behind into an Error, not a hang.
class CudaCommChoiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const char* v = std::getenv(kVar)) saved_ = std::string(v);
    saved_timeout_ = comm_timeout();
    set_comm_timeout(30);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  void TearDown() override {
    set(saved_);
    set_comm_timeout(saved_timeout_);
  }
  static void set(const std::optional<std::string>& value) {
    if (value) setenv(kVar, value->c_str(), 1);
    else unsetenv(kVar);
  }
  bool last() const { return rank_ == size_ - 1; }
  // The ranks are still in step: a reduction every rank joins gives the exact sum.
  void expect_in_step(Comm& comm) {
    const int64_t mine = rank_ + 1;
    int64_t sum = 0;
    comm.all_reduce(&mine, &sum, 1, CommDtype::int64, ReduceOp::sum, Stream{});
    EXPECT_EQ(sum, int64_t(size_) * (size_ + 1) / 2);
  }

  std::optional<std::string> saved_;
  double saved_timeout_ = 0;
  int rank_ = 0, size_ = 1;
};

TEST_F(CudaCommChoiceTest, Parse) {
  EXPECT_EQ(parse_cuda_comm(nullptr), CudaCommChoice::unset);
  EXPECT_EQ(parse_cuda_comm(""), CudaCommChoice::unset);
  EXPECT_EQ(parse_cuda_comm("nccl"), CudaCommChoice::nccl);
  EXPECT_EQ(parse_cuda_comm("mpi"), CudaCommChoice::staged_mpi);
  EXPECT_EQ(error_of([] { parse_cuda_comm("NCCL"); }),
            "RINGINFER_CUDA_COMM=NCCL: unknown communicator (use nccl or mpi)");
  EXPECT_EQ(error_of([] { parse_cuda_comm("staged"); }),
            "RINGINFER_CUDA_COMM=staged: unknown communicator (use nccl or mpi)");
  EXPECT_EQ(error_of([] { parse_cuda_comm("mpi "); }),
            "RINGINFER_CUDA_COMM=mpi : unknown communicator (use nccl or mpi)");
  EXPECT_STREQ(to_string(CudaCommChoice::unset), "unset");
  EXPECT_STREQ(to_string(CudaCommChoice::nccl), "nccl");
  EXPECT_STREQ(to_string(CudaCommChoice::staged_mpi), "mpi");
}

TEST_F(CudaCommChoiceTest, FromEnvironment) {
  set(std::nullopt);
  EXPECT_EQ(cuda_comm_from_env(), CudaCommChoice::unset);
  set("");
  EXPECT_EQ(cuda_comm_from_env(), CudaCommChoice::unset);
  set("mpi");
  EXPECT_EQ(cuda_comm_from_env(), CudaCommChoice::staged_mpi);
  set("nccl");
  EXPECT_EQ(cuda_comm_from_env(), CudaCommChoice::nccl);
  set("gloo");
  EXPECT_EQ(error_of([] { cuda_comm_from_env(); }), "RINGINFER_CUDA_COMM=gloo: unknown communicator (use nccl or mpi)");
}

TEST_F(CudaCommChoiceTest, SameValueOnEveryRank) {
  MpiComm world(MPI_COMM_WORLD);
  set("mpi");
  EXPECT_EQ(agreed_cuda_comm(world), CudaCommChoice::staged_mpi);
  set("nccl");
  EXPECT_EQ(agreed_cuda_comm(world, CudaCommChoice::staged_mpi), CudaCommChoice::nccl) << "a named value wins";
  set(std::nullopt);
  EXPECT_EQ(agreed_cuda_comm(world), CudaCommChoice::unset);
  EXPECT_EQ(agreed_cuda_comm(world, CudaCommChoice::nccl), CudaCommChoice::nccl);
  set("");
  EXPECT_EQ(agreed_cuda_comm(world, CudaCommChoice::staged_mpi), CudaCommChoice::staged_mpi);
  expect_in_step(world);
}

// The last rank names nccl, the others mpi: at np 1 that is every rank (nccl is returned),
// from np 2 every rank refuses.
TEST_F(CudaCommChoiceTest, OneRankDiffers) {
  MpiComm world(MPI_COMM_WORLD);
  set(last() ? "nccl" : "mpi");
  if (size_ == 1) {
    EXPECT_EQ(agreed_cuda_comm(world), CudaCommChoice::nccl);
  } else {
    EXPECT_EQ(error_of([&] { agreed_cuda_comm(world); }),
              "RINGINFER_CUDA_COMM differs between ranks (pass it to every rank: mpirun -x RINGINFER_CUDA_COMM)");
  }
  expect_in_step(world);
}

// The last rank was not given the variable (mpirun without -x): it differs from named
// peers, unless its default is what they named.
TEST_F(CudaCommChoiceTest, OneRankUnset) {
  MpiComm world(MPI_COMM_WORLD);
  if (last()) set(std::nullopt);
  else set("mpi");
  if (size_ == 1) {
    EXPECT_EQ(agreed_cuda_comm(world), CudaCommChoice::unset);
  } else {
    EXPECT_EQ(error_of([&] { agreed_cuda_comm(world); }),
              "RINGINFER_CUDA_COMM differs between ranks (pass it to every rank: mpirun -x RINGINFER_CUDA_COMM)");
  }
  EXPECT_EQ(agreed_cuda_comm(world, CudaCommChoice::staged_mpi), CudaCommChoice::staged_mpi);
  if (size_ > 1) {
    EXPECT_EQ(error_of([&] { agreed_cuda_comm(world, CudaCommChoice::nccl); }),
              "RINGINFER_CUDA_COMM differs between ranks (pass it to every rank: mpirun -x RINGINFER_CUDA_COMM)");
  }
  expect_in_step(world);
}

// The last rank has an unknown value: it reports its own value, the others that a peer
// has one; no rank returns a choice.
TEST_F(CudaCommChoiceTest, UnknownValueOnOneRank) {
  MpiComm world(MPI_COMM_WORLD);
  set(last() ? "nvlink" : "nccl");
  const std::string error = error_of([&] { agreed_cuda_comm(world, CudaCommChoice::nccl); });
  if (last()) {
    EXPECT_EQ(error, "RINGINFER_CUDA_COMM=nvlink: unknown communicator (use nccl or mpi)");
  } else {
    EXPECT_EQ(error, "RINGINFER_CUDA_COMM: another rank has an unknown value (use nccl or mpi)");
  }
  expect_in_step(world);
  set("nccl");
  EXPECT_EQ(agreed_cuda_comm(world), CudaCommChoice::nccl) << "the next call agrees again";
}

// A disagreement among ranks 1.. (rank 0 agrees with one side) is still seen by all.
TEST_F(CudaCommChoiceTest, DisagreementAwayFromRankZero) {
  MpiComm world(MPI_COMM_WORLD);
  set(rank_ == 0 || rank_ % 2 == 1 ? "mpi" : "nccl");  // np 3, 4: rank 2 differs
  const std::string error = error_of([&] { agreed_cuda_comm(world); });
  if (size_ < 3) {
    EXPECT_EQ(error, "") << "no error expected";
  } else {
    EXPECT_EQ(error, "RINGINFER_CUDA_COMM differs between ranks (pass it to every rank: mpirun -x RINGINFER_CUDA_COMM)");
  }
  expect_in_step(world);
}

}  // namespace
}  // namespace ringinfer
