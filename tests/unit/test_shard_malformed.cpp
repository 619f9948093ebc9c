// Every malformed shard variant gives its own one-line message naming the file.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "ringinfer/error.h"
#include "ringinfer/shard.h"
#include "shard_fixture.h"
#include "test_paths.h"

namespace fs = std::filesystem;
using namespace ringinfer;

namespace {

class MalformedShardTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { dir_ = ringinfer::test::make_temp_dir("ri-bad"); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

std::vector<std::string> case_names() {
  std::vector<std::string> names;
  for (const auto& c : ringinfer::test::malformed_cases()) names.push_back(c.name);
  return names;
}

}  // namespace

TEST_P(MalformedShardTest, GivesItsMessage) {
  const std::string path = dir_ + "/shard.h5";
  const auto m = ringinfer::test::write_malformed(GetParam(), path);
  std::string got;
  try {
    DocumentSet set = open_documents(m.paths, m.vocab_size);
    EXPECT_TRUE(m.on_read) << "opened without error";
    for (size_t i = 0; i < set.size(); ++i) set.read_document(set[i]);
    FAIL() << "no error for " << GetParam();
  } catch (const Error& e) {
    got = e.what();
  }
  if (m.prefix_only) {
    EXPECT_EQ(got.substr(0, m.message.size()), m.message);
  } else {
    EXPECT_EQ(got, m.message);
  }
  EXPECT_EQ(got.find('\n'), std::string::npos) << "message is not one line";
}

INSTANTIATE_TEST_SUITE_P(AllVariants, MalformedShardTest, ::testing::ValuesIn(case_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

// The stripe read finds an out-of-range token too, whichever rank reads.
TEST(MalformedShard, BadTokenFoundByEveryStripe) {
  const std::string dir = ringinfer::test::make_temp_dir("ri-bad");
  const std::string path = dir + "/shard.h5";
  const auto m = ringinfer::test::write_malformed("token-too-large", path);
  DocumentSet set = open_documents(m.paths, m.vocab_size);
  for (int r = 0; r < 4; ++r) EXPECT_THROW(set.read_stripe(set[2], r, 4), Error) << "rank " << r;
  EXPECT_NO_THROW(set.read_document(set[0]));  // other documents stay readable
  fs::remove_all(dir);
}

TEST(MalformedShard, NamesAreUniqueAndKnown) {
  std::set<std::string> seen;
  for (const auto& c : ringinfer::test::malformed_cases()) {
    EXPECT_TRUE(seen.insert(c.name).second) << c.name;
    EXPECT_FALSE(c.description.empty());
  }
  EXPECT_GE(seen.size(), 30u);
  EXPECT_THROW(ringinfer::test::write_malformed("no-such-variant", "/tmp/x.h5"), std::invalid_argument);
}

// A second open of a valid shard with the right vocabulary works (the fixture's base
// content is itself valid).
TEST(MalformedShard, BaseContentIsValid) {
  const std::string dir = ringinfer::test::make_temp_dir("ri-bad");
  const std::string path = dir + "/shard.h5";
  ringinfer::test::write_raw_shard(path, ringinfer::test::raw_from(
                                             ringinfer::test::random_shard_data({5, 0, 17}, 1000, 7, "a")));
  DocumentSet set = open_documents({path}, 1000);
  ASSERT_EQ(set.size(), 3u);
  for (size_t i = 0; i < set.size(); ++i) EXPECT_NO_THROW(set.read_document(set[i]));
  fs::remove_all(dir);
}
