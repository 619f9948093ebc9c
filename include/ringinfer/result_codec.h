#pragma once
// Byte encoding of one document's result, for moving results between ranks (group
// leaders to rank 0) and for the resume journal. Little-endian, length-prefixed;
// decoding checks every length against the bytes it has and throws Error on a
// malformed record (the journal may be torn or corrupted).
#include <cstdint>
#include <string>
#include <vector>

#include "ringinfer/output.h"

namespace ringinfer {

using Bytes = std::vector<uint8_t>;

// A tagged result: which document (global input index) and its payload.
struct EncodedResult {
  int64_t doc_index = 0;
  Bytes payload;
};

Bytes encode_result(int64_t doc_index, const RunResult& r);
Bytes encode_result(int64_t doc_index, const ScoreResult& r);
// Returns the document index; throws Error("<what>: ...") on malformed bytes.
int64_t decode_result(const uint8_t* data, size_t size, RunResult& out, const std::string& what);
int64_t decode_result(const uint8_t* data, size_t size, ScoreResult& out, const std::string& what);

}  // namespace ringinfer
