#pragma once
// Private to the tokenizer: UTF-8 helpers, GPT-2's byte <-> character map, and the
// pre-tokenizer steps (regex splits with Hugging Face's split behaviours, ByteLevel).
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ringinfer::tok {

// ---------------------------------------------------------------- UTF-8
// Offset of the first byte that does not start a valid UTF-8 sequence (no overlongs,
// surrogates or code points past U+10FFFF), or npos when all of `s` is valid.
size_t find_invalid_utf8(std::string_view s);
// `s` with each maximal invalid subsequence replaced by U+FFFD (as Rust's from_utf8_lossy).
std::string to_valid_utf8(std::string_view s);
// Decodes the code point at s[i] (s valid UTF-8) and advances i.
uint32_t next_code_point(std::string_view s, size_t& i);
void append_utf8(std::string& out, uint32_t cp);

// ---------------------------------------------------------------- byte-level map
// GPT-2's bytes_to_unicode: printable bytes map to themselves, the other 68 bytes to
// U+0100.. in order, so every byte string becomes printable text without spaces.
const std::string& byte_char(uint8_t b);  // UTF-8 of the character byte b maps to
int byte_of_char(uint32_t cp);            // the byte a character maps back to, or -1

// ---------------------------------------------------------------- regex
// A PCRE2 pattern (UTF + UCP, JIT when available). Patterns are written in Oniguruma
// syntax (what tokenizers uses); \s and \S are rewritten to Unicode White_Space, which
// is what Oniguruma means by them (PCRE2 also counts U+180E).
class Regex {
 public:
  Regex(const std::string& pattern, const std::string& source);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Appends every non-overlapping match [begin, end) of `subject`, left to right;
  // empty matches are skipped.
  void find_all(std::string_view subject, std::vector<std::pair<size_t, size_t>>& out) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;  // as given (Oniguruma syntax)
  std::string source_;   // names the tokenizer in errors
  void* code_ = nullptr;  // pcre2_code_8*
};

// Oniguruma \s / \S rewritten to explicit White_Space classes (exposed for tests).
std::string rewrite_whitespace_classes(const std::string& pattern);

// ---------------------------------------------------------------- pre-tokenizer
// Hugging Face SplitDelimiterBehavior (Contiguous is not supported).
enum class SplitBehavior { isolated, removed, merged_with_previous, merged_with_next };

struct PreStep {
  enum class Kind { split, byte_level } kind = Kind::split;
  std::shared_ptr<const Regex> regex;                // split: the delimiter pattern
  SplitBehavior behavior = SplitBehavior::isolated;  // split
  bool add_prefix_space = false;                     // byte_level: prepend " " to each piece
};

// Applies the steps to one segment of text; the pieces view `segment` or strings kept
// in `arena` (pieces given a prefix space).
void pre_tokenize(const std::vector<PreStep>& steps, std::string_view segment,
                  std::deque<std::string>& arena, std::vector<std::string_view>& pieces);

// The regexes Hugging Face tokenizer.json files of these families carry.
extern const char* const kGpt2Regex;    // ByteLevel(use_regex) and GPT-2
extern const char* const kLlama3Regex;  // Llama-3 (digits in runs of up to 3)
extern const char* const kQwen2Regex;   // Qwen2 (single digits)

// The step list for a GGUF tokenizer.ggml.pre name (llama.cpp's mapping of names to
// regexes); sets ignore_merges as llama.cpp does. Throws Error for unknown names.
std::vector<PreStep> steps_for_pre_name(const std::string& pre_name, const std::string& source,
                                        bool& ignore_merges);

}  // namespace ringinfer::tok
