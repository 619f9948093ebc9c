#pragma once
// How the world's ranks split into parallel groups (DESIGN §5):
//   world = DP x CP x TP, TP fastest-varying, so the T ranks of a TP group are adjacent
//   (one node, NVLink) and a CP ring links ranks T apart.
//   world rank w:  tp_rank = w % T,  cp_rank = (w / T) % N,  dp_rank = w / (T N)
// ParallelLayout is the arithmetic (no MPI); ParallelGroups holds this rank's
// communicators, made with MPI_Comm_split in one fixed order on every rank.
#include <mpi.h>

#include <memory>
#include <optional>

#include "ringinfer/comm.h"

namespace ringinfer {

struct ParallelLayout {
  int world_size = 1;  // ranks in the job
  int world_rank = 0;  // this rank
  int dp = 1;          // number of data-parallel groups: world_size / (cp * tp)
  int cp = 1;          // ranks per context-parallel ring (--cp N)
  int tp = 1;          // ranks per tensor-parallel group (--tp T)
  int dp_rank = 0;     // this rank's DP group, 0..dp-1
  int cp_rank = 0;     // this rank's position in its CP ring, 0..cp-1
  int tp_rank = 0;     // this rank's position in its TP group, 0..tp-1

  // The world rank at (dp_rank, cp_rank, tp_rank).
  int world_rank_of(int dp_rank, int cp_rank, int tp_rank) const {
    return (dp_rank * cp + cp_rank) * tp + tp_rank;
  }
};

// Layout of `world_rank` for --cp `cp` (default: world_size / tp, one CP group per TP
// index) and --tp `tp`. Throws Error naming the option when cp or tp is below 1 or the
// world size is not a multiple of cp * tp.
ParallelLayout make_parallel_layout(int world_size, int world_rank, std::optional<int> cp, int tp = 1);

// This rank's communicators. Every MpiComm is ordered by the group's own index (rank()
// of `cp` is layout.cp_rank, and so on).
struct ParallelGroups {
  ParallelLayout layout;
  std::unique_ptr<MpiComm> world;   // all ranks, in world order
  std::unique_ptr<MpiComm> cp;      // same dp_rank and tp_rank: the CP ring, size layout.cp
  std::unique_ptr<MpiComm> tp;      // same dp_rank and cp_rank, size layout.tp
  std::unique_ptr<MpiComm> dp;      // same cp_rank and tp_rank, one rank per DP group, size layout.dp;
                                    // the one with cp_rank = tp_rank = 0 links the DP group leaders
  std::unique_ptr<Comm> cp_device;  // NCCL over the CP ring (with_nccl only)
  std::unique_ptr<Comm> tp_device;  // NCCL over the TP group (with_nccl and tp > 1 only)
};

// Collective over `world`, whose size and this rank's rank must match the layout. With
// with_nccl the rank must already be bound to its GPU; the NCCL communicators are made
// after all MPI ones, CP before TP, on every rank (a fixed order, or NCCL deadlocks).
ParallelGroups make_parallel_groups(const ParallelLayout& layout, MPI_Comm world, bool with_nccl = false);

// Refuses (Error, on every rank of the TP group) a TP group whose ranks do not all share
// one node, unless `allow`: its two all-reduces per layer need NVLink / shared memory, not
// the network. Collective over groups.tp (MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)).
void check_tp_on_one_node(const ParallelGroups& groups, bool allow);

}  // namespace ringinfer
