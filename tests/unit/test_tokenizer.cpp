// Tokenizer against Hugging Face `tokenizers` reference ids (fixtures written by
// tools/make-tokenizer-fixtures.py): a small trained byte-level BPE under six
// pre-tokenizers, through both loaders, and SmolLM2's vocabulary from its GGUF lists.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "ringinfer/error.h"
#include "ringinfer/tokenizer.h"
#include "gtest_helpers.h"
#include "test_paths.h"

using nlohmann::json;
using ringinfer::Tokenizer;

namespace {

std::string fixture_path(const std::string& name) {
  return ringinfer::test::source_dir() + "/tests/fixtures/tokenizer/" + name;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open (fixture missing?)");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json read_json(const std::string& name) { return json::parse(read_text(fixture_path(name))); }

std::string show(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  return s + "]";
}

// The small tokenizer.json with one variant's pre-tokenizer, post-processor and ignore_merges.
std::string variant_json(const json& base, const json& variant) {
  json doc = base;
  doc["pre_tokenizer"] = variant["pre_tokenizer"];
  doc["post_processor"] = variant["post_processor"];
  doc["model"]["ignore_merges"] = variant["ignore_merges"];
  doc["added_tokens"] = variant["added_tokens"];
  return doc.dump();
}

// The small vocabulary as GGUF-style lists (added tokens typed CONTROL).
struct Lists {
  std::vector<std::string> tokens, merges;
  std::vector<int32_t> types;
};

Lists small_lists(const json& base) {
  Lists l;
  const json& vocab = base["model"]["vocab"];
  l.tokens.resize(vocab.size());
  l.types.assign(vocab.size(), 1);
  for (const auto& [text, id] : vocab.items()) l.tokens.at(id.get<size_t>()) = text;
  for (const auto& a : base["added_tokens"]) l.types.at(a["id"].get<size_t>()) = 3;
  for (const auto& m : base["model"]["merges"])
    l.merges.push_back(m.is_string() ? m.get<std::string>() : m[0].get<std::string>() + " " + m[1].get<std::string>());
  return l;
}

Tokenizer smollm2() {
  json v = read_json("smollm2_vocab.json");
  return Tokenizer::from_vocab(v["tokens"].get<std::vector<std::string>>(), v["merges"].get<std::vector<std::string>>(),
                               v["token_types"].get<std::vector<int32_t>>(), v["pre"].get<std::string>(),
                               v["bos_id"].get<int32_t>(), v["eos_id"].get<int32_t>(), "smollm2_vocab.json");
}

// Fresh random text from scripts, whitespace and symbols the tokenizers treat differently.
std::string random_text(std::mt19937& rng, size_t n_chars) {
  static const std::vector<std::pair<uint32_t, uint32_t>> ranges = {
      {0x20, 0x7E}, {0x20, 0x7E}, {0x20, 0x7E}, {0x30, 0x39}, {0x09, 0x0D}, {0xA0, 0xFF},
      {0x100, 0x17F}, {0x300, 0x36F}, {0x391, 0x3C9}, {0x410, 0x44F}, {0x600, 0x6FF}, {0x900, 0x97F},
      {0x3040, 0x30FF}, {0x4E00, 0x4FFF}, {0xAC00, 0xAD00}, {0x2000, 0x206F}, {0x1F300, 0x1F64F},
      {0x85, 0x85}, {0x180E, 0x180E}, {0x3000, 0x3000}, {0xFE0F, 0xFE0F}, {0x10000, 0x10FFFF}};
  std::string s;
  for (size_t i = 0; i < n_chars; ++i) {
    auto [lo, hi] = ranges[rng() % ranges.size()];
    uint32_t cp = lo + rng() % (hi - lo + 1);
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
    if (cp < 0x80) { s += static_cast<char>(cp); continue; }
    char buf[4];
    int n = cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    for (int k = n - 1; k > 0; --k) { buf[k] = static_cast<char>(0x80 | (cp & 0x3F)); cp >>= 6; }
    buf[0] = static_cast<char>((n == 2 ? 0xC0 : n == 3 ? 0xE0 : 0xF0) | cp);
    s.append(buf, n);
  }
  return s;
}

}  // namespace

TEST(Tokenizer, SmallBpeMatchesTokenizersForEveryPreTokenizer) {
  json base = read_json("small_bpe.json");
  json refs = read_json("small_refs.json");
  auto texts = refs["texts"].get<std::vector<std::string>>();
  ASSERT_GE(refs["variants"].size(), 7u);
  for (const auto& [name, v] : refs["variants"].items()) {
    Tokenizer t = Tokenizer::from_tokenizer_json_text(variant_json(base, v), "small_bpe.json:" + name);
    bool add_bos = v["add_bos"].get<bool>();
    EXPECT_EQ(t.add_bos_by_default(), add_bos) << name;
    for (size_t i = 0; i < texts.size(); ++i) {
      auto want = v["ids"][i].get<std::vector<int32_t>>();
      auto got = t.encode(texts[i], add_bos);
      EXPECT_EQ(got, want) << name << " text " << i << " '" << texts[i] << "'\n got  " << show(got) << "\n want "
                           << show(want);
    }
  }
}

TEST(Tokenizer, SmallBpeFromGgufListsMatchesTokenizers) {
  json base = read_json("small_bpe.json");
  json refs = read_json("small_refs.json");
  auto texts = refs["texts"].get<std::vector<std::string>>();
  Lists l = small_lists(base);
  int checked = 0;
  for (const auto& [name, v] : refs["variants"].items()) {
    if (v["gguf_pre"].is_null()) continue;
    int32_t bos = -1;
    if (!v["bos"].is_null())
      for (const auto& a : base["added_tokens"])
        if (a["content"] == v["bos"]) bos = a["id"].get<int32_t>();
    Tokenizer t = Tokenizer::from_vocab(l.tokens, l.merges, l.types, v["gguf_pre"].get<std::string>(), bos, -1, name);
    for (size_t i = 0; i < texts.size(); ++i) {
      auto want = v["ids"][i].get<std::vector<int32_t>>();
      auto got = t.encode(texts[i], v["add_bos"].get<bool>());
      EXPECT_EQ(got, want) << name << " (" << v["gguf_pre"] << ") text " << i << " '" << texts[i] << "'\n got  "
                           << show(got) << "\n want " << show(want);
    }
    ++checked;
  }
  EXPECT_EQ(checked, 4);  // gpt-2, smollm, llama-bpe, qwen2
}

TEST(Tokenizer, SmallBpeDecodeMatchesTokenizers) {
  Tokenizer t = Tokenizer::from_tokenizer_json(fixture_path("small_bpe.json"));
  json refs = read_json("small_refs.json");
  ASSERT_GT(refs["decode"].size(), 30u);
  for (const auto& d : refs["decode"])
    EXPECT_EQ(t.decode(d["ids"].get<std::vector<int32_t>>()), d["text"].get<std::string>());
}

TEST(Tokenizer, SmallBpeRoundTripsRandomText) {
  Tokenizer t = Tokenizer::from_tokenizer_json(fixture_path("small_bpe.json"));
  unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  for (int k = 0; k < 200; ++k) {
    std::string s = random_text(rng, 1 + rng() % 80);
    auto ids = t.encode(s, false);
    ASSERT_EQ(t.decode(ids), s) << "seed " << seed << " case " << k;
    // Every id is a real token, and a piece never survives as more bytes than tokens.
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < t.vocab_size());
    ASSERT_LE(ids.size(), s.size());
  }
}

TEST(Tokenizer, SmallBpeSpecialTokens) {
  Tokenizer t = Tokenizer::from_tokenizer_json(fixture_path("small_bpe.json"));
  int32_t end = t.find_token("<|im_end|>");
  ASSERT_GE(end, 0);
  EXPECT_TRUE(t.is_added(end));
  EXPECT_EQ(t.token_text(end), "<|im_end|>");
  auto parsed = t.encode("a<|im_end|>b", false);
  EXPECT_EQ(parsed.size(), 3u);
  EXPECT_EQ(parsed[1], end);
  auto plain = t.encode("a<|im_end|>b", false, /*parse_special=*/false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), end), 0);
  EXPECT_EQ(t.decode(plain), "a<|im_end|>b");
  EXPECT_EQ(t.vocab_size(), 600);
  EXPECT_EQ(t.bos_id(), -1);
  EXPECT_EQ(t.find_token("no such token"), -1);
}

TEST(Tokenizer, SmolLM2MatchesTokenizers) {
  Tokenizer t = smollm2();
  json refs = read_json("smollm2_refs.json");
  auto texts = refs["texts"].get<std::vector<std::string>>();
  ASSERT_GT(texts.size(), 30u);
  for (size_t i = 0; i < texts.size(); ++i) {
    auto want = refs["ids"][i].get<std::vector<int32_t>>();
    auto got = t.encode(texts[i], false);
    EXPECT_EQ(got, want) << "text " << i << " '" << texts[i] << "'\n got  " << show(got) << "\n want " << show(want);
    EXPECT_EQ(t.decode(got), texts[i]);
  }
  EXPECT_EQ(t.vocab_size(), 49152);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.find_token("<|im_end|>"), 2);
  EXPECT_EQ(t.token_bytes(t.find_token("Ġthe")), " the");
  EXPECT_EQ(t.encode("Hi", true).front(), 1);
}

TEST(Tokenizer, SmolLM2MillionTokensInSeconds) {
  Tokenizer t = smollm2();
  std::mt19937 rng(std::random_device{}());
  json refs = read_json("smollm2_refs.json");
  auto texts = refs["texts"].get<std::vector<std::string>>();
  // ~4.5 MB of varied text (prose, numbers, random words), plus pathological long pieces.
  std::string doc;
  while (doc.size() < 4'500'000) {
    doc += texts[rng() % texts.size()];
    doc += ' ';
    doc += std::to_string(rng());
    doc += ' ';
    for (int k = 0; k < 8; ++k) {
      int len = 2 + rng() % 9;
      for (int c = 0; c < len; ++c) doc += static_cast<char>('a' + rng() % 26);
      doc += (rng() % 7 == 0) ? '\n' : ' ';
    }
  }
  doc += std::string(200'000, 'a') + std::string(100'000, ' ') + "end";
  auto t0 = std::chrono::steady_clock::now();
  auto ids = t.encode(doc, false);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("encoded %zu bytes into %zu tokens in %.2f s (%.0f tokens/s)\n", doc.size(), ids.size(), secs,
              ids.size() / secs);
  EXPECT_GT(ids.size(), 1'000'000u);
  EXPECT_LT(secs, 60.0) << "a million tokens must take seconds, not minutes";
  EXPECT_EQ(t.decode(ids), doc);
}

// ---------------------------------------------------------------- errors

namespace {

using ringinfer::test::error_of;

std::string write_temp(const std::string& dir, const std::string& name, const std::string& text) {
  std::string path = dir + "/" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

}  // namespace

TEST(Tokenizer, MalformedTokenizerJsonNamesTheFile) {
  std::string dir = ringinfer::test::make_temp_dir("tokenizer");
  json base = read_json("small_bpe.json");

  std::string p = write_temp(dir, "notjson.json", "{ this is not json");
  std::string msg = error_of([&] { Tokenizer::from_tokenizer_json(p); });
  EXPECT_EQ(msg.rfind(p + ": not valid JSON (", 0), 0u) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;

  EXPECT_EQ(error_of([&] { Tokenizer::from_tokenizer_json(dir + "/missing.json"); }),
            dir + "/missing.json: cannot open file");

  json j = base;
  j.erase("model");
  p = write_temp(dir, "nomodel.json", j.dump());
  EXPECT_EQ(error_of([&] { Tokenizer::from_tokenizer_json(p); }), p + ": no \"model\" object");

  j = base;
  j["model"].erase("vocab");
  p = write_temp(dir, "novocab.json", j.dump());
  EXPECT_EQ(error_of([&] { Tokenizer::from_tokenizer_json(p); }), p + ": model has no \"vocab\" object");

  j = base;
  j["model"]["type"] = "WordPiece";
  p = write_temp(dir, "wordpiece.json", j.dump());
  EXPECT_EQ(error_of([&] { Tokenizer::from_tokenizer_json(p); }),
            p + ": model type 'WordPiece' is not supported (byte-level BPE only)");

  j = base;
  j["model"]["merges"][5] = json::array({"Ġzz", "qq"});
  p = write_temp(dir, "badmerge.json", j.dump());
  EXPECT_EQ(error_of([&] { Tokenizer::from_tokenizer_json(p); }), p + ": merge 5 'Ġzz qq' names unknown token 'Ġzz'");

  j = base;
  j["model"]["merges"][0] = "a b c";
  p = write_temp(dir, "badmerge2.json", j.dump());
  EXPECT_EQ(error_of([&] { Tokenizer::from_tokenizer_json(p); }),
            p + ": merge 0 'a b c' is not two tokens separated by one space");

  j = base;
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  p = write_temp(dir, "metaspace.json", j.dump());
  EXPECT_EQ(error_of([&] { Tokenizer::from_tokenizer_json(p); }),
            p + ": pre_tokenizer type 'Metaspace' is not supported (byte-level BPE only)");

  j = base;
  j["pre_tokenizer"] = nullptr;
  p = write_temp(dir, "nopre.json", j.dump());
  EXPECT_EQ(error_of([&] { Tokenizer::from_tokenizer_json(p); }),
            p + ": the pre-tokenizer has no ByteLevel step; only byte-level BPE is supported");

  j = base;
  j["model"]["vocab"] = json::array();
  p = write_temp(dir, "vocabarray.json", j.dump());
  EXPECT_EQ(error_of([&] { Tokenizer::from_tokenizer_json(p); }), p + ": model has no \"vocab\" object");

  j = base;
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  p = write_temp(dir, "badregex.json", j.dump());
  msg = error_of([&] { Tokenizer::from_tokenizer_json(p); });
  EXPECT_EQ(msg.rfind(p + ": pre-tokenizer regex does not compile (", 0), 0u) << msg;
}

TEST(Tokenizer, BadListsAndInputsAreErrors) {
  json base = read_json("small_bpe.json");
  Lists l = small_lists(base);
  EXPECT_EQ(error_of([&] { Tokenizer::from_vocab(l.tokens, l.merges, l.types, "falcon", -1, -1, "m.gguf"); }),
            "m.gguf: unsupported pre-tokenizer 'falcon' (supported: gpt-2, smollm, starcoder, llama-bpe, llama3, "
            "qwen2, dbrx, and their aliases)");
  auto types = l.types;
  types.pop_back();
  EXPECT_EQ(error_of([&] { Tokenizer::from_vocab(l.tokens, l.merges, types, "gpt-2", -1, -1, "m.gguf"); }),
            "m.gguf: 599 token types for 600 tokens");
  EXPECT_EQ(error_of([&] { Tokenizer::from_vocab(l.tokens, l.merges, l.types, "gpt-2", 600, -1, "m.gguf"); }),
            "m.gguf: BOS id 600 is not a token of the vocabulary (size 600)");
  auto merges = l.merges;
  merges[3] = "Ġ Ġq";
  EXPECT_EQ(error_of([&] { Tokenizer::from_vocab(l.tokens, merges, l.types, "gpt-2", -1, -1, "m.gguf"); }),
            "m.gguf: merge 3 'Ġ Ġq' names unknown token 'Ġq'");

  Tokenizer t = Tokenizer::from_vocab(l.tokens, l.merges, l.types, "gpt-2", -1, -1, "m.gguf");
  EXPECT_EQ(error_of([&] { t.encode("ab\xC3(", false); }), "m.gguf: text to encode is not valid UTF-8 (byte 2)");
  EXPECT_EQ(error_of([&] { t.encode("ab", true); }), "m.gguf: a BOS token was requested but the tokenizer has none");
  EXPECT_EQ(error_of([&] { t.decode({5, 600}); }), "m.gguf: token id 600 is not in the vocabulary (size 600)");
  EXPECT_EQ(error_of([&] { t.decode({-1}); }), "m.gguf: token id -1 is not in the vocabulary (size 600)");
  // A run of ids cut inside a character decodes to U+FFFD, never to invalid UTF-8.
  auto ids = t.encode("\xE9\xAC\xB1", false);  // one CJK character, three byte tokens here
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(t.decode({ids[0], ids[1]}), "\xEF\xBF\xBD");
  EXPECT_EQ(t.decode_bytes({ids[0], ids[1]}), "\xE9\xAC");
}

TEST(Tokenizer, TokenizerConfigBesideTheFileGivesBosAndEos) {
  std::string dir = ringinfer::test::make_temp_dir("tokenizer");
  std::string tj = write_temp(dir, "tokenizer.json", read_text(fixture_path("small_bpe.json")));
  std::string cfg = write_temp(dir, "tokenizer_config.json",
                               R"({"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}})");
  Tokenizer t = Tokenizer::from_tokenizer_json(tj);
  EXPECT_EQ(t.bos_id(), t.find_token("<|im_start|>"));
  EXPECT_EQ(t.eos_id(), t.find_token("<|im_end|>"));
  EXPECT_GE(t.bos_id(), 0);
  EXPECT_FALSE(t.add_bos_by_default());
  EXPECT_EQ(t.encode("x", true).front(), t.bos_id());

  write_temp(dir, "tokenizer_config.json", R"({"bos_token": "<s>", "eos_token": null})");
  EXPECT_EQ(error_of([&] { Tokenizer::from_tokenizer_json(tj); }), cfg + ": bos_token '<s>' is not a token of " + tj);
  write_temp(dir, "tokenizer_config.json", "{oops");
  std::string msg = error_of([&] { Tokenizer::from_tokenizer_json(tj); });
  EXPECT_EQ(msg.rfind(cfg + ": not valid JSON (", 0), 0u) << msg;
}

TEST(Tokenizer, EncodeIsThreadSafe) {
  Tokenizer t = smollm2();
  json refs = read_json("smollm2_refs.json");
  auto texts = refs["texts"].get<std::vector<std::string>>();
  std::vector<std::vector<std::vector<int32_t>>> got(4);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 20; ++rep)
        for (size_t i = 0; i < texts.size(); ++i) {
          auto ids = t.encode(texts[(i + k) % texts.size()], false);
          if (rep == 19) got[k].push_back(ids);
        }
    });
  for (auto& th : threads) th.join();
  for (int k = 0; k < 4; ++k)
    for (size_t i = 0; i < texts.size(); ++i)
      EXPECT_EQ(got[k][i], refs["ids"][(i + k) % texts.size()].get<std::vector<int32_t>>()) << k << " " << i;
}

TEST(Tokenizer, NfcNormalizerRefusesTextItWouldChange) {
  json doc = read_json("small_bpe.json");
  doc["normalizer"] = {{"type", "NFC"}};
  Tokenizer t = Tokenizer::from_tokenizer_json_text(doc.dump(), "qwen.json");
  // Already-NFC text (precomposed accents, CJK, emoji) encodes as without a normalizer.
  Tokenizer plain = Tokenizer::from_tokenizer_json(fixture_path("small_bpe.json"));
  std::string ok = "caf\xC3\xA9 \xE4\xBB\x8A \xF0\x9F\x98\x80";
  EXPECT_EQ(t.encode(ok, false), plain.encode(ok, false));
  EXPECT_EQ(error_of([&] { t.encode("cafe\xCC\x81", false); }),
            "qwen.json: the tokenizer's NFC normalizer is not implemented, and the text has U+0301 (byte 4), "
            "which NFC may change");
  doc["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_EQ(error_of([&] { Tokenizer::from_tokenizer_json_text(doc.dump(), "x.json"); }),
            "x.json: normalizer type 'Lowercase' is not supported");
}
