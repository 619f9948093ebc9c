// libFuzzer harness: GGUF reader (GgufFile over a temporary file), its metadata getters,
// tensor reads, and gguf_model_config.
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "ringinfer/error.h"
#include "ringinfer/gguf.h"

using namespace ringinfer;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_temp("gguf", ".gguf", data, size);
  try {
    GgufFile f(path);
    const GgufMetadata& m = f.metadata();
    for (const auto& kv : m.values()) {
      // Each getter either returns or throws Error for a wrong type.
      try { (void)m.get_int(kv.first); } catch (const Error&) {}
      try { (void)m.get_float(kv.first); } catch (const Error&) {}
      try { (void)m.get_string(kv.first); } catch (const Error&) {}
      try { (void)m.get_string_array(kv.first); } catch (const Error&) {}
      try { (void)m.get_int_array(kv.first); } catch (const Error&) {}
      try { (void)m.get_float_array(kv.first); } catch (const Error&) {}
      try { (void)m.array_size(kv.first); } catch (const Error&) {}
    }
    for (const GgufTensorInfo& t : f.tensors()) {
      const int64_t n = t.numel();
      if (n < 0 || n > fuzz::kMaxElements) continue;
      try {
        (void)f.read(t.name);
        const auto shape = t.hf_shape();
        if (!shape.empty()) (void)f.read_rows(t.name, 0, shape[0] > 1 ? 1 : shape[0]);
        if (shape.size() == 2) (void)f.read_cols(t.name, 0, shape[1] > 1 ? 1 : shape[1]);
      } catch (const Error&) {
      }
    }
    try { (void)gguf_model_config(f); } catch (const Error&) {}
  } catch (const Error&) {
  }
  return 0;
}
