#include "ringinfer/parallel_layout.h"

#include <string>

#include "ringinfer/error.h"

namespace ringinfer {

ParallelLayout make_parallel_layout(int world_size, int world_rank, std::optional<int> cp, int tp) {
  RI_CHECK(world_size >= 1, "parallel layout: world size must be at least 1 (got " + std::to_string(world_size) + ")");
  RI_CHECK(world_rank >= 0 && world_rank < world_size, "parallel layout: rank " + std::to_string(world_rank) +
                                                           " is outside a world of " + std::to_string(world_size));
  RI_CHECK(tp >= 1, "--tp must be at least 1 (got " + std::to_string(tp) + ")");
  if (!cp) {
    RI_CHECK(world_size % tp == 0, "--tp " + std::to_string(tp) + ": the world size " + std::to_string(world_size) +
                                       " is not a multiple of it");
    cp = world_size / tp;
  }
  RI_CHECK(*cp >= 1, "--cp must be at least 1 (got " + std::to_string(*cp) + ")");
  // Compare in 64 bits: cp * tp of two large flags must not wrap into a divisor.
  const long long group = static_cast<long long>(*cp) * tp;
  RI_CHECK(world_size % group == 0, "--cp " + std::to_string(*cp) + " --tp " + std::to_string(tp) +
                                        ": the world size " + std::to_string(world_size) +
                                        " is not a multiple of cp x tp = " + std::to_string(group));
  ParallelLayout l;
  l.world_size = world_size;
  l.world_rank = world_rank;
  l.cp = *cp;
  l.tp = tp;
  l.dp = static_cast<int>(world_size / group);
  l.tp_rank = world_rank % tp;
  l.cp_rank = (world_rank / tp) % l.cp;
  l.dp_rank = world_rank / (tp * l.cp);
  return l;
}

namespace {

// Splits `world` and wraps the part holding this rank; the split itself is freed once
// MpiComm has its own duplicate.
std::unique_ptr<MpiComm> split(MPI_Comm world, int color, int key) {
  MPI_Comm part = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split(world, color, key, &part));
  std::unique_ptr<MpiComm> comm;
  try {
    comm = std::make_unique<MpiComm>(part);
  } catch (...) {
    MPI_Comm_free(&part);
    throw;
  }
  MPI_Comm_free(&part);
  return comm;
}

}  // namespace

ParallelGroups make_parallel_groups(const ParallelLayout& layout, MPI_Comm world, bool with_nccl) {
  int size = 0, rank = 0;
  MPI_CHECK(MPI_Comm_size(world, &size));
  MPI_CHECK(MPI_Comm_rank(world, &rank));
  RI_CHECK(size == layout.world_size && rank == layout.world_rank,
           "parallel groups: the layout is for rank " + std::to_string(layout.world_rank) + " of " +
               std::to_string(layout.world_size) + " but this is rank " + std::to_string(rank) + " of " +
               std::to_string(size));
  const ParallelLayout& l = layout;
  ParallelGroups g;
  g.layout = layout;
  // One fixed order on every rank: world, cp, tp, dp, then NCCL cp, NCCL tp.
  g.world = std::make_unique<MpiComm>(world);
  g.cp = split(world, l.dp_rank * l.tp + l.tp_rank, l.cp_rank);
  g.tp = split(world, l.dp_rank * l.cp + l.cp_rank, l.tp_rank);
  g.dp = split(world, l.cp_rank * l.tp + l.tp_rank, l.dp_rank);
  if (with_nccl) {
    g.cp_device = make_nccl_comm(g.cp->mpi_comm());
    if (l.tp > 1) g.tp_device = make_nccl_comm(g.tp->mpi_comm());
  }
  return g;
}

void check_tp_on_one_node(const ParallelGroups& g, bool allow) {
  if (!g.tp || g.layout.tp == 1) return;
  MPI_Comm node = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split_type(g.tp->mpi_comm(), MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  int node_rank = 0;
  const int rc = MPI_Comm_rank(node, &node_rank);
  MPI_Comm_free(&node);
  MPI_CHECK(rc);
  // Nodes the group spans: one node-local rank 0 on each. The same count on every rank,
  // so every rank of the group decides alike.
  int leader = node_rank == 0 ? 1 : 0, nodes = 0;
  MPI_CHECK(MPI_Allreduce(&leader, &nodes, 1, MPI_INT, MPI_SUM, g.tp->mpi_comm()));
  RI_CHECK(nodes == 1 || allow,
           "--tp " + std::to_string(g.layout.tp) + ": a tensor-parallel group spans " + std::to_string(nodes) +
               " nodes; its ranks all-reduce activations twice per layer and must share one node (start whole "
               "TP groups per node, e.g. mpirun --map-by ppr:" + std::to_string(g.layout.tp) +
               ":node, or lower --tp; --allow-cross-node-tp runs it anyway)");
}

}  // namespace ringinfer
