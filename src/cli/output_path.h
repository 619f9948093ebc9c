#pragma once
// Checks on --output before any work is done (run, score, prep): a job must never write
// over a file it reads, and must not find out only after its last document that it
// cannot write its output.
//   - the output and its companions (OUT.tmp while it is written, OUT.journal.<g> while
//     the job runs) are not the same file as an input, the prompt template, the model
//     file, or any file inside the model folder (same inode, or the same canonical path);
//   - the output is not a directory, its folder exists and a file can be created there.
#include <string>

#include "ringinfer/comm.h"
#include "ringinfer/run_config.h"

namespace ringinfer::cli {

// Error naming the option and the problem, e.g. "--output smol.gguf is the model file
// smol.gguf: choose another output path".
void check_output_path(const RunConfig& config);

// The same, for an SPMD job: world rank 0 checks (one probe file, not one per rank) and
// every rank of `world` throws the same Error. Collective over `world`.
void check_output_path(const RunConfig& config, Comm& world);

// True when `file` lies in the output's folder and is named OUT.<something> (OUT.tmp,
// OUT.journal.<g>, the writability probe): a file the job itself writes. The output
// itself counts only with `with_output`.
bool is_output_companion(const std::string& file, const std::string& output, bool with_output);

}  // namespace ringinfer::cli
