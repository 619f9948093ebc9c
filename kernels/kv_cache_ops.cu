// fp8 KV cache quantize / dequantize (kv_cache_ops.h). One warp per (token, head) row:
// the warp's max is exact and order-free, and the per-value rule is kv_quant.h's, so the
// bytes equal the CPU backend's.
#include "cuda_common.cuh"
#include "kv_cache_ops.h"
#include "ringinfer/cuda_check.h"
#include "ringinfer/error.h"
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

// One launch's rows of rope_store_kernel, by value: listed one by one (a decode batch, each
// row its own document's cache) ...
struct ListedRopeRows {
  int64_t pos[kRopeStoreMaxRows];
  KvRowDst dst[kRopeStoreMaxRows];
  __device__ int64_t position(int i) const { return pos[i]; }
  __device__ KvRowDst dest(int i) const { return dst[i]; }
};
// ... or strided (a prefill chunk): row i at position start + i * stride, stored into row i
// of one block whose row 0 is `first` (value rows row_bytes apart, scale rows kv_heads).
struct StridedRopeRows {
  int64_t start, stride;
  KvRowDst first;
  int64_t row_bytes;
  int kv_heads;
  __device__ int64_t position(int i) const { return start + i * stride; }
  __device__ KvRowDst dest(int i) const {
    KvRowDst r = first;
    if (!r.k) return r;
    r.k = static_cast<char*>(r.k) + i * row_bytes;
    r.v = static_cast<char*>(r.v) + i * row_bytes;
    if (r.k_scale) {
      r.k_scale += int64_t(i) * kv_heads;
      r.v_scale += int64_t(i) * kv_heads;
    }
    return r;
  }
};

// Stores the D values of one (token, head) at x into a cache row: bf16, or fp8 through
// quantize_head_warp, as scatter_kv_rows does.
__device__ __forceinline__ void store_head_warp(const float* x, int D, int lane, bool fp8, void* cache, float* scale) {
  if (fp8) {
    quantize_head_warp(x, D, lane, static_cast<uint8_t*>(cache), scale);
    return;
  }
  auto* y = static_cast<__nv_bfloat16*>(cache);
  for (int d = lane; d < D; d += 32) y[d] = __float2bfloat16_rn(x[d]);
}

// blockIdx.y: the row; one warp per head, Q heads first, then K, then V.
template <class Rows>
__global__ void rope_store_kernel(float* q, void* q_out, bool q_out_bf16, float* k, const float* v, int n_heads,
                                  int n_kv_heads, int D, const double* inv_freq, bool fp8,
                                  const __grid_constant__ Rows rows) {
  cuda::pdl_trigger();  // the kernel after it (decode attention) may start its blocks meanwhile
  cuda::pdl_wait();     // q, k, v: the projection before it
  const int i = blockIdx.y, lane = threadIdx.x % 32, half = D / 2;
  const int head = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const int kv_heads = k ? n_kv_heads : 0;
  if (head >= n_heads + 2 * kv_heads) return;
  const KvRowDst r = rows.dest(i);
  if (head < n_heads) {
    float* x = q + (int64_t(i) * n_heads + head) * D;
    for (int d = lane; d < half; d += 32) {
      float c, s;
      cuda::rope_cos_sin(rows.position(i), inv_freq[d], c, s);
      cuda::rope_rotate(x, d, half, c, s);
    }
    __syncwarp();
    const int64_t at = (int64_t(i) * n_heads + head) * D;
    if (q_out_bf16)
      for (int d = lane; d < D; d += 32) static_cast<__nv_bfloat16*>(q_out)[at + d] = __float2bfloat16_rn(x[d]);
    else if (q_out != q)
      for (int d = lane; d < D; d += 32) static_cast<float*>(q_out)[at + d] = x[d];
    return;
  }
  const int h = (head - n_heads) % n_kv_heads;
  const bool is_v = head >= n_heads + n_kv_heads;
  const int64_t at = (int64_t(i) * n_kv_heads + h) * D;
  if (!is_v) {
    for (int d = lane; d < half; d += 32) {
      float c, s;
      cuda::rope_cos_sin(rows.position(i), inv_freq[d], c, s);
      cuda::rope_rotate(k + at, d, half, c, s);
    }
    __syncwarp();  // the rotated values, written by other lanes, are read below
  }
  if (!r.k) return;  // the row is not stored here
  const size_t off = size_t(h) * D * (fp8 ? 1 : sizeof(__nv_bfloat16));
  store_head_warp((is_v ? v : k) + at, D, lane, fp8, static_cast<char*>(is_v ? r.v : r.k) + off,
                  fp8 ? (is_v ? r.v_scale : r.k_scale) + h : nullptr);
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

void rope_store_rows(float* q, void* q_out, bool q_out_bf16, float* k, const float* v, int64_t n, int n_heads,
                     int n_kv_heads, int D, const double* inv_freq, const int64_t* pos, const KvRowDst* dst, bool fp8,
                     cudaStream_t stream) {
  if (n <= 0 || D <= 0) return;
  if (n > kRopeStoreMaxRows) throw Error("rope_store_rows: more than 32 rows in one launch");
  ListedRopeRows rows{};
  for (int64_t i = 0; i < n; ++i) {
    rows.pos[i] = pos[i];
    if (k) rows.dst[i] = dst[i];
  }
  const int heads = n_heads + (k ? 2 * n_kv_heads : 0);
  const dim3 grid(blocks_for(heads), unsigned(n));
  cuda::launch_dependent(rope_store_kernel<ListedRopeRows>, grid, dim3(32 * kWarpsPerBlock), 0, stream, q, q_out,
                         q_out_bf16, k, v, n_heads, n_kv_heads, D, inv_freq, fp8, rows);
}

void rope_store_strided(float* q, void* q_out, bool q_out_bf16, float* k, const float* v, int64_t n, int n_heads,
                        int n_kv_heads, int D, const double* inv_freq, int64_t pos_start, int64_t pos_stride,
                        const KvRowDst& dst, bool fp8, cudaStream_t stream) {
  if (n <= 0 || D <= 0) return;
  const int heads = n_heads + (k ? 2 * n_kv_heads : 0);
  const int64_t q_row = int64_t(n_heads) * D, kv_row = int64_t(n_kv_heads) * D;
  const int64_t row_bytes = kv_row * (fp8 ? 1 : int64_t(sizeof(__nv_bfloat16)));
  constexpr int64_t kMaxGridRows = 65535;  // gridDim.y
  for (int64_t r0 = 0; r0 < n; r0 += kMaxGridRows) {
    const int64_t m = n - r0 < kMaxGridRows ? n - r0 : kMaxGridRows;
    StridedRopeRows rows{};
    rows.start = pos_start + r0 * pos_stride;
    rows.stride = pos_stride;
    rows.row_bytes = row_bytes;
    rows.kv_heads = n_kv_heads;
    rows.first = KvRowDst{0, nullptr, nullptr, nullptr, nullptr};
    if (k && dst.k) {
      rows.first = dst;
      rows.first.k = static_cast<char*>(dst.k) + r0 * row_bytes;
      rows.first.v = static_cast<char*>(dst.v) + r0 * row_bytes;
      if (fp8) {
        rows.first.k_scale = dst.k_scale + r0 * n_kv_heads;
        rows.first.v_scale = dst.v_scale + r0 * n_kv_heads;
      }
    }
    void* q_out_r0 = static_cast<char*>(q_out) + r0 * q_row * (q_out_bf16 ? 2 : 4);
    const dim3 grid(blocks_for(heads), unsigned(m));
    cuda::launch_dependent(rope_store_kernel<StridedRopeRows>, grid, dim3(32 * kWarpsPerBlock), 0, stream,
                           q + r0 * q_row, q_out_r0, q_out_bf16, k ? k + r0 * kv_row : nullptr,
                           v ? v + r0 * kv_row : nullptr, n_heads, n_kv_heads, D, inv_freq, fp8, rows);
  }
}

}  // namespace ringinfer
