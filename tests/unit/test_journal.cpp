#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <cstring>
#include <fstream>
#include <random>

#include "gtest_helpers.h"
#include "ringinfer/error.h"
#include "ringinfer/journal.h"
#include "test_paths.h"

namespace ringinfer {
namespace {

using test::error_of;

Bytes random_bytes(std::mt19937& rng, size_t n) {
  Bytes b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

TEST(Journal, Crc32KnownValue) {
  const std::string s = "123456789";  // the CRC-32 check value of the standard
  EXPECT_EQ(crc32(reinterpret_cast<const uint8_t*>(s.data()), s.size()), 0xCBF43926u);
}

TEST(Journal, AppendReopenAndRead) {
  const std::string dir = test::make_temp_dir("journal");
  const std::string path = journal_path(dir + "/out.h5", 0);
  std::mt19937 rng(3);
  std::vector<Bytes> written;
  {
    JournalWriter j(path, "fp");
    for (int i = 0; i < 5; ++i) j.append(written.emplace_back(random_bytes(rng, 1 + rng() % 300)));
  }
  {
    JournalWriter j(path, "fp");  // reopen appends after the existing records
    EXPECT_EQ(j.dropped_bytes(), 0);
    j.append(written.emplace_back(random_bytes(rng, 17)));
  }
  EXPECT_EQ(read_journal(path, "fp"), written);
  EXPECT_EQ(find_journals(dir + "/out.h5"), std::vector<std::string>{path});
  std::filesystem::remove_all(dir);
}

TEST(Journal, OtherFingerprintIsRefused) {
  const std::string dir = test::make_temp_dir("journal");
  const std::string path = journal_path(dir + "/out.h5", 2);
  { JournalWriter j(path, "model=a"); }
  try {
    JournalWriter j(path, "model=b");
    FAIL() << "accepted a journal of another configuration";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("different model or options"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos);
  }
  std::filesystem::remove_all(dir);
}

TEST(Journal, TornTailIsDroppedAtEveryCutPoint) {
  const std::string dir = test::make_temp_dir("journal");
  const std::string path = journal_path(dir + "/out.h5", 0);
  std::mt19937 rng(4);
  std::vector<Bytes> written;
  {
    JournalWriter j(path, "fp");
    for (int i = 0; i < 3; ++i) j.append(written.emplace_back(random_bytes(rng, 40)));
  }
  const auto full = std::filesystem::file_size(path);
  const uint64_t record = 16 + 40;
  Bytes original(full);
  {
    std::ifstream in(path, std::ios::binary);
    in.read(reinterpret_cast<char*>(original.data()), full);
  }
  for (uint64_t cut = full - 2 * record; cut < full; ++cut) {
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(original.data()), cut);
    }
    const size_t intact = cut == full ? 3 : (cut >= full - record ? 2 : 1);
    std::vector<Bytes> expect(written.begin(), written.begin() + intact);
    EXPECT_EQ(read_journal(path, "fp"), expect) << "cut at " << cut;
    JournalWriter j(path, "fp");  // repairs: truncates to the intact prefix
    EXPECT_EQ(std::filesystem::file_size(path), full - (3 - intact) * record) << "cut at " << cut;
  }
  // A flipped byte inside the last record is caught by the CRC.
  Bytes corrupt = original;
  corrupt[full - 5] ^= 0x40;
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(corrupt.data()), corrupt.size());
  }
  EXPECT_EQ(read_journal(path, "fp").size(), 2u);
  std::filesystem::remove_all(dir);
}

Bytes slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void spit(const std::string& path, const Bytes& b) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

TEST(Journal, TornTailIsReportedAsTorn) {
  test::TempDir dir("journal");
  const std::string path = journal_path(dir.file("out.h5"), 0);
  std::mt19937 rng(5);
  { JournalWriter j(path, "fp"); for (int i = 0; i < 3; ++i) j.append(random_bytes(rng, 100)); }
  const uint64_t full = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, full - 37);  // the last record lost its last 37 bytes
  JournalDamage d;
  EXPECT_EQ(read_journal(path, "fp", nullptr, &d).size(), 2u);
  EXPECT_TRUE(d.torn_tail);
  EXPECT_EQ(d.file_bytes - d.valid_bytes, 116u - 37u);
  EXPECT_EQ(describe_damage(path, d), path + ": dropped a torn last record (79 bytes); that document runs again");
  JournalWriter j(path, "fp");
  EXPECT_EQ(j.dropped_bytes(), 79);
  EXPECT_EQ(std::filesystem::file_size(path), full - 116);
}

// A bad CRC in the middle is corruption, not a torn append: the message says where, and
// how much was dropped after it.
TEST(Journal, CorruptRecordInTheMiddleIsReportedAsCorrupt) {
  test::TempDir dir("journal");
  const std::string path = journal_path(dir.file("out.h5"), 0);
  std::mt19937 rng(6);
  std::vector<Bytes> written;
  { JournalWriter j(path, "fp"); for (int i = 0; i < 6; ++i) j.append(written.emplace_back(random_bytes(rng, 200 + i))); }
  const uint64_t header = 16 + 2;  // the frame of the 2-byte fingerprint "fp"
  uint64_t at = header;
  for (int i = 0; i < 2; ++i) at += 16 + written[i].size();  // start of record 2
  Bytes data = slurp(path);
  const uint64_t full = data.size();
  data[at + 16 + 50] ^= 0x01;  // one bit of record 2's payload
  spit(path, data);
  JournalDamage d;
  EXPECT_EQ(read_journal(path, "fp", nullptr, &d), std::vector<Bytes>(written.begin(), written.begin() + 2));
  EXPECT_FALSE(d.torn_tail);
  EXPECT_EQ(d.valid_bytes, at);
  EXPECT_EQ(d.file_bytes, full);
  const std::string msg = describe_damage(path, d);
  EXPECT_NE(msg.find("corrupt record at byte " + std::to_string(at)), std::string::npos) << msg;
  EXPECT_NE(msg.find("(" + std::to_string(full - at) + " bytes, 3 intact records)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("run again"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("torn"), std::string::npos) << msg;
  // A corrupt magic in the middle is corruption too.
  data[at + 16 + 50] ^= 0x01;
  data[at] ^= 0xFF;
  spit(path, data);
  EXPECT_EQ(read_journal(path, "fp", nullptr, &d).size(), 2u);
  EXPECT_FALSE(d.torn_tail);
  EXPECT_EQ(d.later_records, 3u);
  // So is a length field bent to point past the end of the file.
  data[at] ^= 0xFF;
  const uint64_t bent = full;
  std::memcpy(data.data() + at + 4, &bent, 8);
  spit(path, data);
  EXPECT_EQ(read_journal(path, "fp", nullptr, &d).size(), 2u);
  EXPECT_FALSE(d.torn_tail);
  EXPECT_EQ(d.later_records, 3u);
  JournalWriter j(path, "fp");  // repairs: keeps the intact prefix
  EXPECT_EQ(j.damage().valid_bytes, at);
  EXPECT_EQ(std::filesystem::file_size(path), at);
}

// A file under a journal's name that is not one (another tool's output, garbage) is
// refused and left untouched, not truncated.
TEST(Journal, ForeignFileIsRefusedAndKept) {
  test::TempDir dir("journal");
  const std::string path = journal_path(dir.file("out.h5"), 0);
  std::mt19937 rng(7);
  Bytes garbage = random_bytes(rng, 3000);
  garbage[0] = 'x';  // not the magic
  const std::string hdf5 = "\x89HDF\r\n\x1a\n and then some more bytes of a file";
  for (const Bytes& content : {garbage, Bytes(hdf5.begin(), hdf5.end()), Bytes{'h', 'i', '\n'}}) {
    spit(path, content);
    const std::string msg = error_of([&] { JournalWriter j(path, "fp"); });
    EXPECT_EQ(msg, path + ": not a ringinfer journal (its first record is not a journal header); remove it, or "
                          "choose another --output");
    EXPECT_EQ(slurp(path), content);
    EXPECT_EQ(error_of([&] { read_journal(path, "fp"); }), msg);
  }
}

// A kill while the header was written leaves part of it: an empty journal, rewritten.
TEST(Journal, TornHeaderIsAnEmptyJournal) {
  test::TempDir dir("journal");
  const std::string path = journal_path(dir.file("out.h5"), 0);
  { JournalWriter j(path, "fingerprint"); }
  const Bytes header = slurp(path);
  ASSERT_EQ(header.size(), 16u + 11u);
  for (size_t cut = 1; cut < header.size(); ++cut) {
    spit(path, Bytes(header.begin(), header.begin() + cut));
    JournalDamage d;
    EXPECT_TRUE(read_journal(path, "fingerprint", nullptr, &d).empty()) << "cut at " << cut;
    EXPECT_EQ(d.valid_bytes, 0u);
    EXPECT_NE(describe_damage(path, d).find("incomplete journal header"), std::string::npos);
    { JournalWriter j(path, "fingerprint"); }
    EXPECT_EQ(slurp(path), header) << "cut at " << cut;
  }
}

TEST(Journal, OlderFormatIsRefusedWithWhatToDo) {
  test::TempDir dir("journal");
  const std::string path = journal_path(dir.file("out.h5"), 0);
  { JournalWriter j(path, "ringinfer journal v2\nmodel = m size=10\n"); }
  const std::string msg = error_of([&] { JournalWriter j(path, "ringinfer journal v3\nmodel = x\n"); });
  EXPECT_EQ(msg, path + ": this journal was written by a different ringinfer version (ringinfer journal v2, this "
                        "one writes v3) and cannot be checked against this job; delete the journal to start over");
  // Same format, other options: the usual message.
  const std::string other = error_of([&] { JournalWriter j(path, "ringinfer journal v2\nmodel = m size=11\n"); });
  EXPECT_NE(other.find("different model or options"), std::string::npos) << other;
}

// Two jobs on one output: the second cannot open the journal the first holds.
TEST(Journal, WriterLocksItsJournal) {
  test::TempDir dir("journal");
  const std::string path = journal_path(dir.file("out.h5"), 0);
  std::mt19937 rng(8);
  const Bytes record = random_bytes(rng, 64);
  {
    JournalWriter first(path, "fp");
    if (!first.locked()) GTEST_SKIP() << "no flock on this file system";
    first.append(record);
    // flock locks belong to an open file description: a second open conflicts even in
    // one process, as it would from another job.
    EXPECT_EQ(error_of([&] { JournalWriter second(path, "fp"); }),
              path + " is in use by another ringinfer job (same --output)");
    first.append(record);  // the refused opener truncated nothing
    EXPECT_EQ(read_journal(path, "fp"), (std::vector<Bytes>{record, record}));
  }
  JournalWriter again(path, "fp");  // released when the first closed
  EXPECT_TRUE(again.locked());
  EXPECT_EQ(again.dropped_bytes(), 0);
}

}  // namespace
}  // namespace ringinfer
