#pragma once
// MPI_COMM_WORLD for tests run under mpirun: this rank, the size, agreement across ranks,
// and what every rank shares: one random seed, one scratch directory.
#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>

#include "ringinfer/comm.h"  // MpiComm

namespace ringinfer::test {

// MPI_COMM_WORLD's size and this rank.
int world_size();
int world_rank();

// Collective: true on every rank only when ok on every rank.
bool all_ranks(bool ok);

// A fresh seed per run, the same on every rank: rank 0 draws it from std::random_device
// and broadcasts it. The first call is collective over MPI_COMM_WORLD (every rank must
// make it); later calls return the same value. Print it with failures to reproduce them.
uint64_t shared_seed();

// Collective: rank 0 makes a fresh directory (test_paths.h make_temp_dir) and every rank
// returns its path (the ranks of these tests share one node).
std::string shared_temp_dir(const std::string& prefix);
// Collective: waits for every rank, then rank 0 removes dir and all it holds.
void remove_shared_temp_dir(const std::string& dir);

// The CP group of `cp` consecutive world ranks containing this rank: a communicator split
// from MPI_COMM_WORLD (collective: every rank makes one with the same cp) and its MpiComm.
struct CpGroup {
  MPI_Comm raw = MPI_COMM_NULL;
  std::unique_ptr<MpiComm> comm;
  explicit CpGroup(int cp) {
    MPI_Comm_split(MPI_COMM_WORLD, world_rank() / cp, world_rank(), &raw);
    comm = std::make_unique<MpiComm>(raw);
  }
  ~CpGroup() {
    comm.reset();
    MPI_Comm_free(&raw);
  }
  CpGroup(const CpGroup&) = delete;
  CpGroup& operator=(const CpGroup&) = delete;
};

}  // namespace ringinfer::test
