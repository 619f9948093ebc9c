#pragma once
// The subcommands of the ringinfer binary (DESIGN §6). cli::main parses the options
// (cli/options.h) and calls one of these; each returns the process exit code.
#include "ringinfer/run_config.h"

namespace ringinfer::cli {

// Exit codes, documented in README.md.
enum ExitCode : int {
  kExitOk = 0,
  kExitInternal = 1,  // a bug or a library failure
  kExitUsage = 2,     // bad flags, bad input files, bad model files
};

int main(int argc, char** argv);

int run_command(const RunConfig& config);    // run and score (MPI ranks)
int prep_command(const RunConfig& config);
int dump_command(const RunConfig& config);
int plan_command(const RunConfig& config);

// Rank as told by the launcher's environment (mpirun, srun), before MPI starts; 0 when
// not launched by one. Used so that option errors print once, not once per rank.
int launcher_rank();

}  // namespace ringinfer::cli
