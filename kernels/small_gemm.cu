// Few-row matrix products against bf16 weights (small_gemm.h).
//
// Work split. A task is a group of kRowsPerWarp output features j (weight rows) of one
// product; the tasks of a launch's products are numbered end to end. The grid is as many
// blocks of 8 warps as the device holds at once (or fewer, for few tasks), and warp w of
// the W in the grid takes tasks w, w + W, w + 2W, ... one after another, so no warp waits
// for a new block and the bytes in flight never drop between waves. A warp reads a task's
// weight rows in chunks of kPieces 16-byte pieces per lane (32 lanes side by side) and
// loads the next chunk (of this task or its next one) before it multiplies the current
// one: two chunks in registers, the memory pipe never idle while it computes.
//
// x. Each block first writes x, rounded to bf16 (the operand the cuBLAS path multiplies),
// into shared memory once, where every warp reads it (16 bytes a piece instead of 32 of
// fp32 through L1; small_gemm_supported() takes the x that fits). A lane sums its pieces
// in increasing order and the warp adds the lanes with a fixed butterfly, so a result
// depends on `in` alone: not on n, the grid, or the other products of the launch. The
// kernel is launched as a programmatic dependent (cuda_common.cuh): its first weight loads
// overlap the end of the kernel before it, which writes x; x and out are touched only after
// pdl_wait().
//
// Fusions (SmallGemmFusion). RMSNorm: each block sums the squares of the x rows (float64,
// a fixed order over the block's threads) and normalizes x as it stages it, so the
// normalized x is never written to global memory. SwiGLU: a task is row j of gate and row
// j of up (kRowsPerWarp = 2) and writes silu(g) * u; each sum is the one the unfused launch
// computes, so the result is bitwise what the products followed by swiglu() give.
#include <algorithm>
#include <string>

#include "cuda_common.cuh"
#include "ringinfer/cuda_check.h"
#include "small_gemm.h"

namespace ringinfer {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
// The most x staged in shared memory, in bytes of bf16 (n * in * 2): the 8B shape's
// products at 2 rows, a 70B shape's at 1.
constexpr int64_t kMaxStagedBytes = 100 * 1024;
constexpr int kMaxDevices = 64;

struct Launch {
  SmallGemmProduct product[kSmallGemmMaxProducts];
  int first_task[kSmallGemmMaxProducts];
  int count;
  int tasks;
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

// Eight fp32 values of x (16-byte aligned) rounded to bf16 (nearest even), as one piece;
// normalized first with kNorm, as rmsnorm_kernel writes them: g * (x * inv).
template <bool kNorm>
__device__ __forceinline__ uint4 x_piece(const float* p, const float* g, float inv) {
  float4 a = __ldg(reinterpret_cast<const float4*>(p)), b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  if constexpr (kNorm) {
    const float4 ga = __ldg(reinterpret_cast<const float4*>(g)), gb = __ldg(reinterpret_cast<const float4*>(g) + 1);
    a = make_float4(ga.x * (a.x * inv), ga.y * (a.y * inv), ga.z * (a.z * inv), ga.w * (a.w * inv));
    b = make_float4(gb.x * (b.x * inv), gb.y * (b.y * inv), gb.z * (b.z * inv), gb.w * (b.w * inv));
  }
  return make_uint4(cuda::pack_bf16x2(a.x, a.y), cuda::pack_bf16x2(a.z, a.w), cuda::pack_bf16x2(b.x, b.y),
                    cuda::pack_bf16x2(b.z, b.w));
}

// Where a warp's chunk k is: the weight rows of its task and the chunk's first piece.
template <int kRowsPerWarp>
struct ChunkAt {
  const __nv_bfloat16* row[kRowsPerWarp];
  int product, j0, base;  // base: first piece of the chunk; j0: the task's first feature
  bool last;              // the task's last chunk
};

template <int kRowsPerWarp, bool kSwiglu, int kPieces>
__device__ __forceinline__ ChunkAt<kRowsPerWarp> chunk_at(const Launch& l, int warp_id, int warps, int chunks, int k,
                                                          int in) {
  ChunkAt<kRowsPerWarp> c;
  const int task = warp_id + (k / chunks) * warps, ci = k % chunks;
  int pi = 0;
  for (int i = 1; i < l.count; ++i)
    if (task >= l.first_task[i]) pi = i;
  const SmallGemmProduct& P = l.product[pi];
  const int of = int(P.of);
  c.product = pi;
  c.j0 = (task - l.first_task[pi]) * (kSwiglu ? 1 : kRowsPerWarp);
  c.base = ci * kPieces * 32;
  c.last = ci == chunks - 1;
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)  // past the end: re-read, not written
    c.row[r] = kSwiglu ? l.product[r].w + size_t(c.j0) * in : P.w + size_t(min(c.j0 + r, of - 1)) * in;
  return c;
}

// kRows: x rows compiled for (n <= kRows; rows past n are neither read nor written).
// kNorm, kSwiglu: the fusions (SmallGemmFusion); kSwiglu takes kRowsPerWarp = 2, row r of
// a task from product r.
template <int kRows, int kRowsPerWarp, bool kNorm, bool kSwiglu>
__global__ void __launch_bounds__(kThreads)
    small_gemm_kernel(const float* __restrict__ x, int n, int in, const __grid_constant__ Launch launch,
                      bool accumulate) {
  static_assert(!kSwiglu || kRowsPerWarp == 2, "SwiGLU pairs a gate row with an up row");
  // The kernel after this one (a product or the RoPE + store, programmatic dependents too)
  // may start its blocks as this grid's retire: they take the places this one leaves and
  // fetch their first weights during its tail.
  cuda::pdl_trigger();
  constexpr int kPieces = kRowsPerWarp == 1 ? 8 : 4;  // per lane, row and chunk: 4 KB per warp in flight
  extern __shared__ uint4 staged_x[];                 // [n][in / 8] pieces
  __shared__ double partial_ss[kRows][kWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int pieces = in / 8, chunks = (pieces + kPieces * 32 - 1) / (kPieces * 32);
  const int warps = int(gridDim.x) * kWarps, warp_id = int(blockIdx.x) * kWarps + warp;
  const int my_tasks = launch.tasks > warp_id ? (launch.tasks - warp_id + warps - 1) / warps : 0;
  const int total = my_tasks * chunks;

  using Chunk = ChunkAt<kRowsPerWarp>;
  auto load = [&](uint4 (&w)[kRowsPerWarp][kPieces], const Chunk& c) {
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
      for (int p = 0; p < kPieces; ++p) {
        const int piece = c.base + p * 32 + lane;
        w[r][p] = piece < pieces ? load_streaming(c.row[r] + size_t(piece) * 8) : make_uint4(0, 0, 0, 0);
      }
  };
  uint4 wa[kRowsPerWarp][kPieces], wb[kRowsPerWarp][kPieces];
  Chunk ca, cb;
  if (total > 0) {
    ca = chunk_at<kRowsPerWarp, kSwiglu, kPieces>(launch, warp_id, warps, chunks, 0, in);
    load(wa, ca);
  }

  // The first weights are on their way while the kernel before (the decode combine or
  // merge, an unfused RMSNorm or SwiGLU) finishes writing x.
  cuda::pdl_wait();
  float inv[kRows];
  if constexpr (kNorm) {
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
      if (m >= n) break;
      double ss = 0.0;
      for (int k = threadIdx.x * 4; k < in; k += kThreads * 4) {
        const float4 v = __ldg(reinterpret_cast<const float4*>(x + size_t(m) * in + k));
        ss += double(v.x) * v.x;
        ss += double(v.y) * v.y;
        ss += double(v.z) * v.z;
        ss += double(v.w) * v.w;
      }
      ss = cuda::warp_sum(ss);
      if (lane == 0) partial_ss[m][warp] = ss;
    }
    __syncthreads();
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
      if (m >= n) break;
      double ss = 0.0;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) ss += partial_ss[m][w];
      inv[m] = float(1.0 / sqrt(ss / double(in) + double(launch.eps)));
    }
  }
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    if (m >= n) break;
    for (int piece = threadIdx.x; piece < pieces; piece += kThreads)
      staged_x[m * pieces + piece] =
          x_piece<kNorm>(x + size_t(m) * in + size_t(piece) * 8, kNorm ? launch.norm + size_t(piece) * 8 : nullptr,
                         kNorm ? inv[m] : 1.f);
  }
  __syncthreads();

  float acc[kRowsPerWarp][kRows];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int m = 0; m < kRows; ++m) acc[r][m] = 0.f;

  auto compute = [&](const uint4 (&w)[kRowsPerWarp][kPieces], const Chunk& c) {
#pragma unroll
    for (int p = 0; p < kPieces; ++p) {
      const int piece = c.base + p * 32 + lane;
      if (piece >= pieces) break;
#pragma unroll
      for (int m = 0; m < kRows; ++m) {
        if (m >= n) break;
        const uint4 xv = staged_x[m * pieces + piece];
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) acc[r][m] = dot8(w[r][p], xv, acc[r][m]);
      }
    }
    if (!c.last) return;
    // The task's sums: out, then a fresh start for the next task.
    const SmallGemmProduct& P = launch.product[c.product];
    const int of = int(P.of);
    if constexpr (kSwiglu) {
      const SmallGemmProduct &G = launch.product[0], &U = launch.product[1];
#pragma unroll
      for (int m = 0; m < kRows; ++m) {
        float g = cuda::warp_sum(acc[0][m]), u = cuda::warp_sum(acc[1][m]);
        if (lane == 0 && m < n) {  // the unfused epilogue's sums, then swiglu_kernel's formula
          if (G.bias) g += G.bias[c.j0];
          if (U.bias) u += U.bias[c.j0];
          G.out[size_t(m) * of + c.j0] = g / (1.0f + expf(-g)) * u;
        }
      }
    } else {
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const int j = c.j0 + r;
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
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
      for (int m = 0; m < kRows; ++m) acc[r][m] = 0.f;
  };

  // Two chunks in registers: the next one loads while this one is multiplied.
  for (int k = 0; k < total; k += 2) {
    if (k + 1 < total) {
      cb = chunk_at<kRowsPerWarp, kSwiglu, kPieces>(launch, warp_id, warps, chunks, k + 1, in);
      load(wb, cb);
    }
    compute(wa, ca);
    if (k + 1 >= total) break;
    if (k + 2 < total) {
      ca = chunk_at<kRowsPerWarp, kSwiglu, kPieces>(launch, warp_id, warps, chunks, k + 2, in);
      load(wa, ca);
    }
    compute(wb, cb);
  }
}

// Blocks of `kernel` one multiprocessor holds with `smem` bytes of dynamic shared memory,
// times the multiprocessors: the grid that keeps every warp resident.
template <typename Kernel>
int resident_blocks(Kernel kernel, size_t smem) {
  int device = 0, sms = 0, per_sm = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem));
  return sms * (per_sm > 0 ? per_sm : 1);
}

template <int kRows, int kRowsPerWarp, bool kNorm, bool kSwiglu>
void launch_kernel(const float* x, int n, int in, const SmallGemmProduct* products, int count, bool accumulate,
                   const SmallGemmFusion& fusion, cudaStream_t stream) {
  Launch l{};
  int tasks = 0;
  for (int i = 0; i < count; ++i) {
    l.product[i] = products[i];
    l.first_task[i] = tasks;
    tasks += int((products[i].of + kRowsPerWarp - 1) / kRowsPerWarp);
  }
  if (kSwiglu) tasks = int(products[0].of);  // a task per (gate, up) row pair
  l.count = kSwiglu ? 1 : count;
  l.tasks = tasks;
  l.norm = fusion.norm;
  l.eps = fusion.eps;
  auto kernel = small_gemm_kernel<kRows, kRowsPerWarp, kNorm, kSwiglu>;
  const size_t smem = size_t(n) * size_t(in) * 2;
  // Once per instantiation and device: the shared-memory opt-in (above 48 KB) and the
  // resident grid at the most x it stages (registers allow 2 blocks per multiprocessor, and
  // so does that much shared memory).
  static int resident[kMaxDevices] = {};
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  if (device >= kMaxDevices) throw Error("small_gemm: device " + std::to_string(device) + " past the 64 it sizes for");
  if (resident[device] == 0) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kMaxStagedBytes)));
    resident[device] = resident_blocks(kernel, size_t(kMaxStagedBytes));
  }
  const int blocks = std::min(resident[device], (tasks + kWarps - 1) / kWarps);
  cuda::launch_dependent(kernel, dim3(unsigned(blocks)), dim3(kThreads), smem, stream, x, n, in, l, accumulate);
}

template <int kRows, bool kNorm>
void launch(const float* x, int n, int in, const SmallGemmProduct* products, int count, bool accumulate,
            const SmallGemmFusion& fusion, cudaStream_t stream) {
  if (fusion.swiglu)
    launch_kernel<kRows, 2, kNorm, true>(x, n, in, products, count, accumulate, fusion, stream);
  else
    launch_kernel<kRows, 1, kNorm, false>(x, n, in, products, count, accumulate, fusion, stream);
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
         of < (int64_t(1) << 28) && n * in * 2 <= kMaxStagedBytes && aligned16(x) && aligned16(w);
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
  else
    launch<2>(x, ni, ii, products, count, accumulate, fusion, stream);
}

}  // namespace ringinfer
