// Input shards: write/read round trips on random data, stripes against a plain loop.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include "io/h5_util.h"
#include "ringinfer/error.h"
#include "ringinfer/shard.h"
#include "gtest_helpers.h"
#include "shard_fixture.h"
#include "test_paths.h"

namespace fs = std::filesystem;
using namespace ringinfer;
using ringinfer::test::random_shard_data;
using ringinfer::test::ShardData;

namespace {

class ShardTest : public ::testing::Test {
 protected:
  std::string file(const std::string& name) const { return dir_.file(name); }
  ringinfer::test::TempDir dir_{"ri-shard"};
};

// The reference stripe: positions t with t % n == r.
std::vector<int32_t> stripe_of(const std::vector<int32_t>& doc, int r, int n) {
  std::vector<int32_t> out;
  for (size_t t = 0; t < doc.size(); ++t)
    if (static_cast<int>(t % static_cast<size_t>(n)) == r) out.push_back(doc[t]);
  return out;
}

void expect_stripes_match(const DocumentSet& set, const DocInfo& doc, const std::vector<int32_t>& tokens) {
  for (int n = 1; n <= 5; ++n) {
    for (int r = 0; r < n; ++r) {
      EXPECT_EQ(set.read_stripe(doc, r, n), stripe_of(tokens, r, n)) << doc.id << " r=" << r << " n=" << n;
      auto two = set.read_stripes(doc, {r, (r + 1) % n}, n);
      ASSERT_EQ(two.size(), 2u);
      EXPECT_EQ(two[0], stripe_of(tokens, r, n));
      EXPECT_EQ(two[1], stripe_of(tokens, (r + 1) % n, n));
      const size_t expected_len =
          tokens.size() > static_cast<size_t>(r) ? (tokens.size() - r + n - 1) / n : 0;
      EXPECT_EQ(two[0].size(), expected_len);
    }
  }
}

}  // namespace

TEST_F(ShardTest, RoundTripTwoShards) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int64_t> len(0, 300);
  std::vector<int64_t> la(9), lb(6);
  for (auto& l : la) l = len(rng);
  for (auto& l : lb) l = len(rng);
  la[2] = 0;  // empty documents are allowed
  lb[5] = 0;
  ShardData a = random_shard_data(la, 50000, 11, "alpha-");
  ShardData b = random_shard_data(lb, 50000, 12, "beta-");
  b.tokenizer = "tok-b";
  ringinfer::test::write_valid_shard(file("a.h5"), a);
  ringinfer::test::write_valid_shard(file("b.h5"), b);
  EXPECT_FALSE(fs::exists(file("a.h5.tmp")));

  DocumentSet set = open_documents({file("a.h5"), file("b.h5")}, 50000);
  ASSERT_EQ(set.size(), la.size() + lb.size());
  ASSERT_EQ(set.shards().size(), 2u);
  EXPECT_EQ(set.vocab_size(), 50000);
  EXPECT_EQ(set.shards()[0].path, file("a.h5"));
  EXPECT_EQ(set.shards()[0].tokenizer, "test-tokenizer");
  EXPECT_EQ(set.shards()[1].tokenizer, "tok-b");
  EXPECT_EQ(set.shards()[1].n_documents, static_cast<int64_t>(lb.size()));

  int64_t offset = 0;
  for (size_t i = 0; i < set.size(); ++i) {
    const DocInfo& doc = set[i];
    const bool in_a = i < la.size();
    const size_t local = in_a ? i : i - la.size();
    const ShardData& src = in_a ? a : b;
    if (local == 0) offset = 0;
    EXPECT_EQ(doc.index, static_cast<int64_t>(i));
    EXPECT_EQ(doc.id, src.ids[local]);
    EXPECT_EQ(doc.shard, in_a ? 0 : 1);
    EXPECT_EQ(doc.offset, offset);
    EXPECT_EQ(doc.length, static_cast<int64_t>(src.docs[local].size()));
    EXPECT_EQ(set.read_document(doc), src.docs[local]);
    expect_stripes_match(set, doc, src.docs[local]);
    offset += doc.length;
  }
}

TEST_F(ShardTest, UnknownVocabTakesAttribute) {
  ringinfer::test::write_valid_shard(file("a.h5"), random_shard_data({4, 9}, 321, 3, "x"));
  DocumentSet set = open_documents({file("a.h5")});
  EXPECT_EQ(set.vocab_size(), 321);
  EXPECT_EQ(set.shards()[0].vocab_size, 321);
  EXPECT_EQ(set.shards()[0].n_tokens, 13);
}

TEST_F(ShardTest, EmptyShard) {
  write_shard(file("e.h5"), {}, {}, 100, "t");
  DocumentSet set = open_documents({file("e.h5")}, 100);
  EXPECT_EQ(set.size(), 0u);
  EXPECT_EQ(set.shards()[0].n_tokens, 0);
}

// Many documents through the streaming writer with a tiny chunk: flushes cross chunk
// and document boundaries. Checks the on-disk layout with raw HDF5 calls.
TEST_F(ShardTest, StreamingWriterLayout) {
  std::mt19937 rng(77);
  std::uniform_int_distribution<int64_t> len(0, 40);
  std::vector<int64_t> lengths(60);
  for (auto& l : lengths) l = len(rng);
  ShardData data = random_shard_data(lengths, 7777, 5, "s");
  {
    ShardWriter w(file("s.h5"), 7777, "my-tokenizer", 7);
    for (size_t d = 0; d < data.docs.size(); ++d) w.add(data.ids[d], data.docs[d]);
    EXPECT_TRUE(fs::exists(file("s.h5.tmp")));
    EXPECT_FALSE(fs::exists(file("s.h5")));
    w.finish();
    EXPECT_EQ(w.documents(), 60);
  }
  EXPECT_FALSE(fs::exists(file("s.h5.tmp")));

  h5::Handle f = h5::open_readonly(file("s.h5"));
  EXPECT_EQ(h5::read_string_attr(f.get(), "s", "format"), "ringinfer.tokens");
  EXPECT_EQ(h5::read_int_attr(f.get(), "s", "version"), 2);
  EXPECT_EQ(h5::read_int_attr(f.get(), "s", "vocab_size"), 7777);
  EXPECT_EQ(h5::read_string_attr(f.get(), "s", "tokenizer"), "my-tokenizer");
  // Version 2: no variable-length string anywhere; attributes sized to their value.
  for (auto [attr, size] : {std::pair<const char*, size_t>{"format", 16}, {"tokenizer", 12}}) {
    h5::Handle a = h5::attribute(H5Aopen(f.get(), attr, H5P_DEFAULT));
    h5::Handle t = h5::datatype(H5Aget_type(a.get()));
    EXPECT_EQ(H5Tget_class(t.get()), H5T_STRING) << attr;
    EXPECT_EQ(H5Tis_variable_str(t.get()), 0) << attr;
    EXPECT_EQ(H5Tget_strpad(t.get()), H5T_STR_NULLPAD) << attr;
    EXPECT_EQ(H5Tget_size(t.get()), size) << attr;
  }
  int64_t D = 0;
  h5::Handle ids = h5::open_dataset_1d(f.get(), "s", "/doc_ids", h5::Kind::FixedString, &D);
  ASSERT_EQ(D, 60);
  h5::Handle ids_type = h5::datatype(H5Dget_type(ids.get()));
  EXPECT_EQ(H5Tget_size(ids_type.get()), 3u);  // the longest id, "s59"; "s0" is null-padded
  EXPECT_EQ(H5Tget_strpad(ids_type.get()), H5T_STR_NULLPAD);
  EXPECT_EQ(h5::read_fixed_strings(ids.get(), "s", "/doc_ids", D, 3, 1 << 20), data.ids);
  int64_t T = 0, n_off = 0;
  h5::Handle tokens = h5::open_dataset_1d(f.get(), "s", "/tokens", h5::Kind::Int32, &T);
  h5::Handle dcpl = h5::plist(H5Dget_create_plist(tokens.get()));
  ASSERT_EQ(H5Pget_layout(dcpl.get()), H5D_CHUNKED);
  hsize_t chunk[1] = {0};
  H5Pget_chunk(dcpl.get(), 1, chunk);
  EXPECT_EQ(chunk[0], 7u);
  std::vector<int32_t> all;
  for (const auto& d : data.docs) all.insert(all.end(), d.begin(), d.end());
  EXPECT_EQ(h5::read_int32(tokens.get(), T), all);
  h5::Handle off = h5::open_dataset_1d(f.get(), "s", "/doc_offsets", h5::Kind::Int64, &n_off);
  std::vector<int64_t> offsets = h5::read_int64(off.get(), n_off);
  ASSERT_EQ(offsets.size(), 61u);
  for (size_t d = 0; d < 60; ++d) EXPECT_EQ(offsets[d + 1] - offsets[d], lengths[d]);
}

// Ids of many lengths (UTF-8, one at the 64 KiB limit) survive the null-padded
// fixed-length /doc_ids; longer ids and ids with NUL bytes are refused when written.
TEST_F(ShardTest, FixedLengthIdsRoundTrip) {
  ShardData data = random_shard_data({3, 1, 4, 1, 5}, 100, 21, "");
  data.ids = {"x", "d\xc3\xa9j\xc3\xa0-vu \xe6\x96\x87\xe6\x9b\xb8", std::string(kMaxDocIdBytes, 'L'),
              "x ", "y\t"};
  ringinfer::test::write_valid_shard(file("u.h5"), data);
  DocumentSet set = open_documents({file("u.h5")}, 100);
  ASSERT_EQ(set.size(), data.ids.size());
  for (size_t d = 0; d < set.size(); ++d) {
    EXPECT_EQ(set[d].id, data.ids[d]) << d;
    EXPECT_EQ(set.read_document(set[d]), data.docs[d]);
  }

  ShardWriter w(file("w.h5"), 10, "t");
  try {
    w.add(std::string(kMaxDocIdBytes + 1, 'L'), {1});
    FAIL() << "over-long id accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              file("w.h5") + ": document id is 65537 bytes long, more than the 65536 allowed (document 0)");
  }
  try {
    w.add(std::string("a\0b", 3), {1});
    FAIL() << "id with a NUL byte accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), file("w.h5") + ": document id contains a NUL byte (document 0)");
  }
  EXPECT_THROW(ShardWriter(file("t.h5"), 10, std::string(kMaxShardAttrBytes + 1, 't')), Error);
}

TEST_F(ShardTest, DefaultChunkIsOneMi) {
  { ShardWriter w(file("c.h5"), 10, "t"); w.add("x", {1, 2, 3}); w.finish(); }
  h5::Handle f = h5::open_readonly(file("c.h5"));
  int64_t T = 0;
  h5::Handle tokens = h5::open_dataset_1d(f.get(), "c", "/tokens", h5::Kind::Int32, &T);
  h5::Handle dcpl = h5::plist(H5Dget_create_plist(tokens.get()));
  hsize_t chunk[1] = {0};
  H5Pget_chunk(dcpl.get(), 1, chunk);
  EXPECT_EQ(chunk[0], hsize_t(1) << 20);
}

TEST_F(ShardTest, AbandonedWriterLeavesNothing) {
  {
    ShardWriter w(file("gone.h5"), 10, "t");
    w.add("x", {1, 2, 3});
  }
  EXPECT_FALSE(fs::exists(file("gone.h5")));
  EXPECT_FALSE(fs::exists(file("gone.h5.tmp")));
}

TEST_F(ShardTest, WriterRejectsBadDocuments) {
  ShardWriter w(file("w.h5"), 10, "t");
  w.add("x", {1, 2});
  try {
    w.add("x", {3});
    FAIL() << "duplicate id accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), file("w.h5") + ": duplicate doc id \"x\"");
  }
  try {
    w.add("y", {3, 10});
    FAIL() << "token id 10 accepted with vocab 10";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              file("w.h5") + ": document \"y\" has token id 10 at position 1, outside the vocabulary [0, 10)");
  }
  EXPECT_THROW(w.add("", {1}), Error);
  EXPECT_THROW(ShardWriter(file("v.h5"), 0, "t"), Error);
  EXPECT_THROW(write_shard(file("m.h5"), {{1}}, {}, 10, "t"), Error);
}

// Per-document options (JSONL bodies): written only when some document has one, read
// back per document; values out of range in the file are refused, naming the entry.
TEST_F(ShardTest, DocumentOptionsRoundTripAndAreChecked) {
  {
    ShardWriter w(file("plain.h5"), 100, "t");
    w.add("a", {1, 2});
    w.finish();
  }
  EXPECT_FALSE(h5::exists(h5::open_readonly(file("plain.h5")).get(), "/max_new_tokens"));
  EXPECT_EQ(open_documents({file("plain.h5")})[0].options.max_new_tokens, -1);
  {
    ShardWriter w(file("opts.h5"), 100, "t");
    DocOptions o;
    o.max_new_tokens = 12;
    w.add("a", {1, 2}, o);
    w.add("b", {3});
    o = DocOptions();
    o.temperature = 0.25;
    w.add("c", {4}, o);
    o.temperature = -2;
    EXPECT_THROW(w.add("d", {4}, o), Error);
    w.finish();
  }
  const DocumentSet set = open_documents({file("opts.h5")});
  EXPECT_EQ(set[0].options.max_new_tokens, 12);
  EXPECT_EQ(set[0].options.temperature, -1.0);
  EXPECT_EQ(set[1].options.max_new_tokens, -1);
  EXPECT_EQ(set[2].options.temperature, 0.25);
  {
    h5::Handle f = h5::file(H5Fopen(file("opts.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    H5_CHECK(H5Ldelete(f.get(), "/temperature", H5P_DEFAULT));
    h5::write_float64(f.get(), "/temperature", {-1.0, 5e6, -1.0});
  }
  EXPECT_EQ(test::error_of([&] { open_documents({file("opts.h5")}); }),
            file("opts.h5") + ": /temperature[1] is 5000000.000000, expected -1 (the job's) or a value in [0, 1000000.000000]");
  {
    h5::Handle f = h5::file(H5Fopen(file("opts.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    H5_CHECK(H5Ldelete(f.get(), "/temperature", H5P_DEFAULT));
  }
  EXPECT_EQ(test::error_of([&] { open_documents({file("opts.h5")}); }),
            file("opts.h5") + ": has /max_new_tokens without /temperature (per-document options come together)");
}

TEST_F(ShardTest, BadStripeArguments) {
  ringinfer::test::write_valid_shard(file("a.h5"), random_shard_data({4}, 10, 3, "x"));
  DocumentSet set = open_documents({file("a.h5")});
  EXPECT_THROW(set.read_stripe(set[0], 2, 2), Error);
  EXPECT_THROW(set.read_stripe(set[0], -1, 2), Error);
  EXPECT_THROW(set.read_stripe(set[0], 0, 0), Error);
  EXPECT_THROW(open_documents({}), Error);
}

// A document longer than one read block (4 Mi tokens) that starts mid-block, so the
// reader's block boundaries fall inside it; stripes checked for ranks that do not
// divide the block size.
TEST_F(ShardTest, DocumentSpanningReadBlocks) {
  const int64_t big = (int64_t(4) << 20) + 12345;
  ShardData data = random_shard_data({1001, big, 17}, 128256, 99, "big");
  ringinfer::test::write_valid_shard(file("big.h5"), data);
  DocumentSet set = open_documents({file("big.h5")}, 128256);
  ASSERT_EQ(set[1].length, big);
  EXPECT_EQ(set.read_document(set[1]), data.docs[1]);
  for (int n : {3, 7}) {
    auto got = set.read_stripes(set[1], {n - 1, 0}, n);
    EXPECT_EQ(got[0], stripe_of(data.docs[1], n - 1, n));
    EXPECT_EQ(got[1], stripe_of(data.docs[1], 0, n));
  }
  // Switching between documents keeps reading correctly from the cached open file.
  EXPECT_EQ(set.read_document(set[2]), data.docs[2]);
  EXPECT_EQ(set.read_document(set[0]), data.docs[0]);
}

TEST_F(ShardTest, MoveKeepsReader) {
  ShardData data = random_shard_data({20, 30}, 100, 4, "m");
  ringinfer::test::write_valid_shard(file("m.h5"), data);
  DocumentSet a = open_documents({file("m.h5")});
  EXPECT_EQ(a.read_document(a[0]), data.docs[0]);
  DocumentSet b = std::move(a);
  EXPECT_EQ(b.read_document(b[1]), data.docs[1]);
}
