#include "ringinfer/journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "ringinfer/error.h"

namespace ringinfer {
namespace {

constexpr uint32_t kMagic = 0x314a4952;  // "RIJ1" little-endian
constexpr size_t kRecordHeader = 4 + 8 + 4;
// A record longer than this is corruption, not a result (a generation is a few MB at most).
constexpr uint64_t kMaxRecord = uint64_t(1) << 32;

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}

Bytes frame(const Bytes& payload) {
  Bytes out(kRecordHeader);
  const uint64_t len = payload.size();
  const uint32_t crc = crc32(payload.data(), payload.size());
  std::memcpy(out.data(), &kMagic, 4);
  std::memcpy(out.data() + 4, &len, 8);
  std::memcpy(out.data() + 12, &crc, 4);
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

void write_all(int fd, const Bytes& b, const std::string& path) {
  size_t done = 0;
  while (done < b.size()) {
    const ssize_t n = ::write(fd, b.data() + done, b.size() - done);
    if (n < 0 && errno == EINTR) continue;
    RI_CHECK(n > 0, path + ": cannot write journal: " + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
}

void sync_or_throw(int fd, const std::string& path) {
  RI_CHECK(::fsync(fd) == 0, path + ": fsync failed: " + std::strerror(errno));
}

// Parses records from `data`; stops at the first torn or corrupt one.
std::vector<Bytes> parse_records(const Bytes& data, uint64_t* valid) {
  std::vector<Bytes> records;
  size_t pos = 0;
  while (data.size() - pos >= kRecordHeader) {
    uint32_t magic, crc;
    uint64_t len;
    std::memcpy(&magic, data.data() + pos, 4);
    std::memcpy(&len, data.data() + pos + 4, 8);
    std::memcpy(&crc, data.data() + pos + 12, 4);
    if (magic != kMagic || len > kMaxRecord || len > data.size() - pos - kRecordHeader) break;
    const uint8_t* p = data.data() + pos + kRecordHeader;
    if (crc32(p, len) != crc) break;
    records.emplace_back(p, p + len);
    pos += kRecordHeader + len;
  }
  *valid = pos;
  return records;
}

Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  RI_CHECK(in, path + ": cannot open journal");
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

uint32_t crc32(const uint8_t* data, size_t size) {
  static const std::array<uint32_t, 256> table = make_crc_table();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

std::string journal_path(const std::string& output, int group) {
  return output + ".journal." + std::to_string(group);
}

std::vector<std::string> find_journals(const std::string& output) {
  namespace fs = std::filesystem;
  const fs::path out(output);
  const fs::path dir = out.has_parent_path() ? out.parent_path() : fs::path(".");
  const std::string prefix = out.filename().string() + ".journal.";
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() > prefix.size() && name.compare(0, prefix.size(), prefix) == 0 &&
        std::all_of(name.begin() + prefix.size(), name.end(), ::isdigit))
      found.push_back(e.path().string());
  }
  std::sort(found.begin(), found.end());
  return found;
}

std::vector<Bytes> read_journal(const std::string& path, const std::string& fingerprint, uint64_t* valid_bytes) {
  const Bytes data = read_file(path);
  uint64_t valid = 0;
  std::vector<Bytes> records = parse_records(data, &valid);
  if (records.empty()) {
    // A kill while the header itself was written leaves nothing usable: an empty journal.
    if (valid_bytes) *valid_bytes = 0;
    return {};
  }
  const std::string found(records.front().begin(), records.front().end());
  RI_CHECK(found == fingerprint,
           path + ": this journal was written by a run with a different model or options; rerun with the same "
                  "command, or delete the journal to start over");
  records.erase(records.begin());
  if (valid_bytes) *valid_bytes = valid;
  return records;
}

JournalWriter::JournalWriter(const std::string& path, const std::string& fingerprint) : path_(path) {
  const bool exists = std::filesystem::exists(path);
  uint64_t valid = 0;
  if (exists) {
    read_journal(path, fingerprint, &valid);
    dropped_ = static_cast<int64_t>(std::filesystem::file_size(path) - valid);
  }
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  RI_CHECK(fd_ >= 0, path + ": cannot open journal for writing: " + std::strerror(errno));
  RI_CHECK(::ftruncate(fd_, static_cast<off_t>(valid)) == 0, path + ": cannot truncate torn journal tail");
  RI_CHECK(::lseek(fd_, static_cast<off_t>(valid), SEEK_SET) >= 0, path + ": cannot seek journal");
  if (valid == 0) {
    write_all(fd_, frame(Bytes(fingerprint.begin(), fingerprint.end())), path_);
    sync_or_throw(fd_, path_);
  }
}

JournalWriter::~JournalWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void JournalWriter::append(const Bytes& payload) {
  write_all(fd_, frame(payload), path_);
  sync_or_throw(fd_, path_);
}

}  // namespace ringinfer
