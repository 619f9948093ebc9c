#include "ringinfer/journal.h"

#include <fcntl.h>
#include <sys/file.h>
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

// Length of the intact record starting at `pos`, or 0 when none starts there.
uint64_t intact_record_at(const Bytes& data, size_t pos) {
  if (data.size() - pos < kRecordHeader) return 0;
  uint32_t magic, crc;
  uint64_t len;
  std::memcpy(&magic, data.data() + pos, 4);
  std::memcpy(&len, data.data() + pos + 4, 8);
  std::memcpy(&crc, data.data() + pos + 12, 4);
  if (magic != kMagic || len > kMaxRecord || len > data.size() - pos - kRecordHeader) return 0;
  return crc32(data.data() + pos + kRecordHeader, len) == crc ? kRecordHeader + len : 0;
}

// Intact records that start after `from` (found by scanning for the magic): records a
// corruption at `from` cuts off.
uint64_t count_later_records(const Bytes& data, size_t from) {
  uint64_t count = 0;
  for (size_t pos = from + 1; pos + kRecordHeader <= data.size();) {
    const uint64_t n = intact_record_at(data, pos);
    if (n == 0) {
      ++pos;
      continue;
    }
    ++count;
    pos += n;
  }
  return count;
}

// Parses records from `data`; stops at the first torn or corrupt one, and tells which:
// a kill during an append leaves a prefix of one correct record (magic first) with no
// intact record after it; a bad magic, or any intact record further on, is corruption.
std::vector<Bytes> parse_records(const Bytes& data, JournalDamage* d) {
  std::vector<Bytes> records;
  size_t pos = 0;
  for (uint64_t n; (n = intact_record_at(data, pos)) > 0; pos += n)
    records.emplace_back(data.begin() + pos + kRecordHeader, data.begin() + pos + n);
  d->valid_bytes = pos;
  d->file_bytes = data.size();
  d->later_records = pos < data.size() ? count_later_records(data, pos) : 0;
  d->torn_tail = pos < data.size() && d->later_records == 0 &&
                std::memcmp(data.data() + pos, &kMagic, std::min<size_t>(data.size() - pos, 4)) == 0;
  return records;
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

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

std::string describe_damage(const std::string& path, const JournalDamage& d) {
  const uint64_t dropped = d.file_bytes - d.valid_bytes;
  if (d.valid_bytes == 0)
    return path + ": dropped an incomplete journal header (" + std::to_string(dropped) +
           " bytes); no document had been journaled in it";
  if (d.torn_tail)
    return path + ": dropped a torn last record (" + std::to_string(dropped) + " bytes); that document runs again";
  return path + ": found a corrupt record at byte " + std::to_string(d.valid_bytes) +
         "; dropped it and everything after it (" + std::to_string(dropped) + " bytes, " +
         std::to_string(d.later_records) + " intact records); the documents journaled there run again";
}

std::vector<Bytes> read_journal(const std::string& path, const std::string& fingerprint, uint64_t* valid_bytes,
                                JournalDamage* damage) {
  const Bytes data = read_file(path);
  JournalDamage d;
  std::vector<Bytes> records = parse_records(data, &d);
  if (records.empty()) {
    // A kill while the header itself was written leaves part of it: an empty journal.
    // Anything else is not a journal of ours, and truncating it would destroy a file
    // someone else may want.
    RI_CHECK(data.empty() || d.torn_tail,
             path + ": not a ringinfer journal (its first record is not a journal header); remove it, or choose "
                    "another --output");
    d.valid_bytes = 0;
    if (valid_bytes) *valid_bytes = 0;
    if (damage) *damage = d;
    return {};
  }
  const std::string found(records.front().begin(), records.front().end());
  if (found != fingerprint) {
    // The first line names the journal format ("ringinfer journal v3"); an older format
    // identified files differently, so its results cannot be checked against this job.
    const std::string theirs = first_line(found), ours = first_line(fingerprint);
    const std::string kFormat = "ringinfer journal ";
    if (theirs != ours && theirs.compare(0, kFormat.size(), kFormat) == 0 &&
        ours.compare(0, kFormat.size(), kFormat) == 0)
      throw Error(path + ": this journal was written by a different ringinfer version (" + theirs +
                  ", this one writes " + ours.substr(kFormat.size()) +
                  ") and cannot be checked against this job; delete the journal to start over");
    throw Error(path + ": this journal was written by a run with a different model or options; rerun with the "
                       "same command, or delete the journal to start over");
  }
  records.erase(records.begin());
  if (valid_bytes) *valid_bytes = d.valid_bytes;
  if (damage) *damage = d;
  return records;
}

JournalWriter::JournalWriter(const std::string& path, const std::string& fingerprint) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  RI_CHECK(fd_ >= 0, path + ": cannot open journal for writing: " + std::strerror(errno));
  try {
    // Locked before anything is read or truncated: the other job may be appending.
    for (;;) {
      if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) {
        locked_ = true;
        break;
      }
      if (errno == EINTR) continue;
      if (errno == EWOULDBLOCK) throw Error(path + " is in use by another ringinfer job (same --output)");
      // Some parallel file systems (Lustre mounted without -o flock) have no flock:
      // carry on unlocked rather than refuse to run there.
      if (errno == ENOLCK || errno == EOPNOTSUPP || errno == ENOSYS) break;
      throw Error(path + ": cannot lock journal: " + std::strerror(errno));
    }
    read_journal(path, fingerprint, nullptr, &damage_);
    const off_t valid = static_cast<off_t>(damage_.valid_bytes);
    RI_CHECK(::ftruncate(fd_, valid) == 0, path + ": cannot truncate damaged journal tail: " + std::strerror(errno));
    RI_CHECK(::lseek(fd_, valid, SEEK_SET) >= 0, path + ": cannot seek journal");
    if (valid == 0) {
      write_all(fd_, frame(Bytes(fingerprint.begin(), fingerprint.end())), path_);
      sync_or_throw(fd_, path_);
    }
  } catch (...) {
    ::close(fd_);  // also releases the lock
    fd_ = -1;
    throw;
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
