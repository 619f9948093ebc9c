// Flash attention forward for Hopper (sm_90a), head_dim 128: the matrix products run on
// the warpgroup MMA (wgmma) instead of mma.sync. Same contract as flash_fwd_kernel
// (FlashFwdArgs: striped causal diagonal, GQA, merge into a running (O, LSE)).
//
// Tiling. A block owns kBlockM = 128 query rows of one head: two warpgroups of 64 rows.
// It walks the keys its rows may see in tiles of kBlockN, double-buffered by cp.async
// (tile t+1 loads while tile t is computed). Per tile and warpgroup:
//   S = Q K^T   8 wgmma m64 x kBlockN x k16, Q and K both read from shared memory
//   softmax     on the S accumulators in registers (base 2, as in flash_fwd_kernel)
//   O += P V    kBlockN / 16 wgmma m64 x 128 x k16, P from registers (the S accumulator
//               layout is the register A layout), V from shared memory read N-major
// Shared memory uses the 128-byte swizzle of kernels/wgmma.cuh: every tile is two column
// blocks of 64 bf16, so Q and K are K-major operands and V is an N-major one, with no
// transposition anywhere.
//
// Pipelined (kPipelined; FA3's intra-warpgroup overlap): the tensor cores work while the
// warpgroup computes its softmax. Iteration t issues S_t = Q K_t and then O += P_{t-1}
// V_{t-1} (the previous tile's probabilities, kept packed in registers), waits for S_t
// only, computes tile t's masked softmax while the P V product runs, then waits for it,
// rescales O and packs P_t; the last tile's P V is issued after the loop. V_{t-1} is read
// during iteration t, so K/V go through three shared-memory stages: tile t+1 loads into
// the stage of tile t-2, whose P V finished in iteration t-1. Its softmax repeats the plain
// loop's, kept apart so that the measured default stays as it was until the pipelined one is
// measured (then one of the two loops goes).
#include "flash_attention_kernel.cuh"
#include "wgmma.cuh"

namespace ringinfer::cuda {
namespace {

constexpr int kD = 128;           // head_dim
constexpr int kBlockM = 128;      // query rows per block: two warpgroups x 64
constexpr int kThreads = 256;
constexpr int kChunks = kD / 8;   // 16-byte chunks per row

// Element offset of 16-byte chunk `chunk` (0..15) of row `row` in a [kRows x 128] tile
// stored as two 128-byte-swizzled column blocks of kRows x 64.
template <int kRows>
__device__ __forceinline__ int sw128(int row, int chunk) {
  return (chunk >> 3) * kRows * 64 + row * 64 + (((chunk & 7) ^ (row & 7)) << 3);
}

// Keeps the compiler from moving reads or writes of wgmma accumulators across the
// wgmma issue / wait (the hardware writes them asynchronously).
template <int N>
__device__ __forceinline__ void fence_operands(float (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(r[i][e])::"memory");
}

// The same for register A operands: a wgmma reads them after it is issued, so they must
// stay live (and unchanged) until the wait that covers it.
template <int N>
__device__ __forceinline__ void fence_operands(uint32_t (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(r[i][e])::"memory");
}

// S (+)= Q K^T for one 16-wide slice of the head dimension.
template <int kBlockN>
__device__ __forceinline__ void wgmma_qk(float (&s)[kBlockN / 8][4], uint64_t desc_q, uint64_t desc_k, int scale_d) {
  if constexpr (kBlockN == 128)
    wgmma_m64n128k16_ss<0, 0>(s, desc_q, desc_k, scale_d);
  else
    wgmma_m64n64k16_ss<0, 0>(s, desc_q, desc_k, scale_d);
}

// K/V stages in shared memory: two (tile t+1 loads while t is computed), three pipelined.
template <bool kPipelined>
constexpr int wgmma_stages() {
  return kPipelined ? 3 : 2;
}

template <int kBlockN, bool kPipelined>
constexpr size_t wgmma_smem_bytes() {
  // Q + the stages of K and V, plus slack to align the start to 1024 bytes (the swizzle
  // pattern repeats every 1024 bytes and the descriptors assume it starts on one).
  // 128-key tiles pipelined: 225 KB of the 227 KB a block may have.
  return size_t(kBlockM + 2 * wgmma_stages<kPipelined>() * kBlockN) * kD * sizeof(bf16) + 1024;
}

template <int kBlockN, bool kPipelined>
__global__ void __launch_bounds__(kThreads, 1) flash_fwd_wgmma_kernel(const FlashFwdArgs a) {
#ifdef RINGINFER_WGMMA
  constexpr int kStages = wgmma_stages<kPipelined>();
  extern __shared__ unsigned char smem_raw[];
  unsigned char* base = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  bf16* sQ = reinterpret_cast<bf16*>(base);  // [2][kBlockM][64]
  bf16* sK = sQ + kBlockM * kD;              // [kStages][2][kBlockN][64]
  bf16* sV = sK + kStages * kBlockN * kD;    // [kStages][2][kBlockN][64]

  const int tid = threadIdx.x, wg = tid / 128, warp = (tid % 128) / 32, lane = tid % 32;
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
    cp_async_16(sQ + sw128<kBlockM>(r, ch), a.q + long(ok ? row : 0) * a.q_stride + head * kD + ch * 8, ok);
  }
  cp_async_commit();
  auto load_kv = [&](int tile, int stage) {
    bf16* k_dst = sK + stage * kBlockN * kD;
    bf16* v_dst = sV + stage * kBlockN * kD;
    for (int c = tid; c < kBlockN * kChunks; c += kThreads) {
      const int r = c / kChunks, ch = c % kChunks, key = tile * kBlockN + r;
      const bool ok = key < a.n_k;  // rows past the end read as zeros (0 * garbage could be NaN)
      const long off = long(ok ? key : 0) * a.kv_stride + kv_head * kD + ch * 8;
      cp_async_16(k_dst + sw128<kBlockN>(r, ch), a.k + off, ok);
      cp_async_16(v_dst + sw128<kBlockN>(r, ch), a.v + off, ok);
    }
  };
  if (n_tiles > 0) load_kv(0, 0);
  cp_async_commit();

  // This thread's two rows (g and g + 8 of its warp's 16) in the block and globally.
  const int wg_first_row = m0 + wg * 64, wg_last_row = wg_first_row + 63;
  auto row_of = [&](int half) { return wg_first_row + warp * 16 + lane / 4 + half * 8; };
  // Descriptors: Q and K K-major (8-row groups 1024 bytes apart; 16-element k-steps are
  // 32-byte moves inside the swizzled row), V N-major (its two 64-wide column blocks are
  // kBlockN * 128 bytes apart).
  const bf16* q_wg = sQ + wg * 64 * 64;
  auto q_desc = [&](int kk) { return wgmma_desc(q_wg + (kk / 4) * kBlockM * 64 + (kk % 4) * 16, 16, 1024); };

  float o[kD / 8][4];
  float s[kBlockN / 8][4];
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
#pragma unroll
  for (int n = 0; n < kBlockN / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;

  if constexpr (kPipelined) {
    // S (+)= Q K^T of the tile in `stage` into s, issued (the caller commits and waits).
    auto issue_qk = [&](int stage) {
      const bf16* k_s = sK + stage * kBlockN * kD;
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk)
        wgmma_qk<kBlockN>(s, q_desc(kk), wgmma_desc(k_s + (kk / 4) * kBlockN * 64 + (kk % 4) * 16, 16, 1024),
                          kk > 0);
    };
    uint32_t pa[kBlockN / 16][4];  // P of the tile before, packed: its P V is issued with the next S
    // O += P V of the tile in `stage`, P from pa, issued.
    auto issue_pv = [&](int stage) {
      const bf16* v_s = sV + stage * kBlockN * kD;
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk)
        wgmma_m64n128k16_rs<1>(o, pa[kk], wgmma_desc(v_s + kk * 16 * 64, kBlockN * 128, 1024), 1);
    };
    // Tiles this warpgroup's rows see: a prefix 0..last (under the causal mask the rest lie
    // past the diagonal of its last row). Every issue and its wait sit in one branch: a
    // product in flight across a branch makes ptxas serialize the wgmmas.
    const int reach = wg_last_row + a.diag;
    const int last = !a.causal ? n_tiles - 1 : reach < 0 ? -1 : min(n_tiles - 1, reach / kBlockN);
    // Masked online softmax of S in s (as the loop below), O untouched; alpha: O's rescale.
    auto softmax = [&](int key0, float (&alpha)[2]) {
      if (key0 + kBlockN > a.n_k || (a.causal && key0 + kBlockN - 1 > wg_first_row + a.diag)) {
#pragma unroll
        for (int n = 0; n < kBlockN / 8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int col = key0 + n * 8 + (lane % 4) * 2 + (e & 1);
            const bool visible = col < a.n_k && (!a.causal || col <= row_of(e / 2) + a.diag);
            if (!visible) s[n][e] = -INFINITY;
          }
      }
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float mx = -INFINITY;
#pragma unroll
        for (int n = 0; n < kBlockN / 8; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * half], s[n][2 * half + 1]));
        const float new_m = fmaxf(m_run[half], quad_max(mx) * a.scale_log2);
        const float base_m = new_m == -INFINITY ? 0.f : new_m;
        alpha[half] = fast_exp2(m_run[half] - base_m);
        m_run[half] = new_m;
        float sum = 0.f;
#pragma unroll
        for (int n = 0; n < kBlockN / 8; ++n) {
          s[n][2 * half] = fast_exp2(fmaf(s[n][2 * half], a.scale_log2, -base_m));
          s[n][2 * half + 1] = fast_exp2(fmaf(s[n][2 * half + 1], a.scale_log2, -base_m));
          sum += s[n][2 * half] + s[n][2 * half + 1];
        }
        l_run[half] = l_run[half] * alpha[half] + sum;
      }
    };
    // O *= alpha, then P (s) packed into pa for its P V.
    auto rescale_and_pack = [&](const float (&alpha)[2]) {
#pragma unroll
      for (int n = 0; n < kD / 8; ++n) {
        o[n][0] *= alpha[0];
        o[n][1] *= alpha[0];
        o[n][2] *= alpha[1];
        o[n][3] *= alpha[1];
      }
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        pa[kk][0] = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
        pa[kk][1] = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
        pa[kk][2] = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        pa[kk][3] = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
      }
    };
    for (int t = 0; t < n_tiles; ++t) {
      const int stage = t % kStages, prev = (t + kStages - 1) % kStages;
      cp_async_wait<0>();          // tile t (and Q) have landed
      fence_proxy_async_shared();  // cp.async wrote them; wgmma reads through the async proxy
      __syncthreads();             // every thread's copies; and both warpgroups are past iteration t-1,
                                   // where tile t-2's P V was waited for: its stage is free
      if (t + 1 < n_tiles) load_kv(t + 1, (t + 1) % kStages);
      cp_async_commit();
      float alpha[2];
      if (t == 0 && last >= 0) {  // the first tile: S alone
        fence_operands(s);
        wgmma_fence();
        issue_qk(stage);
        wgmma_commit();
        wgmma_wait<0>();
        fence_operands(s);
        softmax(0, alpha);
        fence_operands(pa);
        rescale_and_pack(alpha);
      } else if (t > 0 && t <= last) {  // S_t, then O += P_{t-1} V_{t-1} behind it
        fence_operands(s);
        fence_operands(o);
        fence_operands(pa);
        wgmma_fence();
        issue_qk(stage);
        wgmma_commit();
        issue_pv(prev);
        wgmma_commit();
        wgmma_wait<1>();  // S_t is done; the P V may still run while the softmax does
        fence_operands(s);
        softmax(t * kBlockN, alpha);
        wgmma_wait<0>();
        fence_operands(o);
        fence_operands(pa);
        rescale_and_pack(alpha);
      } else if (t > 0 && t == last + 1) {  // past this warpgroup's last tile: that tile's P V
        fence_operands(o);
        fence_operands(pa);
        wgmma_fence();
        issue_pv(prev);
        wgmma_commit();
        wgmma_wait<0>();
        fence_operands(o);
        fence_operands(pa);
      }
    }
    if (last == n_tiles - 1 && last >= 0) {  // the last tile's P V (its stage was not refilled)
      fence_operands(o);
      fence_operands(pa);
      wgmma_fence();
      issue_pv(last % kStages);
      wgmma_commit();
      wgmma_wait<0>();
      fence_operands(o);
      fence_operands(pa);
    }
  } else {
    for (int t = 0; t < n_tiles; ++t) {
      const int stage = t % kStages;
      if (t + 1 < n_tiles) load_kv(t + 1, stage ^ 1);
      cp_async_commit();
      cp_async_wait<1>();          // tile t (and Q) have landed; tile t+1 may be in flight
      fence_proxy_async_shared();  // cp.async wrote them; wgmma reads through the async proxy
      __syncthreads();

      const int key0 = t * kBlockN;
      // A warpgroup whose rows all end before this tile starts has nothing to do here.
      if (!(a.causal && key0 > wg_last_row + a.diag)) {
        const bf16* k_s = sK + stage * kBlockN * kD;
        const bf16* v_s = sV + stage * kBlockN * kD;

        // ---- S = Q K^T
        fence_operands(s);
        wgmma_fence();
  #pragma unroll
        for (int kk = 0; kk < kD / 16; ++kk)
          wgmma_qk<kBlockN>(s, q_desc(kk), wgmma_desc(k_s + (kk / 4) * kBlockN * 64 + (kk % 4) * 16, 16, 1024),
                            kk > 0);
        wgmma_commit();
        wgmma_wait<0>();
        fence_operands(s);

        // Mask only tiles that cross the diagonal of the warpgroup's first row or the key end.
        if (key0 + kBlockN > a.n_k || (a.causal && key0 + kBlockN - 1 > wg_first_row + a.diag)) {
  #pragma unroll
          for (int n = 0; n < kBlockN / 8; ++n)
  #pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int col = key0 + n * 8 + (lane % 4) * 2 + (e & 1);
              const bool visible = col < a.n_k && (!a.causal || col <= row_of(e / 2) + a.diag);
              if (!visible) s[n][e] = -INFINITY;
            }
        }

        // ---- online softmax (base 2), as in flash_fwd_kernel
  #pragma unroll
        for (int half = 0; half < 2; ++half) {
          float mx = -INFINITY;
  #pragma unroll
          for (int n = 0; n < kBlockN / 8; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * half], s[n][2 * half + 1]));
          const float new_m = fmaxf(m_run[half], quad_max(mx) * a.scale_log2);
          const float base_m = new_m == -INFINITY ? 0.f : new_m;
          const float alpha = fast_exp2(m_run[half] - base_m);
          m_run[half] = new_m;
          float sum = 0.f;
  #pragma unroll
          for (int n = 0; n < kBlockN / 8; ++n) {
            s[n][2 * half] = fast_exp2(fmaf(s[n][2 * half], a.scale_log2, -base_m));
            s[n][2 * half + 1] = fast_exp2(fmaf(s[n][2 * half + 1], a.scale_log2, -base_m));
            sum += s[n][2 * half] + s[n][2 * half + 1];
          }
          l_run[half] = l_run[half] * alpha + sum;  // per-thread partial; the quad adds at the end
  #pragma unroll
          for (int n = 0; n < kD / 8; ++n) {
            o[n][2 * half] *= alpha;
            o[n][2 * half + 1] *= alpha;
          }
        }

        // ---- O += P V: the S accumulators of key blocks 2kk, 2kk+1 are the A fragment of
        // the 16-key slice kk.
        uint32_t pa[kBlockN / 16][4];
  #pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk) {
          pa[kk][0] = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
          pa[kk][1] = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
          pa[kk][2] = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
          pa[kk][3] = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
        }
        fence_operands(o);
        wgmma_fence();
  #pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk)
          wgmma_m64n128k16_rs<1>(o, pa[kk], wgmma_desc(v_s + kk * 16 * 64, kBlockN * 128, 1024), 1);
        wgmma_commit();
        wgmma_wait<0>();
        fence_operands(o);
      }
      __syncthreads();  // every warp is done with this stage before it is refilled
    }
  }

  // ---- epilogue: merge (O / l, LSE) into (O, LSE) in memory (as in flash_fwd_kernel)
  float old_lse[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    l_run[half] = quad_sum(l_run[half]);
    const int row = row_of(half);
    old_lse[half] = (a.merge && row < a.n_q) ? a.lse[long(row) * a.n_heads + head] : -INFINITY;
  }
  __syncwarp();
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = row_of(half);
    const float l = l_run[half], lse_old = old_lse[half];
    if (row >= a.n_q) continue;
    float* o_row = a.o + (long(row) * a.n_heads + head) * kD + (lane % 4) * 2;
    float* lse_ptr = a.lse + long(row) * a.n_heads + head;
    if (l == 0.f) {  // no visible key: merge keeps (O, LSE); overwrite writes the identity
      if (!a.merge) {
#pragma unroll
        for (int n = 0; n < kD / 8; ++n) *reinterpret_cast<float2*>(o_row + n * 8) = make_float2(0.f, 0.f);
        if (lane % 4 == 0) *lse_ptr = -INFINITY;
      }
      continue;
    }
    const float lse_new = m_run[half] * 0.69314718055994531f + logf(l);
    float lse_out = lse_new, w_new = 1.f / l, w_old = 0.f;
    const bool with_old = lse_old > -INFINITY;  // LSE = -inf: an empty (O, LSE), O ignored
    if (with_old) {
      lse_out = fmaxf(lse_old, lse_new) + log1pf(expf(-fabsf(lse_old - lse_new)));
      w_old = expf(lse_old - lse_out);
      w_new = expf(lse_new - lse_out) / l;
    }
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) {
      float2 out = make_float2(o[n][2 * half] * w_new, o[n][2 * half + 1] * w_new);
      if (with_old) {
        const float2 old = *reinterpret_cast<const float2*>(o_row + n * 8);
        out.x = fmaf(old.x, w_old, out.x);
        out.y = fmaf(old.y, w_old, out.y);
      }
      *reinterpret_cast<float2*>(o_row + n * 8) = out;
    }
    if (lane % 4 == 0) *lse_ptr = lse_out;
  }
#else
  (void)a;
  __trap();  // sm_90a only: flash_wgmma_supported() keeps the host from launching it elsewhere
#endif
}

template <int kBlockN, bool kPipelined>
void launch_flash_fwd_wgmma(const FlashFwdArgs& a, cudaStream_t stream) {
  auto kernel = flash_fwd_wgmma_kernel<kBlockN, kPipelined>;
  constexpr size_t smem = wgmma_smem_bytes<kBlockN, kPipelined>();
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid((a.n_q + kBlockM - 1) / kBlockM, a.n_heads);
  kernel<<<grid, kThreads, smem, stream>>>(a);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

bool flash_wgmma_supported() {
#ifdef RINGINFER_HAVE_SM90A
  int device = 0, major = 0, minor = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  return major == 9 && minor == 0;  // the sm_90a cubin runs on compute capability 9.0 only
#else
  return false;  // built without sm_90a code: the kernel body is a trap (CMakeLists.txt)
#endif
}

void flash_fwd_hdim128_wgmma(const FlashFwdArgs& a, int block_n, bool pipelined, cudaStream_t stream) {
  if (pipelined) {
    if (block_n == 128)
      launch_flash_fwd_wgmma<128, true>(a, stream);
    else
      launch_flash_fwd_wgmma<64, true>(a, stream);
  } else if (block_n == 128) {
    launch_flash_fwd_wgmma<128, false>(a, stream);
  } else {
    launch_flash_fwd_wgmma<64, false>(a, stream);
  }
}

}  // namespace ringinfer::cuda
