#pragma once
// The flash attention forward kernel template (FA2-style, mma.sync m16n8k16 bf16),
// included by one .cu per (head_dim, tile configuration) instantiation.
//
// Tiling. A thread block owns kBlockM = 16 * kMT * kWarps query rows of one query head;
// warp w owns 16 * kMT consecutive rows of that tile (kMT = 1: kept in registers as MMA
// A-fragments for the whole kernel). The block walks the key rows its rows may see in tiles of kBlockN
// keys; each K/V tile is brought into shared memory by cp.async (two stages: tile t+1
// loads while tile t is computed) and read by every warp with ldmatrix:
//
//        keys ->  tile 0   tile 1   ...   (tiles past the block's last visible key are skipped)
//   Q rows  +--------+--------+
//   warp 0  | S=QK^T |        |   S (16 x kBlockN, fp32) lives in registers; online softmax
//   warp 1  |        |        |   turns it into P (bf16 A-fragments, no shared-memory trip),
//   ...     |        |        |   and O += P V accumulates 16 x D fp32 per warp in registers.
//   +-------+--------+--------+
//
// The softmax runs in base 2: m is the running max of score * scale * log2(e), l the
// running sum of 2^(x - m); at the end LSE = m ln 2 + ln l (natural log). The causal mask
// is "key j visible from row i iff j <= i + diag" (diag folds q_start and the striped
// rank pair); it is applied only on tiles that cross the diagonal or the end of the keys.
// The epilogue merges (O/l, LSE) into the (O, LSE) already in memory, by log-sum-exp.
#include <math.h>

#include "cuda_common.cuh"
#include "flash_attention.h"
#include "ringinfer/cuda_check.h"

namespace ringinfer::cuda {

using bf16 = __nv_bfloat16;

// FlashAttnParams after validation, in the kernel's units.
struct FlashFwdArgs {
  const bf16* q;      // [n_q, q_stride]
  const bf16* k;      // [n_k, kv_stride]
  const bf16* v;      // [n_k, kv_stride]
  float* o;           // [n_q, H, D]
  float* lse;         // [n_q, H]
  int n_q, n_k;       // rows
  int n_heads;        // H
  int group;          // H / Hkv query heads per KV head
  long q_stride;      // elements between query tokens
  long kv_stride;     // elements between key tokens
  float scale_log2;   // softmax_scale * log2(e)
  int diag;           // causal: key j visible from row i iff j <= i + diag
  bool causal;
  bool merge;
};

// kMT: 16-row MMA tiles per warp. With kMT = 2 every K/V fragment read from shared
// memory feeds two MMAs (the 16 x kBlockN and 16 x D tiles of two row blocks), which
// halves the shared-memory traffic per FLOP; Q then stays in shared memory and is
// re-read per tile (registers hold 2 x 16 x D fp32 of O instead).
template <int D, int kWarps, int kBlockN, int kMT>
struct FlashFwdTile {
  static constexpr int kBlockM = 16 * kMT * kWarps;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kChunks = D / 8;  // 16-byte chunks per row
  // Q tile + two stages of K and V tiles.
  static constexpr size_t kSmemBytes = size_t(kBlockM + 4 * kBlockN) * D * sizeof(bf16);
};

template <int D, int kWarps, int kBlockN, int kMinBlocks, int kMT>
__global__ void __launch_bounds__(32 * kWarps, kMinBlocks) flash_fwd_kernel(const FlashFwdArgs a) {
  using Tile = FlashFwdTile<D, kWarps, kBlockN, kMT>;
  constexpr int kBlockM = Tile::kBlockM, kThreads = Tile::kThreads, kChunks = Tile::kChunks;
  constexpr bool kQInRegs = kMT == 1;
  static_assert(D % 16 == 0 && kBlockN % 16 == 0, "tile sizes");

  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [kBlockM][D] swizzled
  bf16* sK = sQ + kBlockM * D;                   // [2 stages][kBlockN][D] swizzled
  bf16* sV = sK + 2 * kBlockN * D;               // [2 stages][kBlockN][D] swizzled

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  // Under the causal mask the last query tiles see the most keys: start them first.
  const int m0 = (gridDim.x - 1 - blockIdx.x) * kBlockM;
  const int head = blockIdx.y;
  const int kv_head = head / a.group;

  const int n_k_block = a.causal ? min(a.n_k, m0 + kBlockM + a.diag) : a.n_k;
  const int n_tiles = n_k_block > 0 ? (n_k_block + kBlockN - 1) / kBlockN : 0;

  // ---- loads (every thread issues a strided share of the tile's 16-byte chunks)
  for (int c = tid; c < kBlockM * kChunks; c += kThreads) {
    const int r = c / kChunks, ch = c % kChunks, row = m0 + r;
    const bool ok = row < a.n_q;
    cp_async_16(sQ + swizzle<D>(r, ch), a.q + (ok ? row : 0) * a.q_stride + head * D + ch * 8, ok);
  }
  cp_async_commit();
  auto load_kv = [&](int tile, int stage) {
    bf16* k_dst = sK + stage * kBlockN * D;
    bf16* v_dst = sV + stage * kBlockN * D;
    for (int c = tid; c < kBlockN * kChunks; c += kThreads) {
      const int r = c / kChunks, ch = c % kChunks, key = tile * kBlockN + r;
      const bool ok = key < a.n_k;  // rows past the end read as zeros (0 * garbage could be NaN)
      const long off = (ok ? key : 0) * a.kv_stride + kv_head * D + ch * 8;
      cp_async_16(k_dst + swizzle<D>(r, ch), a.k + off, ok);
      cp_async_16(v_dst + swizzle<D>(r, ch), a.v + off, ok);
    }
  };
  if (n_tiles > 0) load_kv(0, 0);
  cp_async_commit();

  // ---- this warp's rows: 16 * kMT of them, starting at tile row warp_row0
  const int warp_row0 = warp * 16 * kMT;
  cp_async_wait<1>();
  __syncthreads();
  // A-fragment of Q for m-tile mt and 16-wide slice kk of D.
  auto load_qf = [&](uint32_t(&f)[4], int mt, int kk) {
    ldmatrix_x4(f, sQ + swizzle<D>(warp_row0 + mt * 16 + ((lane / 8) % 2) * 8 + lane % 8, kk * 2 + lane / 16));
  };
  uint32_t qf_regs[kQInRegs ? D / 16 : 1][4];
  if constexpr (kQInRegs) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) load_qf(qf_regs[kk], 0, kk);
  }

  // Thread holds rows g and g+8 (g = lane / 4) of each of its m-tiles: index [mt][half].
  auto row_of = [&](int mt, int half) { return m0 + warp_row0 + mt * 16 + lane / 4 + half * 8; };
  const int warp_last_row = m0 + warp_row0 + 16 * kMT - 1;
  float acc[kMT][D / 8][4];
  float m_run[kMT][2], l_run[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int n = 0; n < D / 8; ++n) acc[mt][n][0] = acc[mt][n][1] = acc[mt][n][2] = acc[mt][n][3] = 0.f;
    m_run[mt][0] = m_run[mt][1] = -INFINITY;
    l_run[mt][0] = l_run[mt][1] = 0.f;
  }

  for (int t = 0; t < n_tiles; ++t) {
    const int stage = t & 1;
    if (t + 1 < n_tiles) load_kv(t + 1, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();  // tile t has landed (tile t+1 may still be in flight)
    __syncthreads();

    const int key0 = t * kBlockN;
    // A warp whose rows all end before this tile starts has nothing to do here.
    if (!(a.causal && key0 > warp_last_row + a.diag)) {
      const bf16* k_s = sK + stage * kBlockN * D;
      const bf16* v_s = sV + stage * kBlockN * D;

      // S = Q K^T: one ldmatrix.x4 gives the B-fragments of two 8-key column blocks,
      // used by the kMT row blocks.
      float s[kMT][kBlockN / 8][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int n = 0; n < kBlockN / 8; ++n) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t qf[kMT][4];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          if constexpr (kQInRegs) {
#pragma unroll
            for (int x = 0; x < 4; ++x) qf[mt][x] = qf_regs[kk][x];
          } else {
            load_qf(qf[mt], mt, kk);
          }
        }
#pragma unroll
        for (int nn = 0; nn < kBlockN / 16; ++nn) {
          uint32_t b[4];
          ldmatrix_x4(b, k_s + swizzle<D>(nn * 16 + (lane / 16) * 8 + lane % 8, kk * 2 + (lane / 8) % 2));
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            mma_bf16_16816(s[mt][2 * nn], qf[mt], b[0], b[1]);
            mma_bf16_16816(s[mt][2 * nn + 1], qf[mt], b[2], b[3]);
          }
        }
      }

      // Mask only tiles that cross the diagonal of the block's first row or the key end.
      if (key0 + kBlockN > a.n_k || (a.causal && key0 + kBlockN - 1 > m0 + a.diag)) {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int n = 0; n < kBlockN / 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int col = key0 + n * 8 + (lane % 4) * 2 + (e & 1);
              const bool visible = col < a.n_k && (!a.causal || col <= row_of(mt, e / 2) + a.diag);
              if (!visible) s[mt][n][e] = -INFINITY;
            }
      }

      // Online softmax (base 2). A row that has seen no visible key keeps m = -inf; its
      // exponent base is 0 so that -inf - (-inf) never happens.
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          float mx = -INFINITY;
#pragma unroll
          for (int n = 0; n < kBlockN / 8; ++n) mx = fmaxf(mx, fmaxf(s[mt][n][2 * half], s[mt][n][2 * half + 1]));
          const float new_m = fmaxf(m_run[mt][half], quad_max(mx) * a.scale_log2);
          const float base = new_m == -INFINITY ? 0.f : new_m;
          const float alpha = fast_exp2(m_run[mt][half] - base);
          m_run[mt][half] = new_m;
          float sum = 0.f;
#pragma unroll
          for (int n = 0; n < kBlockN / 8; ++n) {
            s[mt][n][2 * half] = fast_exp2(fmaf(s[mt][n][2 * half], a.scale_log2, -base));
            s[mt][n][2 * half + 1] = fast_exp2(fmaf(s[mt][n][2 * half + 1], a.scale_log2, -base));
            sum += s[mt][n][2 * half] + s[mt][n][2 * half + 1];
          }
          l_run[mt][half] = l_run[mt][half] * alpha + sum;  // per-thread partial; the quad adds at the end
#pragma unroll
          for (int n = 0; n < D / 8; ++n) {
            acc[mt][n][2 * half] *= alpha;
            acc[mt][n][2 * half + 1] *= alpha;
          }
        }
      }

      // O += P V: the S accumulators of key blocks 2kk, 2kk+1 are exactly the A-fragment
      // of the 16-key slice kk; V's B-fragments come from ldmatrix.trans.
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        uint32_t pa[kMT][4];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          pa[mt][0] = pack_bf16x2(s[mt][2 * kk][0], s[mt][2 * kk][1]);
          pa[mt][1] = pack_bf16x2(s[mt][2 * kk][2], s[mt][2 * kk][3]);
          pa[mt][2] = pack_bf16x2(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
          pa[mt][3] = pack_bf16x2(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int dd = 0; dd < D / 16; ++dd) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, v_s + swizzle<D>(kk * 16 + ((lane / 8) % 2) * 8 + lane % 8, dd * 2 + lane / 16));
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            mma_bf16_16816(acc[mt][2 * dd], pa[mt], b[0], b[1]);
            mma_bf16_16816(acc[mt][2 * dd + 1], pa[mt], b[2], b[3]);
          }
        }
      }
    }
    __syncthreads();  // every warp is done with this stage before it is refilled
  }

  // ---- epilogue: merge (acc / l, LSE) into (O, LSE) in memory
  // All four lanes of a quad read the old LSE before lane 0 overwrites it.
  float old_lse[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      l_run[mt][half] = quad_sum(l_run[mt][half]);
      const int row = row_of(mt, half);
      old_lse[mt][half] = (a.merge && row < a.n_q) ? a.lse[(long)row * a.n_heads + head] : -INFINITY;
    }
  __syncwarp();

#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = row_of(mt, half);
      const float l = l_run[mt][half], lse_old = old_lse[mt][half];
      if (row >= a.n_q) continue;
      float* o_row = a.o + ((long)row * a.n_heads + head) * D + (lane % 4) * 2;
      float* lse_ptr = a.lse + (long)row * a.n_heads + head;
      if (l == 0.f) {  // no visible key: merge keeps (O, LSE); overwrite writes the identity
        if (!a.merge) {
#pragma unroll
          for (int n = 0; n < D / 8; ++n) *reinterpret_cast<float2*>(o_row + n * 8) = make_float2(0.f, 0.f);
          if (lane % 4 == 0) *lse_ptr = -INFINITY;
        }
        continue;
      }
      const float lse_new = m_run[mt][half] * 0.69314718055994531f + logf(l);
      float lse_out = lse_new, w_new = 1.f / l, w_old = 0.f;
      const bool with_old = lse_old > -INFINITY;  // LSE = -inf: an empty (O, LSE), O ignored
      if (with_old) {
        lse_out = fmaxf(lse_old, lse_new) + log1pf(expf(-fabsf(lse_old - lse_new)));
        w_old = expf(lse_old - lse_out);
        w_new = expf(lse_new - lse_out) / l;
      }
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        float2 out = make_float2(acc[mt][n][2 * half] * w_new, acc[mt][n][2 * half + 1] * w_new);
        if (with_old) {
          const float2 old = *reinterpret_cast<const float2*>(o_row + n * 8);
          out.x = fmaf(old.x, w_old, out.x);
          out.y = fmaf(old.y, w_old, out.y);
        }
        *reinterpret_cast<float2*>(o_row + n * 8) = out;
      }
      if (lane % 4 == 0) *lse_ptr = lse_out;
    }
}

template <int D, int kWarps, int kBlockN, int kMinBlocks, int kMT = 1>
void launch_flash_fwd(const FlashFwdArgs& a, cudaStream_t stream) {
  using Tile = FlashFwdTile<D, kWarps, kBlockN, kMT>;
  auto kernel = flash_fwd_kernel<D, kWarps, kBlockN, kMinBlocks, kMT>;
  // Above 48 KB of dynamic shared memory a kernel must opt in (per device, so every call).
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Tile::kSmemBytes)));
  const dim3 grid((a.n_q + Tile::kBlockM - 1) / Tile::kBlockM, a.n_heads);
  kernel<<<grid, Tile::kThreads, Tile::kSmemBytes, stream>>>(a);
  CUDA_CHECK_LAUNCH();
}

// One per instantiation file (flash_attention_hdim*.cu); variant picks the tile shape.
void flash_fwd_hdim64(const FlashFwdArgs& a, int variant, cudaStream_t stream);
void flash_fwd_hdim128_w4(const FlashFwdArgs& a, cudaStream_t stream);
void flash_fwd_hdim128_w8(const FlashFwdArgs& a, cudaStream_t stream);
void flash_fwd_hdim128_mt2(const FlashFwdArgs& a, cudaStream_t stream);
void flash_fwd_hdim128_mt2n32(const FlashFwdArgs& a, cudaStream_t stream);
// The Hopper kernel (flash_attention_wgmma.cu), block_n = 64 or 128 keys per tile; only
// where flash_wgmma_supported() (compute capability 9.0, this build's sm_90a code).
void flash_fwd_hdim128_wgmma(const FlashFwdArgs& a, int block_n, bool pipelined, cudaStream_t stream);
bool flash_wgmma_supported();

}  // namespace ringinfer::cuda
