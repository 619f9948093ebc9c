#include <iostream>

#include "cli/commands.h"
#include "ringinfer/output.h"

namespace ringinfer::cli {

int dump_command(const RunConfig& config) {
  dump_output(config.inputs.front(), std::cout, config.jsonl, config.logprobs, config.dump_format == "openai");
  return kExitOk;
}

}  // namespace ringinfer::cli
