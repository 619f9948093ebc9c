#pragma once
// Resume journal (DESIGN §6): each finished document's encoded result is appended to a
// journal file and fsynced before the job moves on, so a killed job loses at most the
// document in flight. One journal per data-parallel group (`<output>.journal.<group>`,
// written by the group's leader only: appends from many writers to one file are not
// atomic on Lustre/NFS).
//
// File: a header record, then result records. Record = magic "RIJ1" (u32), payload
// length (u64), CRC-32 of the payload (u32), payload. The header's payload is the job's
// fingerprint (model and options that change results); a journal with another
// fingerprint is refused, so results of different configurations never mix. A torn or
// corrupt last record (a kill during the append) is dropped and the file truncated there.
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

// Reads a journal: checks the fingerprint (Error naming the file when it differs) and
// returns the payloads of every intact record. `valid_bytes` receives the length of
// the intact prefix (shorter than the file when the tail is torn).
std::vector<Bytes> read_journal(const std::string& path, const std::string& fingerprint,
                                uint64_t* valid_bytes = nullptr);

// An open journal for appending. Opening an existing journal checks its fingerprint and
// truncates a torn tail; a missing one is created with its header.
class JournalWriter {
 public:
  JournalWriter(const std::string& path, const std::string& fingerprint);
  ~JournalWriter();
  JournalWriter(const JournalWriter&) = delete;
  JournalWriter& operator=(const JournalWriter&) = delete;

  // Appends one record and fsyncs; when this returns, the record survives a crash.
  void append(const Bytes& payload);
  const std::string& path() const { return path_; }
  int64_t dropped_bytes() const { return dropped_; }  // torn tail removed at open

 private:
  std::string path_;
  int fd_ = -1;
  int64_t dropped_ = 0;
};

}  // namespace ringinfer
