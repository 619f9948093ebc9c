#pragma once
// Command line and --config parsing for every subcommand (Boost.ProgramOptions).
// Unknown, malformed or contradictory options throw ringinfer::Error; nothing is
// silently ignored.
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "ringinfer/run_config.h"
#include "ringinfer/sampling.h"

namespace ringinfer::cli {

// Parses the arguments after the subcommand name. Returns nullopt when --help was
// asked for (the help text has then been written to `out`).
std::optional<RunConfig> parse_options(const std::string& command, const std::vector<std::string>& args,
                                       std::ostream& out);

// The configuration as INI text, readable back with --config: "name = value" lines; a value
// that the plain form cannot hold (surrounding blanks, a leading '"' or '#', " #", control
// characters) is written in double quotes with backslash escapes. Numbers are written in
// the shortest form that reads back exactly.
std::string format_config(const RunConfig& config);

// The sampling controls of a run configuration (the per-document JSONL values come on top).
SamplingParams sampling_params(const RunConfig& config);

// Top-level usage text.
std::string usage();

}  // namespace ringinfer::cli
