// Inputs the libFuzzer harnesses found crashing or tripping UBSan (tests/fuzz/regressions/
// gguf and model_config/, from a 16-core fuzz run): a GGUF tensor with a zero dimension
// beside huge ones (the element count overflowed int64), a config.json with an integral
// float beyond int64 (the cast was undefined); tokenizer/, a tokenizer.json whose added token id
// is 2.1e128 (the int32 conversion was undefined). Each must load or give a ringinfer::Error,
// read the way the harness does; CI runs this test under ASan and UBSan too.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "ringinfer/error.h"
#include "ringinfer/gguf.h"
#include "ringinfer/model_config.h"
#include "ringinfer/tokenizer.h"
#include "test_paths.h"

namespace fs = std::filesystem;
using namespace ringinfer;

namespace {

std::vector<std::string> inputs(const std::string& harness) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(test::source_dir()) / "tests/fuzz/regressions" / harness, ec))
    if (e.is_regular_file()) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST(ParserRegressions, GgufElementCountsNeverOverflow) {
  const auto files = inputs("gguf");
  ASSERT_GE(files.size(), 2u);
  for (const std::string& path : files) {
    try {
      GgufFile f(path);
      for (const GgufTensorInfo& t : f.tensors()) {
        EXPECT_GE(t.numel(), 0) << path << " " << t.name;
        bool zero = false;
        for (int64_t d : t.ne) zero = zero || d == 0;
        if (zero) {
          EXPECT_EQ(t.numel(), 0) << path << " " << t.name;
        }
      }
      try { (void)gguf_model_config(f); } catch (const Error&) {}
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0u) << e.what();
    }
  }
}

TEST(ParserRegressions, ConfigIntegersOutOfRangeAreErrors) {
  const auto files = inputs("model_config");
  ASSERT_GE(files.size(), 1u);
  for (const std::string& path : files) {
    try {
      (void)describe(parse_model_config(path));
    } catch (const Error&) {
    }
  }
  // The cast itself: 1e300 and NaN-like values are refused, not converted.
  const std::string dir = test::make_temp_dir("config-range");
  for (const char* v : {"1e300", "-9.3e18", "6.666e64"}) {
    const std::string p = dir + "/config.json";
    FILE* f = std::fopen(p.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fprintf(f,
                 "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": %s, \"intermediate_size\": 128, "
                 "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 100}",
                 v);
    std::fclose(f);
    try {
      (void)parse_model_config(p);
      ADD_FAILURE() << "hidden_size " << v << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("hidden_size must be an integer"), std::string::npos) << e.what();
    }
  }
  fs::remove_all(dir);
}

TEST(ParserRegressions, TokenIdsOutOfRangeAreErrors) {
  const auto files = inputs("tokenizer");
  ASSERT_GE(files.size(), 1u);
  for (const std::string& path : files) {
    // The harness's input: a mode byte, then tokenizer.json text.
    std::ifstream in(path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_FALSE(bytes.empty());
    try {
      (void)Tokenizer::from_tokenizer_json_text(bytes.substr(1), path);
    } catch (const Error&) {
    }
  }
  // Each place a token id is read: vocab, added_tokens, the post-processor's special ids.
  const std::string vocab = R"("vocab": {"a": 0, "b": 1})";
  const std::string base_model = R"("model": {"type": "BPE", )" + vocab + R"(, "merges": []})";
  struct Case {
    std::string json, message;
  };
  const std::vector<Case> cases = {
      {R"({"model": {"type": "BPE", "vocab": {"a": 2.5e128}, "merges": []}})", "the id of vocab entry 'a'"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 4294967296}, "merges": []}})", "the id of vocab entry 'a'"},
      {R"({"model": {"type": "BPE", "vocab": {"a": -1}, "merges": []}})", "the id of vocab entry 'a'"},
      {"{" + base_model + R"(, "added_tokens": [{"id": 2.1e128, "content": "<s>"}]})", "an added token's id"},
      {"{" + base_model + R"(, "added_tokens": [{"id": "7", "content": "<s>"}]})", "an added token's id"},
      {"{" + base_model +
           R"(, "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}},)"
           R"( {"Sequence": {"id": "A"}}], "special_tokens": {"<s>": {"ids": [1e300]}}}})",
       "post_processor special token '<s>' id"},
  };
  for (const Case& c : cases) {
    try {
      (void)Tokenizer::from_tokenizer_json_text(c.json, "t.json");
      ADD_FAILURE() << "accepted: " << c.json;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.message + " is not a token id"), std::string::npos) << e.what();
    }
  }
}
