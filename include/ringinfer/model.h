#pragma once
// The model contract: configuration and weights, shared by the loaders (safetensors,
// GGUF), the engine and the backends. Weights are held in Hugging Face's layout
// (row-major [out_features, in_features]) whatever the file format, so one forward pass
// serves every loader. Loaders fill these structs; backends convert them to their own
// storage (fp32 on the CPU, bf16 on the GPU).
#include <cstdint>
#include <string>
#include <vector>

namespace ringinfer {

// freq_factors: a GGUF's rope_freqs.weight that matches no standard scaling, applied
// verbatim (one divisor per frequency), as llama.cpp does.
enum class RopeScalingType { none, linear, llama3, yarn, freq_factors };

struct RopeConfig {
  double theta = 10000.0;                // rope_theta
  RopeScalingType scaling = RopeScalingType::none;
  double factor = 1.0;                   // linear, llama3 and yarn
  double low_freq_factor = 1.0;          // llama3
  double high_freq_factor = 4.0;         // llama3
  int64_t original_max_position = 8192;  // llama3, yarn: original_max_position_embeddings
  double beta_fast = 32.0;               // yarn: ramp bounds, in rotations over the original context
  double beta_slow = 1.0;                // yarn
  bool truncate = true;                  // yarn: round the ramp bounds outwards to whole dimensions
  double attention_factor = 1.0;         // yarn: multiplies cos/sin (so q.k by its square)
  std::vector<double> freq_divisors;     // freq_factors: head_dim/2 divisors of the inverse frequencies
};

struct ModelConfig {
  std::string architecture;          // an HF class of model_family.h: LlamaForCausalLM, Qwen3ForCausalLM, ...
  int64_t hidden_size = 0;           // d_model
  int64_t n_layers = 0;
  int64_t n_heads = 0;               // query heads
  int64_t n_kv_heads = 0;            // key/value heads (GQA: n_heads % n_kv_heads == 0)
  int64_t head_dim = 0;              // explicit head_dim, else hidden_size / n_heads
  int64_t intermediate_size = 0;     // SwiGLU inner width
  int64_t vocab_size = 0;
  double rms_norm_eps = 1e-5;
  RopeConfig rope;
  bool qkv_bias = false;             // Qwen2: q/k/v projections carry a bias
  bool o_bias = false;               // Llama attention_bias=true: o_proj carries a bias too
  bool qk_norm = false;              // Qwen3: RMSNorm of each q and k head (over head_dim) before RoPE
  bool tie_word_embeddings = false;  // LM head shares the embedding matrix
  int64_t bos_token_id = -1;         // -1 when absent
  std::vector<int64_t> eos_token_ids;
  int64_t max_position_embeddings = 0;
  int64_t sliding_window = 0;        // Mistral/Qwen2 sliding-window attention span; 0 = full
};

// A host tensor, row-major: dense fp32 in `data`, or, for a GGUF matrix that a backend
// computes on quantized (TensorSource::keep_quantized), its stored rows in `blocks`.
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
  uint32_t ggml_type = 0;            // ggml type id of `blocks` (gguf.h): F16, BF16 or a block type
  std::vector<unsigned char> blocks; // whole rows as stored in the file; empty when `data` holds the values
  int64_t numel() const {
    if (blocks.empty()) return static_cast<int64_t>(data.size());
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  bool empty() const { return data.empty() && blocks.empty(); }
};

struct LayerWeights {
  HostTensor attn_norm;  // (hidden)                      input_layernorm.weight
  HostTensor wq;         // (n_heads * head_dim, hidden)   self_attn.q_proj.weight
  HostTensor wk;         // (n_kv_heads * head_dim, hidden)
  HostTensor wv;         // (n_kv_heads * head_dim, hidden)
  HostTensor bq, bk, bv; // (out) when qkv_bias, else empty
  HostTensor q_norm;     // (head_dim) when qk_norm, else empty  self_attn.q_norm.weight
  HostTensor k_norm;     // (head_dim) when qk_norm, else empty  self_attn.k_norm.weight
  HostTensor wo;         // (hidden, n_heads * head_dim)   self_attn.o_proj.weight
  HostTensor bo;         // (hidden) when o_bias, else empty
  HostTensor ffn_norm;   // (hidden)                      post_attention_layernorm.weight
  HostTensor w_gate;     // (intermediate, hidden)         mlp.gate_proj.weight
  HostTensor w_up;       // (intermediate, hidden)         mlp.up_proj.weight
  HostTensor w_down;     // (hidden, intermediate)         mlp.down_proj.weight
};

// The ModelWeights / LayerWeights field a tensor fills (model_family.h maps each to its
// file names, shape and tensor-parallel cut): the global slots, then the layer slots from
// attn_norm to w_down in LayerWeights' field order.
enum class WeightSlot {
  embed, final_norm, lm_head,
  attn_norm, wq, wk, wv, bq, bk, bv, q_norm, k_norm, wo, bo, ffn_norm, w_gate, w_up, w_down
};

struct ModelWeights {
  HostTensor embed;                 // (vocab, hidden)  model.embed_tokens.weight
  std::vector<LayerWeights> layers; // n_layers
  HostTensor final_norm;            // (hidden)         model.norm.weight
  HostTensor lm_head;               // (vocab, hidden)  lm_head.weight; empty when tied to embed
};

}  // namespace ringinfer
