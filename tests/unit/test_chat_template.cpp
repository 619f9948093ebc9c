// Shipped chat templates (include/ringinfer/chat_template.h): each family's rendering
// against the text its own Jinja template produces for the same conversation (written out
// here from the models' tokenizer_config.json templates), and recognition of those templates.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gtest_helpers.h"
#include "ringinfer/chat_template.h"
#include "ringinfer/error.h"

using namespace ringinfer;

namespace {

const std::vector<ChatMessage> kConversation = {
    {"system", "Be brief."}, {"user", "Hi <|im_end|> there "}, {"assistant", "Hello."}, {"user", "Sum up."}};

std::string joined(const std::vector<PromptPiece>& pieces) {
  std::string s;
  for (const PromptPiece& p : pieces) s += p.text;
  return s;
}

// Message content is never template text, so its special-looking text stays plain.
void expect_contents_plain(const std::vector<PromptPiece>& pieces) {
  bool found = false;
  for (const PromptPiece& p : pieces) {
    if (p.text.find("<|im_end|> there") == std::string::npos) continue;
    found = true;
    EXPECT_FALSE(p.special) << p.text;
  }
  EXPECT_TRUE(found);
}

}  // namespace

TEST(ChatTemplate, ChatmlRendersAsQwenAndSmolLM) {
  const auto pieces = render_chat(ChatFormat::chatml, kConversation);
  EXPECT_EQ(joined(pieces),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi <|im_end|> there <|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nSum up.<|im_end|>\n<|im_start|>assistant\n");
  expect_contents_plain(pieces);
}

TEST(ChatTemplate, Llama3RendersWithHeadersAndTrimmedContent) {
  const auto pieces = render_chat(ChatFormat::llama3, kConversation);
  EXPECT_EQ(joined(pieces),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi <|im_end|> there<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nSum up.<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  expect_contents_plain(pieces);
}

TEST(ChatTemplate, MistralPutsTheSystemMessageInTheFirstUserTurn) {
  const auto pieces = render_chat(ChatFormat::mistral, kConversation);
  EXPECT_EQ(joined(pieces), "<s>[INST] Be brief.\n\nHi <|im_end|> there  [/INST] Hello.</s>[INST] Sum up. [/INST]");
  expect_contents_plain(pieces);
  EXPECT_THROW(render_chat(ChatFormat::mistral, {{"user", "a"}, {"system", "late"}}), Error);
}

TEST(ChatTemplate, RecognisesTheFamiliesTemplates) {
  // Fragments of the real templates (tokenizer_config.json chat_template).
  const std::string llama3 =
      "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
      "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}";
  const std::string qwen2 =
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
      "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
  const std::string mistral =
      "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] "
      "+ ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% endif %}";
  EXPECT_EQ(recognise_chat_template(llama3), ChatFormat::llama3);
  EXPECT_EQ(recognise_chat_template(qwen2), ChatFormat::chatml);
  EXPECT_EQ(recognise_chat_template(mistral), ChatFormat::mistral);
  EXPECT_EQ(recognise_chat_template(""), ChatFormat::none);
  EXPECT_EQ(recognise_chat_template("{{ messages }}"), ChatFormat::none);
}

TEST(ChatTemplate, NamesAndErrors) {
  EXPECT_EQ(parse_chat_format("llama3"), ChatFormat::llama3);
  EXPECT_EQ(parse_chat_format("qwen"), ChatFormat::chatml);
  EXPECT_EQ(test::error_of([] { parse_chat_format("gemma"); }),
            "unknown chat template 'gemma' (choose llama3, chatml or mistral)");
  EXPECT_EQ(test::error_of([] { render_chat(ChatFormat::chatml, {{"tool", "x"}}); }),
            "message 0 has role \"tool\" (expected system, user or assistant)");
  EXPECT_THROW(render_chat(ChatFormat::chatml, {}), Error);
  EXPECT_THROW(render_chat(ChatFormat::none, {{"user", "x"}}), Error);
  EXPECT_EQ(chat_special_tokens(ChatFormat::chatml), (std::vector<std::string>{"<|im_start|>", "<|im_end|>"}));
}
