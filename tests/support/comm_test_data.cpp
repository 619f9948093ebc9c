#include "comm_test_data.h"

#include <algorithm>
#include <random>

namespace ringinfer::test {

std::vector<uint8_t> payload(int origin, size_t bytes, uint64_t salt) {
  std::mt19937_64 gen(shared_seed() ^ (uint64_t(origin + 1) * 0x9E3779B97F4A7C15ull) ^ (salt * 0xD1B54A32D192ED03ull));
  std::vector<uint8_t> out(bytes);
  for (auto& b : out) b = uint8_t(gen() >> 56);
  return out;
}

int64_t numerator(CommDtype dtype, int origin, size_t i) {
  // splitmix64 of (seed, dtype, origin, i): cheap enough to call per element.
  uint64_t z = shared_seed() ^ (uint64_t(dtype) << 56) ^ (uint64_t(origin) << 40) ^ uint64_t(i);
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  int64_t range = 0;
  switch (dtype) {
    case CommDtype::float32: range = int64_t(1) << 20; break;
    case CommDtype::float64: range = int64_t(1) << 45; break;
    case CommDtype::int32: range = int64_t(1) << 28; break;
    default: range = int64_t(1) << 60; break;  // int64: beyond 32 bits, sum of 4 fits
  }
  const int64_t v = int64_t(z % uint64_t(2 * range)) - range;
  return v == 0 ? 1 : v;
}

int64_t reduced_numerator(CommDtype dtype, ReduceOp op, int n_ranks, size_t i) {
  int64_t expect = op == ReduceOp::sum ? 0 : INT64_MIN;
  for (int r = 0; r < n_ranks; ++r) {
    const int64_t v = numerator(dtype, r, i);
    expect = op == ReduceOp::sum ? expect + v : std::max(expect, v);
  }
  return expect;
}

}  // namespace ringinfer::test
