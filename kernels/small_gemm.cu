// Few-row matrix products against bf16 weights (small_gemm.h).
//
// Work split. The products of a launch are laid end to end over the grid (each owns a run
// of blocks); a block of 8 warps covers 8 * kRowsPerWarp consecutive output features j
// (weight rows) of its product, and a warp takes kRowsPerWarp of them whole. Lanes read a
// weight row in 16-byte pieces, 32 side by side, kIter pieces per lane and row issued
// before the first product (4 or 8 KB per warp in flight), then multiply them by the matching x
// values (read through L1, rounded to bf16 in registers). A lane sums its pieces in
// increasing order and the warp adds the lanes with a fixed butterfly, so a result depends
// on `in` alone: not on n, the grid, or the other products of the launch. The kernel is
// launched as a programmatic dependent (cuda_common.cuh): its first weight loads overlap the
// end of the kernel before it, which writes x; x and out are touched only after pdl_wait().
#include <string>

#include "cuda_common.cuh"
#include "ringinfer/cuda_check.h"
#include "small_gemm.h"

namespace ringinfer {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kIter = 8;  // 16-byte pieces per lane per weight row issued at once

struct Launch {
  SmallGemmProduct product[kSmallGemmMaxProducts];
  int first_block[kSmallGemmMaxProducts];
  int count;
};

// 16 bytes of weights, read once: no L1 allocation (a layer's weights are read once per
// token, and x, which is reused, keeps L1).
__device__ __forceinline__ uint4 load_streaming(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// The two bf16 of a 32-bit word (element 0 in the low half) as floats: exact.
__device__ __forceinline__ float low_bf16(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float high_bf16(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

// acc + the 8 products of two 16-byte pieces of bf16, in element order.
__device__ __forceinline__ float dot8(uint4 w, uint4 x, float acc) {
  acc = fmaf(low_bf16(w.x), low_bf16(x.x), acc);
  acc = fmaf(high_bf16(w.x), high_bf16(x.x), acc);
  acc = fmaf(low_bf16(w.y), low_bf16(x.y), acc);
  acc = fmaf(high_bf16(w.y), high_bf16(x.y), acc);
  acc = fmaf(low_bf16(w.z), low_bf16(x.z), acc);
  acc = fmaf(high_bf16(w.z), high_bf16(x.z), acc);
  acc = fmaf(low_bf16(w.w), low_bf16(x.w), acc);
  acc = fmaf(high_bf16(w.w), high_bf16(x.w), acc);
  return acc;
}

// Eight fp32 values of x (16-byte aligned) rounded to bf16 (nearest even), as one piece.
__device__ __forceinline__ uint4 x_piece(const float* p) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(p)), b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  return make_uint4(cuda::pack_bf16x2(a.x, a.y), cuda::pack_bf16x2(a.z, a.w), cuda::pack_bf16x2(b.x, b.y),
                    cuda::pack_bf16x2(b.z, b.w));
}

// kRows: x rows compiled for (n <= kRows; rows past n are neither read nor written).
template <int kRows, int kRowsPerWarp>
__global__ void __launch_bounds__(kThreads)
    small_gemm_kernel(const float* __restrict__ x, int n, int in, const __grid_constant__ Launch launch,
                      bool accumulate) {
  int pi = 0;
  for (int i = 1; i < launch.count; ++i)
    if (int(blockIdx.x) >= launch.first_block[i]) pi = i;
  const SmallGemmProduct& P = launch.product[pi];
  const int of = int(P.of), warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int j0 = ((int(blockIdx.x) - launch.first_block[pi]) * kWarps + warp) * kRowsPerWarp;
  if (j0 >= of) return;  // no block-wide synchronization below
  const int pieces = in / 8;
  const __nv_bfloat16* row[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) row[r] = P.w + size_t(min(j0 + r, of - 1)) * in;  // past the end: re-read, not written
  float acc[kRowsPerWarp][kRows];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int m = 0; m < kRows; ++m) acc[r][m] = 0.f;

  for (int base = 0; base < pieces; base += kIter * 32) {
    uint4 wv[kRowsPerWarp][kIter];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
      for (int p = 0; p < kIter; ++p) {
        const int piece = base + p * 32 + lane;
        wv[r][p] = piece < pieces ? load_streaming(row[r] + size_t(piece) * 8) : make_uint4(0, 0, 0, 0);
      }
    // Launched as a programmatic dependent (launch_rows): the first weights are on their way
    // while the kernel before (RMSNorm, SwiGLU, the attention merge) finishes writing x.
    if (base == 0) cuda::pdl_wait();
#pragma unroll
    for (int p = 0; p < kIter; ++p) {
      const int piece = base + p * 32 + lane;
      if (piece >= pieces) break;
#pragma unroll
      for (int m = 0; m < kRows; ++m) {
        if (m >= n) break;
        const uint4 xv = x_piece(x + size_t(m) * in + size_t(piece) * 8);
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) acc[r][m] = dot8(wv[r][p], xv, acc[r][m]);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int j = j0 + r;
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
      const float sum = cuda::warp_sum(acc[r][m]);
      if (lane == 0 && j < of && m < n) {
        const size_t at = size_t(m) * of + j;
        float v = accumulate ? sum + P.out[at] : sum;  // cuBLAS's beta = 1, then the bias (matmul's order)
        if (P.bias) v += P.bias[j];
        P.out[at] = v;
      }
    }
  }
}

template <int kRows, int kRowsPerWarp>
void launch_rows(const float* x, int n, int in, const SmallGemmProduct* products, int count, bool accumulate,
                 cudaStream_t stream) {
  Launch l{};
  int blocks = 0;
  for (int i = 0; i < count; ++i) {
    l.product[i] = products[i];
    l.first_block[i] = blocks;
    blocks += int((products[i].of + kWarps * kRowsPerWarp - 1) / (kWarps * kRowsPerWarp));
  }
  l.count = count;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(unsigned(blocks));
  config.blockDim = dim3(kThreads);
  config.stream = stream;
  cudaLaunchAttribute dependent[1];
  dependent[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  dependent[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = dependent;
  config.numAttrs = 1;
  CUDA_CHECK(cudaLaunchKernelEx(&config, small_gemm_kernel<kRows, kRowsPerWarp>, x, n, in, l, accumulate));
}

template <int kRows>
void launch(const float* x, int n, int in, const SmallGemmProduct* products, int count, bool accumulate,
            cudaStream_t stream) {
  // Two weight rows per warp where there are rows enough to fill the device twice over
  // (fewer, longer-lived warps); one where two would leave multiprocessors idle.
  int64_t rows = 0;
  for (int i = 0; i < count; ++i) rows += products[i].of;
  if (rows >= 8192)
    launch_rows<kRows, 2>(x, n, in, products, count, accumulate, stream);
  else
    launch_rows<kRows, 1>(x, n, in, products, count, accumulate, stream);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool small_gemm_supported(int64_t n, int64_t in, int64_t of, const void* x, const void* w) {
  return n >= 1 && n <= kSmallGemmMaxRows && in >= 8 && in % 8 == 0 && of >= 1 && in < (int64_t(1) << 28) &&
         of < (int64_t(1) << 28) && aligned16(x) && aligned16(w);
}

void small_gemm_bf16(const float* x, int64_t n, int64_t in, const SmallGemmProduct* products, int count,
                     bool accumulate, cudaStream_t stream) {
  if (count < 1 || count > kSmallGemmMaxProducts) throw Error("small_gemm: 1 to 4 products per launch");
  for (int i = 0; i < count; ++i)  // the kernel relies on it (its wait comes with the first weights)
    if (!small_gemm_supported(n, in, products[i].of, x, products[i].w))
      throw Error("small_gemm: product " + std::to_string(i) + " (" + std::to_string(n) + " x " + std::to_string(in) +
                  " -> " + std::to_string(products[i].of) + ") is not a few-row shape it takes");
  const int ni = int(n), ii = int(in);
  if (n <= 1)
    launch<1>(x, ni, ii, products, count, accumulate, stream);
  else if (n <= 2)
    launch<2>(x, ni, ii, products, count, accumulate, stream);
  else
    launch<4>(x, ni, ii, products, count, accumulate, stream);
}

}  // namespace ringinfer
