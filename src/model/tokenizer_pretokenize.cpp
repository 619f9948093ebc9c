#include "model/tokenizer_pretokenize.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>

#include "ringinfer/error.h"

namespace ringinfer::tok {

// ---------------------------------------------------------------- UTF-8

namespace {

// Length of the valid sequence starting at s[i], or 0 with `good` = how many leading
// bytes form a valid prefix (the "maximal subpart" replaced by one U+FFFD).
size_t utf8_sequence(std::string_view s, size_t i, size_t& good) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size();
  unsigned char c = p[i];
  good = 1;
  if (c < 0x80) return 1;
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;  // overlong
    if (c == 0xED) hi = 0x9F;  // surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;  // overlong
    if (c == 0xF4) hi = 0x8F;  // past U+10FFFF
  } else {
    return 0;
  }
  for (size_t k = 1; k < len; ++k) {
    if (i + k >= n) return 0;
    unsigned char b = p[i + k];
    bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return 0;
    good = k + 1;
  }
  return len;
}

}  // namespace

size_t find_invalid_utf8(std::string_view s) {
  size_t i = 0, good = 0;
  while (i < s.size()) {
    size_t len = utf8_sequence(s, i, good);
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

std::string to_valid_utf8(std::string_view s) {
  if (find_invalid_utf8(s) == std::string_view::npos) return std::string(s);
  std::string out;
  out.reserve(s.size() + 8);
  size_t i = 0, good = 0;
  while (i < s.size()) {
    size_t len = utf8_sequence(s, i, good);
    if (len) {
      out.append(s.data() + i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      i += good;
    }
  }
  return out;
}

uint32_t next_code_point(std::string_view s, size_t& i) {
  auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) { ++i; return c; }
  int len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
  uint32_t cp = c & (0x7F >> len);
  for (int k = 1; k < len && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += len;
  return cp;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// ---------------------------------------------------------------- byte-level map

namespace {

struct ByteMap {
  std::array<std::string, 256> to_char;
  std::array<int, 324> to_byte;  // characters used are below U+0100 + 68
  ByteMap() {
    to_byte.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      uint32_t cp = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + extra++);
      append_utf8(to_char[b], cp);
      to_byte[cp] = b;
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

}  // namespace

const std::string& byte_char(uint8_t b) { return byte_map().to_char[b]; }

int byte_of_char(uint32_t cp) { return cp < 324 ? byte_map().to_byte[cp] : -1; }

// ---------------------------------------------------------------- regex

namespace {
// Unicode White_Space, the set Oniguruma's \s matches.
const char* const kWhiteSpaceMembers =
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";
}  // namespace

std::string rewrite_whitespace_classes(const std::string& p) {
  std::string out;
  bool in_class = false;
  size_t class_start = 0;  // where the class's members begin (after '[' or '[^')
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char e = p[i + 1];
      if (e == 's') {
        out += in_class ? std::string(kWhiteSpaceMembers) : "[" + std::string(kWhiteSpaceMembers) + "]";
      } else if (e == 'S' && !in_class) {
        out += "[^" + std::string(kWhiteSpaceMembers) + "]";
      } else {
        out += c;
        out += e;  // includes \S inside a class: kept as PCRE2's (differs only at U+180E)
      }
      ++i;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      class_start = i + 1;
      continue;
    }
    if (in_class) {
      if (c == '[' && i + 1 < p.size() && p[i + 1] == ':') {  // POSIX [:name:]
        size_t end = p.find(":]", i + 2);
        if (end != std::string::npos) {
          out.append(p, i, end + 2 - i);
          i = end + 1;
          continue;
        }
      }
      if (c == ']' && i != class_start) in_class = false;  // a leading ']' is literal
    }
    out += c;
  }
  return out;
}

Regex::Regex(const std::string& pattern, const std::string& source) : pattern_(pattern), source_(source) {
  std::string rewritten = rewrite_whitespace_classes(pattern);
  int err = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(rewritten.data()), rewritten.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &offset, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw Error(source + ": pre-tokenizer regex does not compile (" + reinterpret_cast<char*>(msg) +
                " at offset " + std::to_string(offset) + "): " + pattern);
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when JIT is unavailable
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

namespace {

// Match block, match context and JIT stack, made once per thread: creating them per call
// (an mmap each) cost more than the matching itself.
struct MatchScratch {
  pcre2_match_data* md = pcre2_match_data_create(16, nullptr);
  pcre2_match_context* mc = pcre2_match_context_create(nullptr);
  // Long runs of one class can exceed the default 32 KiB JIT stack.
  pcre2_jit_stack* js = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, nullptr);
  MatchScratch() { pcre2_jit_stack_assign(mc, nullptr, js); }
  ~MatchScratch() {
    pcre2_match_data_free(md);
    pcre2_match_context_free(mc);
    pcre2_jit_stack_free(js);
  }
  MatchScratch(const MatchScratch&) = delete;
  MatchScratch& operator=(const MatchScratch&) = delete;
};

MatchScratch& match_scratch() {
  thread_local MatchScratch s;
  return s;
}

}  // namespace

void Regex::find_all(std::string_view subject, std::vector<std::pair<size_t, size_t>>& out) const {
  auto* code = static_cast<pcre2_code*>(code_);
  MatchScratch& ms = match_scratch();
  const auto* s = reinterpret_cast<PCRE2_SPTR>(subject.data());
  size_t pos = 0;
  while (pos < subject.size()) {
    // The text was validated once up front, so PCRE2 need not check it per call.
    // rc == 0 means the ovector had too few pairs for every group; the whole match is there.
    int rc = pcre2_match(code, s, subject.size(), pos, PCRE2_NO_UTF_CHECK, ms.md, ms.mc);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      throw Error(source_ + ": pre-tokenizer regex failed on the text (" + reinterpret_cast<char*>(msg) + ")");
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(ms.md);
    size_t b = ov[0], e = ov[1];
    if (e > b) {
      out.emplace_back(b, e);
      pos = e;
    } else {  // empty match: step over one character
      size_t i = b;
      if (i >= subject.size()) break;
      next_code_point(subject, i);
      pos = i;
    }
  }
}

// ---------------------------------------------------------------- pre-tokenizer

const char* const kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace {

// Splits one piece as Hugging Face's NormalizedString::split does: matches and the gaps
// between them, combined according to the behaviour.
void split_piece(const PreStep& step, std::string_view piece, std::vector<std::pair<size_t, size_t>>& matches,
                 std::vector<std::string_view>& out) {
  matches.clear();
  step.regex->find_all(piece, matches);
  struct Part { size_t b, e; bool is_match; };
  std::vector<Part> parts;
  size_t prev = 0;
  for (auto [b, e] : matches) {
    if (b > prev) parts.push_back({prev, b, false});
    parts.push_back({b, e, true});
    prev = e;
  }
  if (prev < piece.size()) parts.push_back({prev, piece.size(), false});

  std::vector<Part> merged;
  switch (step.behavior) {
    case SplitBehavior::isolated:
      merged = std::move(parts);
      break;
    case SplitBehavior::removed:
      for (auto& p : parts) if (!p.is_match) merged.push_back(p);
      break;
    case SplitBehavior::merged_with_previous: {
      bool previous_match = false;
      for (auto& p : parts) {
        if (p.is_match && !previous_match && !merged.empty()) merged.back().e = p.e;
        else merged.push_back(p);
        previous_match = p.is_match;
      }
      break;
    }
    case SplitBehavior::merged_with_next: {
      bool previous_match = false;
      for (size_t k = parts.size(); k-- > 0;) {
        auto& p = parts[k];
        if (p.is_match && !previous_match && !merged.empty()) merged.back().b = p.b;
        else merged.push_back(p);
        previous_match = p.is_match;
      }
      std::reverse(merged.begin(), merged.end());
      break;
    }
  }
  for (auto& p : merged)
    if (p.e > p.b) out.push_back(piece.substr(p.b, p.e - p.b));
}

}  // namespace

void pre_tokenize(const std::vector<PreStep>& steps, std::string_view segment, std::deque<std::string>& arena,
                  std::vector<std::string_view>& pieces) {
  std::vector<std::string_view> cur{segment}, next;
  std::vector<std::pair<size_t, size_t>> matches;
  for (const auto& step : steps) {
    next.clear();
    for (auto piece : cur) {
      if (step.kind == PreStep::Kind::byte_level) {
        if (step.add_prefix_space && (piece.empty() || piece[0] != ' ')) {
          arena.push_back(" " + std::string(piece));
          next.push_back(arena.back());
        } else {
          next.push_back(piece);
        }
      } else {
        split_piece(step, piece, matches, next);
      }
    }
    cur.swap(next);
  }
  for (auto p : cur)
    if (!p.empty()) pieces.push_back(p);
}

std::vector<PreStep> steps_for_pre_name(const std::string& name, const std::string& source, bool& ignore_merges) {
  auto split = [&](const char* re) {
    PreStep s;
    s.kind = PreStep::Kind::split;
    s.regex = std::make_shared<Regex>(re, source);
    return s;
  };
  PreStep byte_level;
  byte_level.kind = PreStep::Kind::byte_level;
  ignore_merges = false;
  auto is = [&](std::initializer_list<const char*> names) {
    for (const char* n : names)
      if (name == n) return true;
    return false;
  };
  if (is({"gpt-2", "gpt2", "phi-2", "mpt", "olmo", "jais", "roberta-bpe", "jina-v1-en", "jina-v2-code"}))
    return {byte_level, split(kGpt2Regex)};
  // StarCoder-style vocabularies (SmolLM): every digit its own piece, then GPT-2's regex.
  if (is({"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"}))
    return {split(R"(\p{N})"), byte_level, split(kGpt2Regex)};
  if (is({"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"})) {
    ignore_merges = true;  // Llama-3's tokenizer.json sets model.ignore_merges
    return {split(kLlama3Regex), byte_level};
  }
  if (is({"dbrx", "smaug-bpe"})) return {split(kLlama3Regex), byte_level};
  if (is({"qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"})) return {split(kQwen2Regex), byte_level};
  throw Error(source + ": unsupported pre-tokenizer '" + name +
              "' (supported: gpt-2, smollm, starcoder, llama-bpe, llama3, qwen2, dbrx, and their aliases)");
}

}  // namespace ringinfer::tok
