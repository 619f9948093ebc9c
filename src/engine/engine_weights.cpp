#include "engine/engine_weights.h"

#include <algorithm>
#include <string>

#include "ringinfer/error.h"
#include "ringinfer/model_family.h"

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

// Uploads this rank's part of a tensor whose whole shape is `full`: `t` may be the part
// already, or the whole tensor (cut here, on the host).
Tensor upload_part(Backend& be, const HostTensor& t, const std::vector<int64_t>& full, TpCut cut, RowRange r,
                   const std::string& name) {
  if (cut == TpCut::whole) return upload(be, t, full, name);
  const bool cols = cuts_columns(cut);
  std::vector<int64_t> part = full;
  part[cols ? 1 : 0] = r.end - r.begin;
  if (has_shape(t, part)) return be.upload_weight(t);
  RI_CHECK(has_shape(t, full), "model: " + name + " has shape " + shape_str(t.shape) + ", expected " +
                                   shape_str(full) + (part == full ? "" : " or this rank's part " + shape_str(part)));
  HostTensor p;
  p.shape = part;
  p.data.resize(static_cast<size_t>(count(part)));
  if (!cols) {
    const int64_t row = full.size() > 1 ? full[1] : 1;
    std::copy_n(t.data.data() + r.begin * row, (r.end - r.begin) * row, p.data.data());
  } else {
    const int64_t w = r.end - r.begin;
    for (int64_t i = 0; i < full[0]; ++i)
      std::copy_n(t.data.data() + i * full[1] + r.begin, w, p.data.data() + i * w);
  }
  return be.upload_weight(p);
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
  // The family's table (model_family.h) says the shape, the cut and whether c_ uses it.
  const TensorSpec* s = tensor_spec(c_, slot);
  const std::string name = s ? (layer < 0 ? std::string(s->hf) : layer_tensor_name(layer, s->hf))
                             : "layers." + std::to_string(layer) + " slot " + std::to_string(static_cast<int>(slot));
  Tensor& dst = slot_tensor(out_, slot, layer);
  if (!s || !tensor_present(*s, c_)) {
    RI_CHECK(t.empty(), "model: " + name + " is present but the config does not use it");
    return;
  }
  dst = upload_part(be_, t, tensor_shape(*s, c_), s->cut, tp_range(s->cut, sl_, c_.head_dim), name);
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
