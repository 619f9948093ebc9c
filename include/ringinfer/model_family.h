#pragma once
// Model families and their tensor tables: the one place that says which tensors a family
// has. Each family declares every tensor once — its Hugging Face name, its GGUF name, its
// shape in terms of the config, how tensor parallelism cuts it, and when it is present —
// and the safetensors loader, the GGUF reader (names, Q/K permutation), TP weight
// streaming and the engine's weight upload all read that table. Adding a family is one
// entry here plus its forward differences (ModelConfig flags the engine reads).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ringinfer/model.h"

namespace ringinfer {

struct TensorParallelSlice;  // model_loader.h
struct RowRange;

// A tensor dimension in terms of the config.
enum class Dim { hidden, q_out, kv_out, head_dim, inter, vocab };  // q_out = H*D, kv_out = Hkv*D

// How tensor parallelism cuts a tensor (DESIGN §5, Megatron layout): whole on every rank,
// rows (column-parallel projections; dim 0) or columns (row-parallel; dim 1) of this
// rank's query heads, KV heads, FFN channels or vocabulary rows.
enum class TpCut { whole, q_rows, kv_rows, inter_rows, vocab_rows, q_cols, inter_cols };

// When a tensor is present: always, or when the config says so.
enum class Presence { always, qkv_bias, o_bias, qk_norm, untied_head };

struct TensorSpec {
  WeightSlot slot;
  const char* hf;      // global name, or the suffix after "model.layers.<l>." for layer tensors
  const char* gguf;    // global name, or the suffix after "blk.<l>."
  std::vector<Dim> shape;  // HF layout ([out, in] for matrices)
  TpCut cut;
  Presence presence;
  bool gguf_rope_permuted;  // llama.cpp's converter permuted its rows per head (llama's Q/K)
};

struct ModelFamily {
  const char* hf_architecture;    // config.json architectures[0]
  const char* model_type;         // config.json model_type (older configs carry only this)
  const char* gguf_architecture;  // general.architecture; "" when no GGUF form is supported
  bool always_qkv_bias;           // q/k/v biases whatever attention_bias says (Qwen2)
  bool qk_norm;                   // per-head RMSNorm of q and k before RoPE (Qwen3)
  bool sliding_window_flag;       // sliding_window only counts with use_sliding_window (Qwen)
  const std::vector<TensorSpec>* tensors;  // global tensors first, then one layer's
};

// Every supported family, in the order messages list them.
const std::vector<ModelFamily>& model_families();
// The family of an HF architecture, model_type or GGUF architecture; nullptr when none.
const ModelFamily* family_by_architecture(const std::string& hf_architecture);
const ModelFamily* family_by_model_type(const std::string& model_type);
const ModelFamily* family_by_gguf(const std::string& gguf_architecture);
// The family of a config (by its architecture); throws Error when unknown.
const ModelFamily& family_of(const ModelConfig& c);
// "LlamaForCausalLM, MistralForCausalLM, ..." and friends, for messages.
std::string supported_architectures();
std::string supported_model_types();
std::string supported_gguf_architectures();

// One tensor of a model: a family's spec resolved for a config and a layer.
struct ModelTensor {
  const TensorSpec* spec = nullptr;
  int64_t layer = -1;              // -1 for global tensors
  std::string hf_name;             // "model.layers.3.self_attn.q_proj.weight"
  std::string gguf_name;           // "blk.3.attn_q.weight"
  std::vector<int64_t> shape;      // the whole tensor's shape, HF layout
};

// Whether the config uses a spec (its presence condition holds).
bool tensor_present(const TensorSpec& spec, const ModelConfig& c);
// The spec's whole shape under c.
std::vector<int64_t> tensor_shape(const TensorSpec& spec, const ModelConfig& c);
// The spec of a slot in c's family; nullptr when the family has no such tensor.
const TensorSpec* tensor_spec(const ModelConfig& c, WeightSlot slot);
// Calls fn on every tensor the config uses, in load order (global tensors, then layer by
// layer), one at a time: a corrupt layer count fails at fn's first throw, not in memory.
void for_each_model_tensor(const ModelConfig& c, const std::function<void(const ModelTensor&)>& fn);
// The tensor of c's family named hf_name (global or "model.layers.<l>.<suffix>"), present
// or not; false when the family has no such tensor.
bool find_model_tensor(const ModelConfig& c, const std::string& hf_name, ModelTensor* out);
// This rank's range of a cut tensor (rows, or columns for *_cols); {} for whole.
RowRange tp_range(TpCut cut, const TensorParallelSlice& slice, int64_t head_dim);
// Whether a slot is a global tensor (embedding, final norm, LM head) or a layer's.
bool is_global_slot(WeightSlot slot);
// Whether a cut takes columns (dim 1) rather than rows.
inline bool cuts_columns(TpCut cut) { return cut == TpCut::q_cols || cut == TpCut::inter_cols; }

}  // namespace ringinfer
