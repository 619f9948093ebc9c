#include "test_paths.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace ringinfer::test {

std::string source_dir() { return RINGINFER_SOURCE_DIR; }
std::string ringinfer_binary() { return RINGINFER_BINARY; }

namespace {
// Every make_temp_dir directory, removed when the process that made it exits (a forked
// child that exits must not take its parent's files); RINGINFER_KEEP_TEST_TMP=1 keeps
// them for a look after a failure. Without this each run of the suite left ~1,500
// directories in /tmp.
class MadeDirs {
 public:
  void add(std::string dir) {
    std::lock_guard<std::mutex> lock(m_);
    dirs_.emplace_back(getpid(), std::move(dir));
  }
  ~MadeDirs() {
    if (std::getenv("RINGINFER_KEEP_TEST_TMP")) return;
    std::error_code ignored;
    for (const auto& [pid, dir] : dirs_)
      if (pid == getpid()) std::filesystem::remove_all(dir, ignored);
  }

 private:
  std::mutex m_;
  std::vector<std::pair<pid_t, std::string>> dirs_;
};

MadeDirs& made_dirs() {
  static MadeDirs dirs;
  return dirs;
}
}  // namespace

std::string make_temp_dir(const std::string& prefix) {
  MadeDirs& made = made_dirs();  // constructed before the first directory, so destroyed after its users
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base ? base : "/tmp") + "/" + prefix + "-XXXXXX";
  char* made_path = mkdtemp(tmpl.data());
  if (!made_path) throw std::runtime_error("mkdtemp failed for " + tmpl);
  made.add(made_path);
  return made_path;
}

TempDir::~TempDir() {
  std::error_code ignored;  // a destructor must not throw; a leftover temp dir is harmless
  std::filesystem::remove_all(path_, ignored);
}

}  // namespace ringinfer::test
