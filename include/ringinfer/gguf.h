#pragma once
// GGUF reader (versions 2 and 3, little-endian): metadata, tensor infos, and tensors
// dequantized to fp32 in Hugging Face layout. The file is memory-mapped read-only; every
// count, length, offset, dimension and type is checked against the file size before use.
// Layout: "GGUF", u32 version, u64 n_tensors, u64 n_kv, n_kv x (string key, u32 type, value),
// n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset), padding
// to general.alignment (default 32), then the data section (offsets are relative to it).
// Strings are u64 length + bytes; arrays are u32 element type + u64 count + elements.
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

enum class GgufType : uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
  string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
};
const char* gguf_type_name(GgufType t);

// One metadata value. Integers of every width are held in `i` (u64 above INT64_MAX in `u`
// with `big_unsigned` set), floats in `f`, strings in `s`, arrays in `items` (element
// type in `elem_type`; arrays may nest).
struct GgufValue {
  GgufType type = GgufType::u8;
  GgufType elem_type = GgufType::u8;  // arrays only
  bool big_unsigned = false;          // a u64 too large for int64
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
  bool b = false;
  std::string s;
  std::vector<GgufValue> items;
  bool is_integer() const;
};

// The metadata map with typed getters. Getters throw Error("<file>: metadata key 'k' ...")
// when the key is missing or its type does not fit; the *_or variants return a default
// when the key is absent (but still throw on a wrong type).
class GgufMetadata {
 public:
  GgufMetadata() = default;
  explicit GgufMetadata(std::string source) : source_(std::move(source)) {}
  const std::string& source() const { return source_; }
  std::map<std::string, GgufValue>& values() { return values_; }
  const std::map<std::string, GgufValue>& values() const { return values_; }

  bool has(const std::string& key) const { return values_.count(key) != 0; }
  const GgufValue* find(const std::string& key) const;
  const GgufValue& at(const std::string& key) const;

  int64_t get_int(const std::string& key) const;  // any integer type (and bool), range-checked
  int64_t get_int_or(const std::string& key, int64_t dflt) const;
  double get_float(const std::string& key) const;  // f32, f64 or an integer type
  double get_float_or(const std::string& key, double dflt) const;
  bool get_bool(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  std::string get_string_or(const std::string& key, const std::string& dflt) const;
  std::vector<std::string> get_string_array(const std::string& key) const;  // tokenizer.ggml.tokens, .merges
  std::vector<int64_t> get_int_array(const std::string& key) const;         // tokenizer.ggml.token_type
  std::vector<double> get_float_array(const std::string& key) const;        // tokenizer.ggml.scores
  size_t array_size(const std::string& key) const;

 private:
  [[noreturn]] void wrong_type(const std::string& key, const char* wanted) const;
  std::string source_;
  std::map<std::string, GgufValue> values_;
};

// ggml tensor types (ggml.h numbering); only some can be dequantized.
enum class GgmlType : uint32_t { F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q8_0 = 8, BF16 = 30 };
const char* ggml_type_name(uint32_t type);

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;   // ggml order: ne[0] varies fastest (the columns)
  uint32_t type = 0;         // ggml type id
  uint64_t offset = 0;       // bytes from the data section's start
  uint64_t nbytes = 0;       // stored size
  std::vector<int64_t> hf_shape() const;  // ne reversed: [rows, cols] for a matrix
  int64_t numel() const;
};

class GgufFile {
 public:
  explicit GgufFile(const std::string& path);  // maps and validates; throws Error
  ~GgufFile();

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const GgufMetadata& metadata() const { return *metadata_; }
  std::shared_ptr<const GgufMetadata> shared_metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find(const std::string& name) const;  // nullptr when absent

  // fp32 copies in HF layout (shape = hf_shape()). Rows are the ggml rows (ne[0] elements
  // each; a 1-D tensor's rows are its elements); columns are ne[0] of a 2-D tensor.
  HostTensor read(const std::string& name) const;
  HostTensor read_rows(const std::string& name, int64_t begin, int64_t end) const;
  HostTensor read_cols(const std::string& name, int64_t begin, int64_t end) const;
  // read_rows, but a 2-D matrix of a block type (or F16, BF16) comes as its stored bytes
  // (HostTensor::blocks and ggml_type, rows of whole blocks) instead of fp32; other
  // tensors as read_rows gives them.
  HostTensor read_rows_stored(const std::string& name, int64_t begin, int64_t end) const;
  // The bytes of every tensor as read_rows_stored gives it: stored bytes where it keeps
  // them, 4 a value elsewhere (the CPU backend's weights, kept quantized).
  int64_t kept_bytes() const;

 private:
  const GgufTensorInfo& info(const std::string& name) const;
  // Dequantizes elements [first, first + n) of the flattened tensor into dst.
  void dequant(const GgufTensorInfo& t, int64_t first, int64_t n, float* dst) const;

  std::string path_;
  std::unique_ptr<dtype::MappedFile> file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_start_ = 0;
  std::shared_ptr<GgufMetadata> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> index_;
};

// Metadata of a supported general.architecture (model_family.h: llama, qwen2, qwen3) ->
// ModelConfig, architecture reported as the family's HF class (src/model/gguf_config.cpp).
// Tensor-derived facts (vocab size, tied embeddings, biases, QK-norm, rope_freqs) come
// from the file. A rope_freqs.weight that matches llama3 scaling is reported as llama3
// (its exact float64 form); any other is applied verbatim (RopeScalingType::freq_factors).
ModelConfig gguf_model_config(const GgufFile& f);

// llama.cpp's converter permutes the rows of Q and K (and their biases) per head for the
// llama architecture (model_family.h says which tensors):
// HF row h*D + s*(D/2) + j is stored at GGUF row h*D + 2*j + s (D = head_dim).
int64_t gguf_permuted_row(int64_t hf_row, int64_t head_dim);

}  // namespace ringinfer
