// main() for tests run under mpirun: MPI start-up around GoogleTest. Every rank runs
// every test; a failure on any rank makes that rank exit non-zero, and so mpirun.
#include <gtest/gtest.h>

#include "ringinfer/runtime.h"

int main(int argc, char** argv) {
  ringinfer::MpiRuntime mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  if (mpi.info().world_rank != 0) {
    // Keep the output readable: only rank 0 prints the per-test lines; failures on any
    // rank still print their assertion messages.
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  return RUN_ALL_TESTS();
}
