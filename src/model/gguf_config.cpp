// ModelConfig from GGUF metadata, for each family with a GGUF form (model_family.h).
// llama.cpp's keys are "<arch>.<key>" (llama.embedding_length, qwen3.attention.key_length,
// qwen2.rope.freq_base, ...); facts the metadata does not hold come from the tensors.
#include <algorithm>
#include <cmath>

#include "ringinfer/error.h"
#include "ringinfer/gguf.h"
#include "ringinfer/model_config.h"
#include "ringinfer/model_family.h"

namespace ringinfer {
namespace {

// The llama3 divisor of inverse frequency `inv` (HF's _compute_llama3_parameters).
double llama3_divisor(double inv, double factor, double original) {
  const double lo = 1.0, hi = 4.0;  // the only low/high_freq_factor llama.cpp's converter writes
  const double wl = 2 * M_PI / inv;
  if (wl < original / hi) return 1.0;
  if (wl > original / lo) return factor;
  const double smooth = (original / wl - lo) / (hi - lo);
  return 1.0 / ((1 - smooth) / factor + smooth);
}

// llama.cpp stores llama3 RoPE scaling as rope_freqs.weight, one divisor per frequency
// (convert_hf_to_gguf.py), and applies it verbatim. We recognise the standard llama3 form
// (low 1, high 4, the original context from the metadata, else inferred from a divisor
// between the two bands), so that plan and logs can name it, and then compute it in
// float64 from its parameters (the stored float32 divisors differ from those by their
// rounding only). Any other divisors are applied verbatim, as llama.cpp does.
void rope_from_freqs(const GgufFile& f, const std::string& arch, ModelConfig& c) {
  const HostTensor rf = f.read("rope_freqs.weight");
  const std::string src = f.path() + ": rope_freqs.weight";
  const int64_t half = c.head_dim / 2;
  if (rf.numel() != half)
    throw Error(src + " has " + std::to_string(rf.numel()) + " entries, expected head_dim/2 = " + std::to_string(half));
  bool all_one = true;
  for (int64_t i = 0; i < half; ++i) {
    if (!(std::isfinite(rf.data[i]) && rf.data[i] > 0))
      throw Error(src + " entry " + std::to_string(i) + " is " + std::to_string(rf.data[i]) +
                  " (divisors must be positive and finite)");
    all_one = all_one && rf.data[i] == 1.0f;
  }
  if (all_one) return;
  std::vector<double> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) inv[i] = 1.0 / std::pow(c.rope.theta, 2.0 * i / c.head_dim);
  const double factor = rf.data.back();
  std::vector<double> originals;
  const std::string okey = arch + ".rope.scaling.original_context_length";
  if (f.metadata().has(okey)) originals.push_back(static_cast<double>(f.metadata().get_int(okey)));
  for (int64_t i = 0; i < half && factor > 1; ++i) {
    const double d = rf.data[i];
    if (d <= 1.0 + 1e-6 || d >= factor * (1 - 1e-6)) continue;
    const double s = (1.0 / d - 1.0 / factor) / (1.0 - 1.0 / factor);  // the smoothing weight
    originals.push_back(std::round(2 * M_PI / inv[i] * (1.0 + 3.0 * s)));
    break;
  }
  originals.push_back(8192);  // the converter's default
  for (double orig : originals) {
    bool match = orig > 0 && orig < 1e15;  // a hostile file's inferred context stays an int64
    for (int64_t i = 0; i < half && match; ++i) {
      const double want = llama3_divisor(inv[i], factor, orig);
      match = std::fabs(rf.data[i] - want) <= 1e-6 * want;
    }
    if (!match) continue;
    c.rope.scaling = RopeScalingType::llama3;
    c.rope.factor = factor;
    c.rope.low_freq_factor = 1.0;
    c.rope.high_freq_factor = 4.0;
    c.rope.original_max_position = static_cast<int64_t>(orig);
    return;
  }
  c.rope.scaling = RopeScalingType::freq_factors;
  c.rope.freq_divisors.assign(rf.data.begin(), rf.data.end());
}

}  // namespace

ModelConfig gguf_model_config(const GgufFile& f) {
  const GgufMetadata& md = f.metadata();
  const std::string src = f.path();
  const std::string arch = md.get_string("general.architecture");
  const ModelFamily* family = family_by_gguf(arch);
  if (!family)
    throw Error(src + ": general.architecture '" + arch + "' is not supported (" + supported_gguf_architectures() + ")");
  auto key = [&](const char* k) { return arch + "." + k; };
  auto pos = [&](const std::string& k) {
    const int64_t v = md.get_int(k);
    if (v <= 0) throw Error(src + ": metadata key '" + k + "' must be positive, got " + std::to_string(v));
    return v;
  };
  ModelConfig c;
  c.architecture = family->hf_architecture;
  c.hidden_size = pos(key("embedding_length"));
  c.n_layers = pos(key("block_count"));
  c.n_heads = pos(key("attention.head_count"));
  c.n_kv_heads = md.has(key("attention.head_count_kv")) ? pos(key("attention.head_count_kv")) : c.n_heads;
  c.intermediate_size = pos(key("feed_forward_length"));
  if (md.has(key("attention.key_length"))) {  // Qwen3: head_dim need not be hidden / heads
    c.head_dim = pos(key("attention.key_length"));
    if (md.has(key("attention.value_length")) && md.get_int(key("attention.value_length")) != c.head_dim)
      throw Error(src + ": " + key("attention.value_length") + " differs from key_length (not supported)");
  } else {
    if (c.hidden_size % c.n_heads != 0)
      throw Error(src + ": " + key("embedding_length") + " is not divisible by " + key("attention.head_count"));
    c.head_dim = c.hidden_size / c.n_heads;
  }
  c.rms_norm_eps = md.get_float(key("attention.layer_norm_rms_epsilon"));
  c.rope.theta = md.get_float_or(key("rope.freq_base"), 10000.0);
  if (md.has(key("rope.dimension_count")) && md.get_int(key("rope.dimension_count")) != c.head_dim)
    throw Error(src + ": " + key("rope.dimension_count") + " " + std::to_string(md.get_int(key("rope.dimension_count"))) +
                " differs from head_dim " + std::to_string(c.head_dim) + " (partial rotary is not supported)");
  c.max_position_embeddings = md.get_int_or(key("context_length"), 0);

  const std::string scaling = md.get_string_or(key("rope.scaling.type"), "none");
  if (scaling == "linear") {
    c.rope.scaling = RopeScalingType::linear;
    c.rope.factor = md.get_float(key("rope.scaling.factor"));
  } else if (scaling == "yarn") {
    // llama.cpp's YaRN keys; the attention factor defaults as in transformers.
    c.rope.scaling = RopeScalingType::yarn;
    c.rope.factor = md.get_float(key("rope.scaling.factor"));
    c.rope.original_max_position = pos(key("rope.scaling.original_context_length"));
    c.rope.beta_fast = md.get_float_or(key("rope.scaling.yarn_beta_fast"), 32.0);
    c.rope.beta_slow = md.get_float_or(key("rope.scaling.yarn_beta_slow"), 1.0);
    c.rope.attention_factor = md.get_float_or(key("rope.scaling.attn_factor"), yarn_default_attention_factor(c.rope.factor));
  } else if (scaling != "none") {
    throw Error(src + ": " + key("rope.scaling.type") + " '" + scaling + "' is not supported (none, linear, yarn)");
  } else if (md.has(key("rope.scale_linear"))) {  // older converters
    c.rope.scaling = RopeScalingType::linear;
    c.rope.factor = md.get_float(key("rope.scale_linear"));
  }
  if (f.find("rope_freqs.weight")) {
    if (c.rope.scaling != RopeScalingType::none)
      throw Error(src + ": both rope_freqs.weight and " + key("rope.scaling.type") + " are set");
    rope_from_freqs(f, arch, c);
  }

  const GgufTensorInfo* embd = f.find("token_embd.weight");
  if (!embd) throw Error(src + ": tensor 'token_embd.weight' is missing");
  if (embd->ne.size() != 2) throw Error(src + ": tensor 'token_embd.weight' is not 2-D");
  c.vocab_size = embd->ne[1];
  if (md.has("tokenizer.ggml.tokens") && md.array_size("tokenizer.ggml.tokens") != static_cast<size_t>(c.vocab_size))
    throw Error(src + ": tokenizer.ggml.tokens has " + std::to_string(md.array_size("tokenizer.ggml.tokens")) +
                " entries but token_embd.weight has " + std::to_string(c.vocab_size) + " rows");
  c.tie_word_embeddings = f.find("output.weight") == nullptr;
  // The family decides what must be there (check_model_tensors reports it missing).
  c.qkv_bias = family->always_qkv_bias || f.find("blk.0.attn_q.bias") != nullptr;
  c.o_bias = f.find("blk.0.attn_output.bias") != nullptr;
  c.qk_norm = family->qk_norm;
  c.bos_token_id = md.get_int_or("tokenizer.ggml.bos_token_id", -1);
  // End of generation: eos, and the chat end-of-turn tokens llama.cpp also stops at.
  for (const char* k : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    if (!md.has(k)) continue;
    const int64_t id = md.get_int(k);
    if (std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), id) == c.eos_token_ids.end())
      c.eos_token_ids.push_back(id);
  }
  validate_model_config(c, src);
  return c;
}

}  // namespace ringinfer
