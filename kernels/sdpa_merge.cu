// sdpa_merge.h: sequence lengths for an external SDPA kernel and the LSE merge of its output.
#include "sdpa_merge.h"

#include <algorithm>

#include "cuda_common.cuh"
#include "ringinfer/cuda_check.h"

namespace ringinfer {

namespace {

constexpr int kThreads = 256;

__global__ void write_lens_kernel(int32_t* lens, int32_t q_len, int32_t kv_len) {
  lens[0] = q_len;
  lens[4] = kv_len;
}

// One warp per (row, head); the block's statistics are head-major (stats2[h * stride + i]).
__global__ void merge_sdpa_kernel(float* o, float* lse, const __nv_bfloat16* o2, const float* stats2,
                                  int64_t stats_stride, int64_t rows, int64_t heads, int64_t d) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * blockDim.x / 32;
  const int64_t pairs = rows * heads;
  for (int64_t p = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; p < pairs; p += warps) {
    const int64_t i = p / heads, h = p % heads;
    float l, w1, w2;
    cuda::lse_merge_weights(lse[p], stats2[h * stats_stride + i], l, w1, w2);
    float* op = o + p * d;
    const __nv_bfloat16* o2p = o2 + p * d;
    for (int64_t k = lane; k < d; k += 32) op[k] = w1 * op[k] + w2 * __bfloat162float(o2p[k]);
    __syncwarp();
    if (lane == 0) lse[p] = l;
  }
}

}  // namespace

void write_sdpa_lens(int32_t* lens, int32_t q_len, int32_t kv_len, cudaStream_t stream) {
  write_lens_kernel<<<1, 1, 0, stream>>>(lens, q_len, kv_len);
  CUDA_CHECK_LAUNCH();
}

void merge_attention_sdpa(float* o, float* lse, const __nv_bfloat16* o2, const float* stats2, int64_t stats_stride,
                          int64_t rows, int64_t heads, int64_t d, cudaStream_t stream) {
  const int64_t pairs = rows * heads;
  if (pairs <= 0) return;
  const int64_t blocks = std::min<int64_t>((pairs * 32 + kThreads - 1) / kThreads, 65535 * 8);
  merge_sdpa_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(o, lse, o2, stats2, stats_stride, rows,
                                                                            heads, d);
  CUDA_CHECK_LAUNCH();
}

}  // namespace ringinfer
