#pragma once
// The CUDA backend (backend/cuda/): bf16 weight matrices, bf16 or fp8 KV cache, fp32 residual
// stream, activations and accumulation; cuBLAS for the weight GEMMs and a few-row kernel for
// decode's products of 1-2 rows, the striped flash / split-KV decode kernels for attention. Available in CUDA builds only
// (RINGINFER_HAVE_CUDA); this header includes no CUDA header, so host-only code may
// include it under #ifdef RINGINFER_HAVE_CUDA.
#include <cstdint>
#include <memory>
#include <string>

#include "ringinfer/backend.h"

namespace ringinfer {

// Which kernel serves the attention blocks of prefill (--attention):
//   auto_select  cuDNN for the blocks of a one-rank ring (AttentionShape::n_ranks == 1) with
//                at least CudaBackendOptions::auto_cudnn_min_keys keys at head_dim 64/128 (where
//                the native kernels read bf16 queries too), the native kernels for every other
//                block. On one rank a query row has one block, so cuDNN's bf16 O
//                is its finished output, rounded once as the native fp32 O is rounded once
//                for the output projection; with more ranks it would be a partial carried
//                between ring steps in bf16 (see Numerics below; DESIGN §9). A fixed rule, not
//                a timing at start-up, so that one command gives the same bits every time;
//                when cuDNN is missing, does not start or fails, every block (from then on)
//                runs native;
//   native       our kernels (flash / decode / generic) only;
//   cudnn        cuDNN SDPA for every block it takes (blocks it cannot take, e.g. an
//                unsupported head_dim, still run native); construction throws when the build
//                has no cuDNN path or the library does not start.
// Single-query decode calls keep the split-KV decode kernel in every mode.
// Numerics: cuDNN writes each block's O in bf16 (its only output type with bf16 inputs on
// Hopper) before the fp32 merge; the native kernels merge fp32. On the random-weight fixtures
// that moves score logprobs by up to ~0.12 between 1 and 2 ranks (native: <= 0.04).
enum class AttentionPath { auto_select, native, cudnn };

// "auto" | "native" | "cudnn" (the --attention values); throws ringinfer::Error otherwise.
AttentionPath parse_attention_path(const std::string& name);
const char* to_string(AttentionPath p);
// Whether this build has the cuDNN attention path (CMake found cuDNN and its frontend).
bool cuda_build_has_cudnn();

struct CudaBackendOptions {
  int device = -1;          // CUDA device to use; -1 keeps the current one
  AttentionPath attention = AttentionPath::auto_select;
  bool use_flash = true;    // head_dim 64/128: flash / decode kernels; false: the generic kernel (tests)
  bool use_decode = true;   // single-query calls that see every key: the split-KV decode kernel
  bool use_small_gemm = true;  // products of 1-2 rows (decode): the few-row kernel; false: cuBLAS (benchmarks)
  // The split-KV decode kernel's tile variant and key splits per call (benchmarks): -1 / 0
  // keep decode_attention's choice.
  int decode_variant = -1;
  int decode_splits = 0;
  // The flash prefill kernel's variant at head_dim 128 (flash_attention_variants(128);
  // benchmarks); -1 keeps its default.
  int flash_variant = -1;
  // auto_select's threshold: the cuDNN path's 8B-shape prefill with its plan building (one
  // plan per document length) took 0.90x the native one's time at 32K and 0.79x at 128K, but
  // 1.28x at 8K (H100, docs/PERFORMANCE.md). 0: auto stays native.
  int64_t auto_cudnn_min_keys = 32768;
};

// cuDNN SDPA plans `backend` (a CUDA backend) has built so far: > 0 once the cuDNN path
// served a block (tests, benchmarks); 0 for any other backend.
int64_t cuda_backend_cudnn_plans(const Backend& backend);
// Decode steps `backend` (a CUDA backend) has launched as CUDA graphs (Backend::begin_recording);
// 0 for any other backend.
int64_t cuda_backend_recorded_steps(const Backend& backend);

// Creates the stream pair and the cuBLAS handle on options.device. Throws ringinfer::Error
// when no device is usable.
std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions& options = {});

}  // namespace ringinfer
