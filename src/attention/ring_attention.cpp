// The pass-KV ring of prefill (DESIGN §3).
#include <algorithm>
#include <memory>
#include <utility>

#include "ringinfer/attention.h"

namespace ringinfer {
namespace {
CommDtype comm_dtype(DType t) {
  switch (t) {
    case DType::f32: return CommDtype::float32;
    case DType::bf16: return CommDtype::bfloat16;
    case DType::i32: return CommDtype::int32;
    case DType::f64: return CommDtype::float64;
    case DType::u8: return CommDtype::uint8;
    case DType::f16: case DType::q8_0: case DType::q4_0: case DType::q4_1: case DType::q5_0: case DType::q5_1:
    case DType::q2_k: case DType::q3_k: case DType::q4_k: case DType::q5_k: case DType::q6_k: case DType::iq4_nl:
    case DType::iq4_xs:
      break;  // weight storage: never communicated
  }
  return CommDtype::uint8;
}
}  // namespace

AttentionShape attention_shape(const AttentionHeads& heads, int64_t q_start, int q_rank, int k_rank, int N) {
  AttentionShape sh;
  sh.n_heads = heads.n_heads;
  sh.n_kv_heads = heads.n_kv_heads;
  sh.head_dim = heads.head_dim;
  sh.q_start = q_start;
  sh.q_rank = q_rank;
  sh.k_rank = k_rank;
  sh.n_ranks = N;
  sh.scale = heads.scale;
  return sh;
}

RingAttention::RingAttention(Backend& be, Comm* cp, int r, int N, AttentionHeads heads, int64_t chunk)
    : be_(be), cp_(cp), r_(r), N_(N), heads_(heads), chunk_(chunk) {}

void RingAttention::begin(const KvCache& cache) {
  const DType state = be_.attention_state_dtype();
  if (state != DType::f32) {
    const int64_t n = local_len(cache.prompt_tokens, r_, N_);
    o_state_ = be_.alloc(n, heads_.n_heads * heads_.head_dim, state);
    lse_state_ = be_.alloc(n, heads_.n_heads, state);
  }
  if (N_ == 1) return;
  // Rank 0 holds the longest stripe: ceil(S/N) rows.
  for (KvBlock& b : ring_)
    b = be_.alloc_kv(local_len(cache.prompt_tokens, 0, N_), heads_.n_kv_heads, heads_.head_dim, cache.dtype());
}

void RingAttention::end() {
  ring_[0] = ring_[1] = KvBlock();
  o_state_ = lse_state_ = Tensor();
}

// Step t holds the KV block of rank s = (r - t) mod N: while local queries attend to it
// (in chunks, testing the transfer between chunks so MPI progresses), the block goes to
// rank r+1 and the next arrives from rank r-1.
void RingAttention::layer(const KvCache& cache, int l, const Tensor& q, const Tensor& o, const Tensor& lse,
                          int64_t& bytes_sent) {
  const int64_t n = q.rows(), S = cache.prompt_tokens;
  const KvBlock local = cache.layers[static_cast<size_t>(l)].rows(0, n);
  // The running state: o and lse themselves, or the backend's wider state, rounded into
  // them once every block has merged.
  const bool wide = !o_state_.empty();
  const Tensor so = wide ? o_state_.rows(0, n) : o, sl = wide ? lse_state_.rows(0, n) : lse;
  be_.attention_reset(so, sl);
  KvBlock cur = ring_[0], nxt = ring_[1];
  if (N_ > 1) be_.copy_kv(local, cur.rows(0, n));  // the local block, packed for sending
  for (int step = 0; step < N_; ++step) {
    const int s = (r_ - step + N_) % N_;
    const int64_t ns = local_len(S, s, N_);
    std::unique_ptr<PendingComm> pending;
    if (step + 1 < N_) {
      // The transfer may overwrite nxt only after earlier work read it (CUDA streams).
      const auto ready = be_.record(be_.stream());
      be_.wait(be_.comm_stream(), *ready);
      const Tensor& out = cur.packed;
      pending = cp_->ring_exchange(out.data(), nxt.packed.data(), static_cast<size_t>(out.numel()),
                                   comm_dtype(out.dtype()), be_.comm_stream());
      bytes_sent += static_cast<int64_t>(out.bytes());
    }
    // Read by every query chunk below: in the backend's fastest form, made once per step.
    const KvBlock kv = be_.attention_input(step == 0 ? local : cur.rows(0, ns));
    for (int64_t c = 0; c < n; c += chunk_) {
      const int64_t cn = std::min(chunk_, n - c);
      be_.attention(q.rows(c, cn), kv, attention_shape(heads_, c, r_, s, N_), so.rows(c, cn), sl.rows(c, cn));
      if (pending) pending->test();
    }
    if (pending) {
      pending->wait(be_.stream());
      std::swap(cur, nxt);
    }
  }
  if (wide) {
    be_.copy(so, o);
    be_.copy(sl, lse);
  }
}

}  // namespace ringinfer
