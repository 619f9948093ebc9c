// The small kernels of the CUDA backend (see backend_ops.h). Grid-stride elementwise
// kernels, one block per row for the row reductions.
#include <math.h>

#include <algorithm>
#include <cfloat>

#include "backend_ops.h"
#include "cuda_common.cuh"
#include "ringinfer/cuda_check.h"
#include "ringinfer/sampling.h"  // penalized_logit: the host rule, compiled for the device

namespace ringinfer {
namespace {

constexpr int kThreads = 256;
// Row reductions that run one block for a whole row (decode: one row per token) take the
// largest block, so each thread has few dependent loads in flight (H100 profile, 8B
// decode: a 4096-wide RMSNorm took 16 us and a 128K-vocabulary argmax 220 us with 256
// threads; both are latency-bound, not bandwidth-bound).
constexpr int kRowThreads = 1024;
constexpr int kMaxWarps = kRowThreads / 32;

unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 8 ? 65535 * 8 : blocks));
}

// Sum of v over the block (any multiple of 32 threads up to kRowThreads; shared holds
// kMaxWarps values); every thread gets the result.
template <class T>
__device__ T block_sum(T v, T* shared) {
  v = cuda::warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // shared may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T s = 0;
  for (int w = 0; w < int(blockDim.x / 32); ++w) s += shared[w];
  return s;
}

__device__ float block_max(float v, float* shared) {
  v = cuda::warp_max(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float m = -INFINITY;
  for (int w = 0; w < int(blockDim.x / 32); ++w) m = fmaxf(m, shared[w]);
  return m;
}

__device__ void report(int* error, int code, int value) {
  if (atomicCAS(error, kErrNone, code) == kErrNone) error[1] = value;
}

__global__ void f32_to_bf16_kernel(const float* src, __nv_bfloat16* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void bf16_to_f32_kernel(const __nv_bfloat16* src, float* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = __bfloat162float(src[i]);
}

__global__ void fill_kernel(float* p, float value, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    p[i] = value;
}

template <class T>
__device__ float to_f32(T v);
template <>
__device__ float to_f32<float>(float v) { return v; }
template <>
__device__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T>
__global__ void embed_kernel(const T* table, int64_t vocab, int64_t hidden, const int32_t* tokens, float* out,
                             int* error) {
  const int64_t row = blockIdx.x;
  const int32_t id = tokens[row];
  float* o = out + row * hidden;
  if (id < 0 || id >= vocab) {
    if (threadIdx.x == 0) report(error, kErrTokenRange, id);
    for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) o[c] = NAN;
    return;
  }
  const T* t = table + int64_t(id) * hidden;
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) o[c] = to_f32(t[c]);
}

// f32 -> Out: the identity, or bf16 rounded to nearest even (as f32_to_bf16_kernel).
template <class Out>
__device__ Out from_f32(float v);
template <>
__device__ float from_f32<float>(float v) { return v; }
template <>
__device__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Out = bf16: the f32 result rounded once, bitwise what rmsnorm then convert gives.
template <class Out>
__global__ void rmsnorm_kernel(const float* x, const float* w, float eps, int64_t d, Out* out) {
  cuda::pdl_trigger();  // the product after it (small_gemm) may fetch its weights meanwhile
  __shared__ double shared[kMaxWarps];
  const float* xi = x + blockIdx.x * d;
  Out* oi = out + blockIdx.x * d;
  double ss = 0.0;
#pragma unroll 4
  for (int64_t k = threadIdx.x; k < d; k += blockDim.x) ss += double(xi[k]) * xi[k];
  ss = block_sum(ss, shared);  // every read of x precedes its overwrite (out may be x)
  const float inv = float(1.0 / sqrt(ss / double(d) + double(eps)));
  for (int64_t k = threadIdx.x; k < d; k += blockDim.x) oi[k] = from_f32<Out>(w[k] * (xi[k] * inv));
}

__global__ void bias_kernel(float* out, const float* bias, int64_t n, int64_t cols) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * cols; i += int64_t(gridDim.x) * blockDim.x)
    out[i] += bias[i % cols];
}

// Global positions of a launch's rows: start + i * stride (a prefill stripe), or listed one
// by one (a decode batch; passed by value in the launch's parameters).
struct StridedPositions {
  int64_t start, stride;
  __device__ int64_t operator[](int64_t i) const { return start + i * stride; }
};
struct ListedPositions {
  int64_t pos[kRopeMaxRows];
  __device__ int64_t operator[](int64_t i) const { return pos[i]; }
};

// One thread per (row, frequency, group of heads_per_thread heads): the float64 angle and
// its cos/sin are computed once per thread and applied to the heads of its group. Prefill
// chunks give every head to one thread (thousands of rows keep the GPU busy); a decode row
// spreads its heads over threads (one thread looping over 32 heads took 17 us).
template <class Positions>
__global__ void rope_kernel(float* x, int64_t n, int64_t n_heads, int64_t half, const double* inv_freq,
                            const __grid_constant__ Positions positions, int64_t heads_per_thread) {
  const int64_t groups = (n_heads + heads_per_thread - 1) / heads_per_thread;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n * half * groups;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t g = idx / (n * half), i = idx % (n * half) / half, d = idx % half;
    float c, s;
    cuda::rope_cos_sin(positions[i], inv_freq[d], c, s);
    float* row = x + i * n_heads * 2 * half;
    const int64_t h_end = (g + 1) * heads_per_thread < n_heads ? (g + 1) * heads_per_thread : n_heads;
    for (int64_t h = g * heads_per_thread; h < h_end; ++h) cuda::rope_rotate(row + h * 2 * half, d, half, c, s);
  }
}

// out = silu(g) * u; Out = bf16: the f32 value rounded once (out may be g when Out is f32).
template <class Out>
__global__ void swiglu_kernel(const float* g, const float* u, int64_t n, Out* out) {
  cuda::pdl_trigger();  // as rmsnorm_kernel: for the down projection
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = g[i];
    out[i] = from_f32<Out>(gi / (1.0f + expf(-gi)) * u[i]);
  }
}

// One warp per (row, head), grid-stride over the pairs.
__global__ void merge_kernel(float* o, float* lse, const float* o2, const float* lse2, int64_t pairs, int64_t d) {
  cuda::pdl_trigger();  // as rmsnorm_kernel: for the output projection
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * blockDim.x / 32;
  for (int64_t p = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; p < pairs; p += warps) {
    float l, w1, w2;
    cuda::lse_merge_weights(lse[p], lse2[p], l, w1, w2);
    for (int64_t k = lane; k < d; k += 32) o[p * d + k] = w1 * o[p * d + k] + w2 * o2[p * d + k];
    __syncwarp();
    if (lane == 0) lse[p] = l;
  }
}

__global__ void logprob_kernel(const float* logits, int64_t V, const int32_t* targets, float* out, int* error) {
  __shared__ float fshared[kMaxWarps];
  __shared__ double dshared[kMaxWarps];
  const int64_t row = blockIdx.x;
  const float* l = logits + row * V;
  const int32_t t = targets[row];
  if (t < 0 || t >= V) {
    if (threadIdx.x == 0) {
      report(error, kErrTargetRange, t);
      out[row] = NAN;
    }
    return;
  }
  float m = -INFINITY;
  for (int64_t k = threadIdx.x; k < V; k += blockDim.x) m = fmaxf(m, l[k]);
  m = block_max(m, fshared);
  double sum = 0.0;
  for (int64_t k = threadIdx.x; k < V; k += blockDim.x) sum += exp(double(l[k] - m));
  sum = block_sum(sum, dshared);
  if (threadIdx.x == 0) out[row] = float(double(l[t] - m) - log(sum));
}

__global__ void penalize_kernel(float* logits, int64_t V, const int32_t* counts, double repetition, double frequency,
                                double presence) {
  for (int64_t v = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; v < V; v += int64_t(gridDim.x) * blockDim.x)
    logits[v] = penalized_logit(logits[v], counts[v], repetition, frequency, presence);
}

// (value, index) pairs of a block's kT threads reduced with "larger value, then lower
// index" (index `none`: no value yet; NaN never wins): the result in sv[0], si[0]. The rule
// does not depend on how the values were split among threads or blocks.
template <int kT>
__device__ void block_argmax(float best, int64_t bi, int64_t none, float* sv, int64_t* si) {
  sv[threadIdx.x] = best;
  si[threadIdx.x] = bi;
  __syncthreads();
  for (int s = kT / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      const float v = sv[threadIdx.x + s];
      const int64_t i = si[threadIdx.x + s];
      if (i != none && (si[threadIdx.x] == none || v > sv[threadIdx.x] || (v == sv[threadIdx.x] && i < si[threadIdx.x]))) {
        sv[threadIdx.x] = v;
        si[threadIdx.x] = i;
      }
    }
    __syncthreads();
  }
}

// Greedy argmax, pass 1: block b takes logits [b * run, (b + 1) * run) and leaves its best
// (value, index) in pv[b], pi[b] (index V: none).
constexpr int kArgmaxThreads = 256;
__global__ void argmax_partial_kernel(const float* logits, int64_t V, int64_t run, float* pv, int64_t* pi,
                                      int* error) {
  __shared__ float sv[kArgmaxThreads];
  __shared__ int64_t si[kArgmaxThreads];
  const int64_t begin = int64_t(blockIdx.x) * run, end = begin + run < V ? begin + run : V;
  float best = -INFINITY;
  int64_t bi = V;
  for (int64_t k = begin + threadIdx.x; k < end; k += kArgmaxThreads) {
    const float v = logits[k];
    if (!isfinite(v)) report(error, kErrNonFiniteLogit, int(k));
    if (v > best || (bi == V && !isnan(v))) {  // strictly larger keeps the lowest index
      best = v;
      bi = k;
    }
  }
  block_argmax<kArgmaxThreads>(best, bi, V, sv, si);
  if (threadIdx.x == 0) pv[blockIdx.x] = sv[0], pi[blockIdx.x] = si[0];
}

// Pass 2: one block over the blocks' results.
__global__ void argmax_final_kernel(const float* pv, const int64_t* pi, int blocks, int64_t V, int32_t* token) {
  __shared__ float sv[kArgmaxBlocks];
  __shared__ int64_t si[kArgmaxBlocks];
  const bool mine = int(threadIdx.x) < blocks;
  block_argmax<kArgmaxBlocks>(mine ? pv[threadIdx.x] : -INFINITY, mine ? pi[threadIdx.x] : V, V, sv, si);
  if (threadIdx.x == 0) token[0] = int32_t(si[0] == V ? 0 : si[0]);
}

}  // namespace

void convert_f32_to_bf16(const float* src, __nv_bfloat16* dst, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  f32_to_bf16_kernel<<<grid_for(n), kThreads, 0, stream>>>(src, dst, n);
  CUDA_CHECK_LAUNCH();
}

void convert_bf16_to_f32(const __nv_bfloat16* src, float* dst, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  bf16_to_f32_kernel<<<grid_for(n), kThreads, 0, stream>>>(src, dst, n);
  CUDA_CHECK_LAUNCH();
}

void fill_f32(float* p, float value, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  fill_kernel<<<grid_for(n), kThreads, 0, stream>>>(p, value, n);
  CUDA_CHECK_LAUNCH();
}

void embed_rows(const void* table, bool table_bf16, int64_t vocab, int64_t hidden, const int32_t* tokens, int64_t n,
                float* out, int* error, cudaStream_t stream) {
  if (n <= 0 || hidden <= 0) return;
  if (table_bf16)
    embed_kernel<<<unsigned(n), kRowThreads, 0, stream>>>(static_cast<const __nv_bfloat16*>(table), vocab, hidden,
                                                       tokens, out, error);
  else
    embed_kernel<<<unsigned(n), kRowThreads, 0, stream>>>(static_cast<const float*>(table), vocab, hidden, tokens, out,
                                                       error);
  CUDA_CHECK_LAUNCH();
}

void rmsnorm_rows(const float* x, const float* weight, float eps, int64_t n, int64_t d, float* out,
                  cudaStream_t stream) {
  if (n <= 0 || d <= 0) return;
  rmsnorm_kernel<<<unsigned(n), kRowThreads, 0, stream>>>(x, weight, eps, d, out);
  CUDA_CHECK_LAUNCH();
}

void rmsnorm_rows_bf16(const float* x, const float* weight, float eps, int64_t n, int64_t d, __nv_bfloat16* out,
                       cudaStream_t stream) {
  if (n <= 0 || d <= 0) return;
  rmsnorm_kernel<<<unsigned(n), kRowThreads, 0, stream>>>(x, weight, eps, d, out);
  CUDA_CHECK_LAUNCH();
}

void add_bias_rows(float* out, const float* bias, int64_t n, int64_t cols, cudaStream_t stream) {
  if (n <= 0 || cols <= 0) return;
  bias_kernel<<<grid_for(n * cols), kThreads, 0, stream>>>(out, bias, n, cols);
  CUDA_CHECK_LAUNCH();
}

namespace {
template <class Positions>
void launch_rope(float* x, int64_t n, int64_t n_heads, int64_t half, const double* inv_freq,
                 const Positions& positions, cudaStream_t stream) {
  const int64_t heads_per_thread = n * half >= 16384 ? n_heads : 1;
  const int64_t threads = n * half * ((n_heads + heads_per_thread - 1) / heads_per_thread);
  rope_kernel<<<grid_for(threads), kThreads, 0, stream>>>(x, n, n_heads, half, inv_freq, positions,
                                                          heads_per_thread);
  CUDA_CHECK_LAUNCH();
}
}  // namespace

void rope_strided(float* x, int64_t n, int64_t n_heads, int64_t half, const double* inv_freq, int64_t pos_start,
                  int64_t pos_stride, cudaStream_t stream) {
  if (n <= 0 || half <= 0) return;
  launch_rope(x, n, n_heads, half, inv_freq, StridedPositions{pos_start, pos_stride}, stream);
}

void rope_at_positions(float* x, int64_t n, int64_t n_heads, int64_t half, const double* inv_freq,
                       const int64_t* positions, cudaStream_t stream) {
  if (n <= 0 || half <= 0) return;
  for (int64_t r0 = 0; r0 < n; r0 += kRopeMaxRows) {
    const int64_t m = n - r0 < kRopeMaxRows ? n - r0 : kRopeMaxRows;
    ListedPositions p{};
    for (int64_t i = 0; i < m; ++i) p.pos[i] = positions[r0 + i];
    launch_rope(x + r0 * n_heads * 2 * half, m, n_heads, half, inv_freq, p, stream);
  }
}

void swiglu_inplace(float* gate, const float* up, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  swiglu_kernel<<<grid_for(n), kThreads, 0, stream>>>(gate, up, n, gate);
  CUDA_CHECK_LAUNCH();
}

void swiglu_to_bf16(const float* gate, const float* up, int64_t n, __nv_bfloat16* out, cudaStream_t stream) {
  if (n <= 0) return;
  swiglu_kernel<<<grid_for(n), kThreads, 0, stream>>>(gate, up, n, out);
  CUDA_CHECK_LAUNCH();
}

void merge_attention(float* o, float* lse, const float* o2, const float* lse2, int64_t rows, int64_t heads,
                     int64_t d, cudaStream_t stream) {
  const int64_t pairs = rows * heads;
  if (pairs <= 0) return;
  merge_kernel<<<grid_for(pairs * 32), kThreads, 0, stream>>>(o, lse, o2, lse2, pairs, d);
  CUDA_CHECK_LAUNCH();
}

void target_logprobs_rows(const float* logits, int64_t n, int64_t V, const int32_t* targets, float* out, int* error,
                          cudaStream_t stream) {
  if (n <= 0) return;
  logprob_kernel<<<unsigned(n), kThreads, 0, stream>>>(logits, V, targets, out, error);
  CUDA_CHECK_LAUNCH();
}

void penalize_row(float* logits, int64_t V, const int32_t* counts, double repetition, double frequency,
                  double presence, cudaStream_t stream) {
  if (V <= 0) return;
  penalize_kernel<<<grid_for(V), kThreads, 0, stream>>>(logits, V, counts, repetition, frequency, presence);
  CUDA_CHECK_LAUNCH();
}

void argmax_row(const float* logits, int64_t V, int32_t* token, int* error, void* workspace, cudaStream_t stream) {
  // Runs of at least 1024 logits: the 128K vocabularies take all kArgmaxBlocks blocks (one
  // block alone read them in 32 us), small ones a few.
  const int64_t run = std::max<int64_t>(1024, (V + kArgmaxBlocks - 1) / kArgmaxBlocks);
  const int blocks = int((V + run - 1) / run);
  auto* pv = static_cast<float*>(workspace);
  auto* pi = reinterpret_cast<int64_t*>(pv + kArgmaxBlocks);
  argmax_partial_kernel<<<blocks, kArgmaxThreads, 0, stream>>>(logits, V, run, pv, pi, error);
  CUDA_CHECK_LAUNCH();
  argmax_final_kernel<<<1, kArgmaxBlocks, 0, stream>>>(pv, pi, blocks, V, token);
  CUDA_CHECK_LAUNCH();
}

}  // namespace ringinfer
