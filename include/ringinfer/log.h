#pragma once
// Logging: every line is prefixed with the rank ("[rank 3] ..."). info() prints on
// rank 0 only (progress and summaries); warn() and error() print on every rank.
#include <string>

namespace ringinfer::log {

void info(const std::string& message);   // rank 0 only, stderr
void note(const std::string& message);   // every rank, stderr (statistics; the caller honours --quiet)
void warn(const std::string& message);   // every rank, stderr
void error(const std::string& message);  // every rank, stderr
void set_quiet(bool quiet);              // silences info()
// While rank 0 draws a progress bar on the terminal, every rank's line starts with
// "\r\033[K" (back to column 0, clear the line): it replaces the half-drawn bar instead
// of running on after it, and the bar redraws below at its next update.
void set_bar_on_terminal(bool on);

}  // namespace ringinfer::log
