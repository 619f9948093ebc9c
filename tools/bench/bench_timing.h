#pragma once
// Timing helpers shared by the benchmarks in tools/bench/ (CUDA builds only).
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "ringinfer/cuda_check.h"

namespace ringinfer::bench {

// Median milliseconds of `reps` calls of f on the default stream (CUDA events around
// each), after `warmup` untimed calls.
template <class F>
double median_ms(F&& f, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) f();
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    CUDA_CHECK(cudaEventRecord(a));
    f();
    CUDA_CHECK(cudaEventRecord(b));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  CUDA_CHECK(cudaEventDestroy(a));
  CUDA_CHECK(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// The memory ceiling: a device-to-device copy of `bytes`, median of 20 after 3 warm-ups.
// Returns milliseconds; GB/s = 2 * bytes / ms / 1e6 (bytes read + written).
inline double copy_ms(size_t bytes) {
  void *src, *dst;
  CUDA_CHECK(cudaMalloc(&src, bytes));
  CUDA_CHECK(cudaMalloc(&dst, bytes));
  CUDA_CHECK(cudaMemset(src, 1, bytes));
  const double ms = median_ms([&] { CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice)); }, 3, 20);
  CUDA_CHECK(cudaFree(src));
  CUDA_CHECK(cudaFree(dst));
  return ms;
}

}  // namespace ringinfer::bench
