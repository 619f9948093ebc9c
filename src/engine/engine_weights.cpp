#include "engine/engine_weights.h"

#include <string>

#include "ringinfer/error.h"

namespace ringinfer::engine {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

Tensor upload(Backend& be, const HostTensor& t, const std::vector<int64_t>& want, const std::string& name) {
  RI_CHECK(t.shape == want && t.numel() == [&] {
    int64_t n = 1;
    for (int64_t d : want) n *= d;
    return n;
  }(), "model: " + name + " has shape " + shape_str(t.shape) + ", expected " + shape_str(want));
  return be.upload_weight(t);
}

Tensor upload_optional(Backend& be, bool present, const HostTensor& t, const std::vector<int64_t>& want,
                       const std::string& name) {
  if (!present) {
    RI_CHECK(t.empty(), "model: " + name + " is present but the config does not use it");
    return Tensor();
  }
  return upload(be, t, want, name);
}

}  // namespace

BackendWeights upload_weights(Backend& be, const ModelConfig& c, const ModelWeights& w) {
  const int64_t hid = c.hidden_size, q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  const int64_t I = c.intermediate_size, V = c.vocab_size;
  RI_CHECK(hid > 0 && c.n_heads > 0 && c.n_kv_heads > 0 && c.head_dim > 0 && I > 0 && V > 0 &&
               c.n_heads % c.n_kv_heads == 0,
           "model: inconsistent sizes (hidden " + std::to_string(hid) + ", heads " + std::to_string(c.n_heads) + "/" +
               std::to_string(c.n_kv_heads) + ")");
  RI_CHECK(static_cast<int64_t>(w.layers.size()) == c.n_layers,
           "model: " + std::to_string(w.layers.size()) + " layers of weights, config says " +
               std::to_string(c.n_layers));
  BackendWeights out;
  out.embed = upload(be, w.embed, {V, hid}, "embed_tokens");
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& L = w.layers[l];
    const std::string p = "layers." + std::to_string(l) + ".";
    BackendLayer b;
    b.attn_norm = upload(be, L.attn_norm, {hid}, p + "input_layernorm");
    b.wq = upload(be, L.wq, {q, hid}, p + "q_proj");
    b.wk = upload(be, L.wk, {kv, hid}, p + "k_proj");
    b.wv = upload(be, L.wv, {kv, hid}, p + "v_proj");
    b.bq = upload_optional(be, c.qkv_bias, L.bq, {q}, p + "q_proj.bias");
    b.bk = upload_optional(be, c.qkv_bias, L.bk, {kv}, p + "k_proj.bias");
    b.bv = upload_optional(be, c.qkv_bias, L.bv, {kv}, p + "v_proj.bias");
    b.wo = upload(be, L.wo, {hid, q}, p + "o_proj");
    b.bo = upload_optional(be, c.o_bias, L.bo, {hid}, p + "o_proj.bias");
    b.ffn_norm = upload(be, L.ffn_norm, {hid}, p + "post_attention_layernorm");
    b.w_gate = upload(be, L.w_gate, {I, hid}, p + "gate_proj");
    b.w_up = upload(be, L.w_up, {I, hid}, p + "up_proj");
    b.w_down = upload(be, L.w_down, {hid, I}, p + "down_proj");
    out.layers.push_back(std::move(b));
  }
  out.final_norm = upload(be, w.final_norm, {hid}, "norm");
  if (w.lm_head.empty()) {
    RI_CHECK(c.tie_word_embeddings, "model: lm_head is missing and tie_word_embeddings is false");
    out.lm_head = out.embed;
  } else {
    out.lm_head = upload(be, w.lm_head, {V, hid}, "lm_head");
  }
  const std::vector<double> inv = rope_inv_freq(c.rope, c.head_dim);
  out.inv_freq = be.alloc(1, static_cast<int64_t>(inv.size()), DType::f64);
  be.copy_from_host(out.inv_freq, inv.data());
  return out;
}

}  // namespace ringinfer::engine
