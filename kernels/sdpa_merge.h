#pragma once
// Glue between an external SDPA kernel (cuDNN, backend/cuda/cudnn_attention.h) and the
// running fp32 (O, LSE) of the CUDA backend: the sequence lengths it reads from device
// memory, and the LSE merge of its bf16 O and head-major statistics. Host-callable; CUDA
// builds only (compiled with or without cuDNN).
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace ringinfer {

// lens[0] = q_len, lens[4] = kv_len (device int32[8]), stream-ordered.
void write_sdpa_lens(int32_t* lens, int32_t q_len, int32_t kv_len, cudaStream_t stream);

// Merges the block result of `rows` query rows into the running (o, lse):
//   o (rows, heads, d) fp32 and lse (rows, heads) fp32, row i of this call;
//   o2 (rows, heads, d) bf16 (row stride heads*d), stats2[h * stats_stride + i] fp32, natural-log
//   LSE of the block (finite: every row of the block saw a key).
// As merge_attention: L = logaddexp(L1, L2), O = O1 e^(L1-L) + O2 e^(L2-L); L1 = -inf merges as the identity.
void merge_attention_sdpa(float* o, float* lse, const __nv_bfloat16* o2, const float* stats2, int64_t stats_stride,
                          int64_t rows, int64_t heads, int64_t d, cudaStream_t stream);

}  // namespace ringinfer
