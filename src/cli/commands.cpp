#include "cli/commands.h"

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "cli/options.h"
#include "ringinfer/error.h"
#include "ringinfer/log.h"
#include "ringinfer/runtime.h"
#include "ringinfer/shard_isolation.h"
#include "ringinfer/version.h"

namespace ringinfer::cli {

int launcher_rank() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"}) {
    if (const char* v = std::getenv(var)) return std::atoi(v);
  }
  return 0;
}

int main(int argc, char** argv) {
  // Hidden (not in --help): the shard-validation child that `run` spawns. Dispatched before
  // anything else so that it never starts MPI (ringinfer/shard_isolation.h).
  if (argc >= 2 && std::strcmp(argv[1], kShardCheckCommand) == 0) return shard_check_child_main(argc - 2, argv + 2);
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    (argc < 2 ? std::cerr : std::cout) << usage();
    return argc < 2 ? kExitUsage : kExitOk;
  }
  if (std::strcmp(argv[1], "--version") == 0) {
    std::cout << "ringinfer " << RINGINFER_VERSION << "\n";
    return kExitOk;
  }
  const std::string command = argv[1];
  if (command == "run" || command == "score") exec_with_passive_omp_wait(argv);
  std::optional<RunConfig> config;
  try {
    config = parse_options(command, std::vector<std::string>(argv + 2, argv + argc), std::cout);
  } catch (const Error& e) {
    // Every rank parses the same flags and fails the same way: print once, exit everywhere.
    if (launcher_rank() == 0) std::cerr << "error: " << e.what() << "\n";
    return kExitUsage;
  }
  if (!config) return kExitOk;  // --help or --print-config
  log::set_quiet(config->quiet);
  if (command == "run" || command == "score") return run_command(*config);
  try {
    if (command == "prep") return prep_command(*config);
    if (command == "dump") return dump_command(*config);
    if (command == "plan") return plan_command(*config);
  } catch (const Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitUsage;
  }
  return kExitInternal;
}

}  // namespace ringinfer::cli
