// `ringinfer prep`: text (.txt, one document per file) and JSONL ({"id": ..., "text": ...}
// per line) into one input shard, tokenized with the model's own tokenizer and wrapped in
// an optional prompt template with a {document} placeholder.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.h"
#include "ringinfer/error.h"
#include "ringinfer/log.h"
#include "ringinfer/model_tokenizer.h"
#include "ringinfer/shard.h"

namespace ringinfer::cli {
namespace {

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  RI_CHECK(in, path + ": cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

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
  const ModelSource model = open_model(config.model);
  const Tokenizer tok = load_tokenizer(model);
  const PromptTemplate tmpl = parse_template(config.prompt_template);
  ShardWriter out(config.output, model.config.vocab_size, std::filesystem::path(config.model).filename().string());

  int64_t docs = 0, tokens = 0;
  auto add = [&](const std::string& id, const std::string& text, const std::string& where) {
    std::vector<int32_t> ids;
    try {
      ids = encode_document(tok, tmpl, text);
    } catch (const Error& e) {
      throw Error(where + ": document '" + id + "': " + e.what());
    }
    out.add(id, ids);
    ++docs;
    tokens += static_cast<int64_t>(ids.size());
  };

  for (const std::string& path : config.inputs) {
    const std::string ext = std::filesystem::path(path).extension().string();
    if (ext == ".jsonl") {
      std::ifstream in(path);
      RI_CHECK(in, path + ": cannot open");
      std::string line;
      for (int64_t n = 1; std::getline(in, line); ++n) {
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
        if (j.contains("id")) {
          RI_CHECK(j["id"].is_string() || j["id"].is_number_integer(), where + ": \"id\" must be a string or integer");
          id = j["id"].is_string() ? j["id"].get<std::string>() : std::to_string(j["id"].get<int64_t>());
        }
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
