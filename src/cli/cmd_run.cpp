#include "cli/commands.h"
#include "ringinfer/error.h"
#include "ringinfer/runtime.h"

namespace ringinfer::cli {

int run_command(const RunConfig& config) {
  int argc = 0;
  char** argv = nullptr;
  MpiRuntime mpi(&argc, &argv);
  return run_guarded([&]() -> int {
    throw Error("ringinfer " + config.command + ": not yet implemented");
  }, kExitUsage);
}

}  // namespace ringinfer::cli
