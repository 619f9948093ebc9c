#include "engine/engine_weights.h"

#include <algorithm>
#include <string>

#include "ringinfer/error.h"

namespace ringinfer::engine {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t count(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

bool has_shape(const HostTensor& t, const std::vector<int64_t>& want) {
  return t.shape == want && t.numel() == count(want);
}

Tensor upload(Backend& be, const HostTensor& t, const std::vector<int64_t>& want, const std::string& name) {
  RI_CHECK(has_shape(t, want), "model: " + name + " has shape " + shape_str(t.shape) + ", expected " + shape_str(want));
  return be.upload_weight(t);
}

// How a tensor is split over the TP group: whole, rows [b, e) of dim 0, or columns [b, e).
enum class Cut { whole, rows, cols };

// Uploads this rank's part of a tensor whose whole shape is `full`: `t` may be the part
// already, or the whole tensor (cut here, on the host).
Tensor upload_part(Backend& be, const HostTensor& t, const std::vector<int64_t>& full, Cut cut, RowRange r,
                   const std::string& name) {
  if (cut == Cut::whole) return upload(be, t, full, name);
  std::vector<int64_t> part = full;
  part[cut == Cut::rows ? 0 : 1] = r.end - r.begin;
  if (has_shape(t, part)) return be.upload_weight(t);
  RI_CHECK(has_shape(t, full), "model: " + name + " has shape " + shape_str(t.shape) + ", expected " +
                                   shape_str(full) + (part == full ? "" : " or this rank's part " + shape_str(part)));
  HostTensor p;
  p.shape = part;
  p.data.resize(static_cast<size_t>(count(part)));
  if (cut == Cut::rows) {
    const int64_t row = full.size() > 1 ? full[1] : 1;
    std::copy_n(t.data.data() + r.begin * row, (r.end - r.begin) * row, p.data.data());
  } else {
    const int64_t w = r.end - r.begin;
    for (int64_t i = 0; i < full[0]; ++i)
      std::copy_n(t.data.data() + i * full[1] + r.begin, w, p.data.data() + i * w);
  }
  return be.upload_weight(p);
}

Tensor upload_optional(Backend& be, bool present, const HostTensor& t, const std::vector<int64_t>& full, Cut cut,
                       RowRange r, const std::string& name) {
  if (!present) {
    RI_CHECK(t.empty(), "model: " + name + " is present but the config does not use it");
    return Tensor();
  }
  return upload_part(be, t, full, cut, r, name);
}

}  // namespace

BackendWeights upload_weights(Backend& be, const ModelConfig& c, const ModelWeights& w) {
  return upload_weights(be, c, w, tensor_parallel_slice(c, 0, 1));
}

BackendWeights upload_weights(Backend& be, const ModelConfig& c, const ModelWeights& w,
                              const TensorParallelSlice& sl) {
  const int64_t hid = c.hidden_size, q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  const int64_t I = c.intermediate_size, V = c.vocab_size, D = c.head_dim;
  RI_CHECK(hid > 0 && c.n_heads > 0 && c.n_kv_heads > 0 && c.head_dim > 0 && I > 0 && V > 0 &&
               c.n_heads % c.n_kv_heads == 0,
           "model: inconsistent sizes (hidden " + std::to_string(hid) + ", heads " + std::to_string(c.n_heads) + "/" +
               std::to_string(c.n_kv_heads) + ")");
  RI_CHECK(static_cast<int64_t>(w.layers.size()) == c.n_layers,
           "model: " + std::to_string(w.layers.size()) + " layers of weights, config says " +
               std::to_string(c.n_layers));
  const RowRange qr = sl.q_rows(D), kvr = sl.kv_rows(D), ir = sl.inter_rows();
  BackendWeights out;
  out.embed = upload(be, w.embed, {V, hid}, "embed_tokens");
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& L = w.layers[l];
    const std::string p = "layers." + std::to_string(l) + ".";
    BackendLayer b;
    b.attn_norm = upload(be, L.attn_norm, {hid}, p + "input_layernorm");
    b.wq = upload_part(be, L.wq, {q, hid}, Cut::rows, qr, p + "q_proj");
    b.wk = upload_part(be, L.wk, {kv, hid}, Cut::rows, kvr, p + "k_proj");
    b.wv = upload_part(be, L.wv, {kv, hid}, Cut::rows, kvr, p + "v_proj");
    b.bq = upload_optional(be, c.qkv_bias, L.bq, {q}, Cut::rows, qr, p + "q_proj.bias");
    b.bk = upload_optional(be, c.qkv_bias, L.bk, {kv}, Cut::rows, kvr, p + "k_proj.bias");
    b.bv = upload_optional(be, c.qkv_bias, L.bv, {kv}, Cut::rows, kvr, p + "v_proj.bias");
    b.wo = upload_part(be, L.wo, {hid, q}, Cut::cols, qr, p + "o_proj");
    b.bo = upload_optional(be, c.o_bias, L.bo, {hid}, Cut::whole, {}, p + "o_proj.bias");
    b.ffn_norm = upload(be, L.ffn_norm, {hid}, p + "post_attention_layernorm");
    b.w_gate = upload_part(be, L.w_gate, {I, hid}, Cut::rows, ir, p + "gate_proj");
    b.w_up = upload_part(be, L.w_up, {I, hid}, Cut::rows, ir, p + "up_proj");
    b.w_down = upload_part(be, L.w_down, {hid, I}, Cut::cols, ir, p + "down_proj");
    out.layers.push_back(std::move(b));
  }
  out.final_norm = upload(be, w.final_norm, {hid}, "norm");
  if (w.lm_head.empty()) {
    RI_CHECK(c.tie_word_embeddings, "model: lm_head is missing and tie_word_embeddings is false");
    out.lm_head = out.embed.rows(sl.vocab_begin, sl.vocab_rows);  // a view: no second copy
  } else {
    out.lm_head = upload_part(be, w.lm_head, {V, hid}, Cut::rows, sl.vocab_range(), "lm_head");
  }
  const std::vector<double> inv = rope_inv_freq(c.rope, c.head_dim);
  out.inv_freq = be.alloc(1, static_cast<int64_t>(inv.size()), DType::f64);
  be.copy_from_host(out.inv_freq, inv.data());
  return out;
}

}  // namespace ringinfer::engine
