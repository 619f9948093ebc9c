// Threads per rank for the CPU backend: the CPUs this rank may run on, shared with the
// other ranks of the node that may run on them too, so nothing oversubscribes with or
// without mpirun (`mpirun -np 2` binds each rank to its own core; a plain start or
// --bind-to none gives every rank the whole node).
#include <cblas.h>  // openblas_set_num_threads
#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "ringinfer/error.h"
#include "ringinfer/runtime.h"

namespace ringinfer {

void exec_with_passive_omp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  // The resolved path, not /proc/self/exe: the process keeps its name (ps, pgrep).
  char self[4096];
  const ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (len <= 0) return;
  self[len] = '\0';
  if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  execv(self, argv);  // returns only on failure: then run with the default policy
  unsetenv("OMP_WAIT_POLICY");
}

int configure_cpu_threads() {
  cpu_set_t mine;
  CPU_ZERO(&mine);
  if (sched_getaffinity(0, sizeof(mine), &mine) != 0) CPU_SET(0, &mine);
  const int cpus = std::max(1, CPU_COUNT(&mine));

  // Ranks of this node whose CPU sets overlap ours share them (collective on the node).
  MPI_Comm node = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  int n = 1;
  MPI_Comm_size(node, &n);
  std::vector<cpu_set_t> all(static_cast<size_t>(n));
  const int rc = MPI_Allgather(&mine, sizeof(mine), MPI_BYTE, all.data(), sizeof(mine), MPI_BYTE, node);
  MPI_Comm_free(&node);
  MPI_CHECK(rc);
  int sharing = 0;
  for (cpu_set_t& other : all) {
    cpu_set_t both;
    CPU_AND(&both, &mine, &other);
    sharing += CPU_COUNT(&both) > 0 ? 1 : 0;
  }
  int threads = std::max(1, cpus / std::max(1, sharing));
  // An explicit OMP_NUM_THREADS is the user's choice and wins.
  if (const char* v = std::getenv("OMP_NUM_THREADS"); v && std::atoi(v) > 0) threads = omp_get_max_threads();
  omp_set_num_threads(threads);
  // One thread pool: the CPU backend splits each GEMM over its OpenMP team and calls
  // OpenBLAS single-threaded from every member (OpenBLAS's own pthreads would compete
  // with OpenMP's spinning workers for the same cores).
  openblas_set_num_threads(1);
  return threads;
}

}  // namespace ringinfer
