#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "ringinfer/error.h"
#include "ringinfer/journal.h"
#include "test_paths.h"

namespace ringinfer {
namespace {

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

}  // namespace
}  // namespace ringinfer
