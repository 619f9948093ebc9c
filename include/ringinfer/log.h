#pragma once
// Logging: every line is prefixed with the rank ("[rank 3] ..."). info() prints on
// rank 0 only (progress and summaries); warn() and error() print on every rank.
#include <string>

namespace ringinfer::log {

void info(const std::string& message);   // rank 0 only, stderr
void warn(const std::string& message);   // every rank, stderr
void error(const std::string& message);  // every rank, stderr
void set_quiet(bool quiet);              // silences info()

}  // namespace ringinfer::log
