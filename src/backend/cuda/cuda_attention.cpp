// CUDA attention dispatch: one block of local queries against one block of keys under
// the striped mask, merged into the running (O, LSE). Four paths, tried in this order:
//   decode  one query that sees every key, head_dim 64/128: split-KV decode kernel into a
//           scratch (O, LSE), then merge_attention (the kernel writes, it does not merge);
//   cudnn   --attention cudnn, or auto on a one-rank ring for blocks of auto_cudnn_min_keys
//           keys or more (offers_cudnn); at least 2 query rows, a shape cuDNN takes: cuDNN
//           SDPA (cudnn_attention.h) into a bf16 O and fp32 LSE scratch, then merge_attention_sdpa;
//   flash   head_dim 64/128: flash_attention_forward with merge = true;
//   generic any head_dim <= 256: generic_attention (small models, tests).
// The tensor-core kernels and cuDNN read bf16 queries: the caller's own when it stores them
// in bf16 (attention_query_dtype; the engine does, so a layer's queries are rounded once,
// not once per ring step), else fp32 queries rounded to bf16 here on every call, the same
// rounding (to nearest even) as copy(), so both give bitwise the same result. An fp8 KV block:
// the decode kernel reads its bytes and scales directly (bandwidth-bound: half of bf16's
// traffic); the other paths read a bf16 copy (value * scale rounded to bf16) that
// attention_input() makes once per block (the engine calls it once per ring step, so it
// is one pass over the block, small beside the step's O(n^2) attention), or attention()
// makes per call when handed the fp8 block itself.
#include <string>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cudnn_attention.h"
#include "backend_ops.h"
#include "decode_attention.h"
#include "flash_attention.h"
#include "generic_attention.h"
#include "kv_cache_ops.h"
#include "ringinfer/cuda_check.h"
#include "ringinfer/log.h"
#include "ringinfer/striped.h"
#include "sdpa_merge.h"

namespace ringinfer {

AttentionPath parse_attention_path(const std::string& name) {
  if (name == "auto") return AttentionPath::auto_select;
  if (name == "native") return AttentionPath::native;
  if (name == "cudnn") return AttentionPath::cudnn;
  throw Error("--attention must be auto, native or cudnn, not '" + name + "'");
}

const char* to_string(AttentionPath p) {
  switch (p) {
    case AttentionPath::auto_select: return "auto";
    case AttentionPath::native: return "native";
    case AttentionPath::cudnn: return "cudnn";
  }
  return "?";
}

bool cuda_build_has_cudnn() {
#ifdef RINGINFER_HAVE_CUDNN
  return true;
#else
  return false;
#endif
}

int64_t cuda_backend_cudnn_plans(const Backend& backend) {
  const auto* be = dynamic_cast<const cuda::CudaBackend*>(&backend);
  return be ? be->cudnn_plans() : 0;
}

}  // namespace ringinfer

namespace ringinfer::cuda {

// ---------------------------------------------------------------- the cuDNN path
// The striped mask of one block is a causal band: query row i (local index q_start + i)
// sees key j iff j <= i + off, off = visible_key_count(q_start, r, s, N) - 1 (striped.h),
// so off = q_start - 1 when s > r ("q[1:] against k[:-1]"), else q_start. cuDNN's
// bottom-right causal mask over q_len rows and kv_len keys is j <= i + kv_len - q_len. So:
//   rows 0..skip-1, skip = max(0, -off), see nothing and keep their (O, LSE) (the identity);
//   the other q_len = nq - skip rows, shifted to start at 0, see j <= i' + off + skip;
//   kv_len = q_len + off + skip = nq + off keys, which must fit the block (kv_len <= nk);
//   if not, the last rows see every key and the block is not one bottom-right band: native.
// The graph extents are the call's (nq, nk), so every chunk of a ring step shares a plan;
// the queries are passed one row later when skip = 1, so their scratch has a spare row.
bool CudaBackend::attention_cudnn(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionShape& sh,
                                  const Tensor& o, const Tensor& lse) {
#ifndef RINGINFER_HAVE_CUDNN
  (void)q, (void)k, (void)v, (void)sh, (void)o, (void)lse;
  return false;
#else
  const int64_t H = sh.n_heads, Hkv = sh.n_kv_heads, D = sh.head_dim;
  const int64_t nq = q.rows(), nk = k.rows();
  const int64_t off = visible_key_count(sh.q_start, sh.q_rank, sh.k_rank, sh.n_ranks) - 1;
  const int64_t skip = off < 0 ? -off : 0;
  const int64_t q_len = nq - skip, kv_len = nq + off;
  if (q_len <= 0) return true;  // no row sees a key: (O, LSE) unchanged
  // Element counts past int32 are left to the native kernels (whose offsets are 64-bit).
  const int64_t int32_end = int64_t(1) << 31;
  if (kv_len > nk || nq * H * D >= int32_end || nk * Hkv * D >= int32_end) return false;
  CudnnSdpa* const sdpa = cudnn();
  if (!sdpa) return false;
  SdpaShape shape;
  shape.q_rows = nq;
  shape.kv_rows = nk;
  shape.n_heads = H;
  shape.n_kv_heads = Hkv;
  shape.head_dim = D;
  shape.scale = sh.scale;
  std::string why;
  const int64_t ws_bytes = sdpa->prepare(shape, &why);
  if (ws_bytes < 0) {
    static bool told = false;  // once per process: the reason, not every chunk's
    if (!why.empty() && !told) log::info(why + "; such blocks run on the native kernels");
    told = true;
    return false;
  }
  // With skip = 1 the queries start one row in and cuDNN is given nq rows: a scratch copy
  // with a spare row, so that nothing past the caller's tensor is read.
  const __nv_bfloat16* qb = static_cast<const __nv_bfloat16*>(q.data());
  if (skip > 0 || q.dtype() != DType::bf16) {
    auto* copy = static_cast<__nv_bfloat16*>(scratch(kAttnQuery, static_cast<size_t>((nq + 1) * H * D) * 2));
    if (q.dtype() == DType::bf16)
      CUDA_CHECK(cudaMemcpyAsync(copy, q.data(), q.bytes(), cudaMemcpyDeviceToDevice, stream_));
    else
      convert_f32_to_bf16(q.f32(), copy, nq * H * D, stream_);
    qb = copy;
  }
  auto* lens = static_cast<int32_t*>(scratch(kSdpaLens, 8 * sizeof(int32_t)));
  write_sdpa_lens(lens, static_cast<int32_t>(q_len), static_cast<int32_t>(kv_len), stream_);
  SdpaTensors t;
  t.q = qb + skip * H * D;
  t.k = k.data();
  t.v = v.data();
  t.o = scratch(kSdpaO, static_cast<size_t>(nq * H * D) * 2);
  t.stats = static_cast<float*>(scratch(kSdpaStats, static_cast<size_t>(nq * H) * 4));
  t.lens = lens;
  void* ws = ws_bytes > 0 ? scratch(kSdpaWork, static_cast<size_t>(ws_bytes)) : nullptr;
  try {
    sdpa->run(shape, t, ws, stream_);
  } catch (const Error& e) {
    // --attention cudnn asked for it: the error stands. auto chose it on its own: (O, LSE)
    // are untouched, so the native kernels take this block and every later one.
    if (options_.attention != AttentionPath::auto_select) throw;
    cudnn_failed_ = true;
    log::warn(std::string("cuDNN attention failed (") + e.what() + "); --attention auto runs the native kernels");
    return false;
  }
  merge_attention_sdpa(o.f32() + skip * H * D, lse.f32() + skip * H, static_cast<const __nv_bfloat16*>(t.o), t.stats,
                       nq, q_len, H, D, stream_);
  return true;
#endif
}

bool CudaBackend::offers_cudnn(const AttentionShape& sh, int64_t nk) const {
  switch (options_.attention) {
    case AttentionPath::cudnn: return true;
    case AttentionPath::native: return false;
    case AttentionPath::auto_select:
      // Only where the native kernels too read bf16 queries and round P to bf16 (head_dim
      // 64/128): elsewhere they are the fp32 generic kernel, and cuDNN would round more.
      return sh.n_ranks == 1 && options_.auto_cudnn_min_keys > 0 && nk >= options_.auto_cudnn_min_keys &&
             attention_query_dtype(sh.head_dim) == DType::bf16 && !cudnn_failed_ && cuda_build_has_cudnn();
  }
  return false;
}

CudnnSdpa* CudaBackend::cudnn() {
#ifdef RINGINFER_HAVE_CUDNN
  if (cudnn_ || cudnn_failed_) return cudnn_;
  try {
    cudnn_ = new CudnnSdpa();
  } catch (const Error& e) {
    cudnn_failed_ = true;
    log::info(std::string("cuDNN did not start (") + e.what() + "); --attention auto runs the native kernels");
  }
#endif
  return cudnn_;
}

int64_t CudaBackend::cudnn_plans() const {
#ifdef RINGINFER_HAVE_CUDNN
  return cudnn_ ? cudnn_->plans_built() : 0;
#else
  return 0;
#endif
}

// ---------------------------------------------------------------- dispatch

DType CudaBackend::attention_query_dtype(int64_t head_dim) const {
  // Without the flash kernels (tests) prefill blocks go to the generic kernel, which reads fp32.
  return options_.use_flash ? default_attention_query_dtype(true, head_dim) : DType::f32;
}

const __nv_bfloat16* CudaBackend::query_bf16(const Tensor& q) {
  if (q.dtype() == DType::bf16) return static_cast<const __nv_bfloat16*>(q.data());
  auto* qb = static_cast<__nv_bfloat16*>(scratch(kAttnQuery, static_cast<size_t>(q.numel()) * 2));
  convert_f32_to_bf16(q.f32(), qb, q.numel(), stream_);
  return qb;
}

void CudaBackend::attention(const Tensor& q, const KvBlock& kv, const AttentionShape& sh, const Tensor& o,
                            const Tensor& lse) {
  backend_checks::check_attention("cuda", q, kv, sh, o, lse, supports_kv_dtype(kv.dtype),
                                  attention_query_dtype(sh.head_dim));
  const int64_t H = sh.n_heads, Hkv = sh.n_kv_heads, D = sh.head_dim;
  const int64_t nq = q.rows(), nk = kv.rows();
  if (nq == 0 || nk == 0) return;  // an empty block merges as the identity
  const bool tensor_core_dim = D == 64 || D == 128;
  const bool fp8 = kv.dtype == KvDtype::fp8;
  const bool decode = options_.use_decode && tensor_core_dim && nq == 1 && H / Hkv <= 16 &&
                      visible_key_count(sh.q_start, sh.q_rank, sh.k_rank, sh.n_ranks) >= nk &&
                      nk < (int64_t(1) << 31);
  // The bf16 view every path but the fp8 decode kernel reads.
  const KvBlock in = fp8 && !decode ? attention_input(kv) : kv;
  const auto* kb = static_cast<const __nv_bfloat16*>(in.k.data());
  const auto* vb = static_cast<const __nv_bfloat16*>(in.v.data());

  if (decode) {
    DecodeAttnParams p;
    p.q = query_bf16(q);
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
    p.variant = options_.decode_variant;
    p.num_splits = options_.decode_splits;
    p.o = static_cast<float*>(scratch(kDecodeO, static_cast<size_t>(H * D) * 4));
    p.lse = static_cast<float*>(scratch(kDecodeLse, static_cast<size_t>(H) * 4));
    const size_t ws_bytes = decode_attention_workspace_bytes(p);
    void* ws = scratch(kDecodeWork, ws_bytes);
    decode_attention(p, ws, ws_bytes, stream_);
    ringinfer::merge_attention(o.f32(), lse.f32(), p.o, p.lse, 1, H, D, stream_);
    return;
  }

  // cuDNN writes each block's O in bf16 before our fp32 merge: on a ring of 2 ranks that
  // moved the fixtures' logprobs by up to 0.12 against 1 rank (native: 0.04), so auto
  // offers it one-rank blocks only (cuda_backend.h).
  if (nq >= 2 && offers_cudnn(sh, nk) && attention_cudnn(q, in.k, in.v, sh, o, lse)) return;

  if (options_.use_flash && tensor_core_dim && nq < (int64_t(1) << 31) && nk < (int64_t(1) << 31) &&
      sh.q_start < (int64_t(1) << 31)) {
    FlashAttnParams p;
    p.q = query_bf16(q);
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
    if (D == 128 && options_.flash_variant >= 0) p.variant = options_.flash_variant;
    flash_attention_forward(p, stream_);
    return;
  }

  check(D <= kGenericAttnMaxHeadDim, "attention",
        "head_dim " + std::to_string(D) + " is not supported (64, 128, or at most " +
            std::to_string(kGenericAttnMaxHeadDim) + ")");
  // Reached with bf16 queries only past the flash kernel's int32 extents (never with the
  // lengths ringinfer accepts): the generic kernel reads fp32.
  check(q.dtype() == DType::f32, "attention", "the generic kernel reads f32 queries, got " + shape(q));
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

void CudaBackend::attention_rows(const Tensor& q, const std::vector<KvBlock>& kv,
                                 const std::vector<AttentionShape>& shapes, const Tensor& o, const Tensor& lse) {
  const int64_t B = q.rows();
  if (B == 0 || kv.size() != static_cast<size_t>(B) || shapes.size() != static_cast<size_t>(B))
    return Backend::attention_rows(q, kv, shapes, o, lse);  // (which reports mismatched counts)
  const AttentionShape& sh = shapes[0];
  const int64_t H = sh.n_heads, Hkv = sh.n_kv_heads, D = sh.head_dim;
  // One launch over the list when every row is what the decode kernel takes: one query
  // against keys it all sees, the same heads and cache kind (as attention() decides per row).
  bool batch = options_.use_decode && (D == 64 || D == 128) && Hkv > 0 && H % Hkv == 0 && H / Hkv <= 16 &&
               (kv[0].dtype == KvDtype::bf16 || kv[0].dtype == KvDtype::fp8);
  for (int64_t b = 0; b < B && batch; ++b) {
    const AttentionShape& s = shapes[b];
    backend_checks::check_attention("cuda", q.rows(b, 1), kv[b], s, o.rows(b, 1), lse.rows(b, 1),
                                    supports_kv_dtype(kv[b].dtype), attention_query_dtype(s.head_dim));
    batch = s.n_heads == H && s.n_kv_heads == Hkv && s.head_dim == D && s.scale == sh.scale &&
            kv[b].dtype == kv[0].dtype && kv[b].rows() < (int64_t(1) << 31) &&
            visible_key_count(s.q_start, s.q_rank, s.k_rank, s.n_ranks) >= kv[b].rows();
  }
  if (!batch) return Backend::attention_rows(q, kv, shapes, o, lse);
  const bool fp8 = kv[0].dtype == KvDtype::fp8;
  std::vector<DecodeSeqKv> seqs(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    seqs[b].k = kv[b].k.data();
    seqs[b].v = kv[b].v.data();
    if (fp8) seqs[b].k_scale = kv[b].k_scale.f32(), seqs[b].v_scale = kv[b].v_scale.f32();
    seqs[b].n_k = static_cast<int>(kv[b].rows());
  }
  DecodeAttnParams p;
  p.q = query_bf16(q);
  p.o = o.f32();
  p.lse = lse.f32();
  p.n_heads = static_cast<int>(H);
  p.n_kv_heads = static_cast<int>(Hkv);
  p.head_dim = static_cast<int>(D);
  p.softmax_scale = sh.scale;
  p.variant = options_.decode_variant;
  p.num_splits = options_.decode_splits;
  const size_t ws_bytes = decode_attention_batch_workspace_bytes(p, fp8, seqs.data(), static_cast<int>(B));
  void* ws = scratch(kDecodeWork, ws_bytes);
  decode_attention_batch(p, fp8, seqs.data(), static_cast<int>(B), ws, ws_bytes, stream_);
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
