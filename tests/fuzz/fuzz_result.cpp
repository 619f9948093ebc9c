// libFuzzer harness: result decoding (decode_result for RunResult and ScoreResult) and
// the resume journal (read_journal). The first byte picks the mode:
//   0: the rest is one encoded result, decoded both ways;
//   1: the rest is a journal file, read raw (CRC and framing checks);
//   2: the rest is cut into payloads at 0xFF bytes and framed as a valid journal (header
//      with the fingerprint, correct CRCs), so the fuzzer reaches decode_result through
//      read_journal despite the checksums.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "ringinfer/error.h"
#include "ringinfer/journal.h"
#include "ringinfer/result_codec.h"

using namespace ringinfer;

namespace {

const std::string kFingerprint = "fuzz-fingerprint";

void decode_both(const uint8_t* p, size_t n) {
  RunResult r;
  ScoreResult s;
  try { (void)decode_result(p, n, r, "fuzz"); } catch (const Error&) {}
  try { (void)decode_result(p, n, s, "fuzz"); } catch (const Error&) {}
}

void frame(Bytes& out, const uint8_t* p, size_t n) {
  const uint32_t magic = 0x314a4952;  // "RIJ1" little-endian
  const uint64_t len = n;
  const uint32_t crc = crc32(p, n);
  const auto* m = reinterpret_cast<const uint8_t*>(&magic);
  const auto* l = reinterpret_cast<const uint8_t*>(&len);
  const auto* c = reinterpret_cast<const uint8_t*>(&crc);
  out.insert(out.end(), m, m + 4);
  out.insert(out.end(), l, l + 8);
  out.insert(out.end(), c, c + 4);
  out.insert(out.end(), p, p + n);
}

void read_back(const Bytes& file) {
  const std::string path = fuzz::write_temp("journal", ".journal.0", file.data(), file.size());
  try {
    uint64_t valid = 0;
    for (const Bytes& rec : read_journal(path, kFingerprint, &valid)) decode_both(rec.data(), rec.size());
    if (valid > file.size()) std::abort();
  } catch (const Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0] % 3;
  const uint8_t* p = data + 1;
  const size_t n = size - 1;
  if (mode == 0) {
    decode_both(p, n);
  } else if (mode == 1) {
    read_back(Bytes(p, p + n));
  } else {
    Bytes file;
    frame(file, reinterpret_cast<const uint8_t*>(kFingerprint.data()), kFingerprint.size());
    size_t start = 0;
    for (size_t i = 0; i <= n; ++i) {
      if (i == n || p[i] == 0xFF) {
        frame(file, p + start, i - start);
        start = i + 1;
      }
    }
    read_back(file);
  }
  return 0;
}
