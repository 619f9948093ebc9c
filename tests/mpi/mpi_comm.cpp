// MpiComm under mpirun -np 1..4: every transfer is checked byte for byte against what
// the sending rank's generator made, and every reduction against a result computed
// here independently (exactly: the float inputs are dyadic, so any summation order
// gives the same bits).
#include <gtest/gtest.h>
#include <mpi.h>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "comm/comm_checks.h"
#include "ringinfer/comm.h"
#include "ringinfer/error.h"
#include "comm_test_data.h"
#include "gtest_helpers.h"

namespace ringinfer {
namespace {

// Every rank regenerates what any rank sent (comm_test_data.h); failures print the seed.
using test::numerator;
using test::payload;
using test::shared_seed;
using test::value_of;

template <typename T>
void check_all_reduce(Comm& comm, CommDtype dtype, ReduceOp op, size_t count, bool in_place) {
  std::vector<T> send(count), recv(count);
  for (size_t i = 0; i < count; ++i) send[i] = value_of<T>(dtype, numerator(dtype, comm.rank(), i));
  if (in_place) {
    recv = send;
    comm.all_reduce(recv.data(), recv.data(), count, dtype, op, Stream{});
  } else {
    comm.all_reduce(send.data(), recv.data(), count, dtype, op, Stream{});
  }
  for (size_t i = 0; i < count; ++i)
    ASSERT_EQ(recv[i], value_of<T>(dtype, test::reduced_numerator(dtype, op, comm.size(), i)))
        << dtype_name(dtype) << (op == ReduceOp::sum ? " sum" : " max") << " element " << i << " seed "
        << shared_seed();
}

void check_all_reduce_every_dtype(Comm& comm, size_t count) {
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::max})
    for (bool in_place : {false, true}) {
      check_all_reduce<float>(comm, CommDtype::float32, op, count, in_place);
      check_all_reduce<double>(comm, CommDtype::float64, op, count, in_place);
      check_all_reduce<int32_t>(comm, CommDtype::int32, op, count, in_place);
      check_all_reduce<int64_t>(comm, CommDtype::int64, op, count, in_place);
    }
}

void check_ring_once(Comm& comm, size_t bytes, uint64_t salt) {
  const int n = comm.size(), r = comm.rank();
  std::vector<uint8_t> send = payload(r, bytes, salt), recv(bytes, 0xA5);
  auto pending = comm.ring_exchange(send.data(), recv.data(), bytes, CommDtype::uint8, Stream{});
  pending->wait(Stream{});
  EXPECT_TRUE(pending->test());
  EXPECT_EQ(recv, payload((r + n - 1) % n, bytes, salt)) << bytes << " bytes, seed " << shared_seed();
  EXPECT_EQ(send, payload(r, bytes, salt)) << "the send buffer changed";
}

// The engine's pattern: post the next block's exchange, work on the block in hand,
// wait, swap. After size-1 steps each rank has held every rank's block exactly once.
void check_ring_rounds(Comm& comm, size_t count, bool poll) {
  const int n = comm.size(), r = comm.rank();
  const size_t bytes = count * sizeof(float);
  for (uint64_t round = 0; round < 3; ++round) {
    std::vector<uint8_t> buf[2] = {payload(r, bytes, 100 + round), std::vector<uint8_t>(bytes)};
    std::vector<int> seen(n, 0);
    int cur = 0;
    for (int step = 0; step < n; ++step) {
      std::unique_ptr<PendingComm> pending;
      if (step + 1 < n)
        pending = comm.ring_exchange(buf[cur].data(), buf[1 - cur].data(), count, CommDtype::float32, Stream{});
      // "Compute" on the block in hand: whose is it?
      const int origin = (r - step + n) % n;
      ASSERT_EQ(buf[cur], payload(origin, bytes, 100 + round))
          << "step " << step << " round " << round << " seed " << shared_seed();
      ++seen[origin];
      if (pending) {
        if (poll)
          while (!pending->test()) {
          }
        else
          pending->wait(Stream{});
      }
      cur = 1 - cur;
    }
    for (int s = 0; s < n; ++s) EXPECT_EQ(seen[s], 1) << "block of rank " << s;
  }
}

void check_all_gather(Comm& comm, size_t bytes, bool in_place) {
  const int n = comm.size(), r = comm.rank();
  std::vector<uint8_t> mine = payload(r, bytes, 7), all(bytes * n, 0x5A);
  if (in_place) {
    std::copy(mine.begin(), mine.end(), all.begin() + r * bytes);
    comm.all_gather(all.data() + r * bytes, all.data(), bytes, CommDtype::uint8, Stream{});
  } else {
    comm.all_gather(mine.data(), all.data(), bytes, CommDtype::uint8, Stream{});
  }
  for (int s = 0; s < n; ++s) {
    const auto expect = payload(s, bytes, 7);
    EXPECT_TRUE(std::equal(expect.begin(), expect.end(), all.begin() + s * bytes))
        << "block of rank " << s << ", " << bytes << " bytes, seed " << shared_seed();
  }
}

void check_broadcast_every_root(Comm& comm, size_t count) {
  for (int root = 0; root < comm.size(); ++root) {
    const size_t bytes = count * sizeof(int64_t);
    std::vector<uint8_t> buf = comm.rank() == root ? payload(root, bytes, 9) : std::vector<uint8_t>(bytes, 0x3C);
    comm.broadcast(buf.data(), count, CommDtype::int64, root, Stream{});
    EXPECT_EQ(buf, payload(root, bytes, 9)) << "root " << root << " seed " << shared_seed();
  }
}

template <typename F>
void expect_error(F&& f, const std::string& message) {
  try {
    f();
    ADD_FAILURE() << "no error; expected: " << message;
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), message);
  }
}

// ---------------------------------------------------------------- tests

TEST(MpiComm, RankAndSize) {
  MpiComm comm(MPI_COMM_WORLD);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  EXPECT_EQ(comm.rank(), rank);
  EXPECT_EQ(comm.size(), size);
  EXPECT_NE(comm.mpi_comm(), MPI_COMM_WORLD);  // a private duplicate
}

TEST(MpiComm, RingExchangeDeliversThePreviousRanksBuffer) {
  MpiComm comm(MPI_COMM_WORLD);
  for (size_t bytes : {size_t(1), size_t(7), size_t(4099), size_t(1) << 20}) check_ring_once(comm, bytes, bytes);
}

TEST(MpiComm, RingRoundsWithDoubleBuffersWait) {
  MpiComm comm(MPI_COMM_WORLD);
  check_ring_rounds(comm, 1531, /*poll=*/false);
}

TEST(MpiComm, RingRoundsWithDoubleBuffersPolling) {
  MpiComm comm(MPI_COMM_WORLD);
  check_ring_rounds(comm, 300000, /*poll=*/true);  // 1.2 MB: beyond MPI's eager limit
}

TEST(MpiComm, SendRecvToAnyPeer) {
  MpiComm comm(MPI_COMM_WORLD);
  const int n = comm.size(), r = comm.rank();
  for (int shift = 0; shift < n; ++shift) {
    std::vector<uint8_t> send = payload(r, 999, 50 + shift), recv(999);
    comm.send_recv(send.data(), (r + shift) % n, recv.data(), (r - shift + n) % n, 999, CommDtype::uint8, Stream{})
        ->wait(Stream{});
    EXPECT_EQ(recv, payload((r - shift + n) % n, 999, 50 + shift)) << "shift " << shift;
  }
}

TEST(MpiComm, DroppedHandleStillCompletes) {
  MpiComm comm(MPI_COMM_WORLD);
  const int n = comm.size(), r = comm.rank();
  std::vector<uint8_t> send = payload(r, 100000, 60), recv(100000);
  { auto pending = comm.ring_exchange(send.data(), recv.data(), 100000, CommDtype::uint8, Stream{}); }
  EXPECT_EQ(recv, payload((r + n - 1) % n, 100000, 60));
}

TEST(MpiComm, AllGather) {
  MpiComm comm(MPI_COMM_WORLD);
  for (size_t bytes : {size_t(1), size_t(333), size_t(65537)})
    for (bool in_place : {false, true}) check_all_gather(comm, bytes, in_place);
}

TEST(MpiComm, AllReduceEveryDtypeSumAndMax) {
  MpiComm comm(MPI_COMM_WORLD);
  check_all_reduce_every_dtype(comm, 1);
  check_all_reduce_every_dtype(comm, 1003);
}

TEST(MpiComm, RangeOverRanks) {
  MpiComm comm(MPI_COMM_WORLD);
  const int n = comm.size(), r = comm.rank();
  // Distinct values, negative ones and the int32 extremes but INT32_MIN (not negatable).
  const Int32Range spread = range_over_ranks(comm, 7 * r - 3);
  EXPECT_EQ(spread.lowest, -3);
  EXPECT_EQ(spread.highest, 7 * (n - 1) - 3);
  EXPECT_EQ(spread.uniform(), n == 1);
  const Int32Range extremes = range_over_ranks(comm, r == n - 1 ? INT32_MAX : -INT32_MAX);
  EXPECT_EQ(extremes.lowest, n == 1 ? INT32_MAX : -INT32_MAX);
  EXPECT_EQ(extremes.highest, INT32_MAX);
  const Int32Range same = range_over_ranks(comm, 42);
  EXPECT_TRUE(same.uniform());
  EXPECT_EQ(same.lowest, 42);
  EXPECT_NE(test::error_of([&] { range_over_ranks(comm, INT32_MIN); }), "");  // refused before any communication
}

TEST(MpiComm, AgreeOnRootCarriesLongAndEmptyTextAndRootsError) {
  MpiComm world(MPI_COMM_WORLD);
  const std::string big(100000, 'q');
  EXPECT_EQ(agree_on_root(world, [&] { return big + std::to_string(world.rank()); }), big + "0");
  EXPECT_EQ(agree_on_root(world, [] { return std::string(); }), "");
  EXPECT_EQ(test::error_of([&] {
              agree_on_root(world, [&]() -> std::string { throw Error("root says no " + std::to_string(world.rank())); });
            }),
            "root says no 0");
}

TEST(MpiComm, BroadcastFromEveryRoot) {
  MpiComm comm(MPI_COMM_WORLD);
  check_broadcast_every_root(comm, 1);
  check_broadcast_every_root(comm, 5001);
}

TEST(MpiComm, BarrierReturns) {
  MpiComm comm(MPI_COMM_WORLD);
  comm.barrier(Stream{});
  comm.barrier(Stream{});
}

// The split path large messages take (MPI counts are ints), run on small buffers by
// lowering the split size to a few hundred bytes.
TEST(MpiComm, ChunkRule) {
  using comm_detail::chunk_count;
  using comm_detail::chunk_elements;
  EXPECT_EQ(chunk_elements(8, 1000), 125u);
  EXPECT_EQ(chunk_elements(8, 4), 1u);
  EXPECT_EQ(chunk_elements(1, size_t(1) << 40), size_t(INT_MAX));
  EXPECT_EQ(chunk_count(3 * size_t(INT_MAX) + 1, 1, size_t(1) << 40), 4u);
  EXPECT_EQ(chunk_count(size_t(5) << 31, 4, MpiComm::kDefaultMaxMessageBytes), 40u);
  EXPECT_EQ(chunk_count(1000, 8, 1000), 8u);
  EXPECT_EQ(chunk_count(0, 8, 1000), 0u);
}

TEST(MpiComm, LargeMessagesSplitIntoChunks) {
  constexpr size_t kMax = 1000;
  MpiComm comm(MPI_COMM_WORLD, kMax);
  EXPECT_EQ(comm.max_message_bytes(), kMax);
  ASSERT_GT(comm_detail::chunk_count(100003, 1, kMax), 100u);
  check_ring_once(comm, 100003, 70);
  check_ring_rounds(comm, 2501, false);
  check_all_gather(comm, 100003, false);
  check_all_gather(comm, 100003, true);
  ASSERT_GT(comm_detail::chunk_count(12503, 8, kMax), 100u);
  check_all_reduce_every_dtype(comm, 12503);
  check_broadcast_every_root(comm, 12503);
}

TEST(MpiComm, RejectsBadCalls) {
  MpiComm comm(MPI_COMM_WORLD);
  const int n = comm.size();
  std::vector<float> a(16, 1.0f), b(16);
  expect_error([&] { comm.all_reduce(a.data(), b.data(), 8, CommDtype::bfloat16, ReduceOp::sum, Stream{}); },
               "mpi all_reduce: bfloat16 cannot be reduced (float32, float64, int32 and int64 can)");
  expect_error([&] { comm.send_recv(a.data(), n, b.data(), 0, 4, CommDtype::float32, Stream{}); },
               "mpi send_recv: dest " + std::to_string(n) + " is not a rank of this group of " + std::to_string(n));
  expect_error([&] { comm.send_recv(a.data(), 0, b.data(), -1, 4, CommDtype::float32, Stream{}); },
               "mpi send_recv: source -1 is not a rank of this group of " + std::to_string(n));
  expect_error([&] { comm.ring_exchange(a.data(), a.data() + 2, 4, CommDtype::float32, Stream{}); },
               "mpi send_recv: the send and receive buffers overlap");
  expect_error([&] { comm.broadcast(a.data(), 4, CommDtype::float32, n, Stream{}); },
               "mpi broadcast: root " + std::to_string(n) + " is not a rank of this group of " + std::to_string(n));
  expect_error([&] { comm.all_gather(nullptr, b.data(), 4, CommDtype::float32, Stream{}); },
               "mpi all_gather: null buffer for 4 elements");
  comm.barrier(Stream{});  // every rank threw before communicating: still in step
}

// A peer that sends fewer bytes than this rank expects must not pass silently. (More
// bytes than expected is MPI's own truncation error.)
TEST(MpiComm, ShortReceiveIsAnError) {
  MpiComm comm(MPI_COMM_WORLD);
  if (comm.size() < 2) GTEST_SKIP() << "needs 2 ranks";
  const int r = comm.rank();
  if (r == 1) {
    std::vector<uint8_t> send(20, 1), recv(20);
    expect_error([&] { comm.send_recv(send.data(), 0, recv.data(), 0, 20, CommDtype::uint8, Stream{})->wait(Stream{}); },
                 "mpi send_recv: received 10 bytes of chunk 0 where 20 were expected (ranks disagree on the count)");
  } else if (r == 0) {
    // Rank 0 plays a peer that sends only 10 bytes (and takes rank 1's 20).
    std::vector<uint8_t> send(10, 2), recv(20);
    MPI_Sendrecv(send.data(), 10, MPI_BYTE, 1, comm_detail::kMpiTag, recv.data(), 20, MPI_BYTE, 1,
                 comm_detail::kMpiTag, comm.mpi_comm(), MPI_STATUS_IGNORE);
    EXPECT_EQ(recv, std::vector<uint8_t>(20, 1));
  }
  comm.barrier(Stream{});
}

// ---------------------------------------------------------------- timeouts

// Sets the process-wide timeout for one test and restores it after.
struct TimeoutScope {
  double saved = comm_timeout();
  explicit TimeoutScope(double seconds) { set_comm_timeout(seconds); }
  ~TimeoutScope() { set_comm_timeout(saved); }
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// CPU seconds this process has used (user + system).
double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

std::string timeout_text(const char* call, int ranks, const char* seconds) {
  return std::string("mpi ") + call + " over " + std::to_string(ranks) + " ranks did not complete within " + seconds +
         " s (--comm-timeout): a rank has died or hangs";
}

// Rank 0 plays a rank that hangs: it never enters the all-reduce the others wait in.
// They must give up after the timeout (not before, not much after) with the message,
// without burning a core while they wait, and the communicator must refuse further use.
TEST(MpiComm, CollectiveTimesOutWhenARankNeverArrives) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (world < 2) GTEST_SKIP() << "needs 2 ranks";
  TimeoutScope scope(1.5);
  // Leaked on purpose, with its buffers: MPI cannot withdraw the abandoned collective,
  // which keeps pointers into both.
  auto* comm = new MpiComm(MPI_COMM_WORLD);
  auto* buf = new int64_t[4]{1, 2, 3, 4};
  if (comm->rank() != 0) {
    const auto t0 = std::chrono::steady_clock::now();
    const double cpu0 = cpu_seconds();
    expect_error([&] { comm->all_reduce(buf, buf, 4, CommDtype::int64, ReduceOp::sum, Stream{}); },
                 timeout_text("all_reduce", world, "1.5"));
    const double waited = seconds_since(t0), cpu = cpu_seconds() - cpu0;
    EXPECT_GE(waited, 1.5 * 0.95);
    EXPECT_LE(waited, 1.5 + 4.0) << "the timeout fired late";  // slack for a loaded 2-core CI machine
    EXPECT_LT(cpu, 0.5 * waited) << "the wait burned a core: " << cpu << " CPU s in " << waited << " s";
    expect_error([&] { comm->barrier(Stream{}); },
                 "mpi barrier: an earlier operation of this communicator timed out (--comm-timeout); it cannot be "
                 "used again");
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// The same for a ring exchange: the ranks that exchange with rank 0 wait in
// PendingComm::wait while rank 0 never sends.
TEST(MpiComm, SendRecvWaitTimesOutWhenThePeerNeverSends) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (world < 2) GTEST_SKIP() << "needs 2 ranks";
  TimeoutScope scope(1);
  auto* comm = new MpiComm(MPI_COMM_WORLD);  // leaked: see above
  auto* send = new uint8_t[1000]();
  auto* recv = new uint8_t[1000]();
  if (comm->rank() != 0) {
    auto pending = comm->send_recv(send, 0, recv, 0, 1000, CommDtype::uint8, Stream{});
    EXPECT_FALSE(pending->test());
    const auto t0 = std::chrono::steady_clock::now();
    expect_error([&] { pending->wait(Stream{}); }, timeout_text("send_recv", world, "1"));
    const double waited = seconds_since(t0);
    EXPECT_GE(waited, 0.95);
    EXPECT_LE(waited, 1.0 + 4.0) << "the timeout fired late";
    pending.reset();  // must not wait again
    expect_error([&] { comm->all_gather(send, recv, 1, CommDtype::uint8, Stream{}); },
                 "mpi all_gather: an earlier operation of this communicator timed out (--comm-timeout); it cannot "
                 "be used again");
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// A peer that is late but alive is waited for: rank 0 arrives 0.6 s after the others,
// well within a 3 s timeout, and every operation completes with the right values.
TEST(MpiComm, LatePeerWithinTheTimeoutIsWaitedFor) {
  TimeoutScope scope(3);
  MpiComm comm(MPI_COMM_WORLD);
  if (comm.rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(600));
  check_all_reduce<int64_t>(comm, CommDtype::int64, ReduceOp::sum, 17, false);
  if (comm.rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(600));
  check_ring_once(comm, 5000, 80);
  if (comm.rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(600));
  check_broadcast_every_root(comm, 3);
  if (comm.rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(600));
  comm.barrier(Stream{});
}

#ifndef RINGINFER_HAVE_CUDA
TEST(MpiComm, NcclFactoryNeedsCuda) {
  expect_error([] { make_nccl_comm(MPI_COMM_WORLD); },
               "NCCL communicator requested but this ringinfer was built without CUDA; use --device cpu");
}
#endif

}  // namespace
}  // namespace ringinfer
