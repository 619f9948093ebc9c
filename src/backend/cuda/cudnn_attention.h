#pragma once
// cuDNN SDPA (through the cuDNN frontend's graph API) for one block of causal attention,
// the --attention cudnn path of the CUDA backend. Built only with RINGINFER_HAVE_CUDNN
// (CMake finds libcudnn 9 and the frontend headers); this header includes neither, so
// cuda_backend.h can hold a pointer to it in every CUDA build. Private to backend/cuda/.
//
// What one call computes, per query head h (KV head h / (H / Hkv)), bf16 in, fp32
// softmax, bf16 O and fp32 statistics out:
//   the first q_len of q_rows query rows against the first kv_len of kv_rows key rows,
//   causal with the diagonal at the bottom right: row i sees key j iff j <= i + kv_len - q_len
//   (kv_len >= q_len, so every row sees at least one key);
//   stats[h][i] = log-sum-exp over visible j of scale * q_i . k_j, natural log (cuDNN's
//   "Stats"; our LSE convention, DESIGN §3).
// q_len and kv_len are read from device memory (cuDNN's padding mask), so one execution
// plan per (q_rows, kv_rows, H, Hkv, D, scale) serves every chunk of a ring step; plans
// are built on first use and cached.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace ringinfer::cuda {

struct SdpaShape {
  int64_t q_rows = 0, kv_rows = 0;  // the graph's sequence extents (upper bounds of q_len, kv_len)
  int64_t n_heads = 0, n_kv_heads = 0, head_dim = 0;
  float scale = 0.0f;  // softmax scale, applied in fp32
};

struct SdpaTensors {
  const void* q = nullptr;         // bf16 (q_rows, H, D), row stride H*D
  const void* k = nullptr;         // bf16 (kv_rows, Hkv, D), row stride Hkv*D
  const void* v = nullptr;         // bf16 (kv_rows, Hkv, D)
  void* o = nullptr;               // bf16 (q_rows, H, D); rows >= q_len undefined
  float* stats = nullptr;          // fp32 (H, q_rows): stats[h * q_rows + i]; rows >= q_len undefined
  const int32_t* lens = nullptr;   // device int32[8]: q_len at [0], kv_len at [4] (16-byte aligned each)
};

class CudnnSdpa {
 public:
  // Creates the cuDNN handle (loads the library). Throws ringinfer::Error when cuDNN cannot start.
  CudnnSdpa();
  ~CudnnSdpa();
  CudnnSdpa(const CudnnSdpa&) = delete;
  CudnnSdpa& operator=(const CudnnSdpa&) = delete;

  // Builds (first time) the plan for `shape`. Returns its workspace bytes, or -1 when cuDNN
  // cannot take the shape (the caller uses the native kernels); `why` gets cuDNN's reason once.
  int64_t prepare(const SdpaShape& shape, std::string* why);
  // Enqueues the prepared plan of `shape` on `stream`.
  void run(const SdpaShape& shape, const SdpaTensors& t, void* workspace, cudaStream_t stream);
  // Plans built so far (tests, logs).
  int64_t plans_built() const;

  struct Impl;

 private:
  Impl* impl_;
};

// The cuDNN library version this process runs (cudnnGetVersion, e.g. 91900), 0 without cuDNN.
int64_t cudnn_runtime_version();

}  // namespace ringinfer::cuda
