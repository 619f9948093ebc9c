// `ringinfer prep`: text (.txt, one document per file) and JSONL ({"id": ..., "text": ...}
// per line) into one input shard, tokenized with the model's own tokenizer and wrapped in
// an optional prompt template with a {document} placeholder.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "cli/commands.h"
#include "cli/output_path.h"
#include "ringinfer/error.h"
#include "ringinfer/log.h"
#include "ringinfer/model_tokenizer.h"
#include "ringinfer/shard.h"

namespace ringinfer::cli {
namespace {

// A directory opens as an empty stream on Linux: refuse it by name instead.
void check_not_directory(const std::string& path) {
  std::error_code ec;
  RI_CHECK(!std::filesystem::is_directory(path, ec), path + ": is a directory, not a file");
}

// Editors on Windows start UTF-8 files with a byte order mark; it is not text.
void strip_bom(std::string& s) {
  if (s.compare(0, 3, "\xEF\xBB\xBF") == 0) s.erase(0, 3);
}

// The caller has refused a directory (check_not_directory).
std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  RI_CHECK(in, path + ": cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  std::string text = s.str();
  strip_bom(text);
  return text;
}

// A document id in a one-line message: control bytes as \xNN, long ids cut.
std::string quoted_id(const std::string& id) {
  std::string out = "\"";
  for (unsigned char ch : id.substr(0, 80)) {
    if (ch >= 0x20 && ch != 0x7f) {
      out += char(ch);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", unsigned(ch));
      out += buf;
    }
  }
  return out + (id.size() > 80 ? "...\"" : "\"");
}

// The id of a JSONL object: a string, or an integer exactly as written. nlohmann reads an
// integer beyond 64 bits (or with a fraction or exponent) as a double, which would not be
// the id the file holds.
std::string jsonl_id(const nlohmann::json& id, const std::string& where) {
  if (id.is_string()) return id.get<std::string>();
  if (id.is_number_unsigned()) return std::to_string(id.get<uint64_t>());
  if (id.is_number_integer()) return std::to_string(id.get<int64_t>());
  throw Error(where + ": \"id\" must be a string or an integer of at most 64 bits (quote other ids)");
}

// The shard's rules for ids (ringinfer/shard.h), checked here so that a problem names the
// input file and line rather than the output shard.
class IdChecker {
 public:
  void check(const std::string& id, const std::string& where) {
    RI_CHECK(!id.empty(), where + ": empty document id");
    RI_CHECK(id.find('\0') == std::string::npos, where + ": document id " + quoted_id(id) + " contains a NUL byte");
    RI_CHECK(id.size() <= kMaxDocIdBytes, where + ": document id is " + std::to_string(id.size()) +
                                              " bytes long, more than the " + std::to_string(kMaxDocIdBytes) +
                                              " allowed");
    const auto [it, fresh] = first_seen_.emplace(id, where);
    RI_CHECK(fresh, where + ": duplicate document id " + quoted_id(id) + " (first at " + it->second + ")");
  }

 private:
  std::unordered_map<std::string, std::string> first_seen_;  // id -> file:line (or file) that gave it
};

// The template split at its {document} placeholders. The template's own text may hold
// special tokens (<|im_start|>) and is encoded with them; the document is encoded as plain
// text, so a document containing "<|im_end|>" cannot inject a control token.
struct PromptTemplate {
  std::vector<std::string> parts;  // text between placeholders: documents go between parts
};

PromptTemplate parse_template(const std::string& path) {
  PromptTemplate t;
  if (path.empty()) {
    t.parts = {"", ""};
    return t;
  }
  check_not_directory(path);
  const std::string text = read_text_file(path);
  const std::string mark = "{document}";
  size_t start = 0;
  for (size_t pos; (pos = text.find(mark, start)) != std::string::npos; start = pos + mark.size())
    t.parts.push_back(text.substr(start, pos - start));
  RI_CHECK(!t.parts.empty(), path + ": prompt template has no {document} placeholder");
  t.parts.push_back(text.substr(start));
  return t;
}

std::vector<int32_t> encode_document(const Tokenizer& tok, const PromptTemplate& t, const std::string& doc) {
  std::vector<int32_t> ids;
  if (tok.add_bos_by_default() && tok.bos_id() >= 0) ids.push_back(tok.bos_id());
  for (size_t i = 0; i < t.parts.size(); ++i) {
    if (i > 0) {
      const auto d = tok.encode(doc, false, /*parse_special=*/false);
      ids.insert(ids.end(), d.begin(), d.end());
    }
    const auto p = tok.encode(t.parts[i], false, /*parse_special=*/true);
    ids.insert(ids.end(), p.begin(), p.end());
  }
  return ids;
}

}  // namespace

int prep_command(const RunConfig& config) {
  check_output_path(config);  // before any work: the output overwrites no input, model or template
  const ModelSource model = open_model(config.model);
  const Tokenizer tok = load_tokenizer(model);
  const PromptTemplate tmpl = parse_template(config.prompt_template);
  ShardWriter out(config.output, model.config.vocab_size, std::filesystem::path(config.model).filename().string());

  int64_t docs = 0, tokens = 0;
  IdChecker id_checker;
  const int64_t vocab = model.config.vocab_size;
  auto add = [&](const std::string& id, const std::string& text, const std::string& where) {
    id_checker.check(id, where);
    std::vector<int32_t> ids;
    try {
      ids = encode_document(tok, tmpl, text);
    } catch (const Error& e) {
      throw Error(where + ": document " + quoted_id(id) + ": " + e.what());
    }
    // A token outside the model's vocabulary is the tokenizer's fault (it does not belong
    // to this model's config), not the input's nor the output shard's.
    for (int32_t t : ids)
      RI_CHECK(t >= 0 && t < vocab, config.model + ": its tokenizer gives token id " + std::to_string(t) +
                                        " (document " + quoted_id(id) + " of " + where +
                                        "), outside the model's vocabulary [0, " + std::to_string(vocab) +
                                        ") of its config: the tokenizer does not match the model");
    out.add(id, ids);
    ++docs;
    tokens += static_cast<int64_t>(ids.size());
  };

  for (const std::string& path : config.inputs) {
    const std::string ext = std::filesystem::path(path).extension().string();
    check_not_directory(path);
    if (ext == ".jsonl") {
      std::ifstream in(path, std::ios::binary);
      RI_CHECK(in, path + ": cannot open");
      std::string line;
      for (int64_t n = 1; std::getline(in, line); ++n) {
        if (n == 1) strip_bom(line);
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const std::string where = path + ":" + std::to_string(n);
        nlohmann::json j;
        try {
          j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& e) {
          throw Error(where + ": not valid JSON (" + e.what() + ")");
        }
        RI_CHECK(j.is_object() && j.contains("text") && j["text"].is_string(),
                 where + ": expected an object with a string \"text\"");
        std::string id = where;
        if (j.contains("id")) id = jsonl_id(j["id"], where);
        add(id, j["text"].get<std::string>(), where);
      }
    } else {
      RI_CHECK(ext == ".txt" || ext == ".md" || ext.empty(),
               path + ": unsupported input type '" + ext + "' (use .txt or .jsonl)");
      add(std::filesystem::path(path).stem().string(), read_text_file(path), path);
    }
  }
  RI_CHECK(docs > 0, "ringinfer prep: the inputs hold no documents");
  out.finish();
  log::info("wrote " + config.output + ": " + std::to_string(docs) + " documents, " + std::to_string(tokens) +
            " tokens");
  return kExitOk;
}

}  // namespace ringinfer::cli
