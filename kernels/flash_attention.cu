// flash_attention_forward: validates the call, folds the striped mask into one diagonal
// offset, and dispatches to the instantiation for head_dim / variant.
#include <math.h>

#include <cstdint>
#include <string>

#include "flash_attention.h"
#include "flash_attention_kernel.cuh"
#include "ringinfer/error.h"

namespace ringinfer {

namespace {
void check(bool ok, const std::string& what) {
  if (!ok) throw Error("flash_attention_forward: " + what);
}
}  // namespace

// head_dim 128 on Hopper: the wgmma kernel with 128-key tiles (variant 0, the fastest
// measured: docs/PERFORMANCE.md) and 64-key tiles, then the four mma.sync tile shapes, then
// the pipelined wgmma kernel (softmax beside the P V product) with 128- and 64-key tiles
// (variants 6, 7; not measured yet); elsewhere only the mma.sync ones. head_dim 64: one
// mma.sync shape.
int flash_attention_variants(int head_dim) {
  if (head_dim != 128) return 1;
  static const bool wgmma = cuda::flash_wgmma_supported();
  return wgmma ? 8 : 4;
}

void flash_attention_forward(const FlashAttnParams& p, cudaStream_t stream) {
  check(p.head_dim == 64 || p.head_dim == 128, "head_dim " + std::to_string(p.head_dim) + " is not 64 or 128");
  check(p.n_q >= 0 && p.n_k >= 0, "negative row count");
  check(p.n_heads > 0 && p.n_kv_heads > 0 && p.n_heads % p.n_kv_heads == 0,
        "n_heads " + std::to_string(p.n_heads) + " is not a multiple of n_kv_heads " + std::to_string(p.n_kv_heads));
  check(p.softmax_scale > 0.f && isfinite(p.softmax_scale), "softmax_scale must be positive and finite");
  const AttnMask& m = p.mask;
  if (m.causal) {
    check(m.group_size >= 1 && m.q_rank >= 0 && m.q_rank < m.group_size && m.k_rank >= 0 &&
              m.k_rank < m.group_size,
          "mask ranks (q_rank " + std::to_string(m.q_rank) + ", k_rank " + std::to_string(m.k_rank) +
              ") must lie in [0, group_size " + std::to_string(m.group_size) + ")");
    check(m.q_start >= 0, "mask q_start is negative");
  }
  check(p.variant >= 0 && p.variant < flash_attention_variants(p.head_dim), "variant out of range");
  if (p.n_q == 0) return;
  check(p.q && p.o && p.lse && (p.n_k == 0 || (p.k && p.v)), "null pointer");
  auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  check(aligned(p.q) && aligned(p.k) && aligned(p.v) && aligned(p.o), "q, k, v and o must be 16-byte aligned");

  cuda::FlashFwdArgs a;
  a.q = p.q;
  a.k = p.k;
  a.v = p.v;
  a.o = p.o;
  a.lse = p.lse;
  a.n_q = p.n_q;
  a.n_k = p.n_k;
  a.n_heads = p.n_heads;
  a.group = p.n_heads / p.n_kv_heads;
  a.q_stride = p.q_row_stride ? p.q_row_stride : long(p.n_heads) * p.head_dim;
  a.kv_stride = p.kv_row_stride ? p.kv_row_stride : long(p.n_kv_heads) * p.head_dim;
  check(a.q_stride >= long(p.n_heads) * p.head_dim && a.kv_stride >= long(p.n_kv_heads) * p.head_dim &&
            a.q_stride % 8 == 0 && a.kv_stride % 8 == 0,
        "row strides must cover the heads and be multiples of 8 elements (16-byte loads)");
  a.scale_log2 = p.softmax_scale * 1.4426950408889634f;
  // j * N + s <= i * N + r  <=>  j <= i - (s > r ? 1 : 0), with i = q_start + row.
  a.diag = m.q_start - (m.k_rank > m.q_rank ? 1 : 0);
  a.causal = m.causal;
  a.merge = p.merge;

  if (p.head_dim == 64) {
    cuda::flash_fwd_hdim64(a, p.variant, stream);
    return;
  }
  const bool wgmma = flash_attention_variants(128) == 8;  // the Hopper kernel is there
  const int mma_variant = wgmma ? p.variant - 2 : p.variant;  // index among the mma.sync shapes
  if (wgmma && (p.variant < 2 || p.variant >= 6))
    cuda::flash_fwd_hdim128_wgmma(a, p.variant % 2 == 0 ? 128 : 64, /*pipelined=*/p.variant >= 6, stream);
  else if (mma_variant == 0)  // the fastest mma.sync shape at 8K-32K on H100
    cuda::flash_fwd_hdim128_w8(a, stream);
  else if (mma_variant == 1)
    cuda::flash_fwd_hdim128_w4(a, stream);
  else if (mma_variant == 2)
    cuda::flash_fwd_hdim128_mt2(a, stream);
  else
    cuda::flash_fwd_hdim128_mt2n32(a, stream);
}

}  // namespace ringinfer
