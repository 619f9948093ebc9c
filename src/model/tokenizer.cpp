// Byte-level BPE: table building, encode (added tokens, pre-tokenization, cached BPE),
// decode, and the GGUF-list loader. The tokenizer.json loader is tokenizer_json.cpp.
#include "ringinfer/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <queue>

#include "model/tokenizer_impl.h"
#include "ringinfer/error.h"

namespace ringinfer {

using tok::AddedToken;
using tok::TokenizerSpec;

namespace {

constexpr int32_t kMaxVocab = 1 << 24;       // ids beyond this are a broken file, not a vocabulary
constexpr size_t kCacheMaxEntries = 1 << 20;  // about 100 MB of cached pieces at most
constexpr size_t kCacheMaxPieceBytes = 256;   // longer pieces are rare and not worth keeping

std::string hex_byte(uint8_t b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", b);
  return buf;
}

bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// Cuts the added tokens of `toks` (longest first) out of `text`, leftmost-longest, and
// hands the text between them and the token ids to the callbacks in order.
template <class OnText, class OnToken>
void split_on_added(std::string_view text, const std::vector<AddedToken>& toks, OnText on_text, OnToken on_token) {
  if (toks.empty()) {
    if (!text.empty()) on_text(text);
    return;
  }
  std::array<bool, 256> first{};
  for (const auto& t : toks) first[static_cast<unsigned char>(t.content[0])] = true;
  size_t seg = 0, i = 0, n = text.size();
  while (i < n) {
    if (!first[static_cast<unsigned char>(text[i])]) { ++i; continue; }
    const AddedToken* hit = nullptr;
    for (const auto& t : toks)
      if (text.compare(i, t.content.size(), t.content) == 0) { hit = &t; break; }
    if (!hit) { ++i; continue; }
    size_t b = i, e = i + hit->content.size();
    if (hit->lstrip) while (b > seg && is_ascii_space(text[b - 1])) --b;
    if (hit->rstrip) while (e < n && is_ascii_space(text[e])) ++e;
    if (b > seg) on_text(text.substr(seg, b - seg));
    on_token(hit->id);
    seg = i = e;
  }
  if (seg < n) on_text(text.substr(seg));
}

}  // namespace

// ---------------------------------------------------------------- building

std::unique_ptr<Tokenizer::Impl> Tokenizer::Impl::build(TokenizerSpec spec) {
  auto m = std::make_unique<Impl>();
  const std::string& src = spec.source;
  m->source = spec.source;
  m->pre_name = spec.pre_name;
  m->pre = std::move(spec.pre);
  m->ignore_merges = spec.ignore_merges;
  m->nfc = spec.nfc;

  bool has_byte_level = false;
  for (const auto& s : m->pre) has_byte_level |= s.kind == tok::PreStep::Kind::byte_level;
  RI_CHECK(has_byte_level, src + ": the pre-tokenizer has no ByteLevel step; only byte-level BPE is supported");
  RI_CHECK(!spec.vocab.empty(), src + ": the vocabulary is empty");

  int32_t max_id = -1;
  for (const auto& [text, id] : spec.vocab) {
    RI_CHECK(id >= 0 && id < kMaxVocab, src + ": token '" + text + "' has id " + std::to_string(id) +
                                            " outside [0, " + std::to_string(kMaxVocab) + ")");
    max_id = std::max(max_id, id);
  }
  for (const auto& a : spec.added) {
    RI_CHECK(a.id >= 0 && a.id < kMaxVocab, src + ": added token '" + a.content + "' has id " +
                                                std::to_string(a.id) + " outside [0, " +
                                                std::to_string(kMaxVocab) + ")");
    RI_CHECK(!a.content.empty(), src + ": added token " + std::to_string(a.id) + " has empty content");
    max_id = std::max(max_id, a.id);
  }
  size_t n = static_cast<size_t>(max_id) + 1;
  m->id_to_text.assign(n, std::string());
  m->has_token.assign(n, 0);
  m->added_flag.assign(n, 0);
  m->text_to_id.reserve(spec.vocab.size() * 2);
  for (auto& [text, id] : spec.vocab) {
    RI_CHECK(!m->has_token[id], src + ": tokens '" + m->id_to_text[id] + "' and '" + text + "' share id " +
                                    std::to_string(id));
    m->has_token[id] = 1;
    m->text_to_id.emplace(text, id);  // a repeated text keeps its first id
    m->id_to_text[id] = std::move(text);
  }
  for (const auto& a : spec.added) {
    // An added token is matched and decoded by its content, whatever the model's vocab holds.
    m->id_to_text[a.id] = a.content;
    m->has_token[a.id] = 1;
    m->added_flag[a.id] = 1;
    m->text_to_id.emplace(a.content, a.id);
    (a.special ? m->special : m->other).push_back(a);
  }
  auto longest_first = [](const AddedToken& x, const AddedToken& y) {
    return x.content.size() != y.content.size() ? x.content.size() > y.content.size() : x.id < y.id;
  };
  std::stable_sort(m->special.begin(), m->special.end(), longest_first);
  std::stable_sort(m->other.begin(), m->other.end(), longest_first);

  for (int b = 0; b < 256; ++b) {
    auto it = m->text_to_id.find(tok::byte_char(static_cast<uint8_t>(b)));
    m->byte_id[b] = it == m->text_to_id.end() ? -1 : it->second;
  }

  m->merges.reserve(spec.merges.size() * 2);
  for (size_t r = 0; r < spec.merges.size(); ++r) {
    const auto& [a, b] = spec.merges[r];
    auto where = src + ": merge " + std::to_string(r) + " '" + a + " " + b + "'";
    auto ia = m->text_to_id.find(a), ib = m->text_to_id.find(b);
    RI_CHECK(ia != m->text_to_id.end(), where + " names unknown token '" + a + "'");
    RI_CHECK(ib != m->text_to_id.end(), where + " names unknown token '" + b + "'");
    auto iab = m->text_to_id.find(a + b);
    RI_CHECK(iab != m->text_to_id.end(), where + ": the merged token '" + a + b + "' is not in the vocabulary");
    uint64_t key = (static_cast<uint64_t>(ia->second) << 32) | static_cast<uint32_t>(ib->second);
    m->merges.emplace(key, Merge{static_cast<int32_t>(r), iab->second});  // a repeated pair keeps its first rank
  }

  auto check_special = [&](int32_t id, const char* what) {
    RI_CHECK(id >= -1 && id < static_cast<int32_t>(n) && (id < 0 || m->has_token[id]),
             src + ": " + what + " id " + std::to_string(id) + " is not a token of the vocabulary (size " +
                 std::to_string(n) + ")");
  };
  check_special(spec.unk_id, "unknown-token");
  check_special(spec.bos_id, "BOS");
  check_special(spec.eos_id, "EOS");
  m->unk_id = spec.unk_id;
  m->bos_id = spec.bos_id;
  m->eos_id = spec.eos_id;
  m->add_bos = spec.add_bos && spec.bos_id >= 0;
  return m;
}

// ---------------------------------------------------------------- encoding

void Tokenizer::Impl::check_nfc(std::string_view text) const {
  // NFC composition is not implemented. Text that NFC leaves alone encodes correctly; these
  // ranges hold the characters that make NFC change real-world text (decomposed Latin
  // accents, conjoining Hangul jamo, compatibility ideographs), so refuse rather than
  // return ids the model's own tokenizer would not produce.
  size_t i = 0;
  while (i < text.size()) {
    size_t at = i;
    uint32_t cp = tok::next_code_point(text, i);
    bool suspect = (cp >= 0x300 && cp <= 0x36F) || (cp >= 0x1100 && cp <= 0x11FF) ||
                   (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
    if (suspect) {
      char buf[16];
      std::snprintf(buf, sizeof buf, "U+%04X", cp);
      throw Error(source + ": the tokenizer's NFC normalizer is not implemented, and the text has " + buf +
                  " (byte " + std::to_string(at) + "), which NFC may change");
    }
  }
}

void Tokenizer::Impl::encode_segment(std::string_view text, std::vector<int32_t>& out) const {
  std::deque<std::string> arena;
  std::vector<std::string_view> pieces;
  tok::pre_tokenize(pre, text, arena, pieces);
  for (auto p : pieces) encode_piece(p, out);
}

void Tokenizer::Impl::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  bool cacheable = piece.size() <= kCacheMaxPieceBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = cache.find(std::string(piece));
    if (it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  size_t start = out.size();
  bpe(piece, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache.size() >= kCacheMaxEntries) cache.clear();
    cache.emplace(std::string(piece), std::vector<int32_t>(out.begin() + start, out.end()));
  }
}

void Tokenizer::Impl::bpe(std::string_view piece, std::vector<int32_t>& out) const {
  if (ignore_merges) {
    std::string mapped;
    for (unsigned char c : piece) mapped += tok::byte_char(c);
    auto it = text_to_id.find(mapped);
    if (it != text_to_id.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // Symbols start as one token per byte and form a linked list; merging folds the right
  // symbol into the left one. A heap keeps candidate pairs by (rank, position), and a
  // candidate whose symbols have changed since it was pushed is skipped when popped.
  struct Sym { int32_t id, prev, next; bool alive; };
  const int32_t n = static_cast<int32_t>(piece.size());
  std::vector<Sym> sym(n);
  for (int32_t i = 0; i < n; ++i) {
    auto b = static_cast<uint8_t>(piece[i]);
    int32_t id = byte_id[b] >= 0 ? byte_id[b] : unk_id;
    RI_CHECK(id >= 0, source + ": byte " + hex_byte(b) + " has no token in the vocabulary (and no unknown token)");
    sym[i] = {id, i - 1, i + 1 < n ? i + 1 : -1, true};
  }
  struct Cand { int32_t rank, left, right, id_left, id_right, merged; };
  auto later = [](const Cand& x, const Cand& y) { return x.rank != y.rank ? x.rank > y.rank : x.left > y.left; };
  std::priority_queue<Cand, std::vector<Cand>, decltype(later)> heap(later);
  auto push = [&](int32_t l, int32_t r) {
    uint64_t key = (static_cast<uint64_t>(sym[l].id) << 32) | static_cast<uint32_t>(sym[r].id);
    auto it = merges.find(key);
    if (it != merges.end()) heap.push({it->second.rank, l, r, sym[l].id, sym[r].id, it->second.id});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i, i + 1);
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    Sym& L = sym[c.left];
    Sym& R = sym[c.right];
    if (!L.alive || !R.alive || L.next != c.right || L.id != c.id_left || R.id != c.id_right) continue;
    L.id = c.merged;
    R.alive = false;
    L.next = R.next;
    if (R.next >= 0) sym[R.next].prev = c.left;
    if (L.prev >= 0) push(L.prev, c.left);
    if (L.next >= 0) push(c.left, L.next);
  }
  for (int32_t i = 0; i >= 0 && i < n; i = sym[i].next) out.push_back(sym[i].id);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  const Impl& m = *impl_;
  size_t bad = tok::find_invalid_utf8(text);
  RI_CHECK(bad == std::string_view::npos, m.source + ": text to encode is not valid UTF-8 (byte " +
                                              std::to_string(bad) + ")");
  if (m.nfc) m.check_nfc(text);
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_bos) {
    RI_CHECK(m.bos_id >= 0, m.source + ": a BOS token was requested but the tokenizer has none");
    out.push_back(m.bos_id);
  }
  auto on_token = [&](int32_t id) { out.push_back(id); };
  auto plain = [&](std::string_view s) { m.encode_segment(s, out); };
  if (!parse_special) {
    if (!text.empty()) plain(text);
    return out;
  }
  // Special tokens first, then the other added tokens in what remains (as tokenizers does).
  split_on_added(
      text, m.special, [&](std::string_view s) { split_on_added(s, m.other, plain, on_token); }, on_token);
  return out;
}

// ---------------------------------------------------------------- decoding

void Tokenizer::Impl::check_id(int32_t id) const {
  RI_CHECK(id >= 0 && id < static_cast<int32_t>(id_to_text.size()) && has_token[id],
           source + ": token id " + std::to_string(id) + " is not in the vocabulary (size " +
               std::to_string(id_to_text.size()) + ")");
}

std::string Tokenizer::token_bytes(int32_t id) const {
  const Impl& m = *impl_;
  m.check_id(id);
  const std::string& text = m.id_to_text[id];
  if (m.added_flag[id]) return text;
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    int b = tok::byte_of_char(tok::next_code_point(text, i));
    if (b < 0) return text;  // not a byte-level token: its text as is (as tokenizers does)
    out += static_cast<char>(b);
  }
  return out;
}

std::string Tokenizer::decode_bytes(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) out += token_bytes(id);
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const { return tok::to_valid_utf8(decode_bytes(ids)); }

// ---------------------------------------------------------------- accessors

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

const std::string& Tokenizer::token_text(int32_t id) const {
  RI_CHECK(id >= 0 && id < vocab_size(), impl_->source + ": token id " + std::to_string(id) +
                                             " is out of range [0, " + std::to_string(vocab_size()) + ")");
  return impl_->id_to_text[id];
}

int32_t Tokenizer::find_token(std::string_view text) const {
  auto it = impl_->text_to_id.find(std::string(text));
  return it == impl_->text_to_id.end() ? -1 : it->second;
}

bool Tokenizer::is_added(int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->added_flag[id];
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->id_to_text.size()); }
int32_t Tokenizer::bos_id() const { return impl_->bos_id; }
int32_t Tokenizer::eos_id() const { return impl_->eos_id; }
bool Tokenizer::add_bos_by_default() const { return impl_->add_bos; }
void Tokenizer::set_add_bos_by_default(bool add_bos) {
  RI_CHECK(!add_bos || impl_->bos_id >= 0, impl_->source + ": cannot add BOS by default: the tokenizer has no BOS");
  impl_->add_bos = add_bos;
}
const std::string& Tokenizer::source() const { return impl_->source; }
const std::string& Tokenizer::pre_tokenizer_name() const { return impl_->pre_name; }

// ---------------------------------------------------------------- GGUF lists

Tokenizer Tokenizer::from_vocab(const std::vector<std::string>& tokens, const std::vector<std::string>& merges,
                                const std::vector<int32_t>& token_types, const std::string& pre_name,
                                int32_t bos_id, int32_t eos_id, const std::string& source) {
  TokenizerSpec spec;
  spec.source = source;
  spec.pre_name = pre_name;
  RI_CHECK(token_types.empty() || token_types.size() == tokens.size(),
           source + ": " + std::to_string(token_types.size()) + " token types for " + std::to_string(tokens.size()) +
               " tokens");
  RI_CHECK(tokens.size() < static_cast<size_t>(kMaxVocab),
           source + ": " + std::to_string(tokens.size()) + " tokens is more than supported");
  spec.vocab.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    auto id = static_cast<int32_t>(i);
    spec.vocab.emplace_back(tokens[i], id);
    int32_t type = token_types.empty() ? 1 : token_types[i];
    if (type == static_cast<int32_t>(TokenType::control) || type == static_cast<int32_t>(TokenType::user_defined)) {
      RI_CHECK(!tokens[i].empty(), source + ": added token " + std::to_string(i) + " has empty text");
      AddedToken a;
      a.content = tokens[i];
      a.id = id;
      a.special = type == static_cast<int32_t>(TokenType::control);
      spec.added.push_back(std::move(a));
    } else if (type == static_cast<int32_t>(TokenType::unknown) && spec.unk_id < 0) {
      spec.unk_id = id;
    }
  }
  spec.merges.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const std::string& s = merges[r];
    size_t sp = s.find(' ');
    RI_CHECK(sp != std::string::npos && sp > 0 && sp + 1 < s.size() && s.find(' ', sp + 1) == std::string::npos,
             source + ": merge " + std::to_string(r) + " '" + s + "' is not two tokens separated by one space");
    spec.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
  }
  spec.pre = tok::steps_for_pre_name(pre_name, source, spec.ignore_merges);
  spec.bos_id = bos_id;
  spec.eos_id = eos_id;
  return Tokenizer(Impl::build(std::move(spec)));
}

}  // namespace ringinfer
