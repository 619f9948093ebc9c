#pragma once
// Data for the communicator tests (tests/mpi/mpi_comm.cpp, tests/gpu/mpi_nccl_comm.cpp):
// every value is a function of (shared_seed(), rank, test), so any rank can regenerate
// what any other rank sent and check a transfer byte for byte, and a reduction exactly.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "mpi_world.h"  // shared_seed
#include "ringinfer/comm.h"

namespace ringinfer::test {

// The bytes rank `origin` sends in test `salt`.
std::vector<uint8_t> payload(int origin, size_t bytes, uint64_t salt = 0);

// Element i of rank `origin`'s reduction input, as an exact non-zero integer numerator:
// floats are numerator / 64 (value_of), small enough that sums over 4 ranks stay exact in
// any order (float32: |x| < 2^14 with 6 fraction bits, a 21-bit mantissa).
int64_t numerator(CommDtype dtype, int origin, size_t i);

// The numerator of element i reduced by op over ranks 0..n_ranks-1, computed here.
int64_t reduced_numerator(CommDtype dtype, ReduceOp op, int n_ranks, size_t i);

// The element of type T that holds numerator num of dtype.
template <typename T>
T value_of(CommDtype dtype, int64_t num) {
  if (dtype == CommDtype::float32 || dtype == CommDtype::float64) return T(double(num) / 64.0);
  return T(num);
}

}  // namespace ringinfer::test
