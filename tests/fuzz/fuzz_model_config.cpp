// libFuzzer harness: config.json parsing (parse_model_config over a temporary file, which
// runs the JSON parser, model_config_from_json and validate_model_config), then describe.
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "ringinfer/error.h"
#include "ringinfer/model_config.h"

using namespace ringinfer;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_temp("config", ".json", data, size);
  try {
    const ModelConfig c = parse_model_config(path);
    (void)describe(c);
  } catch (const Error&) {
  }
  return 0;
}
