// `ringinfer prep`: text (.txt, one document per file) and JSONL into one input shard,
// tokenized with the model's own tokenizer. JSONL lines are {"id": ..., "text": ...} or
// OpenAI batch requests {"custom_id": ..., "body": {"messages": [...]}} (chat, rendered with
// the chat template) or {..., "body": {"prompt": "..."}}; a body's max_tokens and
// temperature go into the shard per document. Text and prompts are wrapped in an optional
// prompt template (a whole prompt with a {document} placeholder) or user template (the
// user message, put into the chat template).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <unordered_map>

#include "cli/commands.h"
#include "cli/output_path.h"
#include "ringinfer/chat_template.h"
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
std::string jsonl_id(const nlohmann::json& id, const std::string& where, const std::string& key = "id") {
  if (id.is_string()) return id.get<std::string>();
  if (id.is_number_unsigned()) return std::to_string(id.get<uint64_t>());
  if (id.is_number_integer()) return std::to_string(id.get<int64_t>());
  throw Error(where + ": \"" + key + "\" must be a string or an integer of at most 64 bits (quote other ids)");
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

// A chat rendering: template pieces with special tokens, contents as plain text. The
// format writes its own BOS text where it has one.
std::vector<int32_t> encode_chat(const Tokenizer& tok, const std::vector<PromptPiece>& pieces) {
  std::vector<int32_t> ids;
  for (const PromptPiece& p : pieces) {
    const auto e = tok.encode(p.text, false, /*parse_special=*/p.special);
    ids.insert(ids.end(), e.begin(), e.end());
  }
  return ids;
}

// The chat format for chat lines and --user-template: the one named, or the one recognised
// in the model's own template; its special tokens must be single tokens of the tokenizer.
// Resolved on first use (a job without chat needs none) and said once.
class ChatChoice {
 public:
  ChatChoice(const RunConfig& c, const ModelSource& m, const Tokenizer& t) : config_(c), model_(m), tok_(t) {}
  ChatFormat get() {
    if (resolved_) return format_;
    resolved_ = true;
    std::string how = "--chat-template";
    if (config_.chat_template != "auto") {
      format_ = parse_chat_format(config_.chat_template);
    } else {
      const std::string t = model_chat_template(model_);
      format_ = recognise_chat_template(t);
      RI_CHECK(format_ != ChatFormat::none,
               config_.model + (t.empty() ? ": the model has no chat template" : ": the model's chat template is not "
                                "one ringinfer ships (llama3, chatml, mistral)") +
                   ": pass --chat-template NAME, or a whole prompt with --prompt-template FILE");
      how = "recognised from the model's own template";
    }
    for (const std::string& s : chat_special_tokens(format_))
      RI_CHECK(tok_.find_token(s) >= 0, config_.model + ": chat template " + to_string(format_) + " needs the token " +
                                            s + ", which the model's tokenizer lacks: pass --chat-template NAME");
    log::info(std::string("chat template: ") + to_string(format_) + " (" + how + ")");
    return format_;
  }

 private:
  const RunConfig& config_;
  const ModelSource& model_;
  const Tokenizer& tok_;
  bool resolved_ = false;
  ChatFormat format_ = ChatFormat::none;
};

// One document read from an input: its text (a .txt file, a "text" or a "prompt"), or a
// conversation (chat lines), plus the body's options.
struct InputDocument {
  std::string id, where;
  std::string text;
  bool chat = false;
  std::vector<ChatMessage> messages;
  DocOptions options;
};

// A message's content: a string, or OpenAI's list of parts, whose "text" parts are joined.
std::string message_content(const nlohmann::json& c, const std::string& where) {
  if (c.is_string()) return c.get<std::string>();
  if (c.is_array()) {
    std::string out;
    for (const auto& part : c) {
      RI_CHECK(part.is_object() && part.value("type", "") == "text" && part.contains("text") && part["text"].is_string(),
               where + ": a message content part must be {\"type\": \"text\", \"text\": ...} (only text is supported)");
      out += part["text"].get<std::string>();
    }
    return out;
  }
  throw Error(where + ": a message \"content\" must be a string or a list of text parts");
}

// An OpenAI batch request line: {"custom_id", "body": {"messages" | "prompt", "max_tokens",
// "max_completion_tokens", "temperature", ...}} (other body fields are ignored).
InputDocument batch_request(const nlohmann::json& j, const std::string& where) {
  InputDocument d;
  d.where = where;
  d.id = jsonl_id(j["custom_id"], where, "custom_id");
  RI_CHECK(j.contains("body") && j["body"].is_object(), where + ": expected a \"body\" object beside \"custom_id\"");
  const nlohmann::json& b = j["body"];
  if (b.contains("messages")) {
    RI_CHECK(b["messages"].is_array() && !b["messages"].empty(), where + ": \"messages\" must be a non-empty list");
    d.chat = true;
    for (const auto& m : b["messages"]) {
      RI_CHECK(m.is_object() && m.contains("role") && m["role"].is_string() && m.contains("content"),
               where + ": each message needs a string \"role\" and a \"content\"");
      d.messages.push_back({m["role"].get<std::string>(), message_content(m["content"], where)});
    }
  } else {
    RI_CHECK(b.contains("prompt") && b["prompt"].is_string(),
             where + ": the body needs \"messages\" (chat) or a string \"prompt\"");
    d.text = b["prompt"].get<std::string>();
  }
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (!b.contains(key) || b[key].is_null()) continue;
    const nlohmann::json& v = b[key];
    RI_CHECK((v.is_number_unsigned() || v.is_number_integer()) && v.get<int64_t>() >= 0 &&
                 v.get<int64_t>() <= kMaxDocNewTokens,
             where + ": \"" + key + "\" must be an integer in [0, " + std::to_string(kMaxDocNewTokens) + "]");
    d.options.max_new_tokens = v.get<int64_t>();
  }
  if (b.contains("temperature") && !b["temperature"].is_null()) {
    const nlohmann::json& v = b["temperature"];
    RI_CHECK(v.is_number() && v.get<double>() >= 0.0 && v.get<double>() <= kMaxDocTemperature,
             where + ": \"temperature\" must be a number in [0, " + std::to_string(int64_t(kMaxDocTemperature)) + "]");
    d.options.temperature = v.get<double>();
  }
  return d;
}

}  // namespace

int prep_command(const RunConfig& config) {
  check_output_path(config);  // before any work: the output overwrites no input, model or template
  const ModelSource model = open_model(config.model);
  const Tokenizer tok = load_tokenizer(model);
  const PromptTemplate tmpl = parse_template(config.prompt_template);
  const std::optional<PromptTemplate> user =
      config.user_template.empty() ? std::nullopt : std::optional<PromptTemplate>(parse_template(config.user_template));
  ChatChoice chat(config, model, tok);
  ShardWriter out(config.output, model.config.vocab_size, std::filesystem::path(config.model).filename().string());

  int64_t docs = 0, tokens = 0;
  IdChecker id_checker;
  const int64_t vocab = model.config.vocab_size;
  auto add = [&](const InputDocument& doc) {
    const std::string& id = doc.id;
    const std::string& where = doc.where;
    id_checker.check(id, where);
    std::vector<int32_t> ids;
    try {
      if (doc.chat) {
        ids = encode_chat(tok, render_chat(chat.get(), doc.messages));
      } else if (user) {
        // The user template with the document in place, all of it the user's text.
        std::string content = user->parts[0];
        for (size_t i = 1; i < user->parts.size(); ++i) content += doc.text + user->parts[i];
        ids = encode_chat(tok, render_chat(chat.get(), {{"user", content}}));
      } else {
        ids = encode_document(tok, tmpl, doc.text);
      }
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
    out.add(id, ids, doc.options);
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
        if (j.is_object() && j.contains("custom_id")) {
          add(batch_request(j, where));
          continue;
        }
        RI_CHECK(j.is_object() && j.contains("text") && j["text"].is_string(),
                 where + ": expected an object with a string \"text\" (or an OpenAI batch request with \"custom_id\")");
        InputDocument d;
        d.where = where;
        d.id = j.contains("id") ? jsonl_id(j["id"], where) : where;
        d.text = j["text"].get<std::string>();
        add(d);
      }
    } else {
      RI_CHECK(ext == ".txt" || ext == ".md" || ext.empty(),
               path + ": unsupported input type '" + ext + "' (use .txt or .jsonl)");
      InputDocument d;
      d.where = path;
      d.id = std::filesystem::path(path).stem().string();
      d.text = read_text_file(path);
      add(d);
    }
  }
  RI_CHECK(docs > 0, "ringinfer prep: the inputs hold no documents");
  out.finish();
  log::info("wrote " + config.output + ": " + std::to_string(docs) + " documents, " + std::to_string(tokens) +
            " tokens");
  return kExitOk;
}

}  // namespace ringinfer::cli
