#include "ringinfer/model_config.h"

#include <cmath>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ringinfer/error.h"
#include "ringinfer/model_family.h"

namespace ringinfer {
namespace {

using nlohmann::json;

std::string type_name(const json& v) { return v.is_number_float() ? "float" : v.type_name(); }

// Accessors: each names the file and key when the key is missing or of the wrong type.
// A key present as null counts as absent (HF writes "head_dim": null and the like).
struct Reader {
  const json& j;
  const std::string& src;

  bool has(const char* key) const { return j.contains(key) && !j.at(key).is_null(); }

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw Error(src + ": " + key + " " + what);
  }

  int64_t integer(const json& v, const std::string& key) const {
    if (v.is_number_integer()) return v.get<int64_t>();
    // Some writers emit 576.0; accept integral floats, refuse 576.5.
    if (v.is_number_float()) {
      const double d = v.get<double>();
      // In range first: casting a double outside int64 is undefined behaviour.
      if (std::isfinite(d) && std::fabs(d) < 9.0e18 && d == std::trunc(d)) return static_cast<int64_t>(d);
    }
    fail(key, "must be an integer, got " + type_name(v) + " " + v.dump());
  }
  int64_t req_int(const char* key) const {
    if (!has(key)) fail(key, "is missing");
    return integer(j.at(key), key);
  }
  int64_t opt_int(const char* key, int64_t dflt) const { return has(key) ? integer(j.at(key), key) : dflt; }
  int64_t positive(const char* key) const {
    int64_t v = req_int(key);
    if (v <= 0) fail(key, "must be positive, got " + std::to_string(v));
    return v;
  }
  double number(const json& v, const std::string& key) const {
    if (!v.is_number()) fail(key, "must be a number, got " + type_name(v) + " " + v.dump());
    return v.get<double>();
  }
  double opt_num(const char* key, double dflt) const { return has(key) ? number(j.at(key), key) : dflt; }
  bool opt_bool(const char* key, bool dflt) const {
    if (!has(key)) return dflt;
    const json& v = j.at(key);
    if (!v.is_boolean()) fail(key, "must be true or false, got " + type_name(v) + " " + v.dump());
    return v.get<bool>();
  }
  std::string opt_str(const char* key, const std::string& dflt) const {
    if (!has(key)) return dflt;
    const json& v = j.at(key);
    if (!v.is_string()) fail(key, "must be a string, got " + type_name(v) + " " + v.dump());
    return v.get<std::string>();
  }
};

const ModelFamily& family_of_config(const Reader& r) {
  if (r.has("architectures")) {
    const json& a = r.j.at("architectures");
    if (!a.is_array() || a.empty() || !a.at(0).is_string())
      r.fail("architectures", "must be a non-empty list of strings, got " + a.dump());
    const std::string arch = a.at(0).get<std::string>();
    if (const ModelFamily* f = family_by_architecture(arch)) return *f;
    r.fail("architectures", "'" + arch + "' is not supported (" + supported_architectures() + ")");
  }
  // Older configs carry only model_type.
  const std::string mt = r.opt_str("model_type", "");
  if (mt.empty()) r.fail("architectures", "is missing (and there is no model_type)");
  if (const ModelFamily* f = family_by_model_type(mt)) return *f;
  r.fail("model_type", "'" + mt + "' is not supported (" + supported_model_types() + ")");
}

RopeConfig parse_rope(const Reader& r) {
  RopeConfig rope;
  rope.theta = r.opt_num("rope_theta", 10000.0);
  if (!r.has("rope_scaling")) return rope;
  const json& s = r.j.at("rope_scaling");
  if (!s.is_object()) r.fail("rope_scaling", "must be an object or null, got " + type_name(s));
  Reader sr{s, r.src};
  // transformers renamed "type" to "rope_type"; configs carry either or both.
  std::string type = sr.opt_str("rope_type", sr.opt_str("type", ""));
  auto need = [&](const char* key) {
    if (!sr.has(key)) r.fail(std::string("rope_scaling.") + key, "is missing for rope type '" + type + "'");
    return sr.number(s.at(key), std::string("rope_scaling.") + key);
  };
  if (type == "default") return rope;
  auto original = [&](const char* key) {
    const double omp = need(key);
    if (omp <= 0 || omp > 9.0e15 || omp != std::trunc(omp))
      r.fail(std::string("rope_scaling.") + key, "must be a positive integer");
    return static_cast<int64_t>(omp);
  };
  if (type == "linear") {
    rope.scaling = RopeScalingType::linear;
    rope.factor = need("factor");
  } else if (type == "llama3") {
    rope.scaling = RopeScalingType::llama3;
    rope.factor = need("factor");
    rope.low_freq_factor = need("low_freq_factor");
    rope.high_freq_factor = need("high_freq_factor");
    rope.original_max_position = original("original_max_position_embeddings");
  } else if (type == "yarn") {
    // transformers' _compute_yarn_parameters (modeling_rope_utils, v5): the original
    // context comes from rope_scaling, else max_position_embeddings; the factor as
    // written, else max_position_embeddings / original (DeepSeek-V3's convention; some
    // 4.x versions took that ratio even over a written factor).
    rope.scaling = RopeScalingType::yarn;
    const int64_t max_pos = r.has("max_position_embeddings") ? r.positive("max_position_embeddings") : 0;
    if (sr.has("original_max_position_embeddings")) {
      rope.original_max_position = original("original_max_position_embeddings");
    } else {
      if (max_pos <= 0) r.fail("max_position_embeddings", "is missing (YaRN needs the original context)");
      rope.original_max_position = max_pos;
    }
    if (sr.has("factor") || !sr.has("original_max_position_embeddings") || max_pos <= 0)
      rope.factor = need("factor");
    else
      rope.factor = static_cast<double>(max_pos) / static_cast<double>(rope.original_max_position);
    rope.beta_fast = sr.has("beta_fast") ? need("beta_fast") : 32.0;
    rope.beta_slow = sr.has("beta_slow") ? need("beta_slow") : 1.0;
    if (sr.has("truncate") && !s.at("truncate").is_boolean())
      r.fail("rope_scaling.truncate", "must be true or false, got " + type_name(s.at("truncate")));
    rope.truncate = sr.opt_bool("truncate", true);
    if (sr.has("attention_factor")) {
      rope.attention_factor = need("attention_factor");
    } else {
      const double mscale = sr.has("mscale") ? need("mscale") : 0.0;
      const double mscale_all = sr.has("mscale_all_dim") ? need("mscale_all_dim") : 0.0;
      rope.attention_factor = mscale != 0 && mscale_all != 0
                                  ? yarn_default_attention_factor(rope.factor, mscale) /
                                        yarn_default_attention_factor(rope.factor, mscale_all)
                                  : yarn_default_attention_factor(rope.factor);
    }
  } else if (type.empty()) {
    r.fail("rope_scaling", "has no type or rope_type");
  } else {
    r.fail("rope_scaling", "type '" + type + "' is not supported (linear, llama3, yarn)");
  }
  return rope;
}

}  // namespace

ModelConfig model_config_from_json(const json& j, const std::string& src) {
  if (!j.is_object()) throw Error(src + ": not a JSON object");
  Reader r{j, src};
  ModelConfig c;
  const ModelFamily& family = family_of_config(r);
  c.architecture = family.hf_architecture;

  c.hidden_size = r.positive("hidden_size");
  c.n_layers = r.positive("num_hidden_layers");
  c.n_heads = r.positive("num_attention_heads");
  c.n_kv_heads = r.has("num_key_value_heads") ? r.positive("num_key_value_heads") : c.n_heads;
  if (r.has("head_dim")) {
    c.head_dim = r.positive("head_dim");
  } else {
    if (c.hidden_size % c.n_heads != 0)
      r.fail("hidden_size", std::to_string(c.hidden_size) + " is not divisible by num_attention_heads " +
                                std::to_string(c.n_heads) + " (and there is no head_dim)");
    c.head_dim = c.hidden_size / c.n_heads;
  }
  c.intermediate_size = r.positive("intermediate_size");
  c.vocab_size = r.positive("vocab_size");
  c.rms_norm_eps = r.opt_num("rms_norm_eps", 1e-6);  // the transformers default for all three
  c.rope = parse_rope(r);

  std::string act = r.opt_str("hidden_act", "silu");
  if (act != "silu") r.fail("hidden_act", "'" + act + "' is not supported (silu)");
  if (r.opt_bool("mlp_bias", false)) r.fail("mlp_bias", "true is not supported");
  // attention_bias puts a bias on q, k, v and o (Llama, Qwen3); Qwen2 always has q, k, v
  // bias only.
  const bool attn_bias = r.opt_bool("attention_bias", false);
  c.qkv_bias = family.always_qkv_bias || attn_bias;
  c.o_bias = !family.always_qkv_bias && attn_bias;
  c.qk_norm = family.qk_norm;
  c.tie_word_embeddings = r.opt_bool("tie_word_embeddings", false);

  c.bos_token_id = r.opt_int("bos_token_id", -1);
  if (r.has("eos_token_id")) {
    const json& e = j.at("eos_token_id");
    if (e.is_array()) {
      for (size_t i = 0; i < e.size(); ++i) c.eos_token_ids.push_back(r.integer(e[i], "eos_token_id[" + std::to_string(i) + "]"));
    } else {
      c.eos_token_ids.push_back(r.integer(e, "eos_token_id"));
    }
  }
  c.max_position_embeddings = r.has("max_position_embeddings") ? r.positive("max_position_embeddings") : 0;
  // Mistral's sliding_window always applies; Qwen's only with use_sliding_window.
  if (r.has("sliding_window") && (!family.sliding_window_flag || r.opt_bool("use_sliding_window", false)))
    c.sliding_window = r.req_int("sliding_window");
  if (c.sliding_window < 0) r.fail("sliding_window", "must not be negative");

  validate_model_config(c, src);
  return c;
}

ModelConfig parse_model_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot open");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw Error(path + ": not valid JSON (" + e.what() + ")");
  }
  return model_config_from_json(j, path);
}

void validate_model_config(const ModelConfig& c, const std::string& src) {
  auto fail = [&](const std::string& what) { throw Error(src + ": " + what); };
  auto positive = [&](int64_t v, const char* name) {
    if (v <= 0) fail(std::string(name) + " must be positive, got " + std::to_string(v));
  };
  positive(c.hidden_size, "hidden_size");
  positive(c.n_layers, "num_hidden_layers");
  positive(c.n_heads, "num_attention_heads");
  positive(c.n_kv_heads, "num_key_value_heads");
  positive(c.head_dim, "head_dim");
  positive(c.intermediate_size, "intermediate_size");
  positive(c.vocab_size, "vocab_size");
  if (c.n_heads % c.n_kv_heads != 0)
    fail("num_attention_heads " + std::to_string(c.n_heads) + " is not divisible by num_key_value_heads " +
         std::to_string(c.n_kv_heads));
  if (c.head_dim % 2 != 0) fail("head_dim " + std::to_string(c.head_dim) + " must be even for RoPE");
  if (!(c.rms_norm_eps > 0)) fail("rms_norm_eps must be positive");
  if (!(c.rope.theta > 0)) fail("rope_theta must be positive");
  if (c.rope.scaling != RopeScalingType::none && !(c.rope.factor > 0))
    fail("rope_scaling.factor must be positive");
  if (c.rope.scaling == RopeScalingType::llama3 &&
      !(c.rope.low_freq_factor > 0 && c.rope.high_freq_factor > c.rope.low_freq_factor))
    fail("rope_scaling needs 0 < low_freq_factor < high_freq_factor");
  if (c.rope.scaling == RopeScalingType::yarn) {
    if (!(c.rope.original_max_position > 0)) fail("rope_scaling.original_max_position_embeddings must be positive");
    if (!(c.rope.beta_fast > 0 && c.rope.beta_slow > 0 && c.rope.beta_fast >= c.rope.beta_slow))
      fail("rope_scaling needs 0 < beta_slow <= beta_fast");
    if (!(c.rope.attention_factor > 0 && std::isfinite(c.rope.attention_factor)))
      fail("rope_scaling.attention_factor must be positive");
  }
  if (c.rope.scaling == RopeScalingType::freq_factors &&
      static_cast<int64_t>(c.rope.freq_divisors.size()) != c.head_dim / 2)
    fail("rope frequency divisors: " + std::to_string(c.rope.freq_divisors.size()) + ", expected head_dim/2");
  auto token = [&](int64_t id, const char* name) {
    if (id < -1 || id >= c.vocab_size)
      fail(std::string(name) + " " + std::to_string(id) + " is outside the vocabulary (" +
           std::to_string(c.vocab_size) + ")");
  };
  token(c.bos_token_id, "bos_token_id");
  for (int64_t e : c.eos_token_ids) {
    if (e < 0) fail("eos_token_id " + std::to_string(e) + " is negative");
    token(e, "eos_token_id");
  }
}

double yarn_default_attention_factor(double factor, double mscale) {
  return factor <= 1 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

std::string describe_rope(const RopeConfig& r) {
  std::ostringstream o;
  o << "theta " << r.theta;
  switch (r.scaling) {
    case RopeScalingType::none: break;
    case RopeScalingType::linear: o << ", linear x" << r.factor; break;
    case RopeScalingType::llama3:
      o << ", llama3 x" << r.factor << " (original " << r.original_max_position << ", low " << r.low_freq_factor
        << ", high " << r.high_freq_factor << ")";
      break;
    case RopeScalingType::yarn:
      o << ", yarn x" << r.factor << " (original " << r.original_max_position << ", beta " << r.beta_fast << "/"
        << r.beta_slow << ", attention factor " << r.attention_factor << ")";
      break;
    case RopeScalingType::freq_factors: o << ", rope_freqs divisors applied verbatim"; break;
  }
  return o.str();
}

std::string describe(const ModelConfig& c) {
  std::ostringstream o;
  o << c.architecture << ": " << c.n_layers << " layers, hidden " << c.hidden_size << ", heads " << c.n_heads
    << "/" << c.n_kv_heads << " x " << c.head_dim << ", ffn " << c.intermediate_size << ", vocab "
    << c.vocab_size << ", rope " << describe_rope(c.rope);
  o << ", eps " << c.rms_norm_eps << (c.qkv_bias ? ", qkv bias" : "") << (c.o_bias ? ", o bias" : "")
    << (c.qk_norm ? ", qk norm" : "")
    << (c.tie_word_embeddings ? ", tied embeddings" : "") << ", max positions " << c.max_position_embeddings;
  return o.str();
}

}  // namespace ringinfer
