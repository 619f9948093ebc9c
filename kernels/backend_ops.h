#pragma once
// The small kernels of the CUDA backend (backend/cuda/): dtype conversion, embedding
// gather, RMSNorm, bias add, RoPE, SwiGLU, the (O, LSE) merge, target log-probabilities
// and greedy argmax. fp32 activations; bf16 only where a name says so. Each launcher
// enqueues on `stream` and returns; launch errors throw ringinfer::Error (CUDA_CHECK).
// Host-callable; raw device pointers; CUDA builds only.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace ringinfer {

// Error codes a kernel leaves in error[0] (error[1] = the offending value) instead of
// reading out of bounds; the backend checks them when the host next waits.
enum KernelError : int { kErrNone = 0, kErrTokenRange = 1, kErrTargetRange = 2, kErrNonFiniteLogit = 3 };

// dst[i] = bf16(src[i]) (round to nearest even), n elements.
void convert_f32_to_bf16(const float* src, __nv_bfloat16* dst, int64_t n, cudaStream_t stream);
// dst[i] = float(src[i]).
void convert_bf16_to_f32(const __nv_bfloat16* src, float* dst, int64_t n, cudaStream_t stream);
// p[i] = value, n elements.
void fill_f32(float* p, float value, int64_t n, cudaStream_t stream);

// out (n, hidden) f32 = table[tokens[i]] for a bf16 or f32 table (vocab, hidden);
// a token outside [0, vocab) leaves kErrTokenRange in error and its row as NaN.
void embed_rows(const void* table, bool table_bf16, int64_t vocab, int64_t hidden, const int32_t* tokens,
                int64_t n, float* out, int* error, cudaStream_t stream);

// out (n, d) = weight (d) * x / sqrt(mean(x^2) + eps), per row; out may equal x.
void rmsnorm_rows(const float* x, const float* weight, float eps, int64_t n, int64_t d, float* out,
                  cudaStream_t stream);
// The same rows rounded once to bf16 (to nearest even): bitwise rmsnorm_rows() then
// convert_f32_to_bf16(), in one pass (a product's input, no f32 copy written).
void rmsnorm_rows_bf16(const float* x, const float* weight, float eps, int64_t n, int64_t d, __nv_bfloat16* out,
                       cudaStream_t stream);

// out (n, cols) += bias (cols), per row.
void add_bias_rows(float* out, const float* bias, int64_t n, int64_t cols, cudaStream_t stream);

// In place on x (n, n_heads * 2 * half), Hugging Face pairing (d, d + half). Row i sits at
// position pos_start + i * pos_stride; angle = position * inv_freq[d] in float64, cos/sin
// in float64 then rounded to fp32, rotation in fp32 (as the CPU backend).
void rope_strided(float* x, int64_t n, int64_t n_heads, int64_t half, const double* inv_freq, int64_t pos_start,
                  int64_t pos_stride, cudaStream_t stream);
// The same rotation with row i at positions[i] (a host array of n; a decode batch, one row
// per document): the positions travel in the launch's parameters, kRopeMaxRows rows per
// launch, so nothing is uploaded and a row's values equal rope_strided() of that row alone.
constexpr int kRopeMaxRows = 32;
void rope_at_positions(float* x, int64_t n, int64_t n_heads, int64_t half, const double* inv_freq,
                       const int64_t* positions, cudaStream_t stream);

// gate[i] = silu(gate[i]) * up[i], n elements.
void swiglu_inplace(float* gate, const float* up, int64_t n, cudaStream_t stream);
// out[i] = bf16(silu(gate[i]) * up[i]): bitwise swiglu_inplace() then convert_f32_to_bf16(),
// in one pass (the down projection's input).
void swiglu_to_bf16(const float* gate, const float* up, int64_t n, __nv_bfloat16* out, cudaStream_t stream);

// Merges the partial (o2 (rows, heads, d), lse2 (rows, heads)) into the running (o, lse)
// by log-sum-exp; both -inf gives lse = -inf and o = 0.
void merge_attention(float* o, float* lse, const float* o2, const float* lse2, int64_t rows, int64_t heads,
                     int64_t d, cudaStream_t stream);

// out[i] = log_softmax(logits[i, :])[targets[i]], logits (n, V) f32; max and exp-sum per
// row, the sum in float64. A target outside [0, V) leaves kErrTargetRange in error.
void target_logprobs_rows(const float* logits, int64_t n, int64_t V, const int32_t* targets, float* out,
                          int* error, cudaStream_t stream);

// logits[v] = penalized_logit(logits[v], counts[v], ...) (sampling.h) for the V tokens, in place.
void penalize_row(float* logits, int64_t V, const int32_t* counts, double repetition, double frequency,
                  double presence, cudaStream_t stream);
// token[0] = argmax of logits (V) f32, the lowest index among equal maxima (NaN never wins);
// a NaN or inf logit leaves kErrNonFiniteLogit in error (error[1] = its index). V >= 1;
// workspace: kArgmaxWorkspaceBytes of device memory (the blocks' partial results).
constexpr int kArgmaxBlocks = 128;
constexpr size_t kArgmaxWorkspaceBytes = kArgmaxBlocks * (sizeof(float) + sizeof(int64_t));
void argmax_row(const float* logits, int64_t V, int32_t* token, int* error, void* workspace, cudaStream_t stream);

}  // namespace ringinfer
