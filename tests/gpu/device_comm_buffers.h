#pragma once
// What the multi-rank device-communicator tests (mpi_nccl_comm.cpp, mpi_cuda_engine.cpp)
// share: the engine's two streams, one pair per test process, and device buffers poisoned
// so an unwritten byte shows. Header-only, CUDA tests only.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <vector>

#include "ringinfer/comm.h"
#include "ringinfer/cuda_check.h"

namespace ringinfer::test {

// Transfers are posted on `comm` and results consumed on `compute`, as the engine does.
struct CommStreams {
  cudaStream_t comm = nullptr;     // where transfers are posted (the engine's comm_stream)
  cudaStream_t compute = nullptr;  // where results are consumed (the engine's stream)

  void create() {
    CUDA_CHECK(cudaStreamCreateWithFlags(&comm, cudaStreamNonBlocking));
    CUDA_CHECK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
  }
  void destroy() {
    if (comm) cudaStreamDestroy(comm);
    if (compute) cudaStreamDestroy(compute);
  }
};

// This test process's streams: create() them in the test environment's SetUp and
// destroy() them in its TearDown.
inline CommStreams& streams() {
  static CommStreams s;
  return s;
}
inline Stream comm_stream() { return Stream{streams().comm}; }
inline Stream compute_stream() { return Stream{streams().compute}; }

// Collectives were issued on the comm stream: make the compute stream wait for them.
inline void comm_to_compute() {
  cudaEvent_t e;
  CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventRecord(e, streams().comm));
  CUDA_CHECK(cudaStreamWaitEvent(streams().compute, e, 0));
  CUDA_CHECK(cudaEventDestroy(e));
}

// A device buffer of `bytes`, filled with a non-zero pattern (0xA5) so an unwritten
// element shows.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : bytes(n) {
    CUDA_CHECK(cudaMalloc(&ptr, std::max<size_t>(n, 1)));
    CUDA_CHECK(cudaMemset(ptr, 0xA5, std::max<size_t>(n, 1)));
    // The test streams do not wait for the legacy default stream, where memset and
    // pageable copies run: finish them before any transfer reads this buffer.
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* ptr = nullptr;
  size_t bytes = 0;

  char* at(size_t offset) const { return static_cast<char*>(ptr) + offset; }
  template <typename T>
  void upload(const std::vector<T>& v, size_t offset = 0) {
    if (v.empty()) return;
    CUDA_CHECK(cudaMemcpy(at(offset), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  // Read on the compute stream: what the engine's next kernel would see.
  template <typename T>
  std::vector<T> download(size_t count, size_t offset = 0) const {
    std::vector<T> v(count);
    if (count == 0) return v;
    CUDA_CHECK(cudaMemcpyAsync(v.data(), at(offset), count * sizeof(T), cudaMemcpyDeviceToHost, streams().compute));
    CUDA_CHECK(cudaStreamSynchronize(streams().compute));
    return v;
  }
};

}  // namespace ringinfer::test
