#include "test_paths.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace ringinfer::test {

std::string source_dir() { return RINGINFER_SOURCE_DIR; }
std::string ringinfer_binary() { return RINGINFER_BINARY; }

std::string make_temp_dir(const std::string& prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base ? base : "/tmp") + "/" + prefix + "-XXXXXX";
  char* made = mkdtemp(tmpl.data());
  if (!made) throw std::runtime_error("mkdtemp failed for " + tmpl);
  return made;
}

}  // namespace ringinfer::test
