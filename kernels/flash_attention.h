#pragma once
// Flash attention forward (prefill and ring steps): bf16 Q/K/V, fp32 accumulation and
// softmax statistics, GQA, the striped global-position causal mask of DESIGN §2, and a
// result that merges into a running (O, LSE) so a ring step needs no extra pass.
// Host-callable; raw device pointers; CUDA builds only.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace ringinfer {

// Which keys a query row sees. Query row i of the call is local row q_start + i of rank
// q_rank; key row j is local row j of rank k_rank; local row x of rank y sits at global
// position x * group_size + y. With causal set, key j is visible from query i iff
// j * N + s <= (q_start + i) * N + r (N = group_size, r = q_rank, s = k_rank), i.e.
// j <= q_start + i when s <= r and j < q_start + i when s > r.
// N = 1, r = s = 0 is plain causal attention of queries q_start.. against keys 0...
struct AttnMask {
  bool causal = true;  // false: every key visible (no mask)
  int q_start = 0;     // local row index of query row 0 (>= 0)
  int q_rank = 0;      // r, 0 <= r < group_size
  int k_rank = 0;      // s, 0 <= s < group_size
  int group_size = 1;  // N, ranks in the context-parallel group
};

struct FlashAttnParams {
  const __nv_bfloat16* q = nullptr;  // [n_q, H, D] (token t at q + t * q_row_stride)
  const __nv_bfloat16* k = nullptr;  // [n_k, Hkv, D] (token t at k + t * kv_row_stride)
  const __nv_bfloat16* v = nullptr;  // [n_k, Hkv, D] (same strides as k)
  float* o = nullptr;                // [n_q, H, D] fp32, normalized (dense)
  float* lse = nullptr;              // [n_q, H] fp32, natural-log log-sum-exp (dense)
  int n_q = 0;                       // query rows (0 is a no-op)
  int n_k = 0;                       // key rows (0: rows keep (O, LSE) / get the identity)
  int n_heads = 0;                   // H query heads
  int n_kv_heads = 0;                // Hkv, H % Hkv == 0; query head h reads KV head h / (H/Hkv)
  int head_dim = 0;                  // D: 64 or 128
  long q_row_stride = 0;             // elements between query tokens; 0 means H * D
  long kv_row_stride = 0;            // elements between key tokens; 0 means Hkv * D
  float softmax_scale = 0.f;         // scores are (q . k) * softmax_scale, usually 1/sqrt(D)
  AttnMask mask;
  // true: merge this block into the (O, LSE) already in o/lse by log-sum-exp (LSE = -inf
  // there means "empty": O is ignored); rows that see no key keep (O, LSE) unchanged.
  // false: overwrite; rows that see no key get O = 0, LSE = -inf (the identity).
  bool merge = true;
  int variant = 0;  // tile configuration (tools/bench compares them); 0 = the default (fastest measured)
};

// Launches on `stream`; throws ringinfer::Error for shapes it does not support.
void flash_attention_forward(const FlashAttnParams& p, cudaStream_t stream);

// Number of tile configurations `variant` may select for head_dim (>= 1).
int flash_attention_variants(int head_dim);

}  // namespace ringinfer
