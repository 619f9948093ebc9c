// Loads a Hugging Face tokenizer.json (byte-level BPE) into a TokenizerSpec.
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "model/tokenizer_impl.h"
#include "ringinfer/error.h"
#include "ringinfer/tokenizer.h"

namespace ringinfer {

using json = nlohmann::json;
using tok::PreStep;
using tok::SplitBehavior;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  RI_CHECK(in, path + ": cannot open file");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json parse_json(const std::string& text, const std::string& source) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for number overflow
    throw Error(source + ": not valid JSON (" + e.what() + ")");
  }
}

// "type" of a component object, or "" when it is null.
std::string type_of(const json& j, const std::string& source, const char* what) {
  if (j.is_null()) return "";
  RI_CHECK(j.is_object() && j.contains("type") && j["type"].is_string(),
           source + ": " + what + " is not an object with a \"type\"");
  return j["type"].get<std::string>();
}

// A token id: an integer in [0, 2^31). JSON numbers may be floats or far out of range,
// and converting those to int32 is undefined behaviour, so check first.
int32_t token_id(const json& v, const std::string& source, const std::string& what) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  bool ok = false;
  if (v.is_number_unsigned()) ok = v.get<uint64_t>() <= uint64_t(kMax);
  else if (v.is_number_integer()) ok = v.get<int64_t>() >= 0 && v.get<int64_t>() <= kMax;
  RI_CHECK(ok, source + ": " + what + " is not a token id (an integer from 0 to 2^31 - 1): " + v.dump().substr(0, 40));
  return static_cast<int32_t>(v.get<int64_t>());
}

bool flag(const json& j, const char* key, bool dflt) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? dflt : it->get<bool>();
}

std::shared_ptr<const tok::Regex> regex(const std::string& pattern, const std::string& source) {
  return std::make_shared<tok::Regex>(pattern, source);
}

std::string escape_literal(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

void add_pre_steps(const json& j, const std::string& source, std::vector<PreStep>& steps, std::string& name) {
  std::string type = type_of(j, source, "pre_tokenizer");
  if (type.empty()) return;
  auto append_name = [&](const std::string& n) { name += (name.empty() ? "" : ", ") + n; };
  if (type == "Sequence") {
    RI_CHECK(j.contains("pretokenizers") && j["pretokenizers"].is_array(),
             source + ": pre_tokenizer Sequence has no \"pretokenizers\" list");
    for (const auto& sub : j["pretokenizers"]) add_pre_steps(sub, source, steps, name);
    return;
  }
  // ByteLevel maps text to byte characters, so a step after it would see those: not supported.
  for (const auto& s : steps)
    RI_CHECK(s.kind != PreStep::Kind::byte_level,
             source + ": pre_tokenizer step " + type + " after ByteLevel is not supported");
  if (type == "ByteLevel") {
    PreStep s;
    s.kind = PreStep::Kind::byte_level;
    s.add_prefix_space = flag(j, "add_prefix_space", true);  // tokenizers' defaults
    bool use_regex = flag(j, "use_regex", true);
    steps.push_back(s);
    if (use_regex) {
      PreStep r;
      r.regex = regex(tok::kGpt2Regex, source);
      steps.push_back(r);
    }
    append_name(std::string("ByteLevel(") + (use_regex ? "regex" : "no regex") +
                (s.add_prefix_space ? ", prefix space)" : ")"));
  } else if (type == "Digits") {
    PreStep s;
    bool individual = flag(j, "individual_digits", false);
    s.regex = regex(individual ? R"(\p{N})" : R"(\p{N}+)", source);
    steps.push_back(s);
    append_name(individual ? "Digits(individual)" : "Digits");
  } else if (type == "Split") {
    RI_CHECK(j.contains("pattern") && j["pattern"].is_object(), source + ": pre_tokenizer Split has no \"pattern\"");
    const json& p = j["pattern"];
    PreStep s;
    if (p.contains("Regex")) s.regex = regex(p["Regex"].get<std::string>(), source);
    else if (p.contains("String")) s.regex = regex(escape_literal(p["String"].get<std::string>()), source);
    else throw Error(source + ": pre_tokenizer Split pattern is neither Regex nor String");
    std::string behavior = j.value("behavior", "Isolated");
    if (behavior == "Isolated") s.behavior = SplitBehavior::isolated;
    else if (behavior == "Removed") s.behavior = SplitBehavior::removed;
    else if (behavior == "MergedWithPrevious") s.behavior = SplitBehavior::merged_with_previous;
    else if (behavior == "MergedWithNext") s.behavior = SplitBehavior::merged_with_next;
    else throw Error(source + ": pre_tokenizer Split behavior '" + behavior + "' is not supported");
    RI_CHECK(!flag(j, "invert", false), source + ": pre_tokenizer Split with invert=true is not supported");
    steps.push_back(s);
    append_name("Split(" + s.regex->pattern() + ")");
  } else {
    throw Error(source + ": pre_tokenizer type '" + type + "' is not supported (byte-level BPE only)");
  }
}

void check_normalizer(const json& j, const std::string& source, bool& nfc) {
  std::string type = type_of(j, source, "normalizer");
  if (type.empty()) return;
  if (type == "NFC") {
    nfc = true;
  } else if (type == "Sequence") {
    for (const auto& sub : j.at("normalizers")) check_normalizer(sub, source, nfc);
  } else {
    throw Error(source + ": normalizer type '" + type + "' is not supported");
  }
}

void check_decoder(const json& j, const std::string& source) {
  std::string type = type_of(j, source, "decoder");
  if (type.empty() || type == "ByteLevel") return;
  if (type == "Sequence") {
    for (const auto& sub : j.at("decoders")) check_decoder(sub, source);
    return;
  }
  throw Error(source + ": decoder type '" + type + "' is not supported (byte-level BPE only)");
}

// TemplateProcessing "<bos> $A": the leading special token is BOS, added by default.
void read_post_processor(const json& j, const std::string& source, const tok::TokenizerSpec& spec,
                         int32_t& bos_id) {
  std::string type = type_of(j, source, "post_processor");
  if (type == "Sequence") {
    for (const auto& sub : j.at("processors")) read_post_processor(sub, source, spec, bos_id);
    return;
  }
  if (type != "TemplateProcessing") return;  // ByteLevel and others add no tokens we use
  const json& single = j.at("single");
  if (!single.is_array() || single.size() < 2 || !single[0].contains("SpecialToken")) return;
  std::string name = single[0]["SpecialToken"].at("id").get<std::string>();
  const json& specials = j.value("special_tokens", json::object());
  if (specials.contains(name) && specials[name].contains("ids") && !specials[name]["ids"].empty()) {
    bos_id = token_id(specials[name]["ids"][0], source, "post_processor special token '" + name + "' id");
    return;
  }
  for (const auto& a : spec.added)
    if (a.content == name) { bos_id = a.id; return; }
  for (const auto& [text, id] : spec.vocab)
    if (text == name) { bos_id = id; return; }
  throw Error(source + ": post_processor adds '" + name + "', which is not a token");
}

int32_t id_of(const tok::TokenizerSpec& spec, const std::string& text) {
  for (const auto& a : spec.added)
    if (a.content == text) return a.id;
  for (const auto& [t, id] : spec.vocab)
    if (t == text) return id;
  return -1;
}

// bos_token / eos_token of a tokenizer_config.json beside the tokenizer.json, if any.
void read_tokenizer_config(const std::string& tokenizer_path, tok::TokenizerSpec& spec) {
  namespace fs = std::filesystem;
  fs::path cfg = fs::path(tokenizer_path).parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (tokenizer_path.empty() || !fs::is_regular_file(cfg, ec)) return;
  std::string path = cfg.string();
  json j = parse_json(read_file(path), path);
  auto token_id = [&](const char* key) -> int32_t {
    if (!j.contains(key) || j[key].is_null()) return -1;
    const json& v = j[key];
    std::string text = v.is_string() ? v.get<std::string>() : v.is_object() ? v.value("content", "") : "";
    RI_CHECK(!text.empty(), path + ": \"" + key + "\" is neither a string nor an object with \"content\"");
    int32_t id = id_of(spec, text);
    RI_CHECK(id >= 0, path + ": " + key + " '" + text + "' is not a token of " + tokenizer_path);
    return id;
  };
  try {
    int32_t bos = token_id("bos_token"), eos = token_id("eos_token");
    if (spec.bos_id < 0) spec.bos_id = bos;
    if (eos >= 0) spec.eos_id = eos;
    if (j.contains("add_bos_token") && j["add_bos_token"].is_boolean())
      spec.add_bos = j["add_bos_token"].get<bool>() && spec.bos_id >= 0;
  } catch (const json::exception& e) {
    throw Error(path + ": unexpected structure (" + e.what() + ")");
  }
}

tok::TokenizerSpec spec_from_json(const json& j, const std::string& source) {
  tok::TokenizerSpec spec;
  spec.source = source;
  RI_CHECK(j.is_object(), source + ": the top level is not a JSON object");
  RI_CHECK(j.contains("model") && j["model"].is_object(), source + ": no \"model\" object");
  const json& model = j["model"];
  std::string type = model.value("type", "BPE");
  RI_CHECK(type == "BPE", source + ": model type '" + type + "' is not supported (byte-level BPE only)");
  RI_CHECK(model.contains("vocab") && model["vocab"].is_object(), source + ": model has no \"vocab\" object");
  RI_CHECK(model.contains("merges") && model["merges"].is_array(), source + ": model has no \"merges\" list");
  RI_CHECK(!flag(model, "byte_fallback", false), source + ": model.byte_fallback is not supported (byte-level BPE only)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model.find(key);
    RI_CHECK(it == model.end() || it->is_null() || (it->is_string() && it->get<std::string>().empty()),
             source + ": model." + key + " is not supported");
  }
  auto dropout = model.find("dropout");
  RI_CHECK(dropout == model.end() || dropout->is_null() || dropout->get<double>() == 0.0,
           source + ": model.dropout is not supported (encoding would be random)");
  spec.ignore_merges = flag(model, "ignore_merges", false);

  spec.vocab.reserve(model["vocab"].size());
  for (const auto& [text, id] : model["vocab"].items()) {
    spec.vocab.emplace_back(text, token_id(id, source, "the id of vocab entry '" + text + "'"));
  }
  const json& merges = model["merges"];
  spec.merges.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const json& m = merges[r];
    if (m.is_string()) {
      std::string s = m.get<std::string>();
      size_t sp = s.find(' ');
      RI_CHECK(sp != std::string::npos && sp > 0 && sp + 1 < s.size() && s.find(' ', sp + 1) == std::string::npos,
               source + ": merge " + std::to_string(r) + " '" + s + "' is not two tokens separated by one space");
      spec.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else {
      RI_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
               source + ": merge " + std::to_string(r) + " is neither \"a b\" nor [\"a\", \"b\"]");
      spec.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    }
  }

  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const auto& a : j["added_tokens"]) {
      tok::AddedToken t;
      t.id = token_id(a.at("id"), source, "an added token's id");
      t.content = a.at("content").get<std::string>();
      t.special = flag(a, "special", false);
      t.lstrip = flag(a, "lstrip", false);
      t.rstrip = flag(a, "rstrip", false);
      RI_CHECK(!flag(a, "single_word", false),
               source + ": added token '" + t.content + "' has single_word=true, which is not supported");
      spec.added.push_back(std::move(t));
    }
  }
  auto unk = model.find("unk_token");
  if (unk != model.end() && !unk->is_null()) {
    spec.unk_id = id_of(spec, unk->get<std::string>());
    RI_CHECK(spec.unk_id >= 0, source + ": model.unk_token '" + unk->get<std::string>() + "' is not a token");
  }

  check_normalizer(j.value("normalizer", json()), source, spec.nfc);
  add_pre_steps(j.value("pre_tokenizer", json()), source, spec.pre, spec.pre_name);
  check_decoder(j.value("decoder", json()), source);
  read_post_processor(j.value("post_processor", json()), source, spec, spec.bos_id);
  spec.add_bos = spec.bos_id >= 0;
  return spec;
}

}  // namespace

Tokenizer Tokenizer::from_tokenizer_json_text(const std::string& json_text, const std::string& source) {
  json j = parse_json(json_text, source);
  tok::TokenizerSpec spec;
  try {
    spec = spec_from_json(j, source);
  } catch (const json::exception& e) {
    throw Error(source + ": unexpected tokenizer.json structure (" + e.what() + ")");
  }
  return Tokenizer(Impl::build(std::move(spec)));
}

Tokenizer Tokenizer::from_tokenizer_json(const std::string& path) {
  json j = parse_json(read_file(path), path);
  tok::TokenizerSpec spec;
  try {
    spec = spec_from_json(j, path);
  } catch (const json::exception& e) {
    throw Error(path + ": unexpected tokenizer.json structure (" + e.what() + ")");
  }
  read_tokenizer_config(path, spec);
  return Tokenizer(Impl::build(std::move(spec)));
}

}  // namespace ringinfer
