#include "ringinfer/chat_template.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ringinfer/error.h"
#include "ringinfer/gguf.h"
#include "ringinfer/model_loader.h"

namespace ringinfer {

const char* to_string(ChatFormat f) {
  switch (f) {
    case ChatFormat::none: return "none";
    case ChatFormat::llama3: return "llama3";
    case ChatFormat::chatml: return "chatml";
    case ChatFormat::mistral: return "mistral";
  }
  return "?";
}

ChatFormat parse_chat_format(const std::string& name) {
  if (name == "llama3") return ChatFormat::llama3;
  if (name == "chatml" || name == "qwen") return ChatFormat::chatml;
  if (name == "mistral") return ChatFormat::mistral;
  throw Error("unknown chat template '" + name + "' (choose llama3, chatml or mistral)");
}

ChatFormat recognise_chat_template(const std::string& t) {
  // Llama 3 first: its headers are unambiguous; ChatML's <|im_start|> and Mistral's [INST]
  // do not appear in the others' templates.
  if (t.find("<|start_header_id|>") != std::string::npos) return ChatFormat::llama3;
  if (t.find("<|im_start|>") != std::string::npos) return ChatFormat::chatml;
  if (t.find("[INST]") != std::string::npos) return ChatFormat::mistral;
  return ChatFormat::none;
}

std::string model_chat_template(const ModelSource& model) {
  if (model.format == ModelFormat::gguf)
    return model.gguf_metadata ? model.gguf_metadata->get_string_or("tokenizer.chat_template", "") : "";
  if (model.tokenizer_json.empty()) return "";
  const std::filesystem::path cfg = std::filesystem::path(model.tokenizer_json).parent_path() / "tokenizer_config.json";
  std::ifstream in(cfg, std::ios::binary);
  if (!in) return "";
  std::ostringstream text;
  text << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("chat_template")) return "";
  const nlohmann::json& t = j["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array())
    for (const auto& e : t)
      if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e["template"].is_string())
        return e["template"].get<std::string>();
  return "";
}

std::vector<std::string> chat_special_tokens(ChatFormat f) {
  switch (f) {
    case ChatFormat::llama3: return {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
    case ChatFormat::chatml: return {"<|im_start|>", "<|im_end|>"};
    case ChatFormat::mistral: return {"<s>", "</s>"};
    case ChatFormat::none: break;
  }
  return {};
}

namespace {

void check_role(const ChatMessage& m, size_t i) {
  if (m.role != "system" && m.role != "user" && m.role != "assistant")
    throw Error("message " + std::to_string(i) + " has role \"" + m.role +
                "\" (expected system, user or assistant)");
}

// Llama 3's template trims each message's content.
std::string trimmed(const std::string& s) {
  const char* ws = " \t\r\n";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

}  // namespace

std::vector<PromptPiece> render_chat(ChatFormat f, const std::vector<ChatMessage>& messages) {
  if (f == ChatFormat::none) throw Error("no chat template to render the messages with");
  if (messages.empty()) throw Error("the conversation has no messages");
  for (size_t i = 0; i < messages.size(); ++i) check_role(messages[i], i);
  std::vector<PromptPiece> out;
  auto tmpl = [&](const std::string& s) { out.push_back({s, true}); };
  auto content = [&](const std::string& s) { out.push_back({s, false}); };
  switch (f) {
    case ChatFormat::chatml:  // Qwen2/2.5, SmolLM2
      for (const ChatMessage& m : messages) {
        tmpl("<|im_start|>" + m.role + "\n");
        content(m.content);
        tmpl("<|im_end|>\n");
      }
      tmpl("<|im_start|>assistant\n");
      break;
    case ChatFormat::llama3:  // Llama 3, 3.1, 3.2 instruct
      tmpl("<|begin_of_text|>");
      for (const ChatMessage& m : messages) {
        tmpl("<|start_header_id|>" + m.role + "<|end_header_id|>\n\n");
        content(trimmed(m.content));
        tmpl("<|eot_id|>");
      }
      tmpl("<|start_header_id|>assistant<|end_header_id|>\n\n");
      break;
    case ChatFormat::mistral: {  // Mistral instruct: a system message goes before the first user turn
      std::string system;
      tmpl("<s>");
      for (const ChatMessage& m : messages) {
        if (m.role == "system") {
          system += (system.empty() ? "" : "\n\n") + m.content;
        } else if (m.role == "user") {
          tmpl("[INST] ");
          content(system.empty() ? m.content : system + "\n\n" + m.content);
          system.clear();
          tmpl(" [/INST]");
        } else {
          content(" " + m.content);
          tmpl("</s>");
        }
      }
      if (!system.empty()) throw Error("a system message must come before a user message (mistral template)");
      break;
    }
    case ChatFormat::none: break;
  }
  return out;
}

}  // namespace ringinfer
