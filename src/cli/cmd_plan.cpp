#include "cli/commands.h"
#include "ringinfer/error.h"

namespace ringinfer::cli {

int plan_command(const RunConfig&) {
  throw Error("ringinfer plan: not yet implemented (see the ecosystem issue)");
}

}  // namespace ringinfer::cli
