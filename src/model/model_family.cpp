#include "ringinfer/model_family.h"

#include "ringinfer/error.h"
#include "ringinfer/model_loader.h"

namespace ringinfer {
namespace {

using S = WeightSlot;
using P = Presence;
using C = TpCut;

// The pre-norm SwiGLU decoder the four families share, in load order: biases and the
// untied LM head optional (Presence), Qwen3's q_norm/k_norm when qk_norm. llama.cpp's
// converter permutes the Q/K rows of the llama architecture only (its RoPE pairs
// neighbours; qwen2/qwen3 use the NeoX pairing, HF's, and are stored as they are).
std::vector<TensorSpec> decoder_tensors(bool gguf_permutes_qk, bool qk_norm) {
  const bool pq = gguf_permutes_qk;
  std::vector<TensorSpec> t = {
      {S::embed, "model.embed_tokens.weight", "token_embd.weight", {Dim::vocab, Dim::hidden}, C::whole, P::always, false},
      {S::final_norm, "model.norm.weight", "output_norm.weight", {Dim::hidden}, C::whole, P::always, false},
      {S::lm_head, "lm_head.weight", "output.weight", {Dim::vocab, Dim::hidden}, C::vocab_rows, P::untied_head, false},
      {S::attn_norm, "input_layernorm.weight", "attn_norm.weight", {Dim::hidden}, C::whole, P::always, false},
      {S::wq, "self_attn.q_proj.weight", "attn_q.weight", {Dim::q_out, Dim::hidden}, C::q_rows, P::always, pq},
      {S::wk, "self_attn.k_proj.weight", "attn_k.weight", {Dim::kv_out, Dim::hidden}, C::kv_rows, P::always, pq},
      {S::wv, "self_attn.v_proj.weight", "attn_v.weight", {Dim::kv_out, Dim::hidden}, C::kv_rows, P::always, false},
      {S::bq, "self_attn.q_proj.bias", "attn_q.bias", {Dim::q_out}, C::q_rows, P::qkv_bias, pq},
      {S::bk, "self_attn.k_proj.bias", "attn_k.bias", {Dim::kv_out}, C::kv_rows, P::qkv_bias, pq},
      {S::bv, "self_attn.v_proj.bias", "attn_v.bias", {Dim::kv_out}, C::kv_rows, P::qkv_bias, false}};
  if (qk_norm)
    t.insert(t.end(), {{S::q_norm, "self_attn.q_norm.weight", "attn_q_norm.weight", {Dim::head_dim}, C::whole,
                        P::qk_norm, false},
                       {S::k_norm, "self_attn.k_norm.weight", "attn_k_norm.weight", {Dim::head_dim}, C::whole,
                        P::qk_norm, false}});
  t.insert(t.end(),
           {{S::wo, "self_attn.o_proj.weight", "attn_output.weight", {Dim::hidden, Dim::q_out}, C::q_cols, P::always, false},
            {S::bo, "self_attn.o_proj.bias", "attn_output.bias", {Dim::hidden}, C::whole, P::o_bias, false},
            {S::ffn_norm, "post_attention_layernorm.weight", "ffn_norm.weight", {Dim::hidden}, C::whole, P::always, false},
            {S::w_gate, "mlp.gate_proj.weight", "ffn_gate.weight", {Dim::inter, Dim::hidden}, C::inter_rows, P::always, false},
            {S::w_up, "mlp.up_proj.weight", "ffn_up.weight", {Dim::inter, Dim::hidden}, C::inter_rows, P::always, false},
            {S::w_down, "mlp.down_proj.weight", "ffn_down.weight", {Dim::hidden, Dim::inter}, C::inter_cols, P::always,
             false}});
  return t;
}

std::string join(const char* ModelFamily::*field) {
  std::string out;
  for (const ModelFamily& f : model_families()) {
    if (!*(f.*field)) continue;
    out += (out.empty() ? "" : ", ") + std::string(f.*field);
  }
  return out;
}

}  // namespace

bool is_global_slot(WeightSlot s) { return s == S::embed || s == S::final_norm || s == S::lm_head; }

const std::vector<ModelFamily>& model_families() {
  static const std::vector<TensorSpec> llama = decoder_tensors(true, false);
  static const std::vector<TensorSpec> qwen2 = decoder_tensors(false, false);
  static const std::vector<TensorSpec> qwen3 = decoder_tensors(false, true);
  // Mistral has no GGUF form of its own: llama.cpp writes Mistral models as `llama`.
  static const std::vector<ModelFamily> families = {
      {"LlamaForCausalLM", "llama", "llama", false, false, false, &llama},
      {"MistralForCausalLM", "mistral", "", false, false, false, &llama},
      {"Qwen2ForCausalLM", "qwen2", "qwen2", true, false, true, &qwen2},
      {"Qwen3ForCausalLM", "qwen3", "qwen3", false, true, true, &qwen3},
  };
  return families;
}

const ModelFamily* family_by_architecture(const std::string& a) {
  for (const ModelFamily& f : model_families())
    if (a == f.hf_architecture) return &f;
  return nullptr;
}
const ModelFamily* family_by_model_type(const std::string& t) {
  for (const ModelFamily& f : model_families())
    if (t == f.model_type) return &f;
  return nullptr;
}
const ModelFamily* family_by_gguf(const std::string& g) {
  for (const ModelFamily& f : model_families())
    if (*f.gguf_architecture && g == f.gguf_architecture) return &f;
  return nullptr;
}

const ModelFamily& family_of(const ModelConfig& c) {
  const ModelFamily* f = family_by_architecture(c.architecture);
  RI_CHECK(f != nullptr, "model: architecture '" + c.architecture + "' is not supported (" +
                             supported_architectures() + ")");
  return *f;
}

std::string supported_architectures() { return join(&ModelFamily::hf_architecture); }
std::string supported_model_types() { return join(&ModelFamily::model_type); }
std::string supported_gguf_architectures() { return join(&ModelFamily::gguf_architecture); }

bool tensor_present(const TensorSpec& s, const ModelConfig& c) {
  switch (s.presence) {
    case P::always: return true;
    case P::qkv_bias: return c.qkv_bias;
    case P::o_bias: return c.o_bias;
    case P::qk_norm: return c.qk_norm;
    case P::untied_head: return !c.tie_word_embeddings;
  }
  return false;
}

std::vector<int64_t> tensor_shape(const TensorSpec& s, const ModelConfig& c) {
  std::vector<int64_t> out;
  for (Dim d : s.shape) {
    switch (d) {
      case Dim::hidden: out.push_back(c.hidden_size); break;
      case Dim::q_out: out.push_back(c.n_heads * c.head_dim); break;
      case Dim::kv_out: out.push_back(c.n_kv_heads * c.head_dim); break;
      case Dim::head_dim: out.push_back(c.head_dim); break;
      case Dim::inter: out.push_back(c.intermediate_size); break;
      case Dim::vocab: out.push_back(c.vocab_size); break;
    }
  }
  return out;
}

const TensorSpec* tensor_spec(const ModelConfig& c, WeightSlot slot) {
  for (const TensorSpec& s : *family_of(c).tensors)
    if (s.slot == slot) return &s;
  return nullptr;
}

namespace {
ModelTensor resolve(const TensorSpec& s, const ModelConfig& c, int64_t layer) {
  ModelTensor t;
  t.spec = &s;
  t.layer = layer;
  t.hf_name = layer < 0 ? s.hf : layer_tensor_name(layer, s.hf);
  t.gguf_name = layer < 0 ? s.gguf : "blk." + std::to_string(layer) + "." + s.gguf;
  t.shape = tensor_shape(s, c);
  return t;
}
}  // namespace

void for_each_model_tensor(const ModelConfig& c, const std::function<void(const ModelTensor&)>& fn) {
  const std::vector<TensorSpec>& table = *family_of(c).tensors;
  for (const TensorSpec& s : table)
    if (is_global_slot(s.slot) && tensor_present(s, c)) fn(resolve(s, c, -1));
  for (int64_t l = 0; l < c.n_layers; ++l)
    for (const TensorSpec& s : table)
      if (!is_global_slot(s.slot) && tensor_present(s, c)) fn(resolve(s, c, l));
}

bool find_model_tensor(const ModelConfig& c, const std::string& hf, ModelTensor* out) {
  const std::vector<TensorSpec>& table = *family_of(c).tensors;
  for (const TensorSpec& s : table)
    if (is_global_slot(s.slot) && hf == s.hf) return *out = resolve(s, c, -1), true;
  const std::string prefix = "model.layers.";
  if (hf.compare(0, prefix.size(), prefix) != 0) return false;
  const size_t dot = hf.find('.', prefix.size());
  if (dot == std::string::npos) return false;
  const std::string n = hf.substr(prefix.size(), dot - prefix.size());
  if (n.empty() || n.size() > 12 || n.find_first_not_of("0123456789") != std::string::npos) return false;
  const std::string suffix = hf.substr(dot + 1);
  for (const TensorSpec& s : table)
    if (!is_global_slot(s.slot) && suffix == s.hf) return *out = resolve(s, c, std::stoll(n)), true;
  return false;
}

RowRange tp_range(TpCut cut, const TensorParallelSlice& sl, int64_t D) {
  switch (cut) {
    case C::whole: return {};
    case C::q_rows: case C::q_cols: return sl.q_rows(D);
    case C::kv_rows: return sl.kv_rows(D);
    case C::inter_rows: case C::inter_cols: return sl.inter_rows();
    case C::vocab_rows: return sl.vocab_range();
  }
  return {};
}

}  // namespace ringinfer
