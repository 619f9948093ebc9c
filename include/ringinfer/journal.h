#pragma once
// Resume journal (DESIGN §6): each finished document's encoded result is appended to a
// journal file and fsynced before the job moves on, so a killed job loses at most the
// document in flight. One journal per data-parallel group (`<output>.journal.<group>`,
// written by the group's leader only: appends from many writers to one file are not
// atomic on Lustre/NFS). The writer holds an advisory lock (flock) on its journal for
// its life, so a second job on the same output fails at start instead of mixing in.
//
// File: a header record, then result records. Record = magic "RIJ1" (u32), payload
// length (u64), CRC-32 of the payload (u32), payload. The header's payload is the job's
// fingerprint (model and options that change results); a journal with another
// fingerprint is refused, so results of different configurations never mix, and so is
// a file whose first record is not a journal header (a foreign file under a journal's
// name). A torn last record (a kill during the append) is dropped and the file
// truncated there; so is a corrupt record inside the file, with everything after it.
#include <cstdint>
#include <string>
#include <vector>

#include "ringinfer/result_codec.h"

namespace ringinfer {

uint32_t crc32(const uint8_t* data, size_t size);

// Path of group g's journal for `output`.
std::string journal_path(const std::string& output, int group);

// All journals of `output` that exist (any group count), sorted by name.
std::vector<std::string> find_journals(const std::string& output);

// What reading a journal found after its intact records.
struct JournalDamage {
  uint64_t valid_bytes = 0;  // length of the intact prefix (header and whole, checked records)
  uint64_t file_bytes = 0;   // length of the file
  // True when the bad bytes are the start of one record and no intact record follows
  // (a kill during an append); false for corruption (a bad magic, or intact records after).
  bool torn_tail = false;
  uint64_t later_records = 0;  // intact records after the bad one, dropped with it
  bool damaged() const { return file_bytes > valid_bytes; }
};

// The warning for a damaged journal, e.g. "OUT.journal.0: dropped a torn last record
// (2432 bytes); that document runs again" or "OUT.journal.0: found a corrupt record at
// byte 912; dropped it and everything after it (4864 bytes, 3 intact records); the
// documents journaled there run again".
std::string describe_damage(const std::string& path, const JournalDamage& damage);

// Reads a journal: checks the header (Error naming the file when it is not a journal
// header or the fingerprint differs) and returns the payloads of every intact record.
// `valid_bytes` receives the length of the intact prefix, `damage` what lies past it.
// An empty file, or one holding part of a header (a kill while it was written), is an
// empty journal.
std::vector<Bytes> read_journal(const std::string& path, const std::string& fingerprint,
                                uint64_t* valid_bytes = nullptr, JournalDamage* damage = nullptr);

// An open journal for appending. Opening locks the file (flock, LOCK_EX | LOCK_NB;
// Error "<path> is in use by another ringinfer job (same --output)" when another process
// holds it; no lock where the file system has no flock), then checks its header and
// truncates damage past the intact records; a missing journal is created with its header.
class JournalWriter {
 public:
  JournalWriter(const std::string& path, const std::string& fingerprint);
  ~JournalWriter();
  JournalWriter(const JournalWriter&) = delete;
  JournalWriter& operator=(const JournalWriter&) = delete;

  // Appends one record and fsyncs; when this returns, the record survives a crash.
  void append(const Bytes& payload);
  const std::string& path() const { return path_; }
  int64_t dropped_bytes() const { return static_cast<int64_t>(damage_.file_bytes - damage_.valid_bytes); }
  const JournalDamage& damage() const { return damage_; }  // what was truncated at open
  bool locked() const { return locked_; }                 // false where flock is unsupported

 private:
  std::string path_;
  int fd_ = -1;
  bool locked_ = false;
  JournalDamage damage_;
};

}  // namespace ringinfer
