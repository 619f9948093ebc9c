// Inputs that crashed libhdf5 under fuzzing (tests/fuzz/regressions/shard/, from
// tools/fuzz.sh shard): corrupt version-1 shards whose variable-length strings sent
// H5HG_read into overlapping memcpy / heap overflows. Each must now give a
// ringinfer::Error naming the file, read the way fuzz_shard does, and never crash.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "ringinfer/error.h"
#include "ringinfer/shard.h"
#include "test_paths.h"

namespace fs = std::filesystem;
using namespace ringinfer;

namespace {

std::vector<std::string> regression_inputs() {
  std::vector<std::string> out;
  const fs::path dir = fs::path(ringinfer::test::source_dir()) / "tests/fuzz/regressions/shard";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file()) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST(ShardRegressions, FuzzCrashInputsGiveErrors) {
  const auto inputs = regression_inputs();
  ASSERT_GE(inputs.size(), 2u) << "tests/fuzz/regressions/shard/ is missing or empty";
  for (const std::string& path : inputs) {
    // Both vocabulary modes of fuzz_shard (its first byte's low bit picks one).
    for (int64_t vocab : {int64_t(-1), int64_t(1000)}) {
      std::string got;
      try {
        DocumentSet set = open_documents({path}, vocab);
        for (const DocInfo& d : set.documents()) (void)set.read_document(d);
      } catch (const Error& e) {
        got = e.what();
      }
      EXPECT_EQ(got.rfind(path + ": ", 0), 0u) << path << " vocab " << vocab << ": got \"" << got << "\"";
      EXPECT_EQ(got.find('\n'), std::string::npos) << got;
    }
  }
}
