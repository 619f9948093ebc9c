#include "cli/commands.h"
#include "ringinfer/error.h"

namespace ringinfer::cli {

int prep_command(const RunConfig&) {
  throw Error("ringinfer prep: not yet implemented (needs the tokenizer)");
}

}  // namespace ringinfer::cli
