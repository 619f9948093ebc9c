// GGUF: metadata of every value type, each supported tensor type dequantized exactly
// against an independent reference quantizer, Q/K un-permutation (a GGUF equals its HF
// original), the llama config, one message per malformed file, and every truncation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "gtest_helpers.h"
#include "model_files.h"
#include "ringinfer/backend.h"
#include "ringinfer/error.h"
#include "ringinfer/gguf.h"
#include "ringinfer/model_config.h"
#include "ringinfer/model_loader.h"
#include "ringinfer/backend.h"
#include "test_paths.h"

using namespace ringinfer;
using namespace ringinfer::test;

namespace {


size_t count_mismatches(const HostTensor& t, const std::vector<double>& want) {
  if (t.data.size() != want.size()) return want.size() + 1;
  size_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) bad += static_cast<double>(t.data[i]) != want[i];
  return bad;
}

class GgufTest : public ::testing::Test {
 protected:
  std::string dir = make_temp_dir("gguf");
  std::mt19937_64 rng{static_cast<uint64_t>(::testing::UnitTest::GetInstance()->random_seed()) + 29};
  std::string write(const std::vector<uint8_t>& bytes, const std::string& name = "m.gguf") {
    write_bytes(dir + "/" + name, bytes);
    return dir + "/" + name;
  }
  std::vector<float> randn(size_t n) {
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
  }
};

}  // namespace

TEST_F(GgufTest, MetadataOfEveryType) {
  GgufBuilder g;
  std::vector<uint8_t> b;
  g.kv_raw("u8", kU8, {200});
  g.kv_raw("i8", kI8, {0xfe});
  g.kv_raw("u16", kU16, {0x34, 0x12});
  g.kv_raw("i16", kI16, {0xff, 0xff});
  g.kv_u32("u32", 4000000000u);
  g.kv_i32("i32", -7);
  g.kv_f32("f32", 0.25f);
  g.kv_bool("bool", true);
  g.kv_str("str", "héllo");
  g.kv_u64("u64", 1ull << 40);
  b.clear(); put_le(b, static_cast<uint64_t>(-5), 8); g.kv_raw("i64", kI64, b);
  double dv = -1.5e300; uint64_t du; std::memcpy(&du, &dv, 8);
  b.clear(); put_le(b, du, 8); g.kv_raw("f64", kF64, b);
  g.kv_u64("huge", ~0ull);
  g.kv_str_array("tokenizer.ggml.tokens", {"a", "", "ccc"});
  g.kv_i32_array("tokenizer.ggml.token_type", {1, -2, 3});
  g.kv_f32_array("tokenizer.ggml.scores", {0.5f, -1.0f});
  // [[1, 2], [3]] as an array of arrays of u8.
  b.clear(); put_le(b, kArr, 4); put_le(b, 2, 8);
  put_le(b, kU8, 4); put_le(b, 2, 8); b.push_back(1); b.push_back(2);
  put_le(b, kU8, 4); put_le(b, 1, 8); b.push_back(3);
  g.kv_raw("nested", kArr, b);
  for (uint32_t version : {2u, 3u}) {
    GgufFile f(write(g.build(version)));
    const GgufMetadata& md = f.metadata();
    EXPECT_EQ(f.version(), version);
    EXPECT_EQ(md.get_int("u8"), 200);
    EXPECT_EQ(md.get_int("i8"), -2);
    EXPECT_EQ(md.get_int("u16"), 0x1234);
    EXPECT_EQ(md.get_int("i16"), -1);
    EXPECT_EQ(md.get_int("u32"), 4000000000ll);
    EXPECT_EQ(md.get_int("i32"), -7);
    EXPECT_EQ(md.get_float("f32"), 0.25);
    EXPECT_TRUE(md.get_bool("bool"));
    EXPECT_EQ(md.get_string("str"), "héllo");
    EXPECT_EQ(md.get_int("u64"), 1ll << 40);
    EXPECT_EQ(md.get_int("i64"), -5);
    EXPECT_EQ(md.get_float("f64"), -1.5e300);
    EXPECT_EQ(md.get_float("u32"), 4e9);
    EXPECT_EQ(md.get_string_array("tokenizer.ggml.tokens"), (std::vector<std::string>{"a", "", "ccc"}));
    EXPECT_EQ(md.get_int_array("tokenizer.ggml.token_type"), (std::vector<int64_t>{1, -2, 3}));
    EXPECT_EQ(md.get_float_array("tokenizer.ggml.scores"), (std::vector<double>{0.5, -1.0}));
    const GgufValue& n = md.at("nested");
    ASSERT_EQ(n.items.size(), 2u);
    EXPECT_EQ(n.elem_type, GgufType::array);
    EXPECT_EQ(n.items[0].items.size(), 2u);
    EXPECT_EQ(n.items[0].items[1].i, 2);
    EXPECT_EQ(n.items[1].items[0].i, 3);
    EXPECT_EQ(md.get_int_or("absent", 42), 42);
    const std::string p = f.path();
    EXPECT_EQ(error_of([&] { md.get_int("str"); }), p + ": metadata key 'str' is string, expected an integer");
    EXPECT_EQ(error_of([&] { md.get_string("u8"); }), p + ": metadata key 'u8' is u8, expected a string");
    EXPECT_EQ(error_of([&] { md.get_string_array("tokenizer.ggml.token_type"); }),
              p + ": metadata key 'tokenizer.ggml.token_type' is array of i32, expected an array of string");
    EXPECT_EQ(error_of([&] { md.get_int("absent"); }), p + ": metadata key 'absent' is missing");
    EXPECT_EQ(error_of([&] { md.get_int("huge"); }), p + ": metadata key 'huge' = 18446744073709551615 is too large");
  }
}

TEST_F(GgufTest, EveryTensorTypeDequantizesExactly) {
  const int64_t cols = 96, rows = 5;  // ne = [96, 5]: HF shape [5, 96]
  const std::vector<float> x = randn(cols * rows);
  struct Kind {
    uint32_t type;
    std::vector<uint8_t> bytes;
    std::vector<double> want;
  };
  std::vector<Kind> kinds(6);
  kinds[0].type = kGF32;
  kinds[1].type = kGF16;
  kinds[2].type = kGBF16;
  for (float v : x) {
    uint32_t u; std::memcpy(&u, &v, 4);
    put_le(kinds[0].bytes, u, 4), kinds[0].want.push_back(v);
    uint16_t h = float_to_fp16(v); put_le(kinds[1].bytes, h, 2), kinds[1].want.push_back(fp16_value(h));
    uint16_t bf = float_to_bf16(v); put_le(kinds[2].bytes, bf, 2), kinds[2].want.push_back(bf16_value(bf));
  }
  kinds[3].type = kGQ8_0, kinds[3].bytes = quantize_q8_0(x, &kinds[3].want);
  kinds[4].type = kGQ4_0, kinds[4].bytes = quantize_q4_0(x, &kinds[4].want);
  kinds[5].type = kGQ4_1, kinds[5].bytes = quantize_q4_1(x, &kinds[5].want);
  GgufBuilder g;
  for (size_t k = 0; k < kinds.size(); ++k) g.tensor("t" + std::to_string(k), {cols, rows}, kinds[k].type, kinds[k].bytes);
  GgufFile f(write(g.build()));
  const double tol[] = {0, 1e-3, 8e-3, 1e-2, 0.2, 0.2};  // |deq - x| / max|x| bound of each format
  for (size_t k = 0; k < kinds.size(); ++k) {
    const std::string name = "t" + std::to_string(k);
    HostTensor t = f.read(name);
    EXPECT_EQ(t.shape, (std::vector<int64_t>{rows, cols}));
    EXPECT_EQ(count_mismatches(t, kinds[k].want), 0u) << ggml_type_name(kinds[k].type);
    // The reference quantizer itself is sane: dequantized values stay near the input.
    double err = 0, amax = 0;
    for (size_t i = 0; i < x.size(); ++i) err = std::max(err, std::fabs(kinds[k].want[i] - x[i])), amax = std::max(amax, (double)std::fabs(x[i]));
    EXPECT_LE(err / amax, tol[k]) << ggml_type_name(kinds[k].type);
    // Row and column ranges (columns 5..45 cut through blocks).
    HostTensor r = f.read_rows(name, 1, 4);
    EXPECT_EQ(count_mismatches(r, std::vector<double>(kinds[k].want.begin() + cols, kinds[k].want.begin() + 4 * cols)), 0u);
    HostTensor c = f.read_cols(name, 5, 45);
    std::vector<double> wc;
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 5; j < 45; ++j) wc.push_back(kinds[k].want[i * cols + j]);
    EXPECT_EQ(c.shape, (std::vector<int64_t>{rows, 40}));
    EXPECT_EQ(count_mismatches(c, wc), 0u) << ggml_type_name(kinds[k].type);
  }
}

// Q5_0, Q5_1, the k-quants and IQ4_NL / IQ4_XS against the `gguf` package's numpy dequantizer (written
// independently of ours): random blocks, every bit random (tools/make-kquant-fixtures.py),
// read whole, by rows and by columns that cut blocks; the same fp32 values, bit for bit.
TEST_F(GgufTest, BlockFormatsDequantizeAsTheGgufPackage) {
  std::ifstream in(source_dir() + "/tests/fixtures/gguf/kquant-blocks.json");
  ASSERT_TRUE(in) << "tests/fixtures/gguf/kquant-blocks.json";
  const nlohmann::json j = nlohmann::json::parse(in);
  const std::map<std::string, uint32_t> ids = {{"Q5_0", kGQ5_0}, {"Q5_1", kGQ5_1}, {"Q2_K", kGQ2_K},
                                               {"Q3_K", kGQ3_K}, {"Q4_K", kGQ4_K}, {"Q5_K", kGQ5_K},
                                               {"Q6_K", kGQ6_K}, {"IQ4_NL", kGIQ4_NL}, {"IQ4_XS", kGIQ4_XS}};
  ASSERT_EQ(j.at("types").size(), ids.size());
  for (const auto& [name, id] : ids) {
    const auto& t = j.at("types").at(name);
    const std::string hex = t.at("blocks_hex");
    std::vector<uint8_t> bytes;
    for (size_t i = 0; i + 1 < hex.size(); i += 2) bytes.push_back(static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    const std::vector<double> want = t.at("values").get<std::vector<double>>();
    const int64_t rows = 3, cols = static_cast<int64_t>(want.size()) / rows;  // 6 blocks: 2 a row
    ASSERT_EQ(cols % t.at("block").get<int64_t>(), 0) << name;
    GgufBuilder g;
    g.tensor("w", {cols, rows}, id, bytes);
    GgufFile f(write(g.build(), name + ".gguf"));
    HostTensor all = f.read("w");
    EXPECT_EQ(all.shape, (std::vector<int64_t>{rows, cols})) << name;
    EXPECT_EQ(count_mismatches(all, want), 0u) << name;
    HostTensor r = f.read_rows("w", 1, 3);
    EXPECT_EQ(count_mismatches(r, std::vector<double>(want.begin() + cols, want.end())), 0u) << name;
    // Columns [c0, c1) start and end inside blocks (and inside 16-value sub-blocks).
    const int64_t c0 = 7, c1 = cols - 9;
    HostTensor c = f.read_cols("w", c0, c1);
    std::vector<double> wc;
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t k = c0; k < c1; ++k) wc.push_back(want[i * cols + k]);
    EXPECT_EQ(count_mismatches(c, wc), 0u) << name;
    // The fixture is not degenerate: values spread over both signs and many levels.
    std::set<double> levels(want.begin(), want.end());
    EXPECT_GT(levels.size(), want.size() / 8) << name;
    EXPECT_LT(*std::min_element(want.begin(), want.end()), 0) << name;
    EXPECT_GT(*std::max_element(want.begin(), want.end()), 0) << name;
  }
}

TEST_F(GgufTest, NibbleOrderByHand) {
  // One Q4_0 block, d = 1: byte j = (low j) | (high (j + 1) % 16) -> element j = j - 8,
  // element 16 + j = (j + 1) % 16 - 8.
  std::vector<uint8_t> b = {0x00, 0x3c};  // fp16 1.0
  for (int j = 0; j < 16; ++j) b.push_back(static_cast<uint8_t>(j | (((j + 1) % 16) << 4)));
  GgufBuilder g;
  g.tensor("q", {32}, kGQ4_0, b);
  HostTensor t = GgufFile(write(g.build())).read("q");
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(t.data[j], j - 8);
    EXPECT_EQ(t.data[16 + j], (j + 1) % 16 - 8);
  }
}

TEST_F(GgufTest, PermutedModelLoadsEqualToHfOriginal) {
  for (bool bias : {false, true}) {
    TinyModel m = make_tiny_model(rng, 2, bias, /*tied=*/!bias);  // bias: a Qwen2-style HF config
    write_tiny_hf(dir + "/hf", m);
    LoadedModel hf = load_model(dir + "/hf");
    for (uint32_t version : {2u, 3u}) {
      std::map<std::string, std::vector<double>> expected;
      const std::string p = write(tiny_gguf(m, kGF32, version, &expected));
      LoadedModel gg = load_model(p);
      EXPECT_EQ(gg.format, ModelFormat::gguf);
      ASSERT_TRUE(gg.gguf_metadata);
      const ModelConfig& c = gg.config;
      EXPECT_EQ(c.hidden_size, 64);
      EXPECT_EQ(c.n_layers, 2);
      EXPECT_EQ(c.n_heads, 4);
      EXPECT_EQ(c.n_kv_heads, 2);
      EXPECT_EQ(c.head_dim, 16);
      EXPECT_EQ(c.intermediate_size, 96);
      EXPECT_EQ(c.vocab_size, 40);
      EXPECT_EQ(c.tie_word_embeddings, !bias);
      EXPECT_EQ(c.qkv_bias, bias);
      EXPECT_EQ(c.bos_token_id, 1);
      EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{2});
      EXPECT_EQ(c.max_position_embeddings, 128);
      EXPECT_FLOAT_EQ(static_cast<float>(c.rms_norm_eps), 1e-5f);
      EXPECT_EQ(gg.weights.embed.data, hf.weights.embed.data);
      EXPECT_EQ(gg.weights.lm_head.data, hf.weights.lm_head.data);
      for (int l = 0; l < 2; ++l) {
        const auto &a = gg.weights.layers[l], &b = hf.weights.layers[l];
        EXPECT_EQ(a.wq.shape, b.wq.shape);
        EXPECT_EQ(a.wq.data, b.wq.data) << "layer " << l << " q";
        EXPECT_EQ(a.wk.data, b.wk.data) << "layer " << l << " k";
        EXPECT_EQ(a.wv.data, b.wv.data);
        EXPECT_EQ(a.wo.data, b.wo.data);
        EXPECT_EQ(a.bq.data, b.bq.data);
        EXPECT_EQ(a.bk.data, b.bk.data);
        EXPECT_EQ(a.w_down.data, b.w_down.data);
        EXPECT_EQ(a.attn_norm.data, b.attn_norm.data);
      }
      EXPECT_NE(m.values.at("model.layers.0.self_attn.q_proj.weight"),
                llama_cpp_permute(m.values.at("model.layers.0.self_attn.q_proj.weight"), 64, 64, 4));
      // Ranges through the permutation: rows 5..37 and columns 3..50 of layer 1's q and k.
      ModelSource src = open_model(p);
      for (const char* which : {"self_attn.q_proj.weight", "self_attn.k_proj.weight"}) {
        const std::string n = layer_tensor_name(1, which);
        const std::vector<float>& w = m.values.at(n);
        HostTensor r = read_tensor(*src.tensors, n, RowRange{5, 27});
        EXPECT_EQ(r.shape, (std::vector<int64_t>{22, 64}));
        EXPECT_EQ(r.data, std::vector<float>(w.begin() + 5 * 64, w.begin() + 27 * 64)) << n;
        HostTensor cr = read_tensor(*src.tensors, n, ColRange{3, 50});
        std::vector<float> want;
        for (int64_t i = 0; i < m.shapes.at(n)[0]; ++i)
          for (int64_t j = 3; j < 50; ++j) want.push_back(w[i * 64 + j]);
        EXPECT_EQ(cr.data, want) << n;
      }
    }
  }
}

// The GGUF forms of the reference fixtures (tools/make-gguf-fixtures.py) hold the same
// weights as their safetensors: every tensor the family's table lists reads back exactly
// (llama's Q/K un-permuted, qwen2/qwen3's not permuted at all), and the configs agree.
TEST_F(GgufTest, FixtureGgufsEqualTheirSafetensors) {
  for (const char* name : {"llama3-gqa", "qwen2-bias-tied", "qwen3-qknorm-yarn"}) {
    const std::string dir = source_dir() + "/tests/fixtures/models/" + name;
    const LoadedModel hf = load_model(dir), gg = load_model(dir + "/model.gguf");
    const ModelConfig &a = gg.config, &b = hf.config;
    EXPECT_EQ(a.architecture, b.architecture) << name;
    EXPECT_EQ(a.head_dim, b.head_dim) << name;
    EXPECT_EQ(a.qk_norm, b.qk_norm) << name;
    EXPECT_EQ(a.qkv_bias, b.qkv_bias) << name;
    EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings) << name;
    EXPECT_EQ(a.rope.scaling, b.rope.scaling) << name;
    EXPECT_DOUBLE_EQ(a.rope.factor, b.rope.factor) << name;
    EXPECT_DOUBLE_EQ(a.rope.attention_factor, b.rope.attention_factor) << name;
    EXPECT_EQ(rope_inv_freq(a.rope, a.head_dim), rope_inv_freq(b.rope, b.head_dim)) << name;
    EXPECT_EQ(gg.weights.embed.data, hf.weights.embed.data) << name;
    EXPECT_EQ(gg.weights.lm_head.data, hf.weights.lm_head.data) << name;
    for (size_t l = 0; l < hf.weights.layers.size(); ++l)
      for (WeightSlot s : layer_weight_slots()) {
        const HostTensor &x = weight_of(gg.weights, s, int64_t(l)), &y = weight_of(hf.weights, s, int64_t(l));
        EXPECT_EQ(x.shape, y.shape) << name << " layer " << l << " slot " << int(s);
        EXPECT_EQ(x.data, y.data) << name << " layer " << l << " slot " << int(s);
      }
  }
  const ModelConfig q3 = load_model(source_dir() + "/tests/fixtures/models/qwen3-qknorm-yarn/model.gguf").config;
  EXPECT_EQ(q3.head_dim, 24);  // qwen3.attention.key_length, not 64 / 4
  EXPECT_FALSE(load_model(source_dir() + "/tests/fixtures/models/qwen3-qknorm-yarn").weights.layers[1].k_norm.empty());
}

// Regression (2026-12-07): a llama GGUF whose rope_freqs.weight encodes llama3 scaling
// for an original context other than 8192, without original_context_length metadata,
// was refused. Such a file is recognised as llama3 with the original context its divisors
// imply (64 here); divisors that match no llama3 form are applied verbatim, as llama.cpp
// does.
TEST_F(GgufTest, RopeFreqsOfAnyOriginalContextLoad) {
  const std::string path = source_dir() + "/tests/fixtures/models/llama3-gqa/model.gguf";
  GgufFile f(path);
  EXPECT_FALSE(f.metadata().has("llama.rope.scaling.original_context_length"));
  const ModelConfig c = gguf_model_config(f);
  EXPECT_EQ(c.rope.scaling, RopeScalingType::llama3);
  EXPECT_EQ(c.rope.original_max_position, 64);
  EXPECT_DOUBLE_EQ(c.rope.factor, 8.0);
  EXPECT_NE(describe(c).find("llama3 x8 (original 64, low 1, high 4)"), std::string::npos) << describe(c);

  // Nudge one divisor: no llama3 form matches any more, so the divisors apply verbatim.
  const HostTensor rf = f.read("rope_freqs.weight");
  std::vector<uint8_t> bytes = read_bytes(path);
  const auto* raw = reinterpret_cast<const uint8_t*>(rf.data.data());
  auto at = std::search(bytes.begin(), bytes.end(), raw, raw + rf.data.size() * sizeof(float));
  ASSERT_NE(at, bytes.end());
  float d3 = rf.data[3] * 1.01f;
  std::memcpy(&*at + 3 * sizeof(float), &d3, sizeof(float));
  const std::string odd = write(bytes, "odd-rope.gguf");
  const ModelConfig v = load_model(odd).config;
  ASSERT_EQ(v.rope.scaling, RopeScalingType::freq_factors);
  ASSERT_EQ(v.rope.freq_divisors.size(), rf.data.size());
  RopeConfig plain = v.rope;
  plain.scaling = RopeScalingType::none;
  const std::vector<double> base = rope_inv_freq(plain, v.head_dim), inv = rope_inv_freq(v.rope, v.head_dim);
  for (size_t i = 0; i < rf.data.size(); ++i) {
    const double div = i == 3 ? double(d3) : double(rf.data[i]);
    EXPECT_EQ(v.rope.freq_divisors[i], div) << i;
    EXPECT_DOUBLE_EQ(inv[i], base[i] / div) << i;
  }
  EXPECT_NE(describe(v).find("verbatim"), std::string::npos);
}

TEST_F(GgufTest, QuantizedModelMatchesReference) {
  TinyModel m = make_tiny_model(rng, 1, false, false);
  for (uint32_t type : {kGF16, kGQ8_0, kGQ4_0, kGQ4_1}) {
    std::map<std::string, std::vector<double>> expected;
    ModelSource src = open_model(write(tiny_gguf(m, type, 3, &expected)));
    for (const auto& kv : expected) {
      HostTensor t = src.tensors->read(kv.first);
      EXPECT_EQ(t.shape, m.shapes.at(kv.first));
      EXPECT_EQ(count_mismatches(t, kv.second), 0u) << kv.first << " " << ggml_type_name(type);
    }
  }
}

// keep_quantized (the CPU backend's loading path): matrices come as their stored blocks,
// Q/K rows un-permuted as whole rows, and through the CPU backend's upload_weight and
// embed they dequantize to exactly the reference values; 1-D tensors stay fp32.
TEST_F(GgufTest, KeptQuantizedMatricesEqualTheirDequantizedValues) {
  TinyModel m = make_tiny_model(rng, 1, false, false);
  auto be = make_cpu_backend();
  for (uint32_t type : {kGF16, kGQ8_0, kGQ4_0, kGQ4_1}) {
    std::map<std::string, std::vector<double>> expected;
    ModelSource src = open_model(write(tiny_gguf(m, type, 3, &expected)));
    src.tensors->keep_quantized(true);
    int kept = 0;
    for (const auto& kv : expected) {
      HostTensor t = src.tensors->read(kv.first);
      EXPECT_EQ(t.shape, m.shapes.at(kv.first));
      if (t.blocks.empty()) {  // vectors, and F32 matrices
        EXPECT_EQ(count_mismatches(t, kv.second), 0u) << kv.first;
        continue;
      }
      ++kept;
      EXPECT_EQ(t.ggml_type, type);
      const int64_t rows = t.shape[0], cols = t.shape[1];
      Tensor w = be->upload_weight(t), ids = be->alloc(rows, 1, DType::i32), out = be->alloc(rows, cols, DType::f32);
      std::vector<int32_t> all(rows);
      for (int64_t r = 0; r < rows; ++r) all[r] = static_cast<int32_t>(r);
      be->copy_from_host(ids, all.data());
      be->embed(w, ids, out);
      HostTensor got;
      got.data.resize(rows * cols);
      be->copy_to_host(got.data.data(), out);
      EXPECT_EQ(count_mismatches(got, kv.second), 0u) << kv.first << " " << ggml_type_name(type);
    }
    EXPECT_GE(kept, 7) << ggml_type_name(type);  // q, k, v, o, gate, up, down (+ embed, lm_head)
  }
}

// The k-quant fixture kept as stored (the CPU backend's loading path): every matrix comes
// as its blocks, and embed and matmul (few x rows: dequantized kDecodeRows rows at a time;
// many: panels), AVX2 and portable, give bitwise what the fp32 values read at load give.
TEST_F(GgufTest, KQuantMatricesKeptAsStoredComputeAsDequantized) {
  const std::string path = source_dir() + "/tests/fixtures/models/llama-kquants/model.gguf";
  ModelSource stored = open_model(path), plain = open_model(path);
  stored.tensors->keep_quantized(true);
  std::vector<std::string> names = {"model.embed_tokens.weight", "lm_head.weight"};
  for (int l = 0; l < stored.config.n_layers; ++l)
    for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                          "mlp.up_proj", "mlp.down_proj"})
      names.push_back("model.layers." + std::to_string(l) + "." + m + ".weight");
  std::set<uint32_t> types;
  for (bool portable : {false, true}) {
    CpuBackendOptions o;
    o.portable_kernels = portable;
    auto be = make_cpu_backend(o);
    for (const std::string& name : names) {
      const HostTensor t = stored.tensors->read(name), f = plain.tensors->read(name);
      ASSERT_EQ(t.shape.size(), 2u) << name;
      ASSERT_FALSE(t.blocks.empty()) << name;
      types.insert(t.ggml_type);
      const int64_t rows = t.shape[0], cols = t.shape[1];
      Tensor w = be->upload_weight(t), wf = be->upload_weight(f);
      for (int64_t n : {1, 3, 9}) {
        const std::vector<float> xv = randn(static_cast<size_t>(n * cols));
        Tensor x = be->alloc(n, cols, DType::f32), a = be->alloc(n, rows, DType::f32), b = be->alloc(n, rows, DType::f32);
        be->copy_from_host(x, xv.data());
        be->matmul(x, w, Tensor{}, a, false);
        be->matmul(x, wf, Tensor{}, b, false);
        std::vector<float> av(n * rows), bv(n * rows);
        be->copy_to_host(av.data(), a);
        be->copy_to_host(bv.data(), b);
        EXPECT_EQ(av, bv) << name << " rows " << n << (portable ? " portable" : "");
      }
      Tensor ids = be->alloc(2, 1, DType::i32), out = be->alloc(2, cols, DType::f32);
      const int32_t pick[2] = {static_cast<int32_t>(rows - 1), 0};
      be->copy_from_host(ids, pick);
      be->embed(w, ids, out);
      std::vector<float> got(2 * cols);
      be->copy_to_host(got.data(), out);
      EXPECT_TRUE(std::equal(got.begin(), got.begin() + cols, f.data.begin() + (rows - 1) * cols)) << name;
      EXPECT_TRUE(std::equal(got.begin() + cols, got.end(), f.data.begin())) << name;
    }
  }
  EXPECT_EQ(types, (std::set<uint32_t>{kGQ5_0, kGQ5_1, kGQ2_K, kGQ3_K, kGQ4_K, kGQ5_K, kGQ6_K, kGIQ4_NL, kGIQ4_XS}));
}

TEST_F(GgufTest, TokenizerMetadataIsReachable) {
  TinyModel m = make_tiny_model(rng, 1, false, true);
  std::map<std::string, std::vector<double>> e;
  LoadedModel lm = load_model(write(tiny_gguf(m, kGF32, 3, &e)));
  const GgufMetadata& md = *lm.gguf_metadata;
  EXPECT_EQ(md.get_string_array("tokenizer.ggml.tokens").size(), 40u);
  EXPECT_EQ(md.get_string_array("tokenizer.ggml.tokens")[7], "tok7");
  EXPECT_EQ(md.get_string_array("tokenizer.ggml.merges"), (std::vector<std::string>{"t o", "to k"}));
  EXPECT_EQ(md.get_int_array("tokenizer.ggml.token_type").size(), 40u);
  EXPECT_EQ(md.get_string("tokenizer.ggml.pre"), "smollm");
}

TEST_F(GgufTest, MalformedFiles) {
  const std::string p = dir + "/bad.gguf";
  auto open_err = [&](const std::vector<uint8_t>& bytes) {
    write_bytes(p, bytes);
    return error_of([&] { GgufFile f(p); });
  };
  auto with_tensor = [](std::vector<int64_t> ne, uint32_t type, size_t nbytes, int64_t offset = -1) {
    GgufBuilder g;
    g.kv_str("general.architecture", "llama");
    g.tensor("w", ne, type, std::vector<uint8_t>(nbytes, 1), offset);
    return g;
  };
  GgufBuilder ok = with_tensor({32, 2}, kGF32, 256);
  const std::vector<uint8_t> good = ok.build();
  EXPECT_EQ(open_err(good), "");

  auto patched = [&](size_t at, uint64_t v, int bytes) {
    std::vector<uint8_t> b = good;
    for (int i = 0; i < bytes; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
    return b;
  };
  EXPECT_EQ(open_err({'G', 'G'}), p + ": truncated at byte 0 while reading the magic");
  EXPECT_EQ(open_err(patched(0, 'X', 1)), p + ": not a GGUF file (bad magic)");
  EXPECT_EQ(open_err(patched(4, 1, 4)), p + ": GGUF version 1 is not supported (2 or 3)");
  EXPECT_EQ(open_err(patched(4, 0x03000000, 4)), p + ": GGUF version 50331648 is not supported (2 or 3; a big-endian file?)");
  EXPECT_EQ(open_err(patched(8, 1ull << 60, 8)), p + ": tensor count 1152921504606846976 is more than the file can hold");
  EXPECT_EQ(open_err(patched(16, 1ull << 60, 8)), p + ": metadata count 1152921504606846976 is more than the file can hold");
  EXPECT_EQ(open_err(patched(24, 1ull << 62, 8)),
            p + ": truncated at byte 32 while reading metadata key 0 (4611686018427387904-byte string)");

  struct Case {
    std::function<void(GgufBuilder&)> add;
    std::string message;
  };
  std::vector<uint8_t> huge_arr;
  put_le(huge_arr, kStr, 4);
  put_le(huge_arr, 1ull << 61, 8);
  std::vector<uint8_t> huge_str;
  put_le(huge_str, 1ull << 50, 8);
  std::vector<uint8_t> deep;
  for (int i = 0; i < 9; ++i) put_le(deep, kArr, 4), put_le(deep, 1, 8);
  put_le(deep, kU8, 4), put_le(deep, 0, 8);
  const std::vector<Case> kv_cases = {
      {[&](GgufBuilder& g) { g.kv_raw("tokenizer.ggml.tokens", kArr, huge_arr); },
       "metadata key 'tokenizer.ggml.tokens' claims 2305843009213693952 array elements, more than the file can hold"},
      {[&](GgufBuilder& g) { g.kv_raw("name", kStr, huge_str); },
       "truncated at byte 93 while reading metadata 'name' (1125899906842624-byte string)"},
      {[&](GgufBuilder& g) { g.kv_raw("odd", 99, {}); }, "metadata key 'odd' has unknown value type 99"},
      {[&](GgufBuilder& g) { g.kv_raw("deep", kArr, deep); }, "metadata key 'deep' nests arrays deeper than 8"},
      {[&](GgufBuilder& g) { g.kv_u32("general.alignment", 24); }, "general.alignment must be a u32 power of two"},
      {[&](GgufBuilder& g) { g.kv_str("general.architecture", "again"); },
       "metadata key 'general.architecture' appears twice"},
  };
  for (const auto& c : kv_cases) {
    GgufBuilder g = with_tensor({32, 2}, kGF32, 256);
    c.add(g);
    EXPECT_EQ(open_err(g.build()), p + ": " + c.message);
  }
  const std::vector<std::pair<GgufBuilder, std::string>> tensor_cases = {
      {with_tensor({2, 2, 2, 2, 2}, kGF32, 128), "tensor 'w' has 5 dimensions (1 to 4 allowed)"},
      {with_tensor({32, 2}, 77, 64), "tensor 'w' has unknown ggml type 77"},
      {with_tensor({48, 2}, kGQ8_0, 102), "tensor 'w' has 48 columns, not a multiple of the Q8_0 block (32)"},
      {with_tensor({32, 2}, kGF32, 256, 8), "tensor 'w' offset 8 is not a multiple of the alignment 32"},
      {with_tensor({32, 4}, kGF32, 256), "tensor 'w' data [0, +512) lies past the end of the data section (256 bytes; truncated?)"},
      {with_tensor({32, 1ll << 40}, kGF32, 256), "tensor 'w' has more elements than the file can hold"},
      {with_tensor({1ll << 62 | 1, 2}, kGF32, 256), "tensor 'w' dimension 0 = 4611686018427387905 is absurd"},
  };
  for (const auto& c : tensor_cases) EXPECT_EQ(open_err(c.first.build()), p + ": " + c.second);

  GgufBuilder overlap = with_tensor({32, 2}, kGF32, 256);
  overlap.tensor("v", {32}, kGF32, std::vector<uint8_t>(128, 0), 224);
  EXPECT_EQ(open_err(overlap.build()), p + ": tensors 'w' and 'v' overlap");
  GgufBuilder twice = with_tensor({32, 2}, kGF32, 256);
  twice.tensor("w", {32}, kGF32, std::vector<uint8_t>(128, 0));
  EXPECT_EQ(open_err(twice.build()), p + ": tensor 'w' appears twice");

  // Known but unsupported types are refused when read, naming the type.
  GgufBuilder iq2 = with_tensor({256, 1}, kGIQ2_XS, 74);
  write_bytes(p, iq2.build());
  GgufFile f(p);
  EXPECT_EQ(error_of([&] { f.read("w"); }),
            p + ": tensor 'w' has type IQ2_XS, which is not supported (F32, F16, BF16, F64, Q8_0, Q4_0, Q4_1, Q5_0, "
                "Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS)");
}

TEST_F(GgufTest, ConfigErrors) {
  TinyModel m = make_tiny_model(rng, 1, false, true);
  std::map<std::string, std::vector<double>> e;
  std::vector<uint8_t> bytes = tiny_gguf(m, kGF32, 3, &e);
  // Flip the architecture string "llama" -> "gemma" in place (same length).
  const std::string key = "llama";
  auto it = std::search(bytes.begin(), bytes.end(), key.begin(), key.end());
  std::copy_n("gemma", 5, it);
  const std::string p = write(bytes);
  EXPECT_EQ(error_of([&] { load_model(p); }),
            p + ": general.architecture 'gemma' is not supported (llama, qwen2, qwen3)");

  GgufBuilder g;
  g.kv_str("general.architecture", "llama");
  g.kv_u32("llama.embedding_length", 64);
  const std::string q = write(g.build(), "noblocks.gguf");
  EXPECT_EQ(error_of([&] { load_model(q); }), q + ": metadata key 'llama.block_count' is missing");
  EXPECT_EQ(error_of([&] { load_model(dir + "/absent.gguf"); }), dir + "/absent.gguf: no such file or folder");
}

TEST_F(GgufTest, Qwen3FileErrors) {
  const std::vector<uint8_t> good = read_bytes(source_dir() + "/tests/fixtures/models/qwen3-qknorm-yarn/model.gguf");
  auto edited = [&](const std::string& from, const std::string& to, const char* name) {
    std::vector<uint8_t> b = good;
    auto it = std::search(b.begin(), b.end(), from.begin(), from.end());
    EXPECT_NE(it, b.end()) << from;
    if (it != b.end()) std::copy(to.begin(), to.end(), it);
    return write(b, name);
  };
  // The family's table asks for every layer's QK-norm weights.
  const std::string no_norm = edited("blk.1.attn_k_norm.weight", "blk.1.attn_k_nurm.weight", "nonorm.gguf");
  EXPECT_EQ(error_of([&] { load_model(no_norm); }), no_norm + ": tensor 'blk.1.attn_k_norm.weight' is missing");
  // The value: a u64 length 4, then the bytes (general.name holds "yarn" too).
  const std::string yorn = edited(std::string("\x04\0\0\0\0\0\0\0yarn", 12), std::string("\x04\0\0\0\0\0\0\0yorn", 12),
                                  "yorn.gguf");
  EXPECT_EQ(error_of([&] { load_model(yorn); }),
            yorn + ": qwen3.rope.scaling.type 'yorn' is not supported (none, linear, yarn)");
  const std::string no_orig =
      edited("qwen3.rope.scaling.original_context_length", "qwen3.rope.scaling.original_context_lengtx", "noorig.gguf");
  EXPECT_EQ(error_of([&] { load_model(no_orig); }),
            no_orig + ": metadata key 'qwen3.rope.scaling.original_context_length' is missing");
}

TEST_F(GgufTest, TruncationsNeverCrash) {
  // A small file with every part: strings, arrays, two tensor types, alignment padding.
  GgufBuilder g;
  g.kv_str("general.architecture", "llama");
  g.kv_u32("general.alignment", 64);
  g.kv_str_array("tokenizer.ggml.tokens", {"a", "bb", "ccc"});
  g.kv_i32_array("tokenizer.ggml.token_type", {1, 2, 3});
  const std::vector<float> x = randn(64);
  std::vector<double> deq;
  g.tensor("q", {32, 2}, kGQ4_1, quantize_q4_1(x, &deq));
  g.tensor("f", {3}, kGF32, std::vector<uint8_t>(12, 0x3f));
  const std::vector<uint8_t> full = g.build(3, 64);
  const std::string p = dir + "/cut.gguf";
  write_bytes(p, full);
  ASSERT_NO_THROW({ GgufFile f(p); f.read("q"); f.read("f"); });
  for (size_t n = 0; n < full.size(); ++n) {
    write_bytes(p, std::vector<uint8_t>(full.begin(), full.begin() + n));
    EXPECT_NE(error_of([&] { GgufFile f(p); f.read("q"); f.read("f"); }), "") << "length " << n;
  }
  // A whole tiny model, cut at coarser steps, through load_model.
  TinyModel m = make_tiny_model(rng, 1, true, false);
  std::map<std::string, std::vector<double>> e;
  const std::vector<uint8_t> model = tiny_gguf(m, kGQ4_1, 3, &e);
  for (size_t n = 0; n < model.size(); n += 61) {
    write_bytes(p, std::vector<uint8_t>(model.begin(), model.begin() + n));
    EXPECT_NE(error_of([&] { load_model(p); }), "") << "length " << n;
  }
}
