#pragma once
// Byte-level BPE tokenizer (GPT-2, Llama-3, Qwen2, SmolLM families), built either from a
// Hugging Face tokenizer.json or from the vocabulary lists a GGUF file carries. Encoding
// follows Hugging Face `tokenizers` exactly for the supported configurations:
//   1. added tokens (special ones first, then the others) are cut out of the text verbatim,
//      leftmost-longest, before anything else;
//   2. each remaining segment is split into pieces by the pre-tokenizer steps (Split by a
//      regex, Digits, ByteLevel's GPT-2 regex), with PCRE2 in UTF + UCP mode;
//   3. each piece's bytes become GPT-2's printable byte characters and BPE merges them by
//      merge rank (lowest rank first, leftmost on ties); results are cached per piece.
// Decoding maps byte characters back to bytes; added tokens decode to their text.
// Owns: Tokenizer. Errors in files and lists throw ringinfer::Error naming the source.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ringinfer {

// GGUF tokenizer.ggml.token_type values.
enum class TokenType : int32_t { normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };

class Tokenizer {
 public:
  // Loads a tokenizer.json (model.type "BPE" with a ByteLevel pre-tokenizer). bos/eos come
  // from a TemplateProcessing post-processor ("<bos> $A": bos added by default) and from a
  // tokenizer_config.json next to the file when there is one (bos_token, eos_token).
  static Tokenizer from_tokenizer_json(const std::string& path);
  // The same from JSON text; `source` names it in error messages.
  static Tokenizer from_tokenizer_json_text(const std::string& json_text, const std::string& source);

  // Builds from GGUF metadata lists: tokens[id] (tokenizer.ggml.tokens), merges as "a b"
  // strings in rank order (tokenizer.ggml.merges), token_types[id] (tokenizer.ggml.token_type,
  // may be empty: all normal; CONTROL and USER_DEFINED tokens are matched verbatim),
  // pre_name (tokenizer.ggml.pre, e.g. "smollm", "gpt-2", "llama-bpe", "qwen2"), and
  // bos_id / eos_id (-1: none). `source` names the origin in error messages.
  static Tokenizer from_vocab(const std::vector<std::string>& tokens, const std::vector<std::string>& merges,
                              const std::vector<int32_t>& token_types, const std::string& pre_name,
                              int32_t bos_id, int32_t eos_id, const std::string& source = "GGUF");

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Token ids of `text` (UTF-8; invalid UTF-8 throws Error). add_bos prepends bos_id()
  // (Error when there is none). parse_special = false encodes added-token text such as
  // "<|im_end|>" as ordinary text. Thread-safe.
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special = true) const;

  // Text of `ids`; bytes that do not form valid UTF-8 (an id run cut inside a character)
  // become U+FFFD. Ids out of range throw Error.
  std::string decode(const std::vector<int32_t>& ids) const;
  // The raw bytes of `ids`, possibly invalid UTF-8 (for streaming output token by token).
  std::string decode_bytes(const std::vector<int32_t>& ids) const;

  // The vocabulary's text for `id` as stored (byte-level form, e.g. "Ġthe"; added tokens
  // as written, e.g. "<|im_end|>"); "" for an id no token uses. Throws when out of range.
  const std::string& token_text(int32_t id) const;
  // The bytes `id` decodes to (e.g. " the").
  std::string token_bytes(int32_t id) const;
  // The id whose vocabulary text is `text` exactly, or -1.
  int32_t find_token(std::string_view text) const;
  // True for added tokens (tokenizer.json added_tokens; GGUF CONTROL / USER_DEFINED).
  bool is_added(int32_t id) const;

  int32_t vocab_size() const;  // 1 + the largest id
  int32_t bos_id() const;      // -1 when none
  int32_t eos_id() const;      // -1 when none
  // Whether the model's own configuration adds BOS (TemplateProcessing, GGUF add_bos_token).
  bool add_bos_by_default() const;
  void set_add_bos_by_default(bool add_bos);
  // Where it was loaded from (path or source), and the pre-tokenizer in words.
  const std::string& source() const;
  const std::string& pre_tokenizer_name() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ringinfer
