#pragma once
// Private to the tokenizer: what a loader extracts (TokenizerSpec) and the built,
// validated tables encode/decode run on (Tokenizer::Impl).
#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/tokenizer_pretokenize.h"
#include "ringinfer/tokenizer.h"

namespace ringinfer::tok {

struct AddedToken {
  std::string content;  // matched verbatim in the text, decoded verbatim
  int32_t id = -1;
  bool special = true;  // special tokens are cut out before the other added tokens
  bool lstrip = false;  // also absorbs whitespace on its left
  bool rstrip = false;  // also absorbs whitespace on its right
};

// Everything a loader (tokenizer.json or GGUF lists) provides.
struct TokenizerSpec {
  std::string source;                     // file path or "GGUF ..." for messages
  std::string pre_name;                   // the pre-tokenizer in words
  std::vector<std::pair<std::string, int32_t>> vocab;  // (text, id) of the BPE model
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::vector<AddedToken> added;
  std::vector<PreStep> pre;               // must contain one byte_level step
  bool ignore_merges = false;             // a piece that is itself a token is not merged
  bool nfc = false;                       // normalizer NFC (checked, see Impl::check_nfc)
  int32_t unk_id = -1;                    // for bytes with no token; -1: such bytes are an error
  int32_t bos_id = -1, eos_id = -1;
  bool add_bos = false;                   // the model's configuration adds BOS
};

}  // namespace ringinfer::tok

namespace ringinfer {

struct Tokenizer::Impl {
  std::string source;
  std::string pre_name;
  std::vector<std::string> id_to_text;             // [vocab_size]; "" where no token has the id
  std::vector<uint8_t> has_token;                  // [vocab_size]: 1 where a token uses the id
  std::vector<uint8_t> added_flag;                 // [vocab_size]: 1 for added tokens
  std::unordered_map<std::string, int32_t> text_to_id;
  struct Merge { int32_t rank, id; };
  std::unordered_map<uint64_t, Merge> merges;      // (left id << 32 | right id) -> rank, merged id
  std::array<int32_t, 256> byte_id{};              // token of each single byte character, or -1
  std::vector<tok::AddedToken> special, other;     // added tokens by class, longest first
  std::vector<tok::PreStep> pre;
  bool ignore_merges = false;
  bool nfc = false;
  int32_t unk_id = -1, bos_id = -1, eos_id = -1;
  bool add_bos = false;

  // BPE results per piece (raw bytes -> ids), bounded in size.
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  // Validates the spec and builds the tables; throws Error naming spec.source.
  static std::unique_ptr<Impl> build(tok::TokenizerSpec spec);

  void encode_segment(std::string_view text, std::vector<int32_t>& out) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  void bpe(std::string_view piece, std::vector<int32_t>& out) const;
  void check_nfc(std::string_view text) const;
  void check_id(int32_t id) const;
};

}  // namespace ringinfer
