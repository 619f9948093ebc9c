#pragma once
// The CUDA backend (backend/cuda/): bf16 weight matrices, bf16 or fp8 KV cache, fp32 residual
// stream, activations and accumulation; cuBLAS for the weight GEMMs, the striped flash /
// split-KV decode kernels for attention. Available in CUDA builds only
// (RINGINFER_HAVE_CUDA); this header includes no CUDA header, so host-only code may
// include it under #ifdef RINGINFER_HAVE_CUDA.
#include <memory>

#include "ringinfer/backend.h"

namespace ringinfer {

struct CudaBackendOptions {
  int device = -1;          // CUDA device to use; -1 keeps the current one
  bool use_flash = true;    // head_dim 64/128: flash / decode kernels; false: the generic kernel (tests)
  bool use_decode = true;   // single-query calls that see every key: the split-KV decode kernel
};

// Creates the stream pair and the cuBLAS handle on options.device. Throws ringinfer::Error
// when no device is usable.
std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions& options = {});

}  // namespace ringinfer
