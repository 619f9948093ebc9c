// NcclComm under mpirun -np 2, one GPU per rank: the exactness checks of
// tests/mpi/mpi_comm.cpp on device buffers. The ring runs on its own stream and the
// "compute" stream waits on the pending handle, as the engine does. Exits 77 (skipped)
// when this node has fewer GPUs than ranks.
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "ringinfer/comm.h"
#include "ringinfer/cuda_check.h"
#include "ringinfer/error.h"
#include "ringinfer/runtime.h"
#include "comm_test_data.h"
#include "device_comm_buffers.h"
#include "gpu_mpi_env.h"

namespace ringinfer {
namespace {

using namespace test;  // device_comm_buffers.h, comm_test_data.h, gpu_mpi_env.h

// ---------------------------------------------------------------- set-up

struct Shared {
  std::unique_ptr<Comm> comm;
  uint64_t seed = 0;
};
Shared g;

class NcclEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    const RankInfo info = query_rank_info();
    const int gpus = visible_gpu_count();
    // Every rank must take the same exit, or the others hang in the next collective.
    test::skip_every_rank_unless(gpus >= info.local_size, std::to_string(info.local_size) +
                                                              " ranks on a node with " + std::to_string(gpus) +
                                                              " visible GPUs (NCCL needs a GPU per rank)");
    bind_gpu(info);
    g.comm = make_nccl_comm(MPI_COMM_WORLD);
    if (info.world_rank == 0) std::printf("communicator: nccl, %d ranks, %d visible GPU(s)\n", info.world_size, gpus);
    test::streams().create();
    g.seed = test::shared_seed();  // collective: every rank gets here
  }
  void TearDown() override {
    g.comm.reset();
    test::streams().destroy();
  }
};
const auto* const kEnvironment = ::testing::AddGlobalTestEnvironment(new NcclEnvironment);


template <typename T>
void check_all_reduce(CommDtype dtype, ReduceOp op, size_t count, bool in_place) {
  Comm& comm = *g.comm;
  std::vector<T> mine(count);
  for (size_t i = 0; i < count; ++i) mine[i] = value_of<T>(dtype, numerator(dtype, comm.rank(), i));
  DeviceBuffer send(count * sizeof(T)), recv(count * sizeof(T));
  send.upload(mine);
  recv.upload(mine);
  comm.all_reduce(in_place ? recv.ptr : send.ptr, recv.ptr, count, dtype, op, comm_stream());
  comm_to_compute();
  const std::vector<T> got = recv.template download<T>(count);
  for (size_t i = 0; i < count; ++i)
    ASSERT_EQ(got[i], value_of<T>(dtype, test::reduced_numerator(dtype, op, comm.size(), i)))
        << dtype_name(dtype) << (op == ReduceOp::sum ? " sum" : " max") << " element " << i << " seed " << g.seed;
}

// ---------------------------------------------------------------- tests

TEST(NcclComm, RankAndSize) {
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  EXPECT_EQ(g.comm->rank(), rank);
  EXPECT_EQ(g.comm->size(), size);
  EXPECT_STREQ(g.comm->name(), "nccl");
}

TEST(NcclComm, RingExchangeDeliversThePreviousRanksBuffer) {
  Comm& comm = *g.comm;
  const int n = comm.size(), r = comm.rank();
  for (size_t bytes : {size_t(1), size_t(4099), size_t(64) << 20}) {
    DeviceBuffer send(bytes), recv(bytes);
    send.upload(payload(r, bytes, bytes));
    auto pending = comm.ring_exchange(send.ptr, recv.ptr, bytes, CommDtype::uint8, comm_stream());
    pending->wait(compute_stream());
    EXPECT_EQ(recv.download<uint8_t>(bytes), payload((r + n - 1) % n, bytes, bytes)) << bytes << " bytes";
    EXPECT_TRUE(pending->test());
    EXPECT_EQ(send.download<uint8_t>(bytes), payload(r, bytes, bytes)) << "the send buffer changed";
  }
}

// The engine's pattern with double buffers: post, work on the block in hand, wait.
TEST(NcclComm, RingRoundsWithDoubleBuffers) {
  Comm& comm = *g.comm;
  const int n = comm.size(), r = comm.rank();
  const size_t count = (size_t(3) << 20) + 17, bytes = count * sizeof(float);
  for (bool poll : {false, true})
    for (uint64_t round = 0; round < 3; ++round) {
      DeviceBuffer a(bytes), b(bytes);
      DeviceBuffer* buf[2] = {&a, &b};
      a.upload(payload(r, bytes, 100 + round));
      std::vector<int> seen(n, 0);
      int cur = 0;
      for (int step = 0; step < n; ++step) {
        std::unique_ptr<PendingComm> pending;
        if (step + 1 < n)
          pending = comm.ring_exchange(buf[cur]->ptr, buf[1 - cur]->ptr, count, CommDtype::float32, comm_stream());
        const int origin = (r - step + n) % n;
        ASSERT_EQ(buf[cur]->download<uint8_t>(bytes), payload(origin, bytes, 100 + round))
            << "step " << step << " round " << round << " seed " << g.seed;
        ++seen[origin];
        if (pending) {
          if (poll)
            while (!pending->test()) {
            }
          pending->wait(compute_stream());
        }
        cur = 1 - cur;
      }
      for (int s = 0; s < n; ++s) EXPECT_EQ(seen[s], 1) << "block of rank " << s;
    }
}

TEST(NcclComm, DroppedHandleStillCompletes) {
  Comm& comm = *g.comm;
  const int n = comm.size(), r = comm.rank();
  const size_t bytes = size_t(8) << 20;
  DeviceBuffer send(bytes), recv(bytes);
  send.upload(payload(r, bytes, 60));
  { auto pending = comm.ring_exchange(send.ptr, recv.ptr, bytes, CommDtype::uint8, comm_stream()); }
  EXPECT_EQ(recv.download<uint8_t>(bytes), payload((r + n - 1) % n, bytes, 60));
}

TEST(NcclComm, AllGather) {
  Comm& comm = *g.comm;
  const int n = comm.size(), r = comm.rank();
  for (size_t bytes : {size_t(1), size_t(333), size_t(1) << 22})
    for (bool in_place : {false, true}) {
      DeviceBuffer mine(bytes), all(bytes * n);
      mine.upload(payload(r, bytes, 7));
      all.upload(payload(r, bytes, 7), r * bytes);
      comm.all_gather(in_place ? all.at(r * bytes) : mine.ptr, all.ptr, bytes, CommDtype::uint8, comm_stream());
      comm_to_compute();
      for (int s = 0; s < n; ++s)
        EXPECT_EQ(all.download<uint8_t>(bytes, s * bytes), payload(s, bytes, 7))
            << "block of rank " << s << ", " << bytes << " bytes, in place " << in_place;
    }
}

TEST(NcclComm, AllReduceEveryDtypeSumAndMax) {
  for (size_t count : {size_t(1), size_t(100003)})
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::max})
      for (bool in_place : {false, true}) {
        check_all_reduce<float>(CommDtype::float32, op, count, in_place);
        check_all_reduce<double>(CommDtype::float64, op, count, in_place);
        check_all_reduce<int32_t>(CommDtype::int32, op, count, in_place);
        check_all_reduce<int64_t>(CommDtype::int64, op, count, in_place);
      }
}

TEST(NcclComm, BroadcastFromEveryRoot) {
  Comm& comm = *g.comm;
  for (size_t count : {size_t(1), size_t(50001)})
    for (int root = 0; root < comm.size(); ++root) {
      const size_t bytes = count * sizeof(int64_t);
      DeviceBuffer buf(bytes);
      if (comm.rank() == root) buf.upload(payload(root, bytes, 9));
      comm.broadcast(buf.ptr, count, CommDtype::int64, root, comm_stream());
      comm_to_compute();
      EXPECT_EQ(buf.download<uint8_t>(bytes), payload(root, bytes, 9)) << "root " << root;
    }
}

TEST(NcclComm, BarrierReturns) {
  g.comm->barrier(comm_stream());
  g.comm->barrier(Stream{});
}

TEST(NcclComm, RejectsBadCalls) {
  Comm& comm = *g.comm;
  const int n = comm.size();
  DeviceBuffer a(64), b(64);
  try {
    comm.all_reduce(a.ptr, b.ptr, 8, CommDtype::bfloat16, ReduceOp::sum, comm_stream());
    ADD_FAILURE() << "bfloat16 all_reduce accepted";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "nccl all_reduce: bfloat16 cannot be reduced (float32, float64, int32 and int64 can)");
  }
  try {
    comm.broadcast(a.ptr, 4, CommDtype::float32, n, comm_stream());
    ADD_FAILURE() << "root out of range accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "nccl broadcast: root " + std::to_string(n) + " is not a rank of this group of " + std::to_string(n));
  }
  try {
    comm.ring_exchange(a.ptr, a.at(8), 4, CommDtype::float32, comm_stream());
    ADD_FAILURE() << "overlapping buffers accepted";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "nccl send_recv: the send and receive buffers overlap");
  }
  comm.barrier(comm_stream());
}

}  // namespace
}  // namespace ringinfer
