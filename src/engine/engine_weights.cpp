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

// How (slot, layer) is checked and cut: the model's shape of the tensor, the cut, this
// rank's range of it, its name in messages, and whether the config uses it.
struct SlotSpec {
  std::vector<int64_t> full;
  Cut cut = Cut::whole;
  RowRange range;
  std::string name;
  bool used = true;
};

SlotSpec slot_spec(const ModelConfig& c, const TensorParallelSlice& sl, WeightSlot slot, int64_t layer) {
  const int64_t hid = c.hidden_size, q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  const int64_t I = c.intermediate_size, V = c.vocab_size, D = c.head_dim;
  const RowRange qr = sl.q_rows(D), kvr = sl.kv_rows(D), ir = sl.inter_rows();
  const std::string p = "layers." + std::to_string(layer) + ".";
  switch (slot) {
    case WeightSlot::embed: return {{V, hid}, Cut::whole, {}, "embed_tokens"};
    case WeightSlot::final_norm: return {{hid}, Cut::whole, {}, "norm"};
    case WeightSlot::lm_head: return {{V, hid}, Cut::rows, sl.vocab_range(), "lm_head"};
    case WeightSlot::attn_norm: return {{hid}, Cut::whole, {}, p + "input_layernorm"};
    case WeightSlot::wq: return {{q, hid}, Cut::rows, qr, p + "q_proj"};
    case WeightSlot::wk: return {{kv, hid}, Cut::rows, kvr, p + "k_proj"};
    case WeightSlot::wv: return {{kv, hid}, Cut::rows, kvr, p + "v_proj"};
    case WeightSlot::bq: return {{q}, Cut::rows, qr, p + "q_proj.bias", c.qkv_bias};
    case WeightSlot::bk: return {{kv}, Cut::rows, kvr, p + "k_proj.bias", c.qkv_bias};
    case WeightSlot::bv: return {{kv}, Cut::rows, kvr, p + "v_proj.bias", c.qkv_bias};
    case WeightSlot::wo: return {{hid, q}, Cut::cols, qr, p + "o_proj"};
    case WeightSlot::bo: return {{hid}, Cut::whole, {}, p + "o_proj.bias", c.o_bias};
    case WeightSlot::ffn_norm: return {{hid}, Cut::whole, {}, p + "post_attention_layernorm"};
    case WeightSlot::w_gate: return {{I, hid}, Cut::rows, ir, p + "gate_proj"};
    case WeightSlot::w_up: return {{I, hid}, Cut::rows, ir, p + "up_proj"};
    case WeightSlot::w_down: return {{hid, I}, Cut::cols, ir, p + "down_proj"};
  }
  throw Error("model: unknown weight slot");
}

// Where (slot, layer) goes in `w`.
Tensor& slot_tensor(BackendWeights& w, WeightSlot slot, int64_t layer) { return weight_slot(w, slot, layer); }

}  // namespace

WeightUploader::WeightUploader(Backend& be, const ModelConfig& c, const TensorParallelSlice& sl)
    : be_(be), c_(c), sl_(sl) {
  const int64_t hid = c.hidden_size;
  RI_CHECK(hid > 0 && c.n_heads > 0 && c.n_kv_heads > 0 && c.head_dim > 0 && c.intermediate_size > 0 &&
               c.vocab_size > 0 && c.n_heads % c.n_kv_heads == 0,
           "model: inconsistent sizes (hidden " + std::to_string(hid) + ", heads " + std::to_string(c.n_heads) + "/" +
               std::to_string(c.n_kv_heads) + ")");
  RI_CHECK(c.n_layers >= 0, "model: " + std::to_string(c.n_layers) + " layers");
}

void WeightUploader::upload(WeightSlot slot, int64_t layer, const HostTensor& t) {
  // Sized at the first tensor, after the caller's checks: a corrupt layer count fails
  // with their message, not an out-of-memory here.
  if (out_.layers.size() != static_cast<size_t>(c_.n_layers)) out_.layers.resize(static_cast<size_t>(c_.n_layers));
  const SlotSpec s = slot_spec(c_, sl_, slot, layer);
  Tensor& dst = slot_tensor(out_, slot, layer);
  if (!s.used) {
    RI_CHECK(t.empty(), "model: " + s.name + " is present but the config does not use it");
    return;
  }
  dst = upload_part(be_, t, s.full, s.cut, s.range, s.name);
}

BackendWeights WeightUploader::finish() {
  if (out_.lm_head.empty()) {
    RI_CHECK(c_.tie_word_embeddings, "model: lm_head is missing and tie_word_embeddings is false");
    out_.lm_head = out_.embed.rows(sl_.vocab_begin, sl_.vocab_rows);  // a view: no second copy
  }
  const std::vector<double> inv = rope_inv_freq(c_.rope, c_.head_dim);
  out_.inv_freq = be_.alloc(1, static_cast<int64_t>(inv.size()), DType::f64);
  be_.copy_from_host(out_.inv_freq, inv.data());
  return std::move(out_);
}

BackendWeights upload_weights(Backend& be, const ModelConfig& c, const ModelWeights& w) {
  return upload_weights(be, c, w, tensor_parallel_slice(c, 0, 1));
}

BackendWeights upload_weights(Backend& be, const ModelConfig& c, const ModelWeights& w,
                              const TensorParallelSlice& sl) {
  WeightUploader up(be, c, sl);
  RI_CHECK(static_cast<int64_t>(w.layers.size()) == c.n_layers,
           "model: " + std::to_string(w.layers.size()) + " layers of weights, config says " +
               std::to_string(c.n_layers));
  up.upload(WeightSlot::embed, -1, w.embed);
  for (int64_t l = 0; l < c.n_layers; ++l)
    for (WeightSlot slot : layer_weight_slots()) up.upload(slot, l, weight_of(w, slot, l));
  up.upload(WeightSlot::final_norm, -1, w.final_norm);
  if (!w.lm_head.empty()) up.upload(WeightSlot::lm_head, -1, w.lm_head);
  return up.finish();
}

BackendWeights load_weights(Backend& be, const ModelSource& model, const TensorParallelSlice& sl) {
  WeightUploader up(be, model.config, sl);
  // Whole tensors only: a TP slice is cut from fp32 on the host.
  model.tensors->keep_quantized(be.takes_quantized_weights() && sl.size == 1);
  read_weights(model, sl, up);
  return up.finish();
}

}  // namespace ringinfer::engine
