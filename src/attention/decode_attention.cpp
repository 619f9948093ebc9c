// Decode attention over a list of sequences and the merge of the ranks' parts (DESIGN §4, §5).
#include <string>
#include <vector>

#include "ringinfer/attention.h"
#include "ringinfer/error.h"

namespace ringinfer {
namespace {
// Elements [begin, begin + count) of t, as a (rows, count / rows) view.
Tensor span(const Tensor& t, int64_t begin, int64_t count, int64_t rows) {
  return t.reshaped(t.numel(), 1).rows(begin, count).reshaped(rows, count / rows);
}
}  // namespace

DecodeAttention::DecodeAttention(Backend& be, Comm* cp, int r, int N, AttentionHeads heads, int64_t max_rows)
    : be_(be), cp_(cp), r_(r), N_(N), heads_(heads) {
  const int64_t row = heads.n_heads * heads.head_dim + heads.n_heads;
  const DType state = be.attention_state_dtype();
  part_ = be.alloc(1, max_rows * row, state);
  if (cp_) parts_ = be.alloc(N, max_rows * row, state);
  if (state != DType::f32) out_ = be.alloc(max_rows, heads.n_heads * heads.head_dim, DType::f32);
}

Tensor DecodeAttention::layer(const std::vector<const KvCache*>& sequences, int l,
                              const std::vector<int64_t>& positions, const Tensor& q, int64_t& bytes_sent) {
  const int64_t B = q.rows(), H = heads_.n_heads, HD = H * heads_.head_dim, row = HD + H;
  RI_CHECK(static_cast<int64_t>(sequences.size()) == B && static_cast<int64_t>(positions.size()) == B &&
               B * row <= part_.numel(),
           "decode attention: " + std::to_string(B) + " query rows for " + std::to_string(sequences.size()) +
               " sequences (at most " + std::to_string(part_.numel() / row) + ")");
  // This rank's part: O of the B rows, then their LSE, so each is one (B, .) view.
  const Tensor o = span(part_, 0, B * HD, B), lse = span(part_, B * HD, B * H, B);
  // Split-KV: each query row against this rank's stripe of its own document.
  std::vector<KvBlock> blocks;
  std::vector<AttentionShape> shapes;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t pos = positions[b];
    blocks.push_back(sequences[b]->stored(l));
    shapes.push_back(attention_shape(heads_, local_index(pos, N_), stripe_owner(pos, N_), r_, N_));
  }
  be_.attention_rows(q, blocks, shapes, o, lse);
  // The merged O in fp32: o itself, or rounded once from the backend's wider state.
  const auto result = [&]() {
    if (out_.empty()) return o;
    const Tensor out = out_.rows(0, B);
    be_.copy(o, out);
    return out;
  };
  if (!cp_) return result();
  // One all-gather of every rank's (O, LSE), then the same merge in rank order on every
  // rank, so all ranks keep bitwise the same hidden state.
  const bool f64 = part_.dtype() == DType::f64;
  cp_->all_gather(part_.data(), parts_.data(), static_cast<size_t>(B * row),
                  f64 ? CommDtype::float64 : CommDtype::float32, be_.stream());
  bytes_sent += B * row * static_cast<int64_t>(dtype_bytes(part_.dtype()));
  be_.attention_reset(o, lse);
  for (int s = 0; s < N_; ++s)
    be_.merge_attention(o, lse, span(parts_, s * B * row, B * HD, B), span(parts_, s * B * row + B * HD, B * H, B));
  return result();
}

}  // namespace ringinfer
