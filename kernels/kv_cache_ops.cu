// fp8 KV cache quantize / dequantize (kv_cache_ops.h). One warp per (token, head) row:
// the warp's max is exact and order-free, and the per-value rule is kv_quant.h's, so the
// bytes equal the CPU backend's.
#include "kv_cache_ops.h"
#include "ringinfer/cuda_check.h"
#include "ringinfer/kv_quant.h"

namespace ringinfer {

namespace {

constexpr int kWarpsPerBlock = 8;

__global__ void quantize_kv_fp8_kernel(const float* x, int64_t rows, int D, uint8_t* q, float* scale) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const float* xr = x + row * D;
  float amax = 0.f;
  for (int d = lane; d < D; d += 32) amax = fmaxf(amax, fabsf(xr[d]));  // fmaxf skips NaN, as the CPU's fmax
  for (int off = 16; off > 0; off /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
  const float s = kvq::fp8_scale(amax);
  if (lane == 0) scale[row] = s;
  for (int d = lane; d < D; d += 32) q[row * D + d] = kvq::fp8_quantize(xr[d], s);
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

}  // namespace ringinfer
