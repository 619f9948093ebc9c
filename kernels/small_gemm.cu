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
//
// Fusions (SmallGemmFusion). RMSNorm: each warp computes the inverse RMS of the x rows
// itself (x is a few KB, in L1 after the first warp) and scales the pieces as it reads them,
// so the normalized x is never written. SwiGLU: a warp takes row j of gate and row j of up
// (two weight rows, as kRowsPerWarp = 2 does within one product) and writes silu(g) * u;
// each sum is the one the unfused launch computes, so the result is bitwise what the
// products followed by swiglu() give.
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
  const float* norm;  // RMSNorm weight (in), with kNorm
  float eps;
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

// The same eight values normalized first, as rmsnorm_kernel writes them: g * (x * inv).
__device__ __forceinline__ uint4 x_piece_normed(const float* p, const float* g, float inv) {
  float4 a = __ldg(reinterpret_cast<const float4*>(p)), b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  const float4 ga = __ldg(reinterpret_cast<const float4*>(g)), gb = __ldg(reinterpret_cast<const float4*>(g) + 1);
  a = make_float4(ga.x * (a.x * inv), ga.y * (a.y * inv), ga.z * (a.z * inv), ga.w * (a.w * inv));
  b = make_float4(gb.x * (b.x * inv), gb.y * (b.y * inv), gb.z * (b.z * inv), gb.w * (b.w * inv));
  return make_uint4(cuda::pack_bf16x2(a.x, a.y), cuda::pack_bf16x2(a.z, a.w), cuda::pack_bf16x2(b.x, b.y),
                    cuda::pack_bf16x2(b.z, b.w));
}

// 1 / sqrt(mean(x^2) + eps) of one row of `in` (a multiple of 4) values, over the warp, as
// rmsnorm_kernel computes it (squares summed in float64; the order differs, which moves the
// float result only when the float64 sums straddle a rounding point of it).
__device__ __forceinline__ float inverse_rms(const float* row, int in, float eps, int lane) {
  double ss = 0.0;
  for (int k = lane * 4; k < in; k += 128) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(row + k));
    ss += double(v.x) * v.x;
    ss += double(v.y) * v.y;
    ss += double(v.z) * v.z;
    ss += double(v.w) * v.w;
  }
  ss = cuda::warp_sum(ss);
  return float(1.0 / sqrt(ss / double(in) + double(eps)));
}

// kRows: x rows compiled for (n <= kRows; rows past n are neither read nor written).
// kNorm, kSwiglu: the fusions (SmallGemmFusion); kSwiglu takes kRowsPerWarp = 2, row r of
// a warp from product r.
template <int kRows, int kRowsPerWarp, bool kNorm, bool kSwiglu>
__global__ void __launch_bounds__(kThreads)
    small_gemm_kernel(const float* __restrict__ x, int n, int in, const __grid_constant__ Launch launch,
                      bool accumulate) {
  static_assert(!kSwiglu || kRowsPerWarp == 2, "SwiGLU pairs a gate row with an up row");
  int pi = 0;
  for (int i = 1; i < launch.count; ++i)
    if (int(blockIdx.x) >= launch.first_block[i]) pi = i;
  const SmallGemmProduct& P = launch.product[pi];
  const int of = int(P.of), warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int j0 = kSwiglu ? int(blockIdx.x) * kWarps + warp
                         : ((int(blockIdx.x) - launch.first_block[pi]) * kWarps + warp) * kRowsPerWarp;
  if (j0 >= of) return;  // no block-wide synchronization below
  const int pieces = in / 8;
  const __nv_bfloat16* row[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)  // past the end: re-read, not written
    row[r] = kSwiglu ? launch.product[r].w + size_t(j0) * in : P.w + size_t(min(j0 + r, of - 1)) * in;
  float acc[kRowsPerWarp][kRows];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int m = 0; m < kRows; ++m) acc[r][m] = 0.f;
  float inv[kRows];

  for (int base = 0; base < pieces; base += kIter * 32) {
    uint4 wv[kRowsPerWarp][kIter];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
      for (int p = 0; p < kIter; ++p) {
        const int piece = base + p * 32 + lane;
        wv[r][p] = piece < pieces ? load_streaming(row[r] + size_t(piece) * 8) : make_uint4(0, 0, 0, 0);
      }
    if (base == 0) {
      // Launched as a programmatic dependent (launch_rows): the first weights are on their
      // way while the kernel before (RMSNorm, SwiGLU, the attention merge) finishes writing x.
      cuda::pdl_wait();
      if constexpr (kNorm) {
#pragma unroll
        for (int m = 0; m < kRows; ++m)
          if (m < n) inv[m] = inverse_rms(x + size_t(m) * in, in, launch.eps, lane);
      }
    }
#pragma unroll
    for (int p = 0; p < kIter; ++p) {
      const int piece = base + p * 32 + lane;
      if (piece >= pieces) break;
#pragma unroll
      for (int m = 0; m < kRows; ++m) {
        if (m >= n) break;
        const float* xp = x + size_t(m) * in + size_t(piece) * 8;
        uint4 xv;
        if constexpr (kNorm)
          xv = x_piece_normed(xp, launch.norm + size_t(piece) * 8, inv[m]);
        else
          xv = x_piece(xp);
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) acc[r][m] = dot8(wv[r][p], xv, acc[r][m]);
      }
    }
  }

  if constexpr (kSwiglu) {
    const SmallGemmProduct &G = launch.product[0], &U = launch.product[1];
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
      float g = cuda::warp_sum(acc[0][m]), u = cuda::warp_sum(acc[1][m]);
      if (lane == 0 && m < n) {  // the unfused epilogue's sums, then swiglu_kernel's formula
        if (G.bias) g += G.bias[j0];
        if (U.bias) u += U.bias[j0];
        G.out[size_t(m) * of + j0] = g / (1.0f + expf(-g)) * u;
      }
    }
  } else {
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
}

template <int kRows, int kRowsPerWarp, bool kNorm, bool kSwiglu>
void launch_rows(const float* x, int n, int in, const SmallGemmProduct* products, int count, bool accumulate,
                 const SmallGemmFusion& fusion, cudaStream_t stream) {
  Launch l{};
  int blocks = 0;
  for (int i = 0; i < count; ++i) {
    l.product[i] = products[i];
    l.first_block[i] = blocks;
    blocks += int((products[i].of + kWarps * kRowsPerWarp - 1) / (kWarps * kRowsPerWarp));
  }
  if (kSwiglu) blocks = int((products[0].of + kWarps - 1) / kWarps);  // a warp per (gate, up) row pair
  l.count = kSwiglu ? 1 : count;
  l.norm = fusion.norm;
  l.eps = fusion.eps;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(unsigned(blocks));
  config.blockDim = dim3(kThreads);
  config.stream = stream;
  cudaLaunchAttribute dependent[1];
  dependent[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  dependent[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = dependent;
  config.numAttrs = 1;
  CUDA_CHECK(cudaLaunchKernelEx(&config, small_gemm_kernel<kRows, kRowsPerWarp, kNorm, kSwiglu>, x, n, in, l,
                                accumulate));
}

template <int kRows, bool kNorm>
void launch(const float* x, int n, int in, const SmallGemmProduct* products, int count, bool accumulate,
            const SmallGemmFusion& fusion, cudaStream_t stream) {
  if (fusion.swiglu) {
    launch_rows<kRows, 2, kNorm, true>(x, n, in, products, count, accumulate, fusion, stream);
    return;
  }
  // Two weight rows per warp where there are rows enough to fill the device twice over
  // (fewer, longer-lived warps); one where two would leave multiprocessors idle.
  int64_t rows = 0;
  for (int i = 0; i < count; ++i) rows += products[i].of;
  if (rows >= 8192)
    launch_rows<kRows, 2, kNorm, false>(x, n, in, products, count, accumulate, fusion, stream);
  else
    launch_rows<kRows, 1, kNorm, false>(x, n, in, products, count, accumulate, fusion, stream);
}

template <int kRows>
void launch(const float* x, int n, int in, const SmallGemmProduct* products, int count, bool accumulate,
            const SmallGemmFusion& fusion, cudaStream_t stream) {
  if (fusion.norm)
    launch<kRows, true>(x, n, in, products, count, accumulate, fusion, stream);
  else
    launch<kRows, false>(x, n, in, products, count, accumulate, fusion, stream);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool small_gemm_supported(int64_t n, int64_t in, int64_t of, const void* x, const void* w) {
  return n >= 1 && n <= kSmallGemmMaxRows && in >= 8 && in % 8 == 0 && of >= 1 && in < (int64_t(1) << 28) &&
         of < (int64_t(1) << 28) && aligned16(x) && aligned16(w);
}

void small_gemm_bf16(const float* x, int64_t n, int64_t in, const SmallGemmProduct* products, int count,
                     bool accumulate, cudaStream_t stream, const SmallGemmFusion& fusion) {
  if (count < 1 || count > kSmallGemmMaxProducts) throw Error("small_gemm: 1 to 4 products per launch");
  for (int i = 0; i < count; ++i)  // the kernel relies on it (its wait comes with the first weights)
    if (!small_gemm_supported(n, in, products[i].of, x, products[i].w))
      throw Error("small_gemm: product " + std::to_string(i) + " (" + std::to_string(n) + " x " + std::to_string(in) +
                  " -> " + std::to_string(products[i].of) + ") is not a few-row shape it takes");
  if (fusion.norm && !aligned16(fusion.norm)) throw Error("small_gemm: the RMSNorm weight is not 16-byte aligned");
  if (fusion.swiglu && (count != 2 || products[0].of != products[1].of || accumulate))
    throw Error("small_gemm: SwiGLU takes two products of one shape (gate, up), without accumulation");
  const int ni = int(n), ii = int(in);
  if (n <= 1)
    launch<1>(x, ni, ii, products, count, accumulate, fusion, stream);
  else if (n <= 2)
    launch<2>(x, ni, ii, products, count, accumulate, fusion, stream);
  else
    launch<4>(x, ni, ii, products, count, accumulate, fusion, stream);
}

}  // namespace ringinfer
