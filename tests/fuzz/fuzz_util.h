#pragma once
// Shared helpers of the libFuzzer harnesses (tests/fuzz/fuzz_*.cpp). Parsers that take a
// path get the input written to one temporary file per process (reused across inputs).
// A ringinfer::Error is an expected outcome of malformed input; anything else escaping a
// harness (another exception type, a crash, a sanitizer report) is a bug.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace ringinfer::fuzz {

// Writes data to "$TMPDIR/ringinfer_fuzz_<tag>_<pid><suffix>" and returns the path.
inline std::string write_temp(const char* tag, const char* suffix, const uint8_t* data, size_t size) {
  const char* dir = std::getenv("TMPDIR");
  const std::string path = std::string(dir && *dir ? dir : "/tmp") + "/ringinfer_fuzz_" + tag + "_" +
                           std::to_string(::getpid()) + suffix;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();  // the harness's own environment is broken, not the parser
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

// Elements a harness may materialize from one input; larger tensors are skipped so one
// input cannot spend seconds (or gigabytes) dequantizing.
inline constexpr int64_t kMaxElements = int64_t(1) << 16;

}  // namespace ringinfer::fuzz
