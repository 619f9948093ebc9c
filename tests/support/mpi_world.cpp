#include "mpi_world.h"

#include <mpi.h>

#include <filesystem>
#include <random>

#include "test_paths.h"

namespace ringinfer::test {

int world_size() {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

bool all_ranks(bool ok) {
  int v = ok ? 1 : 0, all = 0;
  MPI_Allreduce(&v, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}

uint64_t shared_seed() {
  static const uint64_t seed = [] {
    uint64_t s = 0;
    if (world_rank() == 0) s = (uint64_t(std::random_device{}()) << 32) ^ std::random_device{}();
    MPI_Bcast(&s, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    return s;
  }();
  return seed;
}

std::string shared_temp_dir(const std::string& prefix) {
  std::string dir;
  if (world_rank() == 0) dir = make_temp_dir(prefix);
  int len = static_cast<int>(dir.size());
  MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
  dir.resize(static_cast<size_t>(len));
  MPI_Bcast(dir.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD);
  return dir;
}

void remove_shared_temp_dir(const std::string& dir) {
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 0) std::filesystem::remove_all(dir);
}

}  // namespace ringinfer::test
