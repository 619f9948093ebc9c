#pragma once
// Split-KV decode attention kernels, included by one .cu per head_dim.
//
// Work split. Grid (split, kv_head). The query rows of one KV head -- `group` query heads
// x a few tokens, at most 16 -- form one 16-row MMA A-fragment (rows past the end are
// zero), so every key of the split is read once from memory for all of them. A block
// owns a contiguous range of key tiles (kBlockN keys each); warp w takes tiles w,
// w + kWarps, ... so the warps stream neighbouring memory at once. Each warp runs its
// own cp.async pipeline (kStages tiles deep) in its private slice of shared memory and
// synchronizes only with __syncwarp, then the same S = QK^T / online softmax / O += PV
// steps as the prefill kernel (see flash_attention_kernel.cuh for fragment layouts).
// At the end the warps' (m, l, O) meet in shared memory and the block writes one
// normalized partial (O, LSE) per row to the workspace; decode_combine_kernel merges the
// splits in a fixed order (deterministic).
#include <math.h>

#include "cuda_common.cuh"
#include "ringinfer/cuda_check.h"

namespace ringinfer::cuda {

using bf16 = __nv_bfloat16;

constexpr int kDecodeRows = 16;  // query rows per KV head per launch (one MMA row block)

struct DecodeArgs {
  const bf16* q;      // [nt, H, D]: the tokens of this launch
  const bf16* k;      // [n_k, kv_stride]
  const bf16* v;      // [n_k, kv_stride]
  float* ws_lse;      // [n_splits, Hkv, 16]
  float* ws_o;        // [n_splits, Hkv, 16, D]
  long kv_stride;     // elements between key tokens
  int n_k;            // keys
  int n_heads;        // H
  int group;          // H / Hkv
  int rows;           // nt * group <= 16; row = token * group + (head % group)
  int n_splits;       // gridDim.x
  int n_tiles;        // ceil(n_k / kBlockN)
  float scale_log2;   // softmax_scale * log2(e)
};

template <int D, int kWarps, int kBlockN, int kStages>
struct DecodeTile {
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kChunks = D / 8;
  static constexpr int kWarpSmem = kStages * 2 * kBlockN * D;  // bf16 elements per warp
  static constexpr size_t kKvBytes = size_t(kWarps) * kWarpSmem * sizeof(bf16);
  static constexpr size_t kCombineBytes = size_t(kWarps) * kDecodeRows * (D + 2) * sizeof(float);
  static constexpr size_t kSmemBytes =
      kDecodeRows * D * sizeof(bf16) + (kKvBytes > kCombineBytes ? kKvBytes : kCombineBytes);
};

template <int D, int kWarps, int kBlockN, int kStages>
__global__ void __launch_bounds__(32 * kWarps) decode_split_kernel(const DecodeArgs a) {
  using Tile = DecodeTile<D, kWarps, kBlockN, kStages>;
  constexpr int kChunks = Tile::kChunks;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [16][D] swizzled
  unsigned char* work = smem_raw + kDecodeRows * D * sizeof(bf16);

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int split = blockIdx.x, kv_head = blockIdx.y;
  const int tile_begin = int((long)split * a.n_tiles / a.n_splits);
  const int tile_end = int((long)(split + 1) * a.n_tiles / a.n_splits);

  // ---- query rows of this KV head: row = token * group + j reads head kv_head * group + j
  for (int c = tid; c < kDecodeRows * kChunks; c += Tile::kThreads) {
    const int r = c / kChunks, ch = c % kChunks;
    const bool ok = r < a.rows;
    const int tok = ok ? r / a.group : 0, head = kv_head * a.group + (ok ? r % a.group : 0);
    cp_async_16(sQ + swizzle<D>(r, ch), a.q + ((long)tok * a.n_heads + head) * D + ch * 8, ok);
  }
  cp_async_commit();

  // ---- this warp's tiles and private pipeline
  bf16* sK = reinterpret_cast<bf16*>(work) + warp * Tile::kWarpSmem;  // [kStages][kBlockN][D]
  bf16* sV = sK + kStages * kBlockN * D;                               // [kStages][kBlockN][D]
  const int my_tiles = tile_end - tile_begin > warp ? (tile_end - tile_begin - warp + kWarps - 1) / kWarps : 0;
  auto load_tile = [&](int i) {  // the warp's i-th tile into stage i % kStages
    const int stage = i % kStages, key0 = (tile_begin + warp + i * kWarps) * kBlockN;
    bf16* k_dst = sK + stage * kBlockN * D;
    bf16* v_dst = sV + stage * kBlockN * D;
#pragma unroll
    for (int c = lane; c < kBlockN * kChunks; c += 32) {
      const int r = c / kChunks, ch = c % kChunks, key = key0 + r;
      const bool ok = key < a.n_k;
      const long off = (ok ? key : 0) * a.kv_stride + kv_head * D + ch * 8;
      cp_async_16(k_dst + swizzle<D>(r, ch), a.k + off, ok);
      cp_async_16(v_dst + swizzle<D>(r, ch), a.v + off, ok);
    }
  };
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i < my_tiles) load_tile(i);
    cp_async_commit();
  }

  cp_async_wait<kStages - 1>();  // the Q group (committed first) has landed
  __syncthreads();
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    ldmatrix_x4(qf[kk], sQ + swizzle<D>(((lane / 8) % 2) * 8 + lane % 8, kk * 2 + lane / 16));

  float acc[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.f, l_b = 0.f;

  for (int i = 0; i < my_tiles; ++i) {
    if (i + kStages - 1 < my_tiles) load_tile(i + kStages - 1);
    cp_async_commit();
    cp_async_wait<kStages - 1>();  // tile i has landed
    __syncwarp();
    const bf16* k_s = sK + (i % kStages) * kBlockN * D;
    const bf16* v_s = sV + (i % kStages) * kBlockN * D;
    const int key0 = (tile_begin + warp + i * kWarps) * kBlockN;

    float s[kBlockN / 8][4];
#pragma unroll
    for (int n = 0; n < kBlockN / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int nn = 0; nn < kBlockN / 16; ++nn) {
        uint32_t b[4];
        ldmatrix_x4(b, k_s + swizzle<D>(nn * 16 + (lane / 16) * 8 + lane % 8, kk * 2 + (lane / 8) % 2));
        mma_bf16_16816(s[2 * nn], qf[kk], b[0], b[1]);
        mma_bf16_16816(s[2 * nn + 1], qf[kk], b[2], b[3]);
      }
    }
    if (key0 + kBlockN > a.n_k) {  // the last tile: keys past the end are not there
#pragma unroll
      for (int n = 0; n < kBlockN / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (key0 + n * 8 + (lane % 4) * 2 + (e & 1) >= a.n_k) s[n][e] = -INFINITY;
    }

    float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
    for (int n = 0; n < kBlockN / 8; ++n) {
      mx_a = fmaxf(mx_a, fmaxf(s[n][0], s[n][1]));
      mx_b = fmaxf(mx_b, fmaxf(s[n][2], s[n][3]));
    }
    // Every tile holds at least one real key, so the new max is finite.
    const float new_m_a = fmaxf(m_a, quad_max(mx_a) * a.scale_log2);
    const float new_m_b = fmaxf(m_b, quad_max(mx_b) * a.scale_log2);
    const float alpha_a = fast_exp2(m_a - new_m_a), alpha_b = fast_exp2(m_b - new_m_b);
    m_a = new_m_a;
    m_b = new_m_b;
    float sum_a = 0.f, sum_b = 0.f;
#pragma unroll
    for (int n = 0; n < kBlockN / 8; ++n) {
      s[n][0] = fast_exp2(fmaf(s[n][0], a.scale_log2, -m_a));
      s[n][1] = fast_exp2(fmaf(s[n][1], a.scale_log2, -m_a));
      s[n][2] = fast_exp2(fmaf(s[n][2], a.scale_log2, -m_b));
      s[n][3] = fast_exp2(fmaf(s[n][3], a.scale_log2, -m_b));
      sum_a += s[n][0] + s[n][1];
      sum_b += s[n][2] + s[n][3];
    }
    l_a = l_a * alpha_a + sum_a;
    l_b = l_b * alpha_b + sum_b;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      acc[n][0] *= alpha_a;
      acc[n][1] *= alpha_a;
      acc[n][2] *= alpha_b;
      acc[n][3] *= alpha_b;
    }
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      const uint32_t pa[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]), pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dd = 0; dd < D / 16; ++dd) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, v_s + swizzle<D>(kk * 16 + ((lane / 8) % 2) * 8 + lane % 8, dd * 2 + lane / 16));
        mma_bf16_16816(acc[2 * dd], pa, b[0], b[1]);
        mma_bf16_16816(acc[2 * dd + 1], pa, b[2], b[3]);
      }
    }
    __syncwarp();  // the stage is refilled by the next iteration's load
  }

  // ---- the warps meet: (m, l, acc) per warp into shared memory (over the K/V stages)
  cp_async_wait<0>();
  __syncthreads();
  float* sM = reinterpret_cast<float*>(work);  // [kWarps][16]
  float* sL = sM + kWarps * kDecodeRows;       // [kWarps][16]
  float* sO = sL + kWarps * kDecodeRows;       // [kWarps][16][D]
  l_a = quad_sum(l_a);
  l_b = quad_sum(l_b);
  const int g = lane / 4;
  if (lane % 4 == 0) {
    sM[warp * kDecodeRows + g] = m_a;
    sM[warp * kDecodeRows + g + 8] = m_b;
    sL[warp * kDecodeRows + g] = l_a;
    sL[warp * kDecodeRows + g + 8] = l_b;
  }
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    const int col = n * 8 + (lane % 4) * 2;
    *reinterpret_cast<float2*>(sO + (warp * kDecodeRows + g) * D + col) = make_float2(acc[n][0], acc[n][1]);
    *reinterpret_cast<float2*>(sO + (warp * kDecodeRows + g + 8) * D + col) = make_float2(acc[n][2], acc[n][3]);
  }
  __syncthreads();

  const long ws_row0 = ((long)split * gridDim.y + kv_head) * kDecodeRows;
  for (int idx = tid; idx < a.rows * D; idx += Tile::kThreads) {
    const int r = idx / D, d = idx % D;
    float m = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) m = fmaxf(m, sM[w * kDecodeRows + r]);
    float l = 0.f, o = 0.f;
    if (m > -INFINITY) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const float scale = fast_exp2(sM[w * kDecodeRows + r] - m);  // a warp with no tiles: 0
        l += sL[w * kDecodeRows + r] * scale;
        o += sO[(w * kDecodeRows + r) * D + d] * scale;
      }
    }
    // An empty split (no keys) is the identity: O = 0, LSE = -inf.
    a.ws_o[(ws_row0 + r) * D + d] = l > 0.f ? o / l : 0.f;
    if (d == 0) a.ws_lse[ws_row0 + r] = l > 0.f ? m * 0.69314718055994531f + logf(l) : -INFINITY;
  }
}

// Merges the splits of one (token, head) row: block = D threads, grid (tokens, H).
template <int D>
__global__ void decode_combine_kernel(const float* ws_lse, const float* ws_o, int n_splits, int n_kv_heads,
                                      int group, float* o, float* lse) {
  const int tok = blockIdx.x, head = blockIdx.y, d = threadIdx.x, n_heads = gridDim.y;
  const int kv_head = head / group, r = tok * group + head % group;
  const long stride = (long)n_kv_heads * kDecodeRows;  // between splits
  const long row0 = (long)kv_head * kDecodeRows + r;
  float m = -INFINITY;
  for (int s = 0; s < n_splits; ++s) m = fmaxf(m, ws_lse[row0 + s * stride]);
  float l = 0.f, acc = 0.f;
  if (m > -INFINITY) {
    for (int s = 0; s < n_splits; ++s) {
      const float w = expf(ws_lse[row0 + s * stride] - m);
      l += w;
      acc += w * ws_o[(row0 + s * stride) * D + d];
    }
  }
  const long out = (long)tok * n_heads + head;
  o[out * D + d] = l > 0.f ? acc / l : 0.f;
  if (d == 0) lse[out] = l > 0.f ? m + logf(l) : -INFINITY;
}

template <int D, int kWarps, int kBlockN, int kStages>
void launch_decode_split(const DecodeArgs& a, int n_kv_heads, cudaStream_t stream) {
  using Tile = DecodeTile<D, kWarps, kBlockN, kStages>;
  auto kernel = decode_split_kernel<D, kWarps, kBlockN, kStages>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Tile::kSmemBytes)));
  kernel<<<dim3(a.n_splits, n_kv_heads), Tile::kThreads, Tile::kSmemBytes, stream>>>(a);
  CUDA_CHECK_LAUNCH();
}

// Per head_dim (decode_attention_hdim*.cu): the split kernel for `variant`, its keys per
// tile, its blocks per multiprocessor, and the combine kernel.
struct DecodeConfig {
  int block_n;           // keys per tile
  int warps;             // warps per block
  size_t smem_bytes;     // dynamic shared memory of one block
};
DecodeConfig decode_config(int head_dim, int variant);
void decode_split_hdim64(const DecodeArgs& a, int n_kv_heads, int variant, cudaStream_t stream);
void decode_split_hdim128(const DecodeArgs& a, int n_kv_heads, int variant, cudaStream_t stream);

}  // namespace ringinfer::cuda
