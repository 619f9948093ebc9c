#pragma once
// Single-process GPU tests (tests/gpu/*.cu): exit 77, which CTest reports as skipped,
// when no CUDA device is visible. Include once per test binary.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

namespace ringinfer::test {

class SkipWithoutGpu : public ::testing::Environment {
 public:
  void SetUp() override {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
      std::printf("no CUDA device visible: skipping\n");
      std::exit(77);
    }
  }
};

[[maybe_unused]] inline ::testing::Environment* const skip_without_gpu =
    ::testing::AddGlobalTestEnvironment(new SkipWithoutGpu);

}  // namespace ringinfer::test
