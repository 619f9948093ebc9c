// libFuzzer harness: safetensors reader (SafetensorsFile over a temporary file) and
// tensor reads (whole, rows, columns).
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "ringinfer/error.h"
#include "ringinfer/safetensors.h"

using namespace ringinfer;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_temp("st", ".safetensors", data, size);
  try {
    SafetensorsFile f(path);
    for (const auto& kv : f.tensors()) {
      const SafetensorsTensorInfo& t = kv.second;
      const int64_t n = t.numel();
      if (n < 0 || n > fuzz::kMaxElements) continue;
      try {
        (void)f.read(t.name);
        if (!t.shape.empty()) (void)f.read_rows(t.name, 0, t.shape[0] > 1 ? 1 : t.shape[0]);
        if (t.shape.size() == 2) (void)f.read_cols(t.name, 0, t.shape[1] > 1 ? 1 : t.shape[1]);
      } catch (const Error&) {
      }
    }
  } catch (const Error&) {
  }
  return 0;
}
