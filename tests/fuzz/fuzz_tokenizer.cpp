// libFuzzer harness: tokenizer. The first byte picks the mode:
//   even: the rest is tokenizer.json text (Tokenizer::from_tokenizer_json_text); when it
//         loads, it encodes and decodes a fixed sample;
//   odd:  the rest is text for the fixture tokenizer (tests/fixtures/tokenizer/small_bpe.json):
//         encode (with and without special tokens), decode the ids back (valid UTF-8 must
//         round-trip), then decode the input read as little-endian int32 ids.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ringinfer/error.h"
#include "ringinfer/tokenizer.h"

using namespace ringinfer;

namespace {

const Tokenizer& fixture() {
  static const Tokenizer tok = [] {
    return Tokenizer::from_tokenizer_json(std::string(RINGINFER_SOURCE_DIR) +
                                          "/tests/fixtures/tokenizer/small_bpe.json");
  }();
  return tok;
}

void exercise(const Tokenizer& tok, const std::string& text) {
  std::vector<int32_t> ids;
  try {
    ids = tok.encode(text, false, true);
  } catch (const Error&) {
    return;  // invalid UTF-8
  }
  const std::string back = tok.decode_bytes(ids);
  // A tokenizer with the byte alphabet must give back exactly the text it encoded.
  if (tok.vocab_size() >= 256 && &tok == &fixture() && back != text) std::abort();
  (void)tok.decode(ids);
  try { (void)tok.encode(text, tok.bos_id() >= 0, false); } catch (const Error&) {}
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1) == 0) {
    try {
      Tokenizer tok = Tokenizer::from_tokenizer_json_text(rest, "fuzz.json");
      exercise(tok, "Hello, world! 123 <|endoftext|> \xc3\xa9t\xc3\xa9");
      std::vector<int32_t> all;
      for (int32_t i = 0; i < tok.vocab_size() && i < 4096; ++i) all.push_back(i);
      (void)tok.decode(all);
    } catch (const Error&) {
    }
    return 0;
  }
  const Tokenizer& tok = fixture();
  exercise(tok, rest);
  std::vector<int32_t> ids(rest.size() / 4);
  if (!ids.empty()) std::memcpy(ids.data(), rest.data(), ids.size() * 4);
  try { (void)tok.decode(ids); } catch (const Error&) {}
  for (int32_t id : ids) {
    try {
      (void)tok.token_text(id);
      (void)tok.token_bytes(id);
      (void)tok.is_added(id);
    } catch (const Error&) {
    }
  }
  return 0;
}
