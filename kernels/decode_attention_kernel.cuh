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
//
// fp8, direct fragments (kDirect): no converted tile. Each lane builds its MMA B-operand
// registers from the e4m3 bytes in the staging stage (cvt per byte pair, exact), which
// takes the order of the contraction index into our hands:
//   S = Q K^T contracts over D, so any order of the dims that Q's A-fragment and K's
//   B-fragment share gives the same sum: lane (g, t) of k-step kk holds dims
//   t * D/4 + kk * 4 + {0, 1} (registers a0, a1 / b0) and + {2, 3} (a2, a3 / b1), so a
//   lane reads D/4 contiguous bytes of its key row (keys in natural order: column g of
//   n-block nb is key nb * 8 + g, as for bf16, so scales and masks are unchanged).
//   O += P V contracts over keys (P's columns are in natural key order); V's B-fragment
//   for output column block nb holds dim g * D/8 + nb for lane (g, t), so a lane reads
//   the D/8 contiguous bytes of dims g * D/8 ... of its 4 keys (16kk + 2t + {0, 1, 8, 9})
//   and interleaves them by byte permutes; the output dims are permuted accordingly
//   when the warps meet. The byte tile is swizzled by 16-byte chunk (fp8_chunk) so both
//   the K reads and the V reads of a warp hit distinct banks.
// Per warp this needs kStages x (K, V) byte tiles and scales only, so 16-key tiles and
// 2-3 blocks per SM fit (DecodeTile::kSmemBytes).
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
  const float* k_scale;  // key t, KV head h at t * scale_key_stride + h * scale_head_stride (fp8 cache)
  const float* v_scale;
  long scale_key_stride;
  long scale_head_stride;
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

template <int D, int kWarps, int kBlockN, int kStages, bool kFp8 = false, bool kDirect = false>
struct DecodeTile {
  static_assert(!kDirect || kFp8, "direct fragments are an fp8-cache path");
  static_assert(kBlockN % 16 == 0 && kStages >= 2, "tiles of 16-key MMA steps, at least double-buffered");
  static constexpr int kNumWarps = kWarps, kKeys = kBlockN, kNumStages = kStages;
  static constexpr bool kIsDirect = kDirect;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kChunks = D / 8;  // 16-byte chunks of a bf16 row
  static constexpr size_t kBf16Tile = size_t(kBlockN) * D * sizeof(bf16);
  static constexpr size_t kFp8Tile = size_t(kBlockN) * D;
  static constexpr size_t kScales = size_t(kBlockN) * sizeof(float);
  // Per warp. bf16: kStages x (K, V) tiles. fp8: one converted bf16 (K, V) pair (not with
  // kDirect), then kStages x (K, V) byte tiles, then kStages x (K, V) scale rows.
  static constexpr size_t kConvBytes = kFp8 && !kDirect ? 2 * kBf16Tile : 0;
  static constexpr size_t kWarpBytes =
      kFp8 ? kConvBytes + size_t(kStages) * 2 * (kFp8Tile + kScales) : size_t(kStages) * 2 * kBf16Tile;
  static constexpr size_t kKvBytes = size_t(kWarps) * kWarpBytes;
  static constexpr size_t kCombineBytes = size_t(kWarps) * kDecodeRows * (D + 2) * sizeof(float);
  static constexpr size_t kSmemBytes =
      kDecodeRows * D * sizeof(bf16) + (kKvBytes > kCombineBytes ? kKvBytes : kCombineBytes);
  // Blocks per multiprocessor that shared memory allows on sm_90 (228 KB, 1 KB reserved
  // per block), as decode_attention_splits counts them from the device. fp8 kernels ask
  // the compiler for that many (__launch_bounds__), at most 4 (128 registers a thread;
  // 6 blocks at D = 64 would leave 80 and spill), so registers do not cut the count
  // decode_attention_splits plans with (DecodeConfig::max_blocks_per_sm); the bf16 ones
  // keep their register budget as it was measured.
  static constexpr int kSmemBlocksPerSm = int((228 * 1024) / (kSmemBytes + 1024));
  static constexpr int kMinBlocks = !kFp8 || kSmemBlocksPerSm < 1 ? 1 : kSmemBlocksPerSm > 4 ? 4 : kSmemBlocksPerSm;
};

// The fp8 tile configurations `variant` selects (all 4 warps per block):
//   0: 32-key tiles, 3 stages, converted bf16 tile (the original; 1 block/SM at D = 128)
//   1: 16-key tiles, 4 stages, converted bf16 tile (2 blocks/SM at D = 128)
//   2: 32-key tiles, 3 stages, direct fragments     (2 blocks/SM at D = 128)
//   3: 16-key tiles, 4 stages, direct fragments     (3 blocks/SM at D = 128; D = 64: 4, by registers)
// f receives a value-initialized DecodeTile of the variant (its constants describe it).
constexpr int kDecodeFp8Variants = 4;
template <int D, typename F>
decltype(auto) visit_decode_fp8_variant(int variant, F&& f) {
  switch (variant) {
    case 1:
      return f(DecodeTile<D, 4, 16, 4, true, false>{});
    case 2:
      return f(DecodeTile<D, 4, 32, 3, true, true>{});
    case 3:
      return f(DecodeTile<D, 4, 16, 4, true, true>{});
    default:
      return f(DecodeTile<D, 4, 32, 3, true, false>{});
  }
}

// 4 bytes global -> shared asynchronously (zeros when !valid): the per-key fp8 scales.
__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(valid ? 4 : 0));
}

// 2 e4m3 bytes (the low 16 bits of `bits`) -> 2 bf16 (exact: e4m3 -> f16 -> f32 -> bf16
// never rounds), the low byte in the low half.
__device__ __forceinline__ uint32_t e4m3x2_to_bf16x2(uint32_t bits) {
  const __nv_fp8x2_storage_t pair = static_cast<__nv_fp8x2_storage_t>(bits & 0xffffu);
  const float2 f = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3)));
  return pack_bf16x2(f.x, f.y);
}

// 8 e4m3 bytes -> 8 bf16 (exact) as one 16-byte chunk.
__device__ __forceinline__ uint4 e4m3x8_to_bf16x8(uint2 bytes) {
  return make_uint4(e4m3x2_to_bf16x2(bytes.x), e4m3x2_to_bf16x2(bytes.x >> 16), e4m3x2_to_bf16x2(bytes.y),
                    e4m3x2_to_bf16x2(bytes.y >> 16));  // element 2i in the low half, as in memory
}

// Byte offset of 16-byte chunk `ch` of key row r in a direct-fragment e4m3 tile
// [kBlockN][D]: the chunks of each 128-byte line are permuted by XOR so that a warp's
// 16-byte K reads (lanes g, t: row 8nb + g, chunks of t) and its V reads (row
// 16kk + 2t + c, the chunk of dims g * D/8: 16 bytes at D = 128, 8 at D = 64) fall on
// distinct banks in every phase.
//   D = 128: one row per line, chunk ch ^ (r % 8).
//   D = 64: rows 2j, 2j + 1 share line j; position (r % 2) * 4 + ch, ^ 2 * (j % 4).
template <int D>
__device__ __forceinline__ int fp8_chunk(int r, int ch) {
  if constexpr (D == 128) {
    return r * 128 + ((ch ^ (r & 7)) << 4);
  } else {
    const int line = r >> 1, pos = (r & 1) * 4 + ch;
    return line * 128 + ((pos ^ ((line & 3) << 1)) << 4);
  }
}

template <int D, int kWarps, int kBlockN, int kStages, bool kFp8, bool kDirect, bool kSeqs>
__global__ void __launch_bounds__(32 * kWarps, (DecodeTile<D, kWarps, kBlockN, kStages, kFp8, kDirect>::kMinBlocks))
    decode_split_kernel(const __grid_constant__ DecodeArgs a_in, const __grid_constant__ DecodeSeqs seqs) {
  pdl_trigger();  // the combine kernel after it may start its blocks meanwhile (cuda_common.cuh)
  pdl_wait();     // the query and the newest cache row: the RoPE + store before it
  // A single-sequence launch reads its arguments from parameter space as before; a
  // several-sequence one works on a copy with this block's sequence filled in.
  DecodeArgs a_seq;
  if constexpr (kSeqs) a_seq = sequence_args<D>(a_in, seqs, blockIdx.z);
  const DecodeArgs& a = kSeqs ? a_seq : a_in;
  using Tile = DecodeTile<D, kWarps, kBlockN, kStages, kFp8, kDirect>;
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
  uint8_t* s8 = wbase + Tile::kConvBytes;                                             // fp8: [kStages][K, V][kBlockN][D]
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
        const int dst = kDirect ? fp8_chunk<D>(r, ch) : r * D + ch * 16;
        cp_async_16(k_dst + dst, a.k8 + off, ok);
        cp_async_16(v_dst + dst, a.v8 + off, ok);
      }
      float* ks = sScale + stage * 2 * kBlockN;
      for (int r = lane; r < kBlockN; r += 32) {
        const int key = key0 + r;
        const bool ok = key < a.n_k;
        const long off = long(ok ? key : 0) * a.scale_key_stride + kv_head * a.scale_head_stride;
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
  if constexpr (kDirect) {  // dims t * D/4 + kk * 4 + {0, 1 | 2, 3} (header comment)
    const int g = lane / 4, t = lane % 4;
    auto q2 = [&](int r, int d) { return *reinterpret_cast<const uint32_t*>(sQ + swizzle<D>(r, d / 8) + d % 8); };
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const int d = t * (D / 4) + kk * 4;
      qf[kk][0] = q2(g, d);
      qf[kk][1] = q2(g + 8, d);
      qf[kk][2] = q2(g, d + 2);
      qf[kk][3] = q2(g + 8, d + 2);
    }
  } else {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      ldmatrix_x4(qf[kk], sQ + swizzle<D>(((lane / 8) % 2) * 8 + lane % 8, kk * 2 + lane / 16));
  }

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
    const uint8_t* k8_s = s8 + (i % kStages) * 2 * Tile::kFp8Tile;  // fp8: this stage's bytes
    const uint8_t* v8_s = k8_s + Tile::kFp8Tile;
    if constexpr (kFp8 && !kDirect) {  // the stage's bytes -> the swizzled bf16 tiles the MMAs read
#pragma unroll 4
      for (int c = lane; c < kBlockN * kChunks; c += 32) {
        const int r = c / kChunks, ch = c % kChunks;
        *reinterpret_cast<uint4*>(sK + swizzle<D>(r, ch)) =
            e4m3x8_to_bf16x8(*reinterpret_cast<const uint2*>(k8_s + r * D + ch * 8));
        *reinterpret_cast<uint4*>(sV + swizzle<D>(r, ch)) =
            e4m3x8_to_bf16x8(*reinterpret_cast<const uint2*>(v8_s + r * D + ch * 8));
      }
      __syncwarp();
    }

    float s[kBlockN / 8][4];
#pragma unroll
    for (int n = 0; n < kBlockN / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
    if constexpr (kDirect) {  // lane (g, t): key 8nb + g, bytes t * D/4 ... (+ D/4)
#pragma unroll
      for (int nb = 0; nb < kBlockN / 8; ++nb) {
        const int r = nb * 8 + lane / 4, t = lane % 4;
        uint32_t raw[D / 16];
#pragma unroll
        for (int h = 0; h < D / 64; ++h) {
          const uint4 w = *reinterpret_cast<const uint4*>(k8_s + fp8_chunk<D>(r, t * (D / 64) + h));
          raw[4 * h] = w.x, raw[4 * h + 1] = w.y, raw[4 * h + 2] = w.z, raw[4 * h + 3] = w.w;
        }
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk)
          mma_bf16_16816(s[nb], qf[kk], e4m3x2_to_bf16x2(raw[kk]), e4m3x2_to_bf16x2(raw[kk] >> 16));
      }
    } else {
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
      if constexpr (kDirect) {  // lane (g, t): keys 16kk + 2t + {0, 1, 8, 9}, dims g * D/8 ... (+ D/8)
        const int g = lane / 4, t = lane % 4;
        uint32_t x[4][D / 32];  // [key][4 dims per word]
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int r = kk * 16 + 2 * t + (j & 1) + (j >> 1) * 8;
          if constexpr (D == 128) {
            const uint4 w = *reinterpret_cast<const uint4*>(v8_s + fp8_chunk<D>(r, g));
            x[j][0] = w.x, x[j][1] = w.y, x[j][2] = w.z, x[j][3] = w.w;
          } else {
            const uint2 w = *reinterpret_cast<const uint2*>(v8_s + fp8_chunk<D>(r, g / 2) + (g % 2) * 8);
            x[j][0] = w.x, x[j][1] = w.y;
          }
        }
        // Output column block nb = 4w + e holds dim g * D/8 + nb: b0 pairs keys (2t, 2t + 1),
        // b1 keys (2t + 8, 2t + 9), the lower key in the low byte.
#pragma unroll
        for (int w = 0; w < D / 32; ++w) {
          const uint32_t lo_01 = __byte_perm(x[0][w], x[1][w], 0x5140), hi_01 = __byte_perm(x[0][w], x[1][w], 0x7362);
          const uint32_t lo_89 = __byte_perm(x[2][w], x[3][w], 0x5140), hi_89 = __byte_perm(x[2][w], x[3][w], 0x7362);
          mma_bf16_16816(acc[4 * w], pa, e4m3x2_to_bf16x2(lo_01), e4m3x2_to_bf16x2(lo_89));
          mma_bf16_16816(acc[4 * w + 1], pa, e4m3x2_to_bf16x2(lo_01 >> 16), e4m3x2_to_bf16x2(lo_89 >> 16));
          mma_bf16_16816(acc[4 * w + 2], pa, e4m3x2_to_bf16x2(hi_01), e4m3x2_to_bf16x2(hi_89));
          mma_bf16_16816(acc[4 * w + 3], pa, e4m3x2_to_bf16x2(hi_01 >> 16), e4m3x2_to_bf16x2(hi_89 >> 16));
        }
      } else {
#pragma unroll
        for (int dd = 0; dd < D / 16; ++dd) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, v_s + swizzle<D>(kk * 16 + ((lane / 8) % 2) * 8 + lane % 8, dd * 2 + lane / 16));
          mma_bf16_16816(acc[2 * dd], pa, b[0], b[1]);
          mma_bf16_16816(acc[2 * dd + 1], pa, b[2], b[3]);
        }
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
    if constexpr (kDirect) {  // column 2t + e of block n is dim (2t + e) * D/8 + n
      const int d0 = (lane % 4) * 2 * (D / 8) + n, d1 = d0 + D / 8;
      float* row_a = sO + (warp * kDecodeRows + g) * D;
      float* row_b = row_a + 8 * D;
      row_a[d0] = acc[n][0], row_a[d1] = acc[n][1], row_b[d0] = acc[n][2], row_b[d1] = acc[n][3];
    } else {
      const int col = n * 8 + (lane % 4) * 2;
      *reinterpret_cast<float2*>(sO + (warp * kDecodeRows + g) * D + col) = make_float2(acc[n][0], acc[n][1]);
      *reinterpret_cast<float2*>(sO + (warp * kDecodeRows + g + 8) * D + col) = make_float2(acc[n][2], acc[n][3]);
    }
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
// workspace slice). The block reads each split's LSE once (thread s reads split s) and
// shares the weights exp(lse - max) through shared memory, D splits at a time; each thread
// then sums its dim over the splits in split order (deterministic), its loads of O
// independent of each other so that they are in flight together (a loop of dependent
// rounds over 16-33 splits took 8 us per launch on an H100).
template <int D>
__global__ void decode_combine_kernel(const float* ws_lse, const float* ws_o, int n_splits, int n_kv_heads,
                                      int group, float* o, float* lse, bool per_seq = false) {
  static_assert(D % 32 == 0, "whole warps");
  pdl_trigger();  // the output projection after it may fetch its weights meanwhile (cuda_common.cuh)
  pdl_wait();     // the split kernel's partials
  __shared__ float s_w[D];
  __shared__ float s_max[D / 32];
  const int tok = blockIdx.x, head = blockIdx.y, d = threadIdx.x, n_heads = gridDim.y;
  const int kv_head = head / group, r = (per_seq ? 0 : tok) * group + head % group;
  const long stride = (long)n_kv_heads * kDecodeRows;  // between splits
  const long row0 = (per_seq ? (long)tok * n_splits * stride : 0) + (long)kv_head * kDecodeRows + r;
  const float lse0 = d < n_splits ? ws_lse[row0 + d * stride] : -INFINITY;  // the first D splits' weights
  float m = lse0;
  for (int s = d + D; s < n_splits; s += D) m = fmaxf(m, ws_lse[row0 + s * stride]);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
  if (d % 32 == 0) s_max[d / 32] = m;
  __syncthreads();
#pragma unroll
  for (int w = 0; w < D / 32; ++w) m = fmaxf(m, s_max[w]);
  float l = 0.f, acc = 0.f;
  if (m > -INFINITY) {  // the same m in every thread
    for (int s0 = 0; s0 < n_splits; s0 += D) {
      const int n = min(D, n_splits - s0);
      __syncthreads();  // the last chunk's weights are read
      if (d < n) s_w[d] = expf((s0 == 0 ? lse0 : ws_lse[row0 + (s0 + d) * stride]) - m);
      __syncthreads();
      const float* o_s = ws_o + (row0 + s0 * stride) * D + d;
#pragma unroll 8
      for (int j = 0; j < n; ++j) {
        const float w = s_w[j];
        l += w;
        acc += w * o_s[j * stride * D];
      }
    }
  }
  const long out = (long)tok * n_heads + head;
  o[out * D + d] = l > 0.f ? acc / l : 0.f;
  if (d == 0) lse[out] = l > 0.f ? m + logf(l) : -INFINITY;
}

// seqs: null for one sequence (a's cache), else seqs->count sequences in grid z.
template <int D, int kWarps, int kBlockN, int kStages, bool kFp8 = false, bool kDirect = false>
void launch_decode_split(const DecodeArgs& a, int n_kv_heads, const DecodeSeqs* seqs, cudaStream_t stream) {
  using Tile = DecodeTile<D, kWarps, kBlockN, kStages, kFp8, kDirect>;
  if (seqs) {
    auto kernel = decode_split_kernel<D, kWarps, kBlockN, kStages, kFp8, kDirect, true>;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Tile::kSmemBytes)));
    launch_dependent(kernel, dim3(a.n_splits, n_kv_heads, seqs->count), dim3(Tile::kThreads), Tile::kSmemBytes, stream,
                     a, *seqs);
  } else {
    auto kernel = decode_split_kernel<D, kWarps, kBlockN, kStages, kFp8, kDirect, false>;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Tile::kSmemBytes)));
    launch_dependent(kernel, dim3(a.n_splits, n_kv_heads), dim3(Tile::kThreads), Tile::kSmemBytes, stream, a,
                     DecodeSeqs{});
  }
}

// The split kernel of fp8 variant `variant` (visit_decode_fp8_variant).
template <int D>
void launch_decode_split_fp8(const DecodeArgs& a, int n_kv_heads, int variant, const DecodeSeqs* seqs,
                             cudaStream_t stream) {
  visit_decode_fp8_variant<D>(variant, [&](auto tile) {
    using T = decltype(tile);
    launch_decode_split<D, T::kNumWarps, T::kKeys, T::kNumStages, true, T::kIsDirect>(a, n_kv_heads, seqs, stream);
  });
}

// Per head_dim (decode_attention_hdim*.cu): the split kernel for `variant`, its keys per
// tile, its blocks per multiprocessor, and the combine kernel.
struct DecodeConfig {
  int block_n;           // keys per tile
  int warps;             // warps per block
  size_t smem_bytes;     // dynamic shared memory of one block
  int max_blocks_per_sm = 0;  // fp8: the kMinBlocks its registers were compiled for (the split plan counts no more); 0: no cap
};
// fp8 (a.k8 set): `variant` is an fp8 variant (visit_decode_fp8_variant).
void decode_split_hdim64(const DecodeArgs& a, int n_kv_heads, int variant, const DecodeSeqs* seqs,
                         cudaStream_t stream);
void decode_split_hdim128(const DecodeArgs& a, int n_kv_heads, int variant, const DecodeSeqs* seqs,
                          cudaStream_t stream);

}  // namespace ringinfer::cuda
