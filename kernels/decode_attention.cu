// decode_attention: validates the call, chooses the key splits, and launches the split
// kernel and the combine kernel once per chunk of query tokens (16 rows per KV head).
#include <math.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "decode_attention.h"
#include "decode_attention_kernel.cuh"
#include "ringinfer/error.h"

namespace ringinfer {

namespace {

void check(bool ok, const std::string& what) {
  if (!ok) throw Error("decode_attention: " + what);
}

// The cache kind's tile configuration: p.variant, or the default for -1.
int resolved_variant(const DecodeAttnParams& p, bool fp8) {
  return p.variant >= 0 ? p.variant : fp8 ? kDecodeFp8DefaultVariant : 0;
}

// fp8: the cache kind (a batch says it for all its sequences, empty ones included).
void validate(const DecodeAttnParams& p, bool fp8) {
  check(p.head_dim == 64 || p.head_dim == 128, "head_dim " + std::to_string(p.head_dim) + " is not 64 or 128");
  check(p.n_q >= 0 && p.n_k >= 0, "negative row count");
  check(p.n_heads > 0 && p.n_kv_heads > 0 && p.n_heads % p.n_kv_heads == 0,
        "n_heads " + std::to_string(p.n_heads) + " is not a multiple of n_kv_heads " + std::to_string(p.n_kv_heads));
  check(p.n_heads / p.n_kv_heads <= cuda::kDecodeRows,
        "more than 16 query heads per KV head (" + std::to_string(p.n_heads / p.n_kv_heads) + ")");
  check(p.softmax_scale > 0.f && isfinite(p.softmax_scale), "softmax_scale must be positive and finite");
  check(p.variant >= -1 && p.variant < (fp8 ? decode_attention_fp8_variants() : decode_attention_variants()),
        std::string(fp8 ? "fp8" : "bf16") + " variant " + std::to_string(p.variant) + " out of range");
  check(p.num_splits >= 0, "negative num_splits");
  const long stride = p.kv_row_stride ? p.kv_row_stride : long(p.n_kv_heads) * p.head_dim;
  check(stride >= long(p.n_kv_heads) * p.head_dim && stride % 8 == 0,
        "kv_row_stride must cover the KV heads and be a multiple of 8 elements (16-byte loads)");
  const bool has_fp8 = p.k_fp8 != nullptr || p.v_fp8 != nullptr;
  check(!has_fp8 || (p.k_fp8 && p.v_fp8 && p.k_scale && p.v_scale && !p.k && !p.v && stride % 16 == 0),
        "an fp8 cache needs k_fp8, v_fp8 and both scales (not k, v) and a stride of 16-byte multiples");
  check(p.scale_key_stride >= 0 && p.scale_head_stride >= 0, "negative scale stride");
}

long scale_key_stride(const DecodeAttnParams& p) { return p.scale_key_stride ? p.scale_key_stride : p.n_kv_heads; }

bool is_fp8(const DecodeAttnParams& p) { return p.k_fp8 != nullptr || p.v_fp8 != nullptr; }

void validate(const DecodeAttnParams& p) { validate(p, is_fp8(p)); }

// p as decode_attention sees one sequence of a batch: its cache and length, one query row.
DecodeAttnParams sequence_params(const DecodeAttnParams& p, bool fp8, const DecodeSeqKv& s) {
  DecodeAttnParams one = p;
  one.k = one.v = nullptr;
  one.k_fp8 = one.v_fp8 = nullptr;
  one.k_scale = one.v_scale = nullptr;
  if (fp8) {
    one.k_fp8 = static_cast<const uint8_t*>(s.k);
    one.v_fp8 = static_cast<const uint8_t*>(s.v);
    one.k_scale = s.k_scale;
    one.v_scale = s.v_scale;
  } else {
    one.k = static_cast<const __nv_bfloat16*>(s.k);
    one.v = static_cast<const __nv_bfloat16*>(s.v);
  }
  one.n_q = 1;
  one.n_k = s.n_k;
  return one;
}

// variant: resolved (>= 0).
cuda::DecodeConfig config(int head_dim, int variant, bool fp8) {
  using namespace cuda;
  if (fp8) {  // the tile of the fp8 variant (decode_attention_kernel.cuh visit_decode_fp8_variant)
    auto of = [](auto tile) {
      using T = decltype(tile);
      return DecodeConfig{T::kKeys, T::kNumWarps, T::kSmemBytes, T::kMinBlocks};
    };
    return head_dim == 64 ? visit_decode_fp8_variant<64>(variant, of) : visit_decode_fp8_variant<128>(variant, of);
  }
  if (head_dim == 64)
    return variant == 0 ? DecodeConfig{32, 4, DecodeTile<64, 4, 32, 2>::kSmemBytes}
                        : DecodeConfig{16, 4, DecodeTile<64, 4, 16, 3>::kSmemBytes};
  return variant == 0 ? DecodeConfig{32, 4, DecodeTile<128, 4, 32, 2>::kSmemBytes}
                      : DecodeConfig{16, 4, DecodeTile<128, 4, 16, 3>::kSmemBytes};
}

}  // namespace

int decode_attention_variants() { return 2; }
int decode_attention_fp8_variants() { return cuda::kDecodeFp8Variants; }

namespace {
// decode_attention_splits for the cache kind `fp8` says (a batch knows it even for empty sequences).
int choose_splits(const DecodeAttnParams& p, bool fp8) {
  validate(p, fp8);
  const cuda::DecodeConfig c = config(p.head_dim, resolved_variant(p, fp8), fp8);
  const int n_tiles = (p.n_k + c.block_n - 1) / c.block_n;
  if (p.num_splits > 0) return std::max(1, std::min(p.num_splits, std::max(1, n_tiles)));
  int device = 0, sms = 0, smem_per_sm = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  CUDA_CHECK(cudaDeviceGetAttribute(&smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device));
  // Blocks resident per multiprocessor (1 KB of shared memory per block is reserved).
  // fp8 kernels are compiled for at least max_blocks_per_sm resident blocks
  // (__launch_bounds__); the plan counts on no more than that (conservative).
  int per_sm = std::max(1, int(smem_per_sm / (c.smem_bytes + 1024)));
  if (c.max_blocks_per_sm > 0) per_sm = std::min(per_sm, c.max_blocks_per_sm);
  // One wave of equal blocks (measured on H100 at 128K keys: 1 wave 92% of copy
  // bandwidth, 2 waves 87%, 4 waves 78%: each wave pays a pipeline fill and drain),
  // but at least two tiles per warp.
  const int by_device = std::max(1, sms * per_sm / p.n_kv_heads);
  const int by_keys = std::max(1, n_tiles / (2 * c.warps));
  return std::min(by_device, by_keys);
}
}  // namespace

int decode_attention_splits(const DecodeAttnParams& p) { return choose_splits(p, is_fp8(p)); }

namespace {
// The splits of a batch launch of n sequences: the longest one's choice, with the device's
// one wave shared by the n sequences (as decode_attention_splits does for one).
int batch_splits(const DecodeAttnParams& p, bool fp8, const DecodeSeqKv* seqs, int n) {
  DecodeAttnParams longest = sequence_params(p, fp8, seqs[0]);
  for (int i = 1; i < n; ++i) longest.n_k = std::max(longest.n_k, seqs[i].n_k);
  if (p.num_splits > 0) return choose_splits(longest, fp8);
  longest.n_kv_heads = p.n_kv_heads * n;  // the wave is shared: n times the (split, KV head) blocks
  longest.n_heads = p.n_heads * n;
  return choose_splits(longest, fp8);
}
}  // namespace

size_t decode_attention_batch_workspace_bytes(const DecodeAttnParams& p, bool fp8, const DecodeSeqKv* seqs,
                                              int n_seqs) {
  size_t most = 0;
  for (int s0 = 0; s0 < n_seqs; s0 += cuda::kDecodeMaxSeqs) {
    const int n = std::min(cuda::kDecodeMaxSeqs, n_seqs - s0);
    const size_t rows = size_t(n) * batch_splits(p, fp8, seqs + s0, n) * p.n_kv_heads * cuda::kDecodeRows;
    most = std::max(most, rows * (p.head_dim + 1) * sizeof(float));
  }
  return most;
}

void decode_attention_batch(const DecodeAttnParams& p, bool fp8, const DecodeSeqKv* seqs, int n_seqs,
                            void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  check(n_seqs >= 0 && (n_seqs == 0 || seqs != nullptr), "a batch needs its sequences");
  for (int i = 0; i < n_seqs; ++i) {
    const DecodeAttnParams one = sequence_params(p, fp8, seqs[i]);
    validate(one, fp8);
    check(one.n_k == 0 || (one.k || one.k_fp8), "null cache pointer of sequence " + std::to_string(i));
  }
  if (n_seqs == 0) return;
  check(p.q && p.o && p.lse, "null pointer");
  check(reinterpret_cast<uintptr_t>(p.q) % 16 == 0 && reinterpret_cast<uintptr_t>(workspace) % 16 == 0,
        "q and workspace must be 16-byte aligned");
  const size_t need = decode_attention_batch_workspace_bytes(p, fp8, seqs, n_seqs);
  check(workspace != nullptr && workspace_bytes >= need,
        "workspace of " + std::to_string(workspace_bytes) + " bytes, need " + std::to_string(need));
  const int variant = resolved_variant(p, fp8);
  const cuda::DecodeConfig c = config(p.head_dim, variant, fp8);
  const int group = p.n_heads / p.n_kv_heads;
  // Launches of one stream run in order: every group of sequences reuses the workspace.
  for (int s0 = 0; s0 < n_seqs; s0 += cuda::kDecodeMaxSeqs) {
    const int n = std::min(cuda::kDecodeMaxSeqs, n_seqs - s0);
    const int splits = batch_splits(p, fp8, seqs + s0, n);
    cuda::DecodeSeqs table{};
    table.count = n;
    for (int i = 0; i < n; ++i) {
      const DecodeSeqKv& s = seqs[s0 + i];
      table.seq[i] = cuda::DecodeSeq{s.k, s.v, s.k_scale, s.v_scale, s.n_k, (s.n_k + c.block_n - 1) / c.block_n};
    }
    cuda::DecodeArgs a{};
    // Non-null so the launcher picks the fp8 kernel (each block takes its own sequence's
    // pointers); a group of empty sequences may run the bf16 kernel: it reads nothing.
    for (int i = 0; i < n && fp8 && !a.k8; ++i) a.k8 = static_cast<const uint8_t*>(seqs[s0 + i].k);
    a.kv_stride = p.kv_row_stride ? p.kv_row_stride : long(p.n_kv_heads) * p.head_dim;
    a.scale_key_stride = scale_key_stride(p);
    a.scale_head_stride = p.scale_head_stride;
    a.n_heads = p.n_heads;
    a.group = group;
    a.rows = group;  // one token per sequence
    a.n_splits = splits;
    a.scale_log2 = p.softmax_scale * 1.4426950408889634f;
    a.q = p.q + size_t(s0) * p.n_heads * p.head_dim;
    a.ws_lse = static_cast<float*>(workspace);
    a.ws_o = a.ws_lse + size_t(n) * splits * p.n_kv_heads * cuda::kDecodeRows;
    float* o = p.o + size_t(s0) * p.n_heads * p.head_dim;
    float* lse = p.lse + size_t(s0) * p.n_heads;
    const dim3 grid(n, p.n_heads);
    if (p.head_dim == 64) {
      cuda::decode_split_hdim64(a, p.n_kv_heads, variant, &table, stream);
      cuda::launch_dependent(cuda::decode_combine_kernel<64>, grid, dim3(64), 0, stream, a.ws_lse, a.ws_o, splits,
                             p.n_kv_heads, group, o, lse, true);
    } else {
      cuda::decode_split_hdim128(a, p.n_kv_heads, variant, &table, stream);
      cuda::launch_dependent(cuda::decode_combine_kernel<128>, grid, dim3(128), 0, stream, a.ws_lse, a.ws_o, splits,
                             p.n_kv_heads, group, o, lse, true);
    }
  }
}

size_t decode_attention_workspace_bytes(const DecodeAttnParams& p) {
  const size_t rows = size_t(decode_attention_splits(p)) * p.n_kv_heads * cuda::kDecodeRows;
  return rows * (p.head_dim + 1) * sizeof(float);
}

void decode_attention(const DecodeAttnParams& p, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  validate(p);
  if (p.n_q == 0) return;
  const bool fp8 = is_fp8(p);
  check(p.q && p.o && p.lse && (p.n_k == 0 || (fp8 ? (p.k_fp8 && p.v_fp8) : (p.k && p.v))), "null pointer");
  auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  check(aligned(p.q) && aligned(p.k) && aligned(p.v) && aligned(p.k_fp8) && aligned(p.v_fp8) && aligned(workspace),
        "q, k, v and workspace must be 16-byte aligned");
  check(reinterpret_cast<uintptr_t>(p.k_scale) % 4 == 0 && reinterpret_cast<uintptr_t>(p.v_scale) % 4 == 0,
        "fp8 scales must be 4-byte aligned");
  const size_t need = decode_attention_workspace_bytes(p);
  check(workspace != nullptr && workspace_bytes >= need,
        "workspace of " + std::to_string(workspace_bytes) + " bytes, need " + std::to_string(need));
  const int splits = decode_attention_splits(p);
  const int variant = resolved_variant(p, fp8);
  const cuda::DecodeConfig c = config(p.head_dim, variant, fp8);
  const int group = p.n_heads / p.n_kv_heads;
  const int tokens_per_launch = cuda::kDecodeRows / group;

  cuda::DecodeArgs a;
  a.k = p.k;
  a.v = p.v;
  a.k8 = p.k_fp8;
  a.v8 = p.v_fp8;
  a.k_scale = p.k_scale;
  a.v_scale = p.v_scale;
  a.ws_lse = static_cast<float*>(workspace);
  a.ws_o = a.ws_lse + size_t(splits) * p.n_kv_heads * cuda::kDecodeRows;
  a.kv_stride = p.kv_row_stride ? p.kv_row_stride : long(p.n_kv_heads) * p.head_dim;
  a.scale_key_stride = scale_key_stride(p);
  a.scale_head_stride = p.scale_head_stride;
  a.n_k = p.n_k;
  a.n_heads = p.n_heads;
  a.group = group;
  a.n_splits = splits;
  a.n_tiles = (p.n_k + c.block_n - 1) / c.block_n;
  a.scale_log2 = p.softmax_scale * 1.4426950408889634f;
  // Launches of one stream run in order, so every chunk of tokens reuses the workspace.
  for (int t0 = 0; t0 < p.n_q; t0 += tokens_per_launch) {
    const int nt = std::min(tokens_per_launch, p.n_q - t0);
    a.q = p.q + size_t(t0) * p.n_heads * p.head_dim;
    a.rows = nt * group;
    float* o = p.o + size_t(t0) * p.n_heads * p.head_dim;
    float* lse = p.lse + size_t(t0) * p.n_heads;
    const dim3 grid(nt, p.n_heads);
    if (p.head_dim == 64) {
      cuda::decode_split_hdim64(a, p.n_kv_heads, variant, nullptr, stream);
      cuda::launch_dependent(cuda::decode_combine_kernel<64>, grid, dim3(64), 0, stream, a.ws_lse, a.ws_o, splits,
                             p.n_kv_heads, group, o, lse, false);
    } else {
      cuda::decode_split_hdim128(a, p.n_kv_heads, variant, nullptr, stream);
      cuda::launch_dependent(cuda::decode_combine_kernel<128>, grid, dim3(128), 0, stream, a.ws_lse, a.ws_o, splits,
                             p.n_kv_heads, group, o, lse, false);
    }
  }
}

}  // namespace ringinfer
