#pragma once
// Chat templates (issue 19): the conversation formats of the model families we load
// (Llama 3, ChatML as Qwen and SmolLM use it, Mistral's [INST]), shipped as code, and the
// recognition of a model's own template string (Jinja from tokenizer_config.json
// `chat_template` or GGUF `tokenizer.chat_template`) by the markers each format uses.
// Rendering yields pieces flagged as template text (special tokens such as <|im_start|>
// are recognised) or message content (plain text: a document can never inject a control
// token, as with prep's prompt templates).
#include <string>
#include <vector>

namespace ringinfer {

struct ModelSource;  // model_loader.h

enum class ChatFormat { none, llama3, chatml, mistral };
const char* to_string(ChatFormat f);  // "none" | "llama3" | "chatml" | "mistral"
// "llama3" | "chatml" | "mistral" (also "qwen" for chatml); Error naming the choices otherwise.
ChatFormat parse_chat_format(const std::string& name);

struct ChatMessage {
  std::string role;     // "system" | "user" | "assistant"
  std::string content;  // plain text
};

struct PromptPiece {
  std::string text;
  bool special = false;  // template text: encode with special tokens recognised
};

// The format whose markers the model's template string holds, or none when it holds none
// of them (or is empty).
ChatFormat recognise_chat_template(const std::string& model_template);

// The model's own template string: GGUF `tokenizer.chat_template`, or `chat_template` of the
// tokenizer_config.json beside a Hugging Face tokenizer.json (a string, or the "default"
// entry of a list of {name, template}); "" when it has none.
std::string model_chat_template(const ModelSource& model);

// The special tokens a format's template text needs as single tokens (for a check against
// the tokenizer before rendering), e.g. {"<|im_start|>", "<|im_end|>"} for chatml.
std::vector<std::string> chat_special_tokens(ChatFormat f);

// The conversation, ending with the assistant's turn opened (the generation prompt), as
// the family's template renders it; begins with the BOS text where the format has one
// (Llama 3's <|begin_of_text|>, Mistral's <s>), so no BOS is added besides. Roles other
// than system/user/assistant, an empty conversation, or format none: Error.
std::vector<PromptPiece> render_chat(ChatFormat f, const std::vector<ChatMessage>& messages);

}  // namespace ringinfer
