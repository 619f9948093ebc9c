#pragma once
// Matrix products of a few rows (decode: one row per document in the batch) against bf16
// weights, at the weights' memory bandwidth: out (n, of) = x (n, in) W^T [+ out] [+ bias].
// cuBLAS runs such shapes as a split-K GEMM at about half the copy bandwidth and needs x
// converted to bf16 by a kernel of its own first; this reads W once, streaming, rounds x to
// bf16 once per block (the same operands as the cuBLAS path: bf16 x and W, products and sums
// in fp32), and takes the bias and the accumulation in its epilogue. Up to
// kSmallGemmMaxProducts products that share x (Q, K and V; gate and up) run in one launch,
// which may also take the RMSNorm before them and the SwiGLU after gate and up
// (SmallGemmFusion): a decode layer's small kernels, folded into the products.
// Host-callable; raw device pointers; CUDA builds only.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace ringinfer {

// At 3-4 rows cuBLAS was as fast or faster for most of the 8B shape's products (H100,
// docs/PERFORMANCE.md), so the kernel takes 1 or 2.
constexpr int64_t kSmallGemmMaxRows = 2;
constexpr int kSmallGemmMaxProducts = 4;

// One product of a launch: out (n, of) f32 [+]= x W^T + bias; w (of, in) bf16, bias (of)
// f32 or null.
struct SmallGemmProduct {
  const __nv_bfloat16* w = nullptr;
  const float* bias = nullptr;
  float* out = nullptr;
  int64_t of = 0;
};

// What a launch folds in besides the products. norm: x is first normalized row by row as
// rmsnorm() does (out = norm * (x / sqrt(mean(x^2) + eps)), the sum of squares in float64),
// norm (in) f32, 16-byte aligned. swiglu: the launch has two products of one shape, gate
// and up, and product 0's out receives silu(gate) * up (as swiglu() computes it from the
// two outs), product 1's out is not written; no accumulation.
struct SmallGemmFusion {
  const float* norm = nullptr;
  float eps = 0.f;
  bool swiglu = false;
};

// Whether small_gemm_bf16 takes x (n, in) at `x` against w (of, in): 1 <= n <=
// kSmallGemmMaxRows, in >= 8 and a multiple of 8, n * in bf16 within the 100 KB of shared
// memory it stages x in, x and w 16-byte aligned (rows are read in 16-byte pieces), in and
// of below 2^28.
bool small_gemm_supported(int64_t n, int64_t in, int64_t of, const void* x, const void* w);

// For each of the `count` products: out[m][j] = (accumulate ? out[m][j] : 0) +
// sum_k bf16(x[m][k]) * w[j][k] (fp32, in an order fixed by `in` alone) + bias[j], m < n.
// With `fusion`, x is normalized first and/or gate and up are combined, as SmallGemmFusion
// says; the sums are the same. Throws ringinfer::Error unless small_gemm_supported() holds
// for every product and the fusion's conditions hold.
void small_gemm_bf16(const float* x, int64_t n, int64_t in, const SmallGemmProduct* products, int count,
                     bool accumulate, cudaStream_t stream, const SmallGemmFusion& fusion = {});

}  // namespace ringinfer
