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
//
// fp8 cache (kFp8): cp.async lands the e4m3 bytes of a tile and the tile's per-key scales
// (4-byte copies) in the warp's staging stages; before use the warp converts the bytes to
// bf16 (exact: every e4m3 value is a bf16 value) into one swizzled bf16 tile, so the MMA
// code is the bf16 kernel's. A key's scale is per (token, KV head), so it factors out of
// the dot product and of the value row: S[:, j] *= k_scale[j] after Q K^T, and P[:, j] is
// multiplied by v_scale[j] before P V (l sums the unscaled P). Memory traffic per key is
// D + 4 bytes for K and the same for V, half of bf16's.
#include <cuda_fp8.h>
#include <math.h>

#include "cuda_common.cuh"
#include "ringinfer/cuda_check.h"

namespace ringinfer::cuda {

using bf16 = __nv_bfloat16;

constexpr int kDecodeRows = 16;  // query rows per KV head per launch (one MMA row block)

struct DecodeArgs {
  const bf16* q;      // [nt, H, D]: the tokens of this launch
  const bf16* k;      // [n_k, kv_stride] (bf16 cache)
  const bf16* v;      // [n_k, kv_stride]
  const uint8_t* k8;  // [n_k, kv_stride] e4m3 bytes (fp8 cache)
  const uint8_t* v8;  // [n_k, kv_stride]
  const float* k_scale;  // [n_k, Hkv] (fp8 cache)
  const float* v_scale;  // [n_k, Hkv]
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

// Several sequences in one launch (decode of a batch of documents): blockIdx.z picks the
// sequence, whose query row is row z of the launch's q, whose cache and length are here,
// and whose partials take the z-th slice of the workspace. Passed by value as a
// __grid_constant__ parameter (no device table to upload, nothing to order).
constexpr int kDecodeMaxSeqs = 16;
struct DecodeSeq {
  const void* k;         // bf16 rows or e4m3 bytes, as the launch's cache
  const void* v;
  const float* k_scale;  // fp8 cache
  const float* v_scale;
  int n_k;
  int n_tiles;           // ceil(n_k / kBlockN)
};
struct DecodeSeqs {
  DecodeSeq seq[kDecodeMaxSeqs];
  int count;             // 0: a single-sequence launch (DecodeArgs alone)
};

// The arguments of sequence z of a several-sequence launch: D and the grid give the
// workspace slices ([z][split][kv_head][16] rows of LSE, then of O).
template <int D>
__device__ __forceinline__ DecodeArgs sequence_args(const DecodeArgs& a, const DecodeSeqs& seqs, int z) {
  DecodeArgs b = a;
  const DecodeSeq& s = seqs.seq[z];
  if (a.k8) {
    b.k8 = static_cast<const uint8_t*>(s.k);
    b.v8 = static_cast<const uint8_t*>(s.v);
    b.k_scale = s.k_scale;
    b.v_scale = s.v_scale;
  } else {
    b.k = static_cast<const bf16*>(s.k);
    b.v = static_cast<const bf16*>(s.v);
  }
  b.n_k = s.n_k;
  b.n_tiles = s.n_tiles;
  b.q = a.q + (long)z * a.n_heads * D;
  const long rows = (long)z * a.n_splits * gridDim.y * kDecodeRows;
  b.ws_lse = a.ws_lse + rows;
  b.ws_o = a.ws_o + rows * D;
  return b;
}

template <int D, int kWarps, int kBlockN, int kStages, bool kFp8 = false>
struct DecodeTile {
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kChunks = D / 8;  // 16-byte chunks of a bf16 row
  static constexpr size_t kBf16Tile = size_t(kBlockN) * D * sizeof(bf16);
  static constexpr size_t kFp8Tile = size_t(kBlockN) * D;
  static constexpr size_t kScales = size_t(kBlockN) * sizeof(float);
  // Per warp. bf16: kStages x (K, V) tiles. fp8: one converted bf16 (K, V) pair, then
  // kStages x (K, V) byte tiles, then kStages x (K, V) scale rows.
  static constexpr size_t kWarpBytes =
      kFp8 ? 2 * kBf16Tile + size_t(kStages) * 2 * (kFp8Tile + kScales) : size_t(kStages) * 2 * kBf16Tile;
  static constexpr size_t kKvBytes = size_t(kWarps) * kWarpBytes;
  static constexpr size_t kCombineBytes = size_t(kWarps) * kDecodeRows * (D + 2) * sizeof(float);
  static constexpr size_t kSmemBytes =
      kDecodeRows * D * sizeof(bf16) + (kKvBytes > kCombineBytes ? kKvBytes : kCombineBytes);
};

// 4 bytes global -> shared asynchronously (zeros when !valid): the per-key fp8 scales.
__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(valid ? 4 : 0));
}

// 8 e4m3 bytes -> 8 bf16 (exact) as one 16-byte chunk.
__device__ __forceinline__ uint4 e4m3x8_to_bf16x8(uint2 bytes) {
  uint32_t out[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t word = i < 2 ? bytes.x : bytes.y;
    const __nv_fp8x2_storage_t pair = static_cast<__nv_fp8x2_storage_t>(word >> (16 * (i % 2)));
    const float2 f = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3)));
    out[i] = pack_bf16x2(f.x, f.y);  // element 2i in the low half, as in memory
  }
  return make_uint4(out[0], out[1], out[2], out[3]);
}

template <int D, int kWarps, int kBlockN, int kStages, bool kFp8, bool kSeqs>
__global__ void __launch_bounds__(32 * kWarps)
    decode_split_kernel(const __grid_constant__ DecodeArgs a_in, const __grid_constant__ DecodeSeqs seqs) {
  // A single-sequence launch reads its arguments from parameter space as before; a
  // several-sequence one works on a copy with this block's sequence filled in.
  DecodeArgs a_seq;
  if constexpr (kSeqs) a_seq = sequence_args<D>(a_in, seqs, blockIdx.z);
  const DecodeArgs& a = kSeqs ? a_seq : a_in;
  using Tile = DecodeTile<D, kWarps, kBlockN, kStages, kFp8>;
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
  unsigned char* wbase = work + warp * Tile::kWarpBytes;
  bf16* sK = reinterpret_cast<bf16*>(wbase);  // bf16: [kStages][kBlockN][D]; fp8: [kBlockN][D] converted
  bf16* sV = sK + (kFp8 ? 1 : kStages) * kBlockN * D;
  uint8_t* s8 = wbase + 2 * Tile::kBf16Tile;                                          // fp8: [kStages][K, V][kBlockN][D]
  float* sScale = reinterpret_cast<float*>(s8 + size_t(kStages) * 2 * Tile::kFp8Tile);  // fp8: [kStages][K, V][kBlockN]
  const int my_tiles = tile_end - tile_begin > warp ? (tile_end - tile_begin - warp + kWarps - 1) / kWarps : 0;
  auto load_tile = [&](int i) {  // the warp's i-th tile into stage i % kStages
    const int stage = i % kStages, key0 = (tile_begin + warp + i * kWarps) * kBlockN;
    if constexpr (kFp8) {
      uint8_t* k_dst = s8 + stage * 2 * Tile::kFp8Tile;
      uint8_t* v_dst = k_dst + Tile::kFp8Tile;
      constexpr int kChunks8 = D / 16;  // 16-byte chunks of an fp8 row
#pragma unroll
      for (int c = lane; c < kBlockN * kChunks8; c += 32) {
        const int r = c / kChunks8, ch = c % kChunks8, key = key0 + r;
        const bool ok = key < a.n_k;
        const long off = (ok ? key : 0) * a.kv_stride + kv_head * D + ch * 16;
        cp_async_16(k_dst + r * D + ch * 16, a.k8 + off, ok);
        cp_async_16(v_dst + r * D + ch * 16, a.v8 + off, ok);
      }
      float* ks = sScale + stage * 2 * kBlockN;
      for (int r = lane; r < kBlockN; r += 32) {
        const int key = key0 + r;
        const bool ok = key < a.n_k;
        const long off = long(ok ? key : 0) * gridDim.y + kv_head;  // gridDim.y = Hkv
        cp_async_4(ks + r, a.k_scale + off, ok);
        cp_async_4(ks + kBlockN + r, a.v_scale + off, ok);
      }
    } else {
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
    const bf16* k_s = sK + (kFp8 ? 0 : (i % kStages) * kBlockN * D);
    const bf16* v_s = sV + (kFp8 ? 0 : (i % kStages) * kBlockN * D);
    const int key0 = (tile_begin + warp + i * kWarps) * kBlockN;
    const float* k_scale = sScale + (i % kStages) * 2 * kBlockN;  // fp8 only
    const float* v_scale = k_scale + kBlockN;
    if constexpr (kFp8) {  // the stage's bytes -> the swizzled bf16 tiles the MMAs read
      const uint8_t* k_src = s8 + (i % kStages) * 2 * Tile::kFp8Tile;
      const uint8_t* v_src = k_src + Tile::kFp8Tile;
#pragma unroll 4
      for (int c = lane; c < kBlockN * kChunks; c += 32) {
        const int r = c / kChunks, ch = c % kChunks;
        *reinterpret_cast<uint4*>(sK + swizzle<D>(r, ch)) =
            e4m3x8_to_bf16x8(*reinterpret_cast<const uint2*>(k_src + r * D + ch * 8));
        *reinterpret_cast<uint4*>(sV + swizzle<D>(r, ch)) =
            e4m3x8_to_bf16x8(*reinterpret_cast<const uint2*>(v_src + r * D + ch * 8));
      }
      __syncwarp();
    }

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
    if constexpr (kFp8) {  // S[:, j] *= k_scale[j]; column n * 8 + (lane % 4) * 2 + (e & 1)
#pragma unroll
      for (int n = 0; n < kBlockN / 8; ++n) {
        const float2 ks = *reinterpret_cast<const float2*>(k_scale + n * 8 + (lane % 4) * 2);
        s[n][0] *= ks.x;
        s[n][1] *= ks.y;
        s[n][2] *= ks.x;
        s[n][3] *= ks.y;
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
    if constexpr (kFp8) {  // P[:, j] *= v_scale[j] (after l took the unscaled P)
#pragma unroll
      for (int n = 0; n < kBlockN / 8; ++n) {
        const float2 vs = *reinterpret_cast<const float2*>(v_scale + n * 8 + (lane % 4) * 2);
        s[n][0] *= vs.x;
        s[n][1] *= vs.y;
        s[n][2] *= vs.x;
        s[n][3] *= vs.y;
      }
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
    __syncwarp();  // the stage (and the converted tile) is refilled by the next iteration
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

// Merges the splits of one (token, head) row: block = D threads, grid (tokens, H). With
// per_seq, token x is sequence x of a several-sequence launch (one token each, its own
// workspace slice).
template <int D>
__global__ void decode_combine_kernel(const float* ws_lse, const float* ws_o, int n_splits, int n_kv_heads,
                                      int group, float* o, float* lse, bool per_seq = false) {
  const int tok = blockIdx.x, head = blockIdx.y, d = threadIdx.x, n_heads = gridDim.y;
  const int kv_head = head / group, r = (per_seq ? 0 : tok) * group + head % group;
  const long stride = (long)n_kv_heads * kDecodeRows;  // between splits
  const long row0 = (per_seq ? (long)tok * n_splits * stride : 0) + (long)kv_head * kDecodeRows + r;
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

// seqs: null for one sequence (a's cache), else seqs->count sequences in grid z.
template <int D, int kWarps, int kBlockN, int kStages, bool kFp8 = false>
void launch_decode_split(const DecodeArgs& a, int n_kv_heads, const DecodeSeqs* seqs, cudaStream_t stream) {
  using Tile = DecodeTile<D, kWarps, kBlockN, kStages, kFp8>;
  if (seqs) {
    auto kernel = decode_split_kernel<D, kWarps, kBlockN, kStages, kFp8, true>;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Tile::kSmemBytes)));
    kernel<<<dim3(a.n_splits, n_kv_heads, seqs->count), Tile::kThreads, Tile::kSmemBytes, stream>>>(a, *seqs);
  } else {
    auto kernel = decode_split_kernel<D, kWarps, kBlockN, kStages, kFp8, false>;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Tile::kSmemBytes)));
    kernel<<<dim3(a.n_splits, n_kv_heads), Tile::kThreads, Tile::kSmemBytes, stream>>>(a, DecodeSeqs{});
  }
  CUDA_CHECK_LAUNCH();
}

// Per head_dim (decode_attention_hdim*.cu): the split kernel for `variant`, its keys per
// tile, its blocks per multiprocessor, and the combine kernel.
struct DecodeConfig {
  int block_n;           // keys per tile
  int warps;             // warps per block
  size_t smem_bytes;     // dynamic shared memory of one block
};
// fp8 (a.k8 set): one tile shape, 32 keys x 4 warps, 3 stages.
DecodeConfig decode_config(int head_dim, int variant);
void decode_split_hdim64(const DecodeArgs& a, int n_kv_heads, int variant, const DecodeSeqs* seqs,
                         cudaStream_t stream);
void decode_split_hdim128(const DecodeArgs& a, int n_kv_heads, int variant, const DecodeSeqs* seqs,
                          cudaStream_t stream);

}  // namespace ringinfer::cuda
