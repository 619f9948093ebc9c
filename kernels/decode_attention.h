#pragma once
// Split-KV decode attention ("flash-decoding"): a few query tokens against a rank's whole
// local KV cache, every key visible. All query heads of a KV group are processed together
// so each KV byte is read once; the keys are split across thread blocks, each writes a
// partial (O, LSE) to a workspace, and a combine kernel merges the splits into (O, LSE)
// per query row and head (fp32), ready to be merged across ranks by log-sum-exp.
// The cache is bf16 (k, v) or fp8 (k_fp8, v_fp8: e4m3 bytes, value = e4m3 * scale of the
// (token, KV head), ringinfer/kv_quant.h), read directly: half the bytes of bf16.
// Host-callable; raw device pointers; CUDA builds only.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

namespace ringinfer {

struct DecodeAttnParams {
  const __nv_bfloat16* q = nullptr;  // [n_q, H, D] (dense)
  const __nv_bfloat16* k = nullptr;  // [n_k, Hkv, D] (token t at k + t * kv_row_stride)
  const __nv_bfloat16* v = nullptr;  // [n_k, Hkv, D] (same strides as k)
  const uint8_t* k_fp8 = nullptr;    // fp8 cache instead of k, v: [n_k, Hkv, D] e4m3 bytes (same strides)
  const uint8_t* v_fp8 = nullptr;
  const float* k_scale = nullptr;    // fp8: the scale of key t, KV head h at t * scale_key_stride + h * scale_head_stride
  const float* v_scale = nullptr;    // (the same strides)
  float* o = nullptr;                // [n_q, H, D] fp32, normalized (dense)
  float* lse = nullptr;              // [n_q, H] fp32, natural log; -inf (and O = 0) when n_k = 0
  int n_q = 0;                       // query tokens (each sees all n_k keys)
  int n_k = 0;                       // key rows
  int n_heads = 0;                   // H; the H/Hkv heads of a group must be <= 16
  int n_kv_heads = 0;                // Hkv, H % Hkv == 0
  int head_dim = 0;                  // D: 64 or 128
  long kv_row_stride = 0;            // elements between key tokens; 0 means Hkv * D (fp8: a multiple of 16)
  long scale_key_stride = 0;         // fp8: floats between one key's scales and the next's; 0 means Hkv
  long scale_head_stride = 1;        // fp8: floats between one KV head's scales and the next's. The default,
                                     // [n_k, Hkv] dense, is the cache's; [Hkv][capacity] is key stride 1,
                                     // head stride capacity (a KV head's scales in 2 sectors per 16 keys)
  float softmax_scale = 0.f;         // usually 1/sqrt(D)
  int num_splits = 0;                // key splits per KV head; 0 = chosen from the device
  int variant = -1;                  // tile configuration (tools/bench compares them): bf16 0 ..
                                     // decode_attention_variants() - 1, fp8 0 .. decode_attention_fp8_variants() - 1;
                                     // -1: the cache kind's default (bf16 0, fp8 kDecodeFp8DefaultVariant)
};

// The fp8 variant a call with variant = -1 gets (decode_attention_kernel.cuh lists them):
// 1, 16-key converted tiles, 2 blocks per SM. H100, 128K keys, D 128 (2026-12-07,
// bench_attention): 0.733 of copy bandwidth; variant 0 0.540, 2 0.700, 3 0.656.
constexpr int kDecodeFp8DefaultVariant = 1;

// Workspace bytes decode_attention needs for these parameters on the current device.
size_t decode_attention_workspace_bytes(const DecodeAttnParams& p);

// The number of key splits decode_attention will use (after choosing, when num_splits = 0).
int decode_attention_splits(const DecodeAttnParams& p);

// Launches on `stream`. workspace: device memory of at least
// decode_attention_workspace_bytes(p) bytes (reused across calls; no clearing needed).
// Throws ringinfer::Error for unsupported shapes or a too-small workspace.
void decode_attention(const DecodeAttnParams& p, void* workspace, size_t workspace_bytes, cudaStream_t stream);

// Decode of a batch of documents: query row s (one token) against sequence s's own cache,
// every key visible, all sequences in one pair of launches per 16 (the split kernel's
// grid z). `p` gives the shared shapes and q [n_seqs, H, D], o, lse for the n_seqs rows;
// its k, v, k_fp8, v_fp8, scales, n_q and n_k are ignored (fp8 says which cache kind every
// sequence has). Results equal decode_attention() of each row with the same num_splits.
struct DecodeSeqKv {
  const void* k = nullptr;  // bf16 rows, or e4m3 bytes with fp8 (kv_row_stride as in p)
  const void* v = nullptr;
  const float* k_scale = nullptr;  // fp8: with p's scale strides
  const float* v_scale = nullptr;
  int n_k = 0;
};
size_t decode_attention_batch_workspace_bytes(const DecodeAttnParams& p, bool fp8, const DecodeSeqKv* seqs,
                                              int n_seqs);
void decode_attention_batch(const DecodeAttnParams& p, bool fp8, const DecodeSeqKv* seqs, int n_seqs,
                            void* workspace, size_t workspace_bytes, cudaStream_t stream);

// Number of tile configurations `variant` may select (>= 1): bf16 cache, fp8 cache.
int decode_attention_variants();
int decode_attention_fp8_variants();

}  // namespace ringinfer
