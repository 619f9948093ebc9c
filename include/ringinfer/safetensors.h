#pragma once
// safetensors reader: one file, or a sharded checkpoint (model.safetensors.index.json).
// Files are memory-mapped read-only and every header field is validated when the file
// is opened; tensors are converted to fp32 on read (F32, F16, BF16, F64), whole or as a
// range of rows or columns (what one tensor-parallel rank owns).
// File layout: u64 little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "BF16", "shape": [out, in], "data_offsets": [begin, end]}, "__metadata__": {...}}
// then the data section; offsets are relative to its start.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ringinfer/model.h"

namespace ringinfer {

namespace dtype {
class MappedFile;
}

struct SafetensorsTensorInfo {
  std::string name;
  std::string dtype;            // "F32", "F16", "BF16", "F64", "I32", ... as in the header
  int64_t elem_size = 0;        // bytes per element
  std::vector<int64_t> shape;   // row-major, may be empty (a scalar)
  uint64_t begin = 0, end = 0;  // byte range within the data section
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);  // maps and validates; throws Error
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const std::map<std::string, SafetensorsTensorInfo>& tensors() const { return tensors_; }
  const SafetensorsTensorInfo* find(const std::string& name) const;  // nullptr when absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // fp32 copies. Rows index the first dimension (a 1-D tensor's rows are its elements);
  // columns are the last dimension of a 2-D tensor. Ranges are [begin, end).
  HostTensor read(const std::string& name) const;
  HostTensor read_rows(const std::string& name, int64_t begin, int64_t end) const;
  HostTensor read_cols(const std::string& name, int64_t begin, int64_t end) const;

 private:
  const SafetensorsTensorInfo& info(const std::string& name) const;
  const unsigned char* bytes(const SafetensorsTensorInfo& t) const;

  std::string path_;
  std::unique_ptr<dtype::MappedFile> file_;
  uint64_t data_start_ = 0;
  std::map<std::string, SafetensorsTensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;  // "__metadata__" (string values only)
};

// A checkpoint folder: model.safetensors.index.json's weight_map over several shards, or a
// single model.safetensors (or the folder's only *.safetensors file).
class SafetensorsCheckpoint {
 public:
  explicit SafetensorsCheckpoint(const std::string& dir);
  const std::string& dir() const { return dir_; }
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  const SafetensorsTensorInfo& info(const std::string& name) const;  // throws when missing
  std::vector<std::string> names() const;
  const SafetensorsFile& file_of(const std::string& name) const;  // throws "<dir>: tensor 'x' is missing"

  HostTensor read(const std::string& name) const { return file_of(name).read(name); }
  HostTensor read_rows(const std::string& name, int64_t b, int64_t e) const { return file_of(name).read_rows(name, b, e); }
  HostTensor read_cols(const std::string& name, int64_t b, int64_t e) const { return file_of(name).read_cols(name, b, e); }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> where_;  // tensor name -> its shard
};

}  // namespace ringinfer
