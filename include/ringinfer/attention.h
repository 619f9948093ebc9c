#pragma once
// Attention across a CP group (DESIGN §3, §4), written against Comm and Backend only:
//   RingAttention    prefill: N ring steps over one document's KV stripes; the block in
//                    hand goes to rank r+1 while local queries attend to it (double
//                    buffer, communication stream, events), partial results merged by LSE
//   DecodeAttention  decode over a list of sequences: each query row attends over its own
//                    document's local stripe (split-KV), then ONE all-gather of every row's
//                    (O, LSE) and a merge in rank order, the same on every rank
// Both are collective over the CP communicator (null when N = 1) and add the payload bytes
// this rank handed to it to `bytes_sent`.
#include <cstdint>
#include <vector>

#include "ringinfer/backend.h"
#include "ringinfer/comm.h"
#include "ringinfer/kv_cache.h"

namespace ringinfer {

// The heads a rank attends with (its TP slice) and the softmax scale.
struct AttentionHeads {
  int64_t n_heads = 0;     // H query heads
  int64_t n_kv_heads = 0;  // Hkv key/value heads
  int64_t head_dim = 0;    // D
  float scale = 0.0f;      // 1/sqrt(D)
};

// The AttentionShape of local queries of rank q_rank (row 0 at local index q_start)
// against keys of rank k_rank.
AttentionShape attention_shape(const AttentionHeads& heads, int64_t q_start, int q_rank, int k_rank, int N);

class RingAttention {
 public:
  // chunk: query rows per attention call (between them the transfer is tested, so MPI
  // progresses).
  RingAttention(Backend& be, Comm* cp, int r, int N, AttentionHeads heads, int64_t chunk);
  // Ring buffers for a document of `cache`'s prompt: 2 x ceil(S/N) rows (none when N = 1).
  void begin(const KvCache& cache);
  void end();  // frees them
  // Attention of this rank's n = q.rows() local queries (q (n, H*D), local indices 0..n-1)
  // against every rank's stored prompt keys of layer l, into o (n, H*D) and lse (n, H), f32.
  // Where the backend's attention_state_dtype() is wider, the blocks merge into a state of
  // that type, rounded into o and lse once at the end.
  void layer(const KvCache& cache, int l, const Tensor& q, const Tensor& o, const Tensor& lse, int64_t& bytes_sent);

 private:
  Backend& be_;
  Comm* cp_;
  int r_, N_;
  AttentionHeads heads_;
  int64_t chunk_;
  KvBlock ring_[2];  // a block in flight, sent as its one packed buffer (values and scales)
  Tensor o_state_, lse_state_;  // (n, H*D), (n, H) running state when it is not f32 (the CPU's f64), else empty
};

class DecodeAttention {
 public:
  DecodeAttention(Backend& be, Comm* cp, int r, int N, AttentionHeads heads, int64_t max_rows);
  // Row b of q (B, H*D) is the query of global position positions[b] of sequences[b], whose
  // K,V the owner rank has stored already (its cache length counts it). Returns the merged
  // O (B, H*D), valid until the next call. B <= max_rows; every rank passes the same B.
  Tensor layer(const std::vector<const KvCache*>& sequences, int l, const std::vector<int64_t>& positions,
               const Tensor& q, int64_t& bytes_sent);

 private:
  Backend& be_;
  Comm* cp_;
  int r_, N_;
  AttentionHeads heads_;
  // Parts in the backend's attention_state_dtype() (f32, or the CPU's f64: gathered and
  // merged at that width, then rounded into out_).
  Tensor part_;   // (1, max_rows (H*D + H)): this rank's partial O of B rows, then their LSE
  Tensor parts_;  // (N, max_rows (H*D + H)): every rank's part, gathered (N > 1)
  Tensor out_;    // (max_rows, H*D) f32: the merged O when the state is not f32, else empty
};

}  // namespace ringinfer
