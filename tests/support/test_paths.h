#pragma once
// Where tests find the source tree, the ringinfer binary and scratch space.
#include <string>

namespace ringinfer::test {

std::string source_dir();        // the repository root
std::string ringinfer_binary();  // the built ringinfer executable
std::string make_temp_dir(const std::string& prefix);  // a fresh directory under $TMPDIR or /tmp

}  // namespace ringinfer::test
