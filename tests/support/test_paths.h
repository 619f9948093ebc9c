#pragma once
// Where tests find the source tree, the ringinfer binary and scratch space.
#include <string>

namespace ringinfer::test {

std::string source_dir();        // the repository root
std::string ringinfer_binary();  // the built ringinfer executable
// A fresh directory under $TMPDIR or /tmp, removed with all it holds when the process exits.
std::string make_temp_dir(const std::string& prefix);

// A make_temp_dir directory, removed with all it holds on destruction: a fixture member
// gives every test a fresh one.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix) : path_(make_temp_dir(prefix)) {}
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace ringinfer::test
