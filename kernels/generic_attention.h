#pragma once
// Generic striped attention for any head_dim <= 256 (the flash / decode kernels take 64
// and 128 only): one warp per (query row, head), online softmax over the visible prefix
// of the keys, fp32 queries, bf16 keys and values, fp32 accumulation, merged into the
// running (O, LSE) like the CPU backend. Simple rather than fast: small models and tests.
// Host-callable; raw device pointers; CUDA builds only.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace ringinfer {

struct GenericAttnParams {
  const float* q = nullptr;          // (n_q, H * D) fp32
  const __nv_bfloat16* k = nullptr;  // (n_k, Hkv * D) bf16
  const __nv_bfloat16* v = nullptr;  // (n_k, Hkv * D) bf16
  float* o = nullptr;                // (n_q, H * D) fp32, running, normalised
  float* lse = nullptr;              // (n_q, H) fp32, running
  int64_t n_q = 0, n_k = 0;          // rows
  int n_heads = 0, n_kv_heads = 0;   // H, Hkv (H % Hkv == 0)
  int head_dim = 0;                  // D <= 256
  int64_t q_start = 0;               // local index of query row 0
  int q_rank = 0, k_rank = 0, n_ranks = 1;  // stripe coordinates (striped.h)
  float scale = 0.f;                 // softmax scale
};

constexpr int kGenericAttnMaxHeadDim = 256;

void generic_attention(const GenericAttnParams& p, cudaStream_t stream);

}  // namespace ringinfer
