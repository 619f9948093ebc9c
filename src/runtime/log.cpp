#include "ringinfer/log.h"

#include <cstdio>

#include "ringinfer/error.h"

namespace ringinfer::log {
namespace {
bool g_quiet = false;
bool g_bar = false;

void emit(const char* level, const std::string& message) {
  // One fprintf per line so lines from different ranks do not interleave mid-line.
  std::fprintf(stderr, "%s[rank %d] %s%s\n", g_bar ? "\r\033[K" : "", this_rank() < 0 ? 0 : this_rank(), level,
               message.c_str());
  std::fflush(stderr);
}
}  // namespace

void set_quiet(bool quiet) { g_quiet = quiet; }
void set_bar_on_terminal(bool on) { g_bar = on; }
void info(const std::string& message) {
  if (!g_quiet && this_rank() <= 0) emit("", message);
}
void note(const std::string& message) { emit("", message); }
void warn(const std::string& message) { emit("warning: ", message); }
void error(const std::string& message) { emit("error: ", message); }

}  // namespace ringinfer::log
