// parse_model_config: the four supported architectures, rope_scaling variants, and a
// one-line error naming the file and key for each malformed config.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ringinfer/error.h"
#include "ringinfer/model_config.h"
#include "test_paths.h"

using nlohmann::json;
using ringinfer::ModelConfig;
using ringinfer::RopeScalingType;

namespace {

json llama_json() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
    "vocab_size": 128256, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": false, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
    "max_position_embeddings": 131072, "attention_bias": false, "hidden_act": "silu"})");
}

class ModelConfigTest : public ::testing::Test {
 protected:
  std::string dir = ringinfer::test::make_temp_dir("cfg");
  std::string write(const json& j) {
    std::string p = dir + "/config.json";
    std::ofstream(p) << j.dump();
    return p;
  }
  // Parses j and returns the error message ("" when it parsed).
  std::string error_of(const json& j) {
    try {
      ringinfer::parse_model_config(write(j));
    } catch (const ringinfer::Error& e) {
      return e.what();
    }
    return "";
  }
};

}  // namespace

TEST_F(ModelConfigTest, Llama31) {
  ModelConfig c = ringinfer::parse_model_config(write(llama_json()));
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.n_layers, 32);
  EXPECT_EQ(c.n_heads, 32);
  EXPECT_EQ(c.n_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope.theta, 500000.0);
  EXPECT_EQ(c.rope.scaling, RopeScalingType::llama3);
  EXPECT_DOUBLE_EQ(c.rope.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope.original_max_position, 8192);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_EQ(c.sliding_window, 0);
}

TEST_F(ModelConfigTest, Qwen2ImpliesQkvBiasAndDefaults) {
  json j = {{"architectures", {"Qwen2ForCausalLM"}}, {"hidden_size", 896}, {"num_hidden_layers", 24},
            {"num_attention_heads", 14}, {"num_key_value_heads", 2}, {"intermediate_size", 4864},
            {"vocab_size", 151936}, {"tie_word_embeddings", true}, {"eos_token_id", 151645},
            {"bos_token_id", nullptr}, {"rope_scaling", nullptr}, {"max_position_embeddings", 32768},
            {"use_sliding_window", false}, {"sliding_window", 32768}};
  ModelConfig c = ringinfer::parse_model_config(write(j));
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.bos_token_id, -1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{151645});
  EXPECT_EQ(c.rope.scaling, RopeScalingType::none);
  EXPECT_DOUBLE_EQ(c.rope.theta, 10000.0);  // absent: the transformers default
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.sliding_window, 0);  // use_sliding_window false
}

TEST_F(ModelConfigTest, MistralExplicitHeadDimLinearRopeAndAttentionBias) {
  json j = llama_json();
  j["architectures"] = {"MistralForCausalLM"};
  j["head_dim"] = 96;  // not hidden / heads
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.5}};
  j["sliding_window"] = 4096;
  j["attention_bias"] = true;
  j["num_key_value_heads"] = nullptr;  // null: defaults to the head count
  ModelConfig c = ringinfer::parse_model_config(write(j));
  EXPECT_EQ(c.head_dim, 96);
  EXPECT_EQ(c.n_kv_heads, 32);
  EXPECT_EQ(c.rope.scaling, RopeScalingType::linear);
  EXPECT_DOUBLE_EQ(c.rope.factor, 2.5);
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_TRUE(c.o_bias);  // Llama-style attention_bias covers o_proj too
}

// Qwen3: QK-norm, an explicit head_dim, no q/k/v bias unless attention_bias; YaRN read
// as transformers' _compute_yarn_parameters reads it.
TEST_F(ModelConfigTest, Qwen3QkNormHeadDimAndYarn) {
  json j = {{"architectures", {"Qwen3ForCausalLM"}}, {"hidden_size", 2560}, {"num_hidden_layers", 36},
            {"num_attention_heads", 32}, {"num_key_value_heads", 8}, {"head_dim", 128},
            {"intermediate_size", 9728}, {"vocab_size", 151936}, {"rope_theta", 1000000.0},
            {"max_position_embeddings", 131072}, {"attention_bias", false}, {"tie_word_embeddings", true},
            {"use_sliding_window", false}, {"sliding_window", nullptr},
            {"rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}}}};
  ModelConfig c = ringinfer::parse_model_config(write(j));
  EXPECT_EQ(c.architecture, "Qwen3ForCausalLM");
  EXPECT_EQ(c.head_dim, 128);  // not 2560 / 32
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_EQ(c.rope.scaling, RopeScalingType::yarn);
  EXPECT_DOUBLE_EQ(c.rope.factor, 4.0);
  EXPECT_EQ(c.rope.original_max_position, 32768);
  EXPECT_DOUBLE_EQ(c.rope.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(c.rope.beta_slow, 1.0);
  EXPECT_TRUE(c.rope.truncate);
  EXPECT_DOUBLE_EQ(c.rope.attention_factor, 0.1 * std::log(4.0) + 1.0);
  EXPECT_NE(ringinfer::describe(c).find("yarn x4 (original 32768, beta 32/1"), std::string::npos) << ringinfer::describe(c);
  EXPECT_NE(ringinfer::describe(c).find("qk norm"), std::string::npos);

  // The factor as written, whatever max_position_embeddings / original says (transformers
  // 5 warns and does the same); without one, that ratio.
  j["max_position_embeddings"] = 40960;
  c = ringinfer::parse_model_config(write(j));
  EXPECT_DOUBLE_EQ(c.rope.factor, 4.0);
  EXPECT_DOUBLE_EQ(c.rope.attention_factor, 0.1 * std::log(4.0) + 1.0);
  j["rope_scaling"].erase("factor");
  c = ringinfer::parse_model_config(write(j));
  EXPECT_DOUBLE_EQ(c.rope.factor, 1.25);
  EXPECT_DOUBLE_EQ(c.rope.attention_factor, 0.1 * std::log(1.25) + 1.0);
  // Without it, the original context is max_position_embeddings and the factor as written;
  // beta_fast/slow, truncate and attention_factor as given.
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 8.0}, {"beta_fast", 16.0}, {"beta_slow", 2.0},
                       {"truncate", false}, {"attention_factor", 0.75}};
  j["attention_bias"] = true;
  c = ringinfer::parse_model_config(write(j));
  EXPECT_DOUBLE_EQ(c.rope.factor, 8.0);
  EXPECT_EQ(c.rope.original_max_position, 40960);
  EXPECT_DOUBLE_EQ(c.rope.beta_fast, 16.0);
  EXPECT_DOUBLE_EQ(c.rope.beta_slow, 2.0);
  EXPECT_FALSE(c.rope.truncate);
  EXPECT_DOUBLE_EQ(c.rope.attention_factor, 0.75);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_TRUE(c.o_bias);
  // DeepSeek's mscale / mscale_all_dim ratio.
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 8.0}, {"mscale", 1.0}, {"mscale_all_dim", 0.5}};
  c = ringinfer::parse_model_config(write(j));
  EXPECT_DOUBLE_EQ(c.rope.attention_factor, (0.1 * std::log(8.0) + 1.0) / (0.05 * std::log(8.0) + 1.0));
  // Older configs with only model_type.
  j.erase("architectures");
  j["model_type"] = "qwen3";
  EXPECT_EQ(ringinfer::parse_model_config(write(j)).architecture, "Qwen3ForCausalLM");
}

TEST_F(ModelConfigTest, RopeDefaultTypeIsNone) {
  json j = llama_json();
  j["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_EQ(ringinfer::parse_model_config(write(j)).rope.scaling, RopeScalingType::none);
}

TEST_F(ModelConfigTest, Errors) {
  const std::string p = dir + "/config.json";
  struct Case {
    std::function<void(json&)> edit;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](json& j) { j["architectures"] = {"GPT2LMHeadModel"}; },
       "architectures 'GPT2LMHeadModel' is not supported (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, "
       "Qwen3ForCausalLM)"},
      {[](json& j) { j.erase("architectures"); }, "architectures is missing (and there is no model_type)"},
      {[](json& j) { j["architectures"] = "LlamaForCausalLM"; },
       "architectures must be a non-empty list of strings, got \"LlamaForCausalLM\""},
      {[](json& j) { j.erase("hidden_size"); }, "hidden_size is missing"},
      {[](json& j) { j.erase("vocab_size"); }, "vocab_size is missing"},
      {[](json& j) { j["hidden_size"] = "4096"; }, "hidden_size must be an integer, got string \"4096\""},
      {[](json& j) { j["num_hidden_layers"] = 2.5; }, "num_hidden_layers must be an integer, got float 2.5"},
      {[](json& j) { j["intermediate_size"] = 0; }, "intermediate_size must be positive, got 0"},
      {[](json& j) { j["num_attention_heads"] = -4; }, "num_attention_heads must be positive, got -4"},
      {[](json& j) { j["num_key_value_heads"] = 5; },
       "num_attention_heads 32 is not divisible by num_key_value_heads 5"},
      {[](json& j) { j["num_attention_heads"] = 30; j["num_key_value_heads"] = 6; },
       "hidden_size 4096 is not divisible by num_attention_heads 30 (and there is no head_dim)"},
      {[](json& j) { j["rms_norm_eps"] = "1e-5"; }, "rms_norm_eps must be a number, got string \"1e-5\""},
      {[](json& j) { j["tie_word_embeddings"] = 1; }, "tie_word_embeddings must be true or false, got number 1"},
      {[](json& j) { j["rope_scaling"] = {{"rope_type", "yarn"}}; },
       "rope_scaling.factor is missing for rope type 'yarn'"},
      {[](json& j) {
         j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
         j.erase("max_position_embeddings");
       },
       "max_position_embeddings is missing (YaRN needs the original context)"},
      {[](json& j) { j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"beta_fast", 0.5}}; },
       "rope_scaling needs 0 < beta_slow <= beta_fast"},
      {[](json& j) { j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"truncate", "no"}}; },
       "rope_scaling.truncate must be true or false, got string"},
      {[](json& j) { j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"mscale", "1"}}; },
       "rope_scaling.mscale must be a number, got string \"1\""},
      {[](json& j) { j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 4.0}}; },
       "rope_scaling type 'dynamic' is not supported (linear, llama3, yarn)"},
      {[](json& j) { j["rope_scaling"].erase("low_freq_factor"); },
       "rope_scaling.low_freq_factor is missing for rope type 'llama3'"},
      {[](json& j) { j["rope_scaling"] = {{"factor", 2.0}}; }, "rope_scaling has no type or rope_type"},
      {[](json& j) { j["rope_scaling"] = 8; }, "rope_scaling must be an object or null, got number"},
      {[](json& j) { j["eos_token_id"] = {1, "2"}; }, "eos_token_id[1] must be an integer, got string \"2\""},
      {[](json& j) { j["eos_token_id"] = 200000; }, "eos_token_id 200000 is outside the vocabulary (128256)"},
      {[](json& j) { j["hidden_act"] = "gelu"; }, "hidden_act 'gelu' is not supported (silu)"},
      {[](json& j) { j["head_dim"] = 127; }, "head_dim 127 must be even for RoPE"},
  };
  for (const auto& c : cases) {
    json j = llama_json();
    c.edit(j);
    EXPECT_EQ(error_of(j), p + ": " + c.message) << j.dump();
  }
}

TEST_F(ModelConfigTest, FileErrors) {
  const std::string p = dir + "/config.json";
  std::ofstream(p) << "{\"hidden_size\": 4";
  try {
    ringinfer::parse_model_config(p);
    FAIL();
  } catch (const ringinfer::Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(p + ": not valid JSON", 0), 0u) << e.what();
  }
  EXPECT_EQ(error_of(json::array()), p + ": not a JSON object");
  try {
    ringinfer::parse_model_config(dir + "/absent.json");
    FAIL();
  } catch (const ringinfer::Error& e) {
    EXPECT_EQ(std::string(e.what()), dir + "/absent.json: cannot open");
  }
}
