// safetensors: F32/F16/BF16 read back exactly against values decoded independently,
// row/column ranges, sharded checkpoints, a tiny HF model folder, and one specific
// message for each malformed file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "gtest_helpers.h"
#include "model_files.h"
#include "ringinfer/error.h"
#include "ringinfer/model_loader.h"
#include "ringinfer/safetensors.h"
#include "test_paths.h"

using nlohmann::json;
using namespace ringinfer;
using namespace ringinfer::test;

namespace {

// Exact comparison: every element converted by the library equals the value decoded in double.
void expect_exact(const HostTensor& t, const std::vector<double>& want, const std::string& what) {
  ASSERT_EQ(t.data.size(), want.size()) << what;
  size_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) bad += static_cast<double>(t.data[i]) != want[i];
  EXPECT_EQ(bad, 0u) << what;
}


class SafetensorsTest : public ::testing::Test {
 protected:
  std::string dir = make_temp_dir("st");
  std::mt19937_64 rng{static_cast<uint64_t>(::testing::UnitTest::GetInstance()->random_seed()) + 17};
};

}  // namespace

TEST_F(SafetensorsTest, ReadsEachDtypeExactly) {
  std::vector<StTensor> ts = {random_st_tensor("a", "F32", {7, 5}, rng), random_st_tensor("b", "F16", {6, 9}, rng),
                              random_st_tensor("c", "BF16", {11}, rng), random_st_tensor("d", "F16", {3, 4}, rng)};
  // F16 edge cases: smallest subnormal, largest subnormal, largest normal, -0, -2.
  const uint16_t edge[] = {0x0001, 0x03ff, 0x7bff, 0x8000, 0xc000};
  for (int i = 0; i < 5; ++i) {
    ts[3].bytes[2 * i] = edge[i] & 0xff, ts[3].bytes[2 * i + 1] = edge[i] >> 8;
    ts[3].values[i] = fp16_value(edge[i]);
  }
  write_safetensors(dir + "/m.safetensors", ts);
  SafetensorsFile f(dir + "/m.safetensors");
  EXPECT_EQ(f.tensors().size(), 4u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  for (const auto& t : ts) {
    HostTensor r = f.read(t.name);
    EXPECT_EQ(r.shape, t.shape) << t.name;
    expect_exact(r, t.values, t.name + " " + t.dtype);
  }
  EXPECT_EQ(f.read("d").data[0], 5.9604644775390625e-08f);  // 2^-24, by hand
}

TEST_F(SafetensorsTest, RowAndColumnRanges) {
  const int64_t R = 12, C = 10;
  for (const char* dt : {"F32", "F16", "BF16"}) {
    StTensor t = random_st_tensor("w", dt, {R, C}, rng);
    write_safetensors(dir + "/r.safetensors", {t});
    SafetensorsFile f(dir + "/r.safetensors");
    HostTensor rows = f.read_rows("w", 3, 8);
    EXPECT_EQ(rows.shape, (std::vector<int64_t>{5, C}));
    expect_exact(rows, std::vector<double>(t.values.begin() + 3 * C, t.values.begin() + 8 * C), "rows");
    HostTensor cols = f.read_cols("w", 2, 7);
    EXPECT_EQ(cols.shape, (std::vector<int64_t>{R, 5}));
    std::vector<double> want;
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 2; c < 7; ++c) want.push_back(t.values[r * C + c]);
    expect_exact(cols, want, "cols");
    EXPECT_EQ(error_of([&] { f.read_rows("w", 4, 13); }),
              dir + "/r.safetensors: tensor 'w': rows [4, 13) are outside its 12 rows");
    EXPECT_EQ(error_of([&] { f.read_cols("w", 6, 5); }),
              dir + "/r.safetensors: tensor 'w': columns [6, 5) are outside its 10 columns");
  }
}

TEST_F(SafetensorsTest, MalformedFiles) {
  const std::string p = dir + "/bad.safetensors";
  auto open_err = [&] { return error_of([&] { SafetensorsFile f(p); }); };
  std::vector<uint8_t> data(24, 0);  // room for a [2, 3] F32 tensor

  write_bytes(p, {1, 2, 3, 4, 5});
  EXPECT_EQ(open_err(), p + ": file is 5 bytes, shorter than the 8-byte header length");

  std::vector<uint8_t> b;
  put_le(b, 1000, 8);
  b.resize(50, ' ');
  write_bytes(p, b);
  EXPECT_EQ(open_err(), p + ": header length 1000 is larger than the file (50 bytes)");

  b.clear();
  put_le(b, 200ull << 20, 8);
  write_bytes(p, b);
  EXPECT_EQ(open_err(), p + ": header length 209715200 is absurd (> 100 MB); not a safetensors file?");

  struct Case {
    std::string header, message;
  };
  const std::vector<Case> cases = {
      {"{\"a\": ", "header is not valid JSON"},
      {"[1, 2]", "header is not a JSON object"},
      {R"({"a": {"dtype": "F32", "shape": [6E888], "data_offsets": [0, 24]}})", "header is not valid JSON"},
      {R"({"a": 5})", "tensor 'a' is not a JSON object"},
      {R"({"a": {"shape": [2, 3], "data_offsets": [0, 24]}})", "tensor 'a' has no dtype string"},
      {R"({"a": {"dtype": "Q7", "shape": [2, 3], "data_offsets": [0, 24]}})", "tensor 'a' has unknown dtype 'Q7'"},
      {R"({"a": {"dtype": "F32", "shape": [2, -3], "data_offsets": [0, 24]}})",
       "tensor 'a': shape is not a list of non-negative integers"},
      {R"({"a": {"dtype": "F32", "shape": [2, 3.5], "data_offsets": [0, 24]}})",
       "tensor 'a': shape is not a list of non-negative integers"},
      {R"({"a": {"dtype": "F32", "shape": "2x3", "data_offsets": [0, 24]}})",
       "tensor 'a': shape is not a list of non-negative integers"},
      {R"({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0]}})", "tensor 'a': data_offsets is not [begin, end]"},
      {R"({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, -24]}})",
       "tensor 'a': data_offsets is not [begin, end]"},
      {R"({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [8, 32]}})",
       "tensor 'a': data_offsets [8, 32] are not within the data section (24 bytes)"},
      {R"({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [20, 4]}})",
       "tensor 'a': data_offsets [20, 4] are not within the data section (24 bytes)"},
      {R"({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})",
       "tensor 'a': data_offsets span 20 bytes but shape [2, 3] of F32 needs 24"},
      {R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 24]}})",
       "tensor 'a': data_offsets span 24 bytes but shape [4294967296, 4294967296] of F32 needs more than the file"},
      {R"({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
           "b": {"dtype": "F16", "shape": [4], "data_offsets": [12, 20]}})",
       "tensors 'a' and 'b' overlap in the data section"},
  };
  for (const auto& c : cases) {
    write_safetensors_raw(p, c.header, data);
    EXPECT_EQ(open_err(), p + ": " + c.message) << c.header;
  }
  // A dtype the header may carry but weights cannot use is refused at read time.
  write_safetensors_raw(p, R"({"a": {"dtype": "I32", "shape": [2, 3], "data_offsets": [0, 24]}})", data);
  SafetensorsFile f(p);
  EXPECT_EQ(error_of([&] { f.read("a"); }), p + ": tensor 'a': dtype I32 cannot be read as weights (F32, F16, BF16, F64)");
  EXPECT_EQ(error_of([&] { f.read("zz"); }), p + ": tensor 'zz' is missing");
}

TEST_F(SafetensorsTest, TruncationsNeverCrash) {
  write_safetensors(dir + "/t.safetensors", {random_st_tensor("a", "F16", {3, 4}, rng),
                                             random_st_tensor("b", "F32", {5}, rng)});
  const std::vector<uint8_t> full = read_bytes(dir + "/t.safetensors");
  const std::string p = dir + "/cut.safetensors";
  for (size_t n = 0; n < full.size(); ++n) {
    write_bytes(p, std::vector<uint8_t>(full.begin(), full.begin() + n));
    EXPECT_NE(error_of([&] { SafetensorsFile f(p); f.read("a"); f.read("b"); }), "") << "length " << n;
  }
}

TEST_F(SafetensorsTest, LoadsTinyModelSingleAndSharded) {
  for (int shards : {1, 3}) {
    TinyModel m = make_tiny_model(rng, 2, /*qkv_bias=*/shards == 3, /*tied=*/shards == 1);
    const std::string d = dir + "/hf" + std::to_string(shards);
    write_tiny_hf(d, m, shards);
    std::ofstream(d + "/tokenizer.json") << "{}";
    LoadedModel lm = load_model(d);
    EXPECT_EQ(lm.format, ModelFormat::safetensors);
    EXPECT_EQ(lm.tokenizer_json, d + "/tokenizer.json");
    EXPECT_EQ(lm.config.n_layers, 2);
    EXPECT_EQ(lm.config.qkv_bias, shards == 3);
    ASSERT_EQ(lm.weights.layers.size(), 2u);
    auto same = [&](const HostTensor& t, const std::string& name) {
      EXPECT_EQ(t.shape, m.shapes.at(name)) << name;
      EXPECT_EQ(t.data, m.values.at(name)) << name;
    };
    same(lm.weights.embed, "model.embed_tokens.weight");
    same(lm.weights.final_norm, "model.norm.weight");
    if (shards == 1) {
      EXPECT_TRUE(lm.weights.lm_head.empty());
    } else {
      same(lm.weights.lm_head, "lm_head.weight");
    }
    for (int l = 0; l < 2; ++l) {
      const auto& L = lm.weights.layers[l];
      auto n = [&](const char* s) { return layer_tensor_name(l, s); };
      same(L.attn_norm, n("input_layernorm.weight"));
      same(L.wq, n("self_attn.q_proj.weight"));
      same(L.wk, n("self_attn.k_proj.weight"));
      same(L.wv, n("self_attn.v_proj.weight"));
      same(L.wo, n("self_attn.o_proj.weight"));
      same(L.ffn_norm, n("post_attention_layernorm.weight"));
      same(L.w_gate, n("mlp.gate_proj.weight"));
      same(L.w_up, n("mlp.up_proj.weight"));
      same(L.w_down, n("mlp.down_proj.weight"));
      if (shards == 3) {
        same(L.bq, n("self_attn.q_proj.bias"));
        same(L.bk, n("self_attn.k_proj.bias"));
        same(L.bv, n("self_attn.v_proj.bias"));
      }
    }
  }
}

TEST_F(SafetensorsTest, ModelFolderErrors) {
  TinyModel m = make_tiny_model(rng, 2, false, false);
  const std::string d = dir + "/hf";
  auto load_err = [&] { return error_of([&] { load_model(d); }); };

  // A missing tensor.
  TinyModel missing = m;
  missing.shapes.erase("model.layers.1.mlp.up_proj.weight");
  write_tiny_hf(d, missing);
  EXPECT_EQ(load_err(), d + ": tensor 'model.layers.1.mlp.up_proj.weight' is missing");

  // A corrupt layer count fails on the first missing layer, before allocating layers.
  TinyModel many = m;
  many.config["num_hidden_layers"] = 2000000000;
  write_tiny_hf(d, many);
  EXPECT_EQ(load_err(), d + ": tensor 'model.layers.2.input_layernorm.weight' is missing");

  // A shape that disagrees with the config.
  TinyModel wrong = m;
  wrong.shapes["model.layers.0.self_attn.k_proj.weight"] = {64, 32};
  write_tiny_hf(d, wrong);
  EXPECT_EQ(load_err(), d + "/config.json does not match the weights: tensor 'model.layers.0.self_attn.k_proj.weight' "
                            "has shape [64, 32] but the config implies [32, 64]");

  // A sharded index that points at the wrong shard, or outside the folder.
  std::filesystem::remove_all(d);
  write_tiny_hf(d, m, 2);
  const std::string idx = d + "/model.safetensors.index.json";
  json j = json::parse(std::ifstream(idx));
  const std::string name = "model.norm.weight";
  const std::string other = j["weight_map"][name] == "model-00001-of-00002.safetensors"
                                ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
  j["weight_map"][name] = other;
  std::ofstream(idx) << j.dump();
  EXPECT_EQ(load_err(), idx + ": tensor 'model.norm.weight' is mapped to " + other + ", which does not contain it");
  j["weight_map"][name] = "../elsewhere.safetensors";
  std::ofstream(idx) << j.dump();
  EXPECT_EQ(load_err(), idx + ": weight_map['model.norm.weight'] = '../elsewhere.safetensors' is not a file name in the folder");
  std::ofstream(idx) << R"({"metadata": {}})";
  EXPECT_EQ(load_err(), idx + ": weight_map is missing or not an object");

  EXPECT_EQ(error_of([&] { load_model(dir + "/nothing"); }), dir + "/nothing: no such file or folder");
  std::filesystem::create_directories(dir + "/empty");
  EXPECT_EQ(error_of([&] { load_model(dir + "/empty"); }),
            dir + "/empty: no config.json (expected a Hugging Face model folder or a .gguf file)");
}
