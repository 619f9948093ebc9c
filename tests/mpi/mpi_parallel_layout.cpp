// ParallelGroups under mpirun -np 1..4: for every (--cp, --tp) that divides the world,
// each communicator holds exactly the world ranks the layout formula names, in order,
// and a ring exchange inside the CP group delivers the previous CP rank's buffer.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ringinfer/comm.h"
#include "ringinfer/error.h"
#include "ringinfer/parallel_layout.h"

namespace ringinfer {
namespace {

// World ranks of comm's members in comm's order, found by MPI itself (independent of
// MpiComm and of the layout code).
std::vector<int> members(const MpiComm& comm) {
  MPI_Group group, world;
  MPI_Comm_group(comm.mpi_comm(), &group);
  MPI_Comm_group(MPI_COMM_WORLD, &world);
  std::vector<int> local(comm.size()), global(comm.size());
  for (int i = 0; i < comm.size(); ++i) local[i] = i;
  MPI_Group_translate_ranks(group, comm.size(), local.data(), world, global.data());
  MPI_Group_free(&group);
  MPI_Group_free(&world);
  return global;
}

// World rank w's tp/cp/dp indices written out from the definition in DESIGN §5.
struct Expected {
  int T, N;
  int tp(int w) const { return w % T; }
  int cp(int w) const { return (w / T) % N; }
  int dp(int w) const { return w / (T * N); }
};

void check_groups(int cp, int tp) {
  int world = 0, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const ParallelLayout layout = make_parallel_layout(world, rank, cp, tp);
  ParallelGroups g = make_parallel_groups(layout, MPI_COMM_WORLD);
  const Expected e{tp, cp};
  SCOPED_TRACE("cp " + std::to_string(cp) + " tp " + std::to_string(tp) + " rank " + std::to_string(rank));

  std::vector<int> want_world, want_cp, want_tp, want_dp;
  for (int w = 0; w < world; ++w) {
    want_world.push_back(w);
    if (e.dp(w) == e.dp(rank) && e.tp(w) == e.tp(rank)) want_cp.push_back(w);
    if (e.dp(w) == e.dp(rank) && e.cp(w) == e.cp(rank)) want_tp.push_back(w);
    if (e.cp(w) == e.cp(rank) && e.tp(w) == e.tp(rank)) want_dp.push_back(w);
  }
  EXPECT_EQ(members(*g.world), want_world);
  EXPECT_EQ(members(*g.cp), want_cp);  // ascending world rank = ascending cp_rank
  EXPECT_EQ(members(*g.tp), want_tp);
  EXPECT_EQ(members(*g.dp), want_dp);
  EXPECT_EQ(g.cp->rank(), e.cp(rank));
  EXPECT_EQ(g.tp->rank(), e.tp(rank));
  EXPECT_EQ(g.dp->rank(), e.dp(rank));
  EXPECT_EQ(g.cp->size(), cp);
  EXPECT_EQ(g.tp->size(), tp);
  EXPECT_EQ(g.dp->size(), world / (cp * tp));
  EXPECT_EQ(g.cp_device, nullptr);
  EXPECT_EQ(g.tp_device, nullptr);

  // The ring inside the CP group: receive from the CP predecessor, same dp and tp.
  const int64_t tag = 1000003LL * cp + tp;
  const int64_t send[2] = {rank, tag};
  int64_t recv[2] = {-1, -1};
  g.cp->ring_exchange(send, recv, 2, CommDtype::int64, Stream{})->wait(Stream{});
  EXPECT_EQ(recv[0], want_cp[(e.cp(rank) + cp - 1) % cp]);
  EXPECT_EQ(recv[1], tag);

  // Collectives stay inside the group: the sum of world ranks over the TP group.
  int64_t sum = rank;
  g.tp->all_reduce(&sum, &sum, 1, CommDtype::int64, ReduceOp::sum, Stream{});
  int64_t want_sum = 0;
  for (int w : want_tp) want_sum += w;
  EXPECT_EQ(sum, want_sum);
}

TEST(ParallelGroups, EveryDivisorOfTheWorld) {
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  int tried = 0;
  for (int cp = 1; cp <= world; ++cp)
    for (int tp = 1; cp * tp <= world; ++tp)
      if (world % (cp * tp) == 0) {
        check_groups(cp, tp);
        ++tried;
      }
  EXPECT_GE(tried, world == 1 ? 1 : 2);
}

TEST(ParallelGroups, DefaultCpIsOneRingOverTheWorld) {
  int world = 0, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  ParallelGroups g = make_parallel_groups(make_parallel_layout(world, rank, std::nullopt), MPI_COMM_WORLD);
  EXPECT_EQ(g.cp->size(), world);
  EXPECT_EQ(g.cp->rank(), rank);
  EXPECT_EQ(g.dp->size(), 1);
}

TEST(ParallelGroups, LayoutMustMatchTheCommunicator) {
  int world = 0, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const ParallelLayout wrong = make_parallel_layout(world + 1, rank, 1);
  try {
    make_parallel_groups(wrong, MPI_COMM_WORLD);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "parallel groups: the layout is for rank " + std::to_string(rank) + " of " +
                                         std::to_string(world + 1) + " but this is rank " + std::to_string(rank) +
                                         " of " + std::to_string(world));
  }
}

}  // namespace
}  // namespace ringinfer
