#include "cli/commands.h"
#include "ringinfer/error.h"

namespace ringinfer::cli {

int dump_command(const RunConfig&) {
  throw Error("ringinfer dump: not yet implemented");
}

}  // namespace ringinfer::cli
