// configure_cpu_threads under mpirun -np 1..4 (mpirun binds each rank to cores, or with
// more ranks than cores, oversubscribes them unbound): every rank gets at least one
// thread, OpenMP agrees with the returned count, OpenBLAS runs one thread per caller, and
// the ranks never ask for more threads than the CPUs they share: for each CPU, the
// threads of the ranks that may run on it, spread over their masks, add up to at most
// one per CPU (or one per rank when ranks outnumber CPUs). OMP_NUM_THREADS wins when set.
#include <cblas.h>
#include <gtest/gtest.h>
#include <mpi.h>
#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "ringinfer/runtime.h"

namespace ringinfer {
namespace {

TEST(CpuThreads, ShareOfTheAffinityMask) {
  unsetenv("OMP_NUM_THREADS");
  const int threads = configure_cpu_threads();
  EXPECT_GE(threads, 1);
  EXPECT_EQ(omp_get_max_threads(), threads);
  EXPECT_EQ(openblas_get_num_threads(), 1);

  cpu_set_t mine;
  CPU_ZERO(&mine);
  ASSERT_EQ(sched_getaffinity(0, sizeof(mine), &mine), 0);
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);  // the tests' ranks share one node
  std::vector<cpu_set_t> masks(size);
  std::vector<int> counts(size);
  MPI_Allgather(&mine, sizeof(mine), MPI_BYTE, masks.data(), sizeof(mine), MPI_BYTE, MPI_COMM_WORLD);
  MPI_Allgather(&threads, 1, MPI_INT, counts.data(), 1, MPI_INT, MPI_COMM_WORLD);
  // Load of each CPU: every rank's threads spread evenly over its mask.
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    double load = 0;
    int ranks = 0, smallest_mask = CPU_SETSIZE;
    for (int r = 0; r < size; ++r)
      if (CPU_ISSET(cpu, &masks[r])) {
        load += double(counts[r]) / CPU_COUNT(&masks[r]);
        ++ranks;
        smallest_mask = std::min(smallest_mask, CPU_COUNT(&masks[r]));
      }
    if (ranks == 0) continue;
    EXPECT_LE(load, std::max(1.0, double(ranks) / smallest_mask) + 1e-9) << "CPU " << cpu << " oversubscribed";
  }
}

TEST(CpuThreads, OmpNumThreadsWins) {
  setenv("OMP_NUM_THREADS", "3", 1);
  omp_set_num_threads(3);  // libgomp read the variable at start-up; this stands in for that
  EXPECT_EQ(configure_cpu_threads(), 3);
  EXPECT_EQ(omp_get_max_threads(), 3);
  unsetenv("OMP_NUM_THREADS");
}

}  // namespace
}  // namespace ringinfer
