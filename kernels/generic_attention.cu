// Generic striped attention (see generic_attention.h): lane L holds dims L, L+32, ... of
// the query and accumulator; each key's score is one warp reduction.
#include <math.h>

#include <string>

#include "cuda_common.cuh"
#include "generic_attention.h"
#include "ringinfer/cuda_check.h"
#include "ringinfer/error.h"

namespace ringinfer {
namespace {

constexpr int kWarps = 4;
constexpr int kPerLane = kGenericAttnMaxHeadDim / 32;

__global__ void generic_attention_kernel(GenericAttnParams p) {
  const int64_t pair = blockIdx.x * int64_t(kWarps) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (pair >= p.n_q * p.n_heads) return;
  const int64_t row = pair / p.n_heads;
  const int h = int(pair % p.n_heads), kvh = h / (p.n_heads / p.n_kv_heads), D = p.head_dim;
  // Visible prefix (striped.h visible_key_count): j <= qi when k_rank <= q_rank, else j < qi.
  const int64_t qi = p.q_start + row;
  int64_t cnt = p.k_rank <= p.q_rank ? qi + 1 : qi;
  if (cnt > p.n_k) cnt = p.n_k;

  float q[kPerLane], acc[kPerLane];
  const float* qrow = p.q + row * int64_t(p.n_heads) * D + int64_t(h) * D;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    q[i] = d < D ? qrow[d] : 0.f;
    acc[i] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  const int64_t ks = int64_t(p.n_kv_heads) * D;
  for (int64_t j = 0; j < cnt; ++j) {
    const __nv_bfloat16* krow = p.k + j * ks + int64_t(kvh) * D;
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < D) s += q[i] * __bfloat162float(krow[d]);
    }
    s = cuda::warp_sum(s) * p.scale;
    const float m_new = fmaxf(m, s), alpha = expf(m - m_new), e = expf(s - m_new);
    l = l * alpha + e;
    const __nv_bfloat16* vrow = p.v + j * ks + int64_t(kvh) * D;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < D) acc[i] = acc[i] * alpha + e * __bfloat162float(vrow[d]);
    }
    m = m_new;
  }
  // Merge (acc / l, m + log l) into the running (O, LSE); nothing visible merges as identity.
  float* orow = p.o + row * int64_t(p.n_heads) * D + int64_t(h) * D;
  float* lrow = p.lse + row * p.n_heads + h;
  float lnew, w1, w2;
  cuda::lse_merge_weights(*lrow, l > 0.f ? m + logf(l) : -INFINITY, lnew, w1, w2);
  const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < D) orow[d] = w1 * orow[d] + w2 * (acc[i] * inv);
  }
  __syncwarp();
  if (lane == 0) *lrow = lnew;
}

}  // namespace

void generic_attention(const GenericAttnParams& p, cudaStream_t stream) {
  if (p.head_dim <= 0 || p.head_dim > kGenericAttnMaxHeadDim || p.n_heads <= 0 || p.n_kv_heads <= 0 ||
      p.n_heads % p.n_kv_heads != 0)
    throw Error("generic_attention: unsupported shape (heads " + std::to_string(p.n_heads) + "/" +
                std::to_string(p.n_kv_heads) + ", head_dim " + std::to_string(p.head_dim) + ")");
  const int64_t pairs = p.n_q * p.n_heads;
  if (pairs == 0 || p.n_k == 0) return;
  const int64_t blocks = (pairs + kWarps - 1) / kWarps;
  generic_attention_kernel<<<unsigned(blocks), kWarps * 32, 0, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace ringinfer
