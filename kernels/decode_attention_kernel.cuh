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
//
// fp8, f16 MMAs on the raw e4m3 values (kHalf, with kDirect's fragment orders): e4m3 ->
// f16 is exact and one cvt per byte pair (e4m3 -> bf16 costs a cvt, two f16 -> f32 and a
// pack), so both products run as f16 MMAs (fp32 accumulate) on the unscaled e4m3 values:
//   Q K^T: Q rounded once to f16 times a power of two per row (q_prescale_exp: exact for
//   bf16 Q, any range), undone with the softmax scale: s_j = dot(q 2^e, k8_j) k_scale[j]
//   * softmax_scale * 2^-e.
//   P V: v_scale[j] stays inside the sum over keys, so it goes into P: w_j = p_j
//   v_scale[j] (fp32). f16 needs w in range, so each row keeps a unit u (the largest w
//   seen so far, in the frame of the running max) and the tile's P' = w / u * 2^15 in
//   [0, 2^15]; the accumulator holds sum P' v8 (O * l = acc * u * 2^-15). The running max
//   moving multiplies u by alpha instead of rescaling the accumulator; only a tile whose
//   largest w exceeds u (rare after the first tiles) rescales it, by u_old / u_new < 1.
//   P' keeps f16's 11 bits down to 2^-29 of the largest weight (bf16's 8 bits for
//   converted tiles), and weights under 2^-40 of it round to zero.
// l sums the fp32 p as in every variant. The loads of a full tile use precomputed
// addresses (the generic index arithmetic was a fifth of the instructions per tile).
#include <cuda_fp16.h>
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

template <int D, int kWarps, int kBlockN, int kStages, bool kFp8 = false, bool kDirect = false, bool kHalf = false>
struct DecodeTile {
  static_assert(!kDirect || kFp8, "direct fragments are an fp8-cache path");
  static_assert(!kHalf || kDirect, "f16 MMAs on the raw e4m3 values build their fragments directly");
  static_assert(kBlockN % 16 == 0 && kStages >= 2, "tiles of 16-key MMA steps, at least double-buffered");
  static constexpr int kNumWarps = kWarps, kKeys = kBlockN, kNumStages = kStages;
  static constexpr bool kIsDirect = kDirect, kIsHalf = kHalf;
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
//   4: 16-key tiles, 4 stages, f16 MMAs on the raw e4m3 values (3 blocks/SM at D = 128)
//   5: 32-key tiles, 3 stages, f16 MMAs on the raw e4m3 values (2 blocks/SM at D = 128)
// f receives a value-initialized DecodeTile of the variant (its constants describe it).
constexpr int kDecodeFp8Variants = 6;
template <int D, typename F>
decltype(auto) visit_decode_fp8_variant(int variant, F&& f) {
  switch (variant) {
    case 4:
      return f(DecodeTile<D, 4, 16, 4, true, true, true>{});
    case 5:
      return f(DecodeTile<D, 4, 32, 3, true, true, true>{});
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

// ---- f16 MMAs on the raw e4m3 values (kHalf): helpers
// 4 e4m3 bytes -> 2 f16x2 (exact: every e4m3 value is an f16 value): lo = bytes 0, 1,
// hi = bytes 2, 3, the lower byte in the low half. One cvt per pair (sm_89+).
__device__ __forceinline__ void e4m3x4_to_f16x2x2(uint32_t bytes, uint32_t& lo, uint32_t& hi) {
  asm("{\n .reg .b16 l, h;\n mov.b32 {l, h}, %2;\n cvt.rn.f16x2.e4m3x2 %0, l;\n cvt.rn.f16x2.e4m3x2 %1, h;\n}\n"
      : "=r"(lo), "=r"(hi)
      : "r"(bytes));
}

// m16n8k16 with f16 operands, fp32 accumulate (fragment layouts as the bf16 one, cuda_common.cuh).
__device__ __forceinline__ void mma_f16_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_f16x2(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

__device__ __forceinline__ float fast_rcp(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// 2^e as a float, e in [-126, 127].
__device__ __forceinline__ float exp2_int(int e) { return __int_as_float((e + 127) << 23); }

// The power of two e that takes a query row whose largest magnitude is amax into f16
// without rounding: amax * 2^e < 2^15 <= 65504, and every bf16 value of the row times
// 2^e keeps its 8 significant bits (f16 has 11) unless it falls below f16's normal range,
// 2^-29 of amax (negligible in the dot product). Clamped to [-120, 100] so 2^e and 2^-e
// are normal floats; amax = 0 (a padding row), inf or NaN: 0.
__device__ __forceinline__ int q_prescale_exp(float amax) {
  if (!(amax > 0.f && amax < INFINITY)) return 0;
  const int E = ((__float_as_int(amax) >> 23) & 0xff) - 126;  // amax < 2^E (normal amax: in [2^(E-1), 2^E))
  return min(100, max(-120, 15 - E));
}

// The smallest unit of a row's V accumulator (kHalf): keeps 1 / unit finite.
constexpr float kAccUnitFloor = 7.8886090522101181e-31f;  // 2^-100

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

template <int D, int kWarps, int kBlockN, int kStages, bool kFp8, bool kDirect, bool kHalf, bool kSeqs>
__global__ void __launch_bounds__(32 * kWarps,
                                  (DecodeTile<D, kWarps, kBlockN, kStages, kFp8, kDirect, kHalf>::kMinBlocks))
    decode_split_kernel(const __grid_constant__ DecodeArgs a_in, const __grid_constant__ DecodeSeqs seqs) {
  // A single-sequence launch reads its arguments from parameter space as before; a
  // several-sequence one works on a copy with this block's sequence filled in.
  DecodeArgs a_seq;
  if constexpr (kSeqs) a_seq = sequence_args<D>(a_in, seqs, blockIdx.z);
  const DecodeArgs& a = kSeqs ? a_seq : a_in;
  using Tile = DecodeTile<D, kWarps, kBlockN, kStages, kFp8, kDirect, kHalf>;
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
      if constexpr (kHalf) {
        // A full tile (every tile but a sequence's last): the lane's chunks are column
        // lane % kChunks8 of rows lane / kChunks8 + j * kRowStep, at addresses that advance
        // by adds (the generic loop below spends ~20 instructions of 64-bit index
        // arithmetic per chunk). fp8_chunk of row r0 + j * kRowStep depends on j only
        // through j & 1 (D = 128: r % 8 = r0 + 4 (j & 1); D = 64: not at all).
        constexpr int kRowStep = 32 / kChunks8, kRowsPerLane = kBlockN / kRowStep;
        static_assert(kBlockN % kRowStep == 0 && kBlockN <= 32, "whole rows of chunks per lane; one scale per lane");
        const int r0 = lane / kChunks8, ch = lane % kChunks8;
        if (key0 + kBlockN <= a.n_k) {
          const int dst_even = fp8_chunk<D>(r0, ch), dst_odd = fp8_chunk<D>(r0 + kRowStep, ch) - kRowStep * D;
          const long off = long(key0 + r0) * a.kv_stride + kv_head * D + ch * 16, step = long(kRowStep) * a.kv_stride;
          const uint8_t* kp = a.k8 + off;
          const uint8_t* vp = a.v8 + off;
#pragma unroll
          for (int j = 0; j < kRowsPerLane; ++j) {
            const int dst = (j % 2 ? dst_odd : dst_even) + j * kRowStep * D;
            cp_async_16(k_dst + dst, kp + j * step, true);
            cp_async_16(v_dst + dst, vp + j * step, true);
          }
        } else {
#pragma unroll
          for (int j = 0; j < kRowsPerLane; ++j) {
            const int r = r0 + j * kRowStep, key = key0 + r;
            const bool ok = key < a.n_k;
            const long off = (ok ? key : 0) * a.kv_stride + kv_head * D + ch * 16;
            cp_async_16(k_dst + fp8_chunk<D>(r, ch), a.k8 + off, ok);
            cp_async_16(v_dst + fp8_chunk<D>(r, ch), a.v8 + off, ok);
          }
        }
        float* ks = sScale + stage * 2 * kBlockN;
        if (lane < kBlockN) {
          const int key = key0 + lane;
          const bool ok = key < a.n_k;
          const long off = long(ok ? key : 0) * gridDim.y + kv_head;  // gridDim.y = Hkv
          cp_async_4(ks + lane, a.k_scale + off, ok);
          cp_async_4(ks + kBlockN + lane, a.v_scale + off, ok);
        }
      } else {
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
          const long off = long(ok ? key : 0) * gridDim.y + kv_head;  // gridDim.y = Hkv
          cp_async_4(ks + r, a.k_scale + off, ok);
          cp_async_4(ks + kBlockN + r, a.v_scale + off, ok);
        }
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

  // Row factors of the scores in log2 units: the softmax scale, and with kHalf the 2^-e
  // that undoes row's power-of-two prescale of Q (rows g: _a, g + 8: _b).
  float sc_a = a.scale_log2, sc_b = a.scale_log2;
  if constexpr (kHalf) {  // Q bf16 -> f16 times 2^e per row (exact, q_prescale_exp)
    float amax_a = 0.f, amax_b = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&qf[kk][e]));
        const float m = fmaxf(fabsf(f.x), fabsf(f.y));
        if (e % 2 == 0) amax_a = fmaxf(amax_a, m);
        else amax_b = fmaxf(amax_b, m);
      }
    // A quad's 4 lanes hold all D dims of rows g and g + 8.
    const int e_a = q_prescale_exp(quad_max(amax_a)), e_b = q_prescale_exp(quad_max(amax_b));
    const float pre_a = exp2_int(e_a), pre_b = exp2_int(e_b);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&qf[kk][e]));
        const float pre = e % 2 == 0 ? pre_a : pre_b;
        qf[kk][e] = pack_f16x2(f.x * pre, f.y * pre);
      }
    sc_a = a.scale_log2 * exp2_int(-e_a);
    sc_b = a.scale_log2 * exp2_int(-e_b);
  }

  float acc[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.f, l_b = 0.f;
  // kHalf: the V accumulator of row a holds O * l / u_a * 2^15 (u_a: the unit, the largest
  // single weight p * v_scale seen so far, in the current max's frame; header comment).
  float u_a = 0.f, u_b = 0.f;

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
        for (int kk = 0; kk < D / 16; ++kk) {
          if constexpr (kHalf) {
            uint32_t b0, b1;
            e4m3x4_to_f16x2x2(raw[kk], b0, b1);
            mma_f16_16816(s[nb], qf[kk], b0, b1);
          } else {
            mma_bf16_16816(s[nb], qf[kk], e4m3x2_to_bf16x2(raw[kk]), e4m3x2_to_bf16x2(raw[kk] >> 16));
          }
        }
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
    const float new_m_a = fmaxf(m_a, quad_max(mx_a) * sc_a);
    const float new_m_b = fmaxf(m_b, quad_max(mx_b) * sc_b);
    const float alpha_a = fast_exp2(m_a - new_m_a), alpha_b = fast_exp2(m_b - new_m_b);
    m_a = new_m_a;
    m_b = new_m_b;
    float sum_a = 0.f, sum_b = 0.f;
#pragma unroll
    for (int n = 0; n < kBlockN / 8; ++n) {
      s[n][0] = fast_exp2(fmaf(s[n][0], sc_a, -m_a));
      s[n][1] = fast_exp2(fmaf(s[n][1], sc_a, -m_a));
      s[n][2] = fast_exp2(fmaf(s[n][2], sc_b, -m_b));
      s[n][3] = fast_exp2(fmaf(s[n][3], sc_b, -m_b));
      sum_a += s[n][0] + s[n][1];
      sum_b += s[n][2] + s[n][3];
    }
    l_a = l_a * alpha_a + sum_a;
    l_b = l_b * alpha_b + sum_b;
    if constexpr (kHalf) {
      // Weights w = p * v_scale (fp32); the tile's P' = w / unit * 2^15 lies in [0, 2^15],
      // f16's range. The unit only grows past the running one (in this tile's frame,
      // u * alpha) when a weight does, and only then is the accumulator rescaled (by a
      // factor < 1, exactly 1 for rows whose unit did not grow; padding rows are never
      // read, so they do not ask for it).
      float w_a = 0.f, w_b = 0.f;
#pragma unroll
      for (int n = 0; n < kBlockN / 8; ++n) {
        const float2 vs = *reinterpret_cast<const float2*>(v_scale + n * 8 + (lane % 4) * 2);
        s[n][0] *= vs.x;
        s[n][1] *= vs.y;
        s[n][2] *= vs.x;
        s[n][3] *= vs.y;
        w_a = fmaxf(w_a, fmaxf(s[n][0], s[n][1]));
        w_b = fmaxf(w_b, fmaxf(s[n][2], s[n][3]));
      }
      const float old_a = u_a * alpha_a, old_b = u_b * alpha_b;
      u_a = fmaxf(fmaxf(quad_max(w_a), old_a), kAccUnitFloor);
      u_b = fmaxf(fmaxf(quad_max(w_b), old_b), kAccUnitFloor);
      const float r_a = fast_rcp(u_a), r_b = fast_rcp(u_b);
      const bool grow_a = u_a > old_a, grow_b = u_b > old_b;
      if (__any_sync(0xffffffffu, (grow_a && lane / 4 < a.rows) || (grow_b && lane / 4 + 8 < a.rows))) {
        const float f_a = grow_a ? old_a * r_a : 1.f, f_b = grow_b ? old_b * r_b : 1.f;
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
          acc[n][0] *= f_a;
          acc[n][1] *= f_a;
          acc[n][2] *= f_b;
          acc[n][3] *= f_b;
        }
      }
      const float i_a = r_a * 32768.f, i_b = r_b * 32768.f;
#pragma unroll
      for (int n = 0; n < kBlockN / 8; ++n) {
        s[n][0] *= i_a;
        s[n][1] *= i_a;
        s[n][2] *= i_b;
        s[n][3] *= i_b;
      }
    } else {
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        acc[n][0] *= alpha_a;
        acc[n][1] *= alpha_a;
        acc[n][2] *= alpha_b;
        acc[n][3] *= alpha_b;
      }
    }
    if constexpr (kFp8 && !kHalf) {  // P[:, j] *= v_scale[j] (after l took the unscaled P)
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
      auto pack = [](float lo, float hi) { return kHalf ? pack_f16x2(lo, hi) : pack_bf16x2(lo, hi); };
      const uint32_t pa[4] = {pack(s[2 * kk][0], s[2 * kk][1]), pack(s[2 * kk][2], s[2 * kk][3]),
                              pack(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack(s[2 * kk + 1][2], s[2 * kk + 1][3])};
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
          if constexpr (kHalf) {
            uint32_t d0_01, d1_01, d2_01, d3_01, d0_89, d1_89, d2_89, d3_89;  // dim 4w + e, key pairs
            e4m3x4_to_f16x2x2(lo_01, d0_01, d1_01);
            e4m3x4_to_f16x2x2(hi_01, d2_01, d3_01);
            e4m3x4_to_f16x2x2(lo_89, d0_89, d1_89);
            e4m3x4_to_f16x2x2(hi_89, d2_89, d3_89);
            mma_f16_16816(acc[4 * w], pa, d0_01, d0_89);
            mma_f16_16816(acc[4 * w + 1], pa, d1_01, d1_89);
            mma_f16_16816(acc[4 * w + 2], pa, d2_01, d2_89);
            mma_f16_16816(acc[4 * w + 3], pa, d3_01, d3_89);
          } else {
            mma_bf16_16816(acc[4 * w], pa, e4m3x2_to_bf16x2(lo_01), e4m3x2_to_bf16x2(lo_89));
            mma_bf16_16816(acc[4 * w + 1], pa, e4m3x2_to_bf16x2(lo_01 >> 16), e4m3x2_to_bf16x2(lo_89 >> 16));
            mma_bf16_16816(acc[4 * w + 2], pa, e4m3x2_to_bf16x2(hi_01), e4m3x2_to_bf16x2(hi_89));
            mma_bf16_16816(acc[4 * w + 3], pa, e4m3x2_to_bf16x2(hi_01 >> 16), e4m3x2_to_bf16x2(hi_89 >> 16));
          }
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
      // kHalf: the accumulator in units of u * 2^-15 (a warp without tiles: u = 0, acc = 0)
      const float f_a = kHalf ? u_a * (1.f / 32768.f) : 1.f, f_b = kHalf ? u_b * (1.f / 32768.f) : 1.f;
      row_a[d0] = acc[n][0] * f_a, row_a[d1] = acc[n][1] * f_a, row_b[d0] = acc[n][2] * f_b, row_b[d1] = acc[n][3] * f_b;
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
// workspace slice).
template <int D>
__global__ void decode_combine_kernel(const float* ws_lse, const float* ws_o, int n_splits, int n_kv_heads,
                                      int group, float* o, float* lse, bool per_seq = false) {
  pdl_trigger();  // the output projection after it may fetch its weights meanwhile (cuda_common.cuh)
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
template <int D, int kWarps, int kBlockN, int kStages, bool kFp8 = false, bool kDirect = false, bool kHalf = false>
void launch_decode_split(const DecodeArgs& a, int n_kv_heads, const DecodeSeqs* seqs, cudaStream_t stream) {
  using Tile = DecodeTile<D, kWarps, kBlockN, kStages, kFp8, kDirect, kHalf>;
  if (seqs) {
    auto kernel = decode_split_kernel<D, kWarps, kBlockN, kStages, kFp8, kDirect, kHalf, true>;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Tile::kSmemBytes)));
    kernel<<<dim3(a.n_splits, n_kv_heads, seqs->count), Tile::kThreads, Tile::kSmemBytes, stream>>>(a, *seqs);
  } else {
    auto kernel = decode_split_kernel<D, kWarps, kBlockN, kStages, kFp8, kDirect, kHalf, false>;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Tile::kSmemBytes)));
    kernel<<<dim3(a.n_splits, n_kv_heads), Tile::kThreads, Tile::kSmemBytes, stream>>>(a, DecodeSeqs{});
  }
  CUDA_CHECK_LAUNCH();
}

// The split kernel of fp8 variant `variant` (visit_decode_fp8_variant).
template <int D>
void launch_decode_split_fp8(const DecodeArgs& a, int n_kv_heads, int variant, const DecodeSeqs* seqs,
                             cudaStream_t stream) {
  visit_decode_fp8_variant<D>(variant, [&](auto tile) {
    using T = decltype(tile);
    launch_decode_split<D, T::kNumWarps, T::kKeys, T::kNumStages, true, T::kIsDirect, T::kIsHalf>(a, n_kv_heads, seqs,
                                                                                                 stream);
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
