#pragma once
// Device helpers shared by the kernels in kernels/*.cu: 16-byte packed access,
// cp.async (global -> shared, bypassing registers), ldmatrix and the bf16 tensor-core
// MMA (m16n8k16, fp32 accumulate), fast exp2, the LSE merge weights, quad and warp reductions,
// and the programmatic-dependent-launch hooks.
//
// Fragment layouts (PTX ISA, "mma.m16n8k16" with .bf16), lane = threadIdx.x % 32,
// g = lane / 4 ("group", a row), t = lane % 4 (a pair of columns):
//   A (16x16, row-major):  a0 = A[g][2t..2t+1]    a1 = A[g+8][2t..2t+1]
//                          a2 = A[g][2t+8..+9]    a3 = A[g+8][2t+8..+9]
//   B (16x8, "col-major"): b0 = B[2t..2t+1][g]    b1 = B[2t+8..+9][g]
//   C (16x8, fp32):        c0,c1 = C[g][2t..2t+1] c2,c3 = C[g+8][2t..2t+1]
// ldmatrix.x4 loads four 8x8 bf16 matrices; lanes 8i..8i+7 give the 8 row addresses of
// matrix i, and lane L receives row L/4, columns 2(L%4)..+1 of each (register i = matrix
// i). With .trans it receives the transpose, which turns a row-major [key][dim] tile of V
// into B fragments.
#include <cuda_bf16.h>
#include <math.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <utility>

#include "ringinfer/cuda_check.h"

namespace ringinfer::cuda {

// ---------------------------------------------------------------- 16-byte access
// Eight bf16 values that travel as one 16-byte load/store (like llm.c's Packed128).
struct alignas(16) Packed128 {
  uint4 bits;
  __device__ static Packed128 load(const void* p) { return {*reinterpret_cast<const uint4*>(p)}; }
  __device__ void store(void* p) const { *reinterpret_cast<uint4*>(p) = bits; }
};

// ---------------------------------------------------------------- cp.async
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Copies 16 bytes global -> shared asynchronously; when !valid writes 16 zero bytes
// (src-size 0), so out-of-range rows of a tile read as zeros, never as garbage.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)),
               "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// ---------------------------------------------------------------- ldmatrix / mma
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem)));
}

// c += A(16x16 bf16) * B(16x8 bf16), fp32 accumulators.
__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats -> one register of two bf16 (lo in the low half), round to nearest.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// ---------------------------------------------------------------- math
// Merge weights of two partial softmax results with log-sum-exps l1, l2 (natural log), as
// striped.h's merge_lse_weights (the host rule): l = logaddexp(l1, l2), w_i = e^(l_i - l);
// both -inf gives l = -inf and w1 = w2 = 0 (an empty part merges as the identity).
__device__ __forceinline__ void lse_merge_weights(float l1, float l2, float& l, float& w1, float& w2) {
  const float m = fmaxf(l1, l2);
  l = -INFINITY;
  w1 = w2 = 0.f;
  if (m == -INFINITY) return;
  const float e1 = expf(l1 - m), e2 = expf(l2 - m), sum = e1 + e2;
  l = m + logf(sum);
  w1 = e1 / sum;
  w2 = e2 / sum;
}

// 2^x with the hardware approximation (rel. error ~2^-22); ex2(-inf) = 0.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Max / sum over the 4 lanes of a quad (the lanes that share a row of an MMA fragment).
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
// Sum over the 32 lanes of a warp (a fixed butterfly: every lane gets the same value).
template <class T>
__device__ __forceinline__ T warp_sum(T x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
// Max over the 32 lanes of a warp (fmaxf: a NaN lane loses to a number).
__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// ---------------------------------------------------------------- programmatic dependent launch
// Hopper lets the next kernel on a stream start while this one runs, when it is launched
// with cudaLaunchAttributeProgrammaticStreamSerialization: it may read what no kernel before
// it writes (weights) until pdl_wait(), which returns once the previous grid has finished
// and its writes are visible. pdl_trigger() lets such a dependent start early (at the latest
// it starts when this grid's blocks exit); it changes only scheduling, never what is read.
// Both are no-ops for kernels launched the ordinary way.
// Before sm_90 there is no early start, and nothing to wait for.
__device__ __forceinline__ void pdl_trigger() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::);
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Launches kernel<<<grid, block, smem, stream>>>(args...) as a programmatic dependent of the
// kernel before it on the stream. The kernel must call pdl_wait() before it reads what an
// earlier kernel wrote (and every block before it exits, so that the kernel after it, which
// waits only for this one, also finds the earlier ones done).
template <class... Params, class... Args>
void launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                      Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute dependent[1];
  dependent[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  dependent[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = dependent;
  config.numAttrs = 1;
  CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

// ---------------------------------------------------------------- RoPE
// The rotation of one pair (x[d], x[d + D/2]) at `position`: the angle position *
// inv_freq[d] and its cos/sin in float64, the rotation in fp32. Every RoPE kernel calls
// these, so they rotate bitwise alike.
__device__ __forceinline__ void rope_cos_sin(int64_t position, double inv_freq, float& c, float& s) {
  double sd, cd;
  sincos(double(position) * inv_freq, &sd, &cd);
  c = float(cd);
  s = float(sd);
}
__device__ __forceinline__ void rope_rotate(float* x, int64_t d, int64_t half, float c, float s) {
  const float a = x[d], b = x[d + half];
  x[d] = a * c - b * s;
  x[d + half] = b * c + a * s;
}

// ---------------------------------------------------------------- shared-memory tiles
// A tile of `rows` x D bf16 (D = 64 or 128) in shared memory, stored as 16-byte chunks
// with chunk c of row r at position c ^ (r % 8): the 8 rows an ldmatrix reads at one
// chunk column land in 8 different 16-byte bank groups, so neither cp.async stores nor
// ldmatrix loads conflict (a plain row-major tile would put all 8 rows on one bank
// group when D*2 bytes is a multiple of 128).
template <int D>
__device__ __forceinline__ int swizzle(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

}  // namespace ringinfer::cuda
