// Every malformed shard variant gives its own one-line message naming the file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "ringinfer/error.h"
#include "ringinfer/shard.h"
#include "gtest_helpers.h"
#include "shard_fixture.h"
#include "test_paths.h"

namespace fs = std::filesystem;
using namespace ringinfer;

namespace {

class MalformedShardTest : public ::testing::TestWithParam<std::string> {
 protected:
  ringinfer::test::TempDir dir_{"ri-bad"};
};

std::vector<std::string> case_names() {
  std::vector<std::string> names;
  for (const auto& c : ringinfer::test::malformed_cases()) names.push_back(c.name);
  return names;
}

}  // namespace

TEST_P(MalformedShardTest, GivesItsMessage) {
  const std::string path = dir_.file("shard.h5");
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

INSTANTIATE_TEST_SUITE_P(AllVariants, MalformedShardTest, ::testing::ValuesIn(case_names()), test::param_name);

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

// A variable-length /doc_ids (a version-1 shard) is refused from its datatype, never read:
// its global heap is overwritten with garbage, which libhdf5 would trust if it read it.
TEST(MalformedShard, VlenIdsRefusedUnread) {
  const std::string dir = ringinfer::test::make_temp_dir("ri-bad");
  const std::string path = dir + "/shard.h5";
  ringinfer::test::write_malformed("vlen-ids", path);
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const size_t heap = bytes.find("GCOL");
    ASSERT_NE(heap, std::string::npos) << "no global heap collection in a vlen shard?";
    // Keep the signature and version; scribble over the collection size and the objects.
    f.seekp(static_cast<std::streamoff>(heap + 8));
    const std::string junk(64, '\xff');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  try {
    open_documents({path});
    FAIL() << "vlen /doc_ids accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), path +
                                         ": /doc_ids uses variable-length strings (shard version 1, or not written "
                                         "by ringinfer prep): re-run ringinfer prep");
  }
  fs::remove_all(dir);
}
