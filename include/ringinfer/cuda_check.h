#pragma once
// Check macros for CUDA, cuBLAS and NCCL (CUDA builds only). Each failure throws
// ringinfer::Error with rank, file, line and the library's message.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include "ringinfer/error.h"

#define CUDA_CHECK(call)                                                                   \
  do {                                                                                     \
    cudaError_t ri_cuda_rc_ = (call);                                                      \
    if (ri_cuda_rc_ != cudaSuccess)                                                        \
      ::ringinfer::throw_library_error("CUDA", __FILE__, __LINE__,                         \
                                       std::string(#call) + ": " + cudaGetErrorString(ri_cuda_rc_)); \
  } while (0)

// After a kernel launch: launch configuration errors surface here.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(call)                                                                 \
  do {                                                                                     \
    cublasStatus_t ri_cublas_rc_ = (call);                                                 \
    if (ri_cublas_rc_ != CUBLAS_STATUS_SUCCESS)                                            \
      ::ringinfer::throw_library_error("cuBLAS", __FILE__, __LINE__,                       \
                                       std::string(#call) + ": " + cublasGetStatusString(ri_cublas_rc_)); \
  } while (0)

#define NCCL_CHECK(call)                                                                   \
  do {                                                                                     \
    ncclResult_t ri_nccl_rc_ = (call);                                                     \
    if (ri_nccl_rc_ != ncclSuccess && ri_nccl_rc_ != ncclInProgress)                       \
      ::ringinfer::throw_library_error("NCCL", __FILE__, __LINE__,                         \
                                       std::string(#call) + ": " + ncclGetErrorString(ri_nccl_rc_)); \
  } while (0)
