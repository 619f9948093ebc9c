// CUDA attention dispatch: one block of local queries against one block of keys under
// the striped mask, merged into the running (O, LSE). Three paths:
//   decode  one query that sees every key, head_dim 64/128: split-KV decode kernel into a
//           scratch (O, LSE), then merge_attention (the kernel writes, it does not merge);
//   flash   head_dim 64/128: flash_attention_forward with merge = true;
//   generic any head_dim <= 256: generic_attention (small models, tests).
// The fp32 queries are rounded to bf16 for the two tensor-core kernels. An fp8 KV block:
// the decode kernel reads its bytes and scales directly (bandwidth-bound: half of bf16's
// traffic); the other paths read a bf16 copy (value * scale rounded to bf16) that
// attention_input() makes once per block (the engine calls it once per ring step, so it
// is one pass over the block, small beside the step's O(n^2) attention), or attention()
// makes per call when handed the fp8 block itself.
#include <string>

#include "backend/cuda/cuda_backend.h"
#include "backend_ops.h"
#include "decode_attention.h"
#include "flash_attention.h"
#include "generic_attention.h"
#include "kv_cache_ops.h"
#include "ringinfer/cuda_check.h"
#include "ringinfer/striped.h"

namespace ringinfer::cuda {

void CudaBackend::attention(const Tensor& q, const KvBlock& kv, const AttentionShape& sh, const Tensor& o,
                            const Tensor& lse) {
  backend_checks::check_attention("cuda", q, kv, sh, o, lse, supports_kv_dtype(kv.dtype));
  const int64_t H = sh.n_heads, Hkv = sh.n_kv_heads, D = sh.head_dim;
  const int64_t nq = q.rows(), nk = kv.rows();
  if (nq == 0 || nk == 0) return;  // an empty block merges as the identity
  const bool tensor_core_dim = D == 64 || D == 128;
  const bool fp8 = kv.dtype == KvDtype::fp8;
  const bool decode = options_.use_decode && tensor_core_dim && nq == 1 && H / Hkv <= 16 &&
                      visible_key_count(sh.q_start, sh.q_rank, sh.k_rank, sh.n_ranks) >= nk &&
                      nk < (int64_t(1) << 31);
  const auto* kb = static_cast<const __nv_bfloat16*>(kv.k.data());
  const auto* vb = static_cast<const __nv_bfloat16*>(kv.v.data());
  if (fp8 && !decode) {
    const KvBlock copy = attention_input(kv);
    kb = static_cast<const __nv_bfloat16*>(copy.k.data());
    vb = static_cast<const __nv_bfloat16*>(copy.v.data());
  }

  if (decode) {
    auto* qb = static_cast<__nv_bfloat16*>(scratch(kAttnQuery, static_cast<size_t>(H * D) * 2));
    convert_f32_to_bf16(q.f32(), qb, H * D, stream_);
    DecodeAttnParams p;
    p.q = qb;
    if (fp8) {
      p.k_fp8 = static_cast<const uint8_t*>(kv.k.data());
      p.v_fp8 = static_cast<const uint8_t*>(kv.v.data());
      p.k_scale = kv.k_scale.f32();
      p.v_scale = kv.v_scale.f32();
    } else {
      p.k = kb;
      p.v = vb;
    }
    p.n_q = 1;
    p.n_k = static_cast<int>(nk);
    p.n_heads = static_cast<int>(H);
    p.n_kv_heads = static_cast<int>(Hkv);
    p.head_dim = static_cast<int>(D);
    p.softmax_scale = sh.scale;
    p.o = static_cast<float*>(scratch(kDecodeO, static_cast<size_t>(H * D) * 4));
    p.lse = static_cast<float*>(scratch(kDecodeLse, static_cast<size_t>(H) * 4));
    const size_t ws_bytes = decode_attention_workspace_bytes(p);
    void* ws = scratch(kDecodeWork, ws_bytes);
    decode_attention(p, ws, ws_bytes, stream_);
    ringinfer::merge_attention(o.f32(), lse.f32(), p.o, p.lse, 1, H, D, stream_);
    return;
  }

  if (options_.use_flash && tensor_core_dim && nq < (int64_t(1) << 31) && nk < (int64_t(1) << 31) &&
      sh.q_start < (int64_t(1) << 31)) {
    auto* qb = static_cast<__nv_bfloat16*>(scratch(kAttnQuery, static_cast<size_t>(nq * H * D) * 2));
    convert_f32_to_bf16(q.f32(), qb, nq * H * D, stream_);
    FlashAttnParams p;
    p.q = qb;
    p.k = kb;
    p.v = vb;
    p.o = o.f32();
    p.lse = lse.f32();
    p.n_q = static_cast<int>(nq);
    p.n_k = static_cast<int>(nk);
    p.n_heads = static_cast<int>(H);
    p.n_kv_heads = static_cast<int>(Hkv);
    p.head_dim = static_cast<int>(D);
    p.softmax_scale = sh.scale;
    p.mask.causal = true;
    p.mask.q_start = static_cast<int>(sh.q_start);
    p.mask.q_rank = sh.q_rank;
    p.mask.k_rank = sh.k_rank;
    p.mask.group_size = sh.n_ranks;
    p.merge = true;
    flash_attention_forward(p, stream_);
    return;
  }

  check(D <= kGenericAttnMaxHeadDim, "attention",
        "head_dim " + std::to_string(D) + " is not supported (64, 128, or at most " +
            std::to_string(kGenericAttnMaxHeadDim) + ")");
  GenericAttnParams p;
  p.q = q.f32();
  p.k = kb;
  p.v = vb;
  p.o = o.f32();
  p.lse = lse.f32();
  p.n_q = nq;
  p.n_k = nk;
  p.n_heads = static_cast<int>(H);
  p.n_kv_heads = static_cast<int>(Hkv);
  p.head_dim = static_cast<int>(D);
  p.q_start = sh.q_start;
  p.q_rank = sh.q_rank;
  p.k_rank = sh.k_rank;
  p.n_ranks = sh.n_ranks;
  p.scale = sh.scale;
  generic_attention(p, stream_);
}

KvBlock CudaBackend::attention_input(const KvBlock& kv) {
  if (kv.dtype != KvDtype::fp8 || kv.rows() == 0) return kv;
  backend_checks::check_kv_block("cuda", "attention_input", kv);
  const int64_t nk = kv.rows(), Hkv = kv.n_kv_heads, D = kv.head_dim;
  const size_t bytes = static_cast<size_t>(nk * Hkv * D) * sizeof(__nv_bfloat16);
  // Views of grow-only scratch (no ownership): valid until the slots are used again.
  KvBlock out;
  out.dtype = KvDtype::bf16;
  out.n_kv_heads = Hkv;
  out.head_dim = D;
  out.k = Tensor(nullptr, scratch(kFp8KeysBf16, bytes), DType::bf16, nk, Hkv * D);
  out.v = Tensor(nullptr, scratch(kFp8ValuesBf16, bytes), DType::bf16, nk, Hkv * D);
  dequantize_kv_fp8(static_cast<const uint8_t*>(kv.k.data()), kv.k_scale.f32(), nk * Hkv, static_cast<int>(D),
                    static_cast<__nv_bfloat16*>(out.k.data()), stream_);
  dequantize_kv_fp8(static_cast<const uint8_t*>(kv.v.data()), kv.v_scale.f32(), nk * Hkv, static_cast<int>(D),
                    static_cast<__nv_bfloat16*>(out.v.data()), stream_);
  return out;
}

void CudaBackend::merge_attention(const Tensor& o, const Tensor& lse, const Tensor& o2, const Tensor& lse2) {
  check(o.dtype() == DType::f32 && lse.dtype() == DType::f32 && lse.rows() == o.rows() && lse.cols() > 0 &&
            o.cols() % lse.cols() == 0,
        "merge_attention", "o is " + shape(o) + ", lse is " + shape(lse));
  expect(o2, o.rows(), o.cols(), DType::f32, "merge_attention", "o2");
  expect(lse2, lse.rows(), lse.cols(), DType::f32, "merge_attention", "lse2");
  if (o.empty()) return;
  ringinfer::merge_attention(o.f32(), lse.f32(), o2.f32(), lse2.f32(), o.rows(), lse.cols(), o.cols() / lse.cols(),
                             stream_);
}

}  // namespace ringinfer::cuda
