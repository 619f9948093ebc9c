// fp8 KV cache quantize / dequantize (kv_cache_ops.h). One warp per (token, head) row:
// the warp's max is exact and order-free, and the per-value rule is kv_quant.h's, so the
// bytes equal the CPU backend's.
#include "cuda_common.cuh"
#include "kv_cache_ops.h"
#include "ringinfer/cuda_check.h"
#include "ringinfer/kv_quant.h"

namespace ringinfer {

namespace {

constexpr int kWarpsPerBlock = 8;

// One warp quantizes the D values of one (token, head) into q and its scale: both store
// paths (quantize_kv_fp8, scatter_kv_rows) run this, so they write the same bytes.
__device__ __forceinline__ void quantize_head_warp(const float* xr, int D, int lane, uint8_t* q, float* scale) {
  float amax = 0.f;
  for (int d = lane; d < D; d += 32) amax = fmaxf(amax, fabsf(xr[d]));  // fmaxf skips NaN, as the CPU's fmax
  amax = cuda::warp_max(amax);
  const float s = kvq::fp8_scale(amax);
  if (lane == 0) *scale = s;
  for (int d = lane; d < D; d += 32) q[d] = kvq::fp8_quantize(xr[d], s);
}

__global__ void quantize_kv_fp8_kernel(const float* x, int64_t rows, int D, uint8_t* q, float* scale) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;
  quantize_head_warp(x + row * D, D, threadIdx.x % 32, q + row * D, scale + row);
}

// The destinations of one scatter_kv_rows launch, by value.
struct KvRowDsts {
  KvRowDst row[kKvScatterMaxRows];
};

// blockIdx.y: the destination; blockIdx.z: K (0) or V (1). bf16: one thread per value.
__global__ void scatter_kv_bf16_kernel(const float* k, const float* v, int64_t width,
                                       const __grid_constant__ KvRowDsts dst) {
  const KvRowDst& r = dst.row[blockIdx.y];
  const float* x = (blockIdx.z == 0 ? k : v) + r.src_row * width;
  auto* y = static_cast<__nv_bfloat16*>(blockIdx.z == 0 ? r.k : r.v);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < width; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = __float2bfloat16_rn(x[i]);
}

// fp8: one warp per KV head of the row.
__global__ void scatter_kv_fp8_kernel(const float* k, const float* v, int n_kv_heads, int D,
                                      const __grid_constant__ KvRowDsts dst) {
  const int head = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  if (head >= n_kv_heads) return;
  const KvRowDst& r = dst.row[blockIdx.y];
  const bool is_v = blockIdx.z == 1;
  const float* x = (is_v ? v : k) + (r.src_row * n_kv_heads + head) * D;
  uint8_t* q = static_cast<uint8_t*>(is_v ? r.v : r.k) + int64_t(head) * D;
  float* scale = (is_v ? r.v_scale : r.k_scale) + head;
  quantize_head_warp(x, D, threadIdx.x % 32, q, scale);
}

__global__ void dequantize_kv_fp8_kernel(const uint8_t* q, const float* scale, int64_t rows, int D,
                                         __nv_bfloat16* out) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const float s = scale[row];
  for (int d = lane; d < D; d += 32)
    out[row * D + d] = __float2bfloat16(kvq::fp8_e4m3_value(q[row * D + d]) * s);
}

unsigned blocks_for(int64_t rows) { return static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock); }

}  // namespace

void quantize_kv_fp8(const float* x, int64_t rows, int D, uint8_t* q, float* scale, cudaStream_t stream) {
  if (rows <= 0) return;
  quantize_kv_fp8_kernel<<<blocks_for(rows), 32 * kWarpsPerBlock, 0, stream>>>(x, rows, D, q, scale);
  CUDA_CHECK_LAUNCH();
}

void dequantize_kv_fp8(const uint8_t* q, const float* scale, int64_t rows, int D, __nv_bfloat16* out,
                       cudaStream_t stream) {
  if (rows <= 0) return;
  dequantize_kv_fp8_kernel<<<blocks_for(rows), 32 * kWarpsPerBlock, 0, stream>>>(q, scale, rows, D, out);
  CUDA_CHECK_LAUNCH();
}

void scatter_kv_rows(const float* k, const float* v, int n_kv_heads, int D, bool fp8, const KvRowDst* dst,
                     int64_t n, cudaStream_t stream) {
  if (n <= 0 || n_kv_heads <= 0 || D <= 0) return;
  const int64_t width = int64_t(n_kv_heads) * D;
  constexpr int kThreads = 256;
  for (int64_t r0 = 0; r0 < n; r0 += kKvScatterMaxRows) {
    const int m = static_cast<int>(n - r0 < kKvScatterMaxRows ? n - r0 : kKvScatterMaxRows);
    KvRowDsts table{};
    for (int i = 0; i < m; ++i) table.row[i] = dst[r0 + i];
    if (fp8) {
      const dim3 grid(blocks_for(n_kv_heads), unsigned(m), 2);
      scatter_kv_fp8_kernel<<<grid, 32 * kWarpsPerBlock, 0, stream>>>(k, v, n_kv_heads, D, table);
    } else {
      const int64_t blocks = (width + kThreads - 1) / kThreads;
      const dim3 grid(static_cast<unsigned>(blocks < 65535 ? blocks : 65535), unsigned(m), 2);
      scatter_kv_bf16_kernel<<<grid, kThreads, 0, stream>>>(k, v, width, table);
    }
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace ringinfer
