#pragma once
// ModelConfig from a Hugging Face config.json (the families of model_family.h: Llama,
// Mistral, Qwen2, Qwen3), and the consistency checks every loader applies to a config.
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "ringinfer/model.h"

namespace ringinfer {

// Reads and validates config.json at path. Throws Error("<path>: <key> ...") on an
// unknown architecture, a missing required key, a wrong JSON type or an inconsistent size.
ModelConfig parse_model_config(const std::string& path);

// The same from parsed JSON; source names the file in error messages.
ModelConfig model_config_from_json(const nlohmann::json& j, const std::string& source);

// Checks sizes are positive, n_heads % n_kv_heads == 0, head_dim even, eos ids in the
// vocabulary range, rope scaling factors sane. Throws Error("<source>: ...").
void validate_model_config(const ModelConfig& c, const std::string& source);

// YaRN's default attention factor (transformers' get_mscale): 0.1 mscale ln(factor) + 1,
// 1 when factor <= 1.
double yarn_default_attention_factor(double factor, double mscale = 1.0);

// The RoPE settings for logs and plan: "theta 500000, llama3 x8 (original 8192, low 1, high 4)".
std::string describe_rope(const RopeConfig& rope);

// One line for logs: "LlamaForCausalLM: 30 layers, hidden 576, heads 9/3 x 64, ffn 1536, vocab 49152, ...".
std::string describe(const ModelConfig& c);

}  // namespace ringinfer
