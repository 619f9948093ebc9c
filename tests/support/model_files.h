#pragma once
// Test fixtures for the model loaders: small random safetensors, GGUF and config.json
// files, written here independently of the library (own fp16/bf16 encoders, own
// quantizers, own Q/K permutation) so that tests compare the loaders against them.
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

namespace ringinfer::test {

// ---- element encodings (round to nearest even) and exact decodings in double
uint16_t float_to_fp16(float f);
uint16_t float_to_bf16(float f);
double fp16_value(uint16_t h);  // sign * 2^e * (1 + m/1024), subnormals included
double bf16_value(uint16_t b);

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes);
std::vector<uint8_t> read_bytes(const std::string& path);
void put_le(std::vector<uint8_t>& out, uint64_t v, int bytes);  // little-endian append

// ---- safetensors
struct StTensor {
  std::string name;
  std::string dtype;            // "F32", "F16", "BF16"
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;   // raw little-endian data
  std::vector<double> values;   // the exact value of each element
};
// Random values (normal, scale 1) made exactly representable in dtype.
StTensor random_st_tensor(const std::string& name, const std::string& dtype, const std::vector<int64_t>& shape,
                          std::mt19937_64& rng);
// Header JSON placing the tensors back to back in the given order.
nlohmann::json safetensors_header(const std::vector<StTensor>& tensors);
void write_safetensors(const std::string& path, const std::vector<StTensor>& tensors);
// Any header text and data bytes (malformed files); the length prefix is header.size().
void write_safetensors_raw(const std::string& path, const std::string& header, const std::vector<uint8_t>& data);

// ---- ggml quantization (the reference algorithms of ggml-quants.c). Each returns the
// block bytes and, in deq, the exact dequantized values computed from those bytes.
std::vector<uint8_t> quantize_q8_0(const std::vector<float>& x, std::vector<double>* deq);
std::vector<uint8_t> quantize_q4_0(const std::vector<float>& x, std::vector<double>* deq);
std::vector<uint8_t> quantize_q4_1(const std::vector<float>& x, std::vector<double>* deq);

// ---- GGUF writer
enum GgufT : uint32_t { kU8 = 0, kI8, kU16, kI16, kU32, kI32, kF32, kBool, kStr, kArr, kU64, kI64, kF64 };
enum GgmlT : uint32_t {
  kGF32 = 0, kGF16 = 1, kGQ4_0 = 2, kGQ4_1 = 3, kGQ5_0 = 6, kGQ5_1 = 7, kGQ8_0 = 8, kGQ2_K = 10, kGQ3_K = 11,
  kGQ4_K = 12, kGQ5_K = 13, kGQ6_K = 14, kGIQ2_XS = 17, kGIQ4_NL = 20, kGIQ4_XS = 23, kGBF16 = 30
};

class GgufBuilder {
 public:
  void kv_u32(const std::string& k, uint32_t v);
  void kv_i32(const std::string& k, int32_t v);
  void kv_u64(const std::string& k, uint64_t v);
  void kv_f32(const std::string& k, float v);
  void kv_bool(const std::string& k, bool v);
  void kv_str(const std::string& k, const std::string& v);
  void kv_str_array(const std::string& k, const std::vector<std::string>& v);
  void kv_i32_array(const std::string& k, const std::vector<int32_t>& v);
  void kv_f32_array(const std::string& k, const std::vector<float>& v);
  // type + value bytes exactly as given (nested arrays, malformed values).
  void kv_raw(const std::string& k, uint32_t type, const std::vector<uint8_t>& value);
  // A tensor; ne in ggml order (ne[0] = columns). Data is placed at the next aligned
  // offset unless offset is given (then data is still appended in order).
  void tensor(const std::string& name, const std::vector<int64_t>& ne, uint32_t type, const std::vector<uint8_t>& data,
              int64_t offset = -1);
  std::vector<uint8_t> build(uint32_t version = 3, uint32_t alignment = 32) const;

 private:
  struct T {
    std::string name;
    std::vector<int64_t> ne;
    uint32_t type;
    std::vector<uint8_t> data;
    int64_t offset;
  };
  std::vector<uint8_t> kvs_;
  uint64_t n_kv_ = 0;
  std::vector<T> tensors_;
};
std::vector<uint8_t> gguf_string(const std::string& s);  // u64 length + bytes

// ---- a tiny random Llama-family model
struct TinyModel {
  nlohmann::json config;                                // config.json contents
  std::map<std::string, std::vector<int64_t>> shapes;   // HF name -> HF shape
  std::map<std::string, std::vector<float>> values;     // HF name -> row-major values
  int64_t n_heads = 0, n_kv_heads = 0, head_dim = 0;
};
// hidden 64, 4 heads / 2 KV heads of 16, ffn 96, vocab 40, n_layers layers.
TinyModel make_tiny_model(std::mt19937_64& rng, int n_layers, bool qkv_bias, bool tied);
// config.json + model.safetensors in F32 (or several shards + index when shards > 1).
void write_tiny_hf(const std::string& dir, const TinyModel& m, int shards = 1);
// llama.cpp's HF -> GGUF row permutation of a (rows, cols) matrix, written as its
// reshape (n_head, 2, rows/n_head/2, cols) -> swap axes 1, 2.
std::vector<float> llama_cpp_permute(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t n_head);
// The model as a GGUF (llama architecture, Q/K permuted as llama.cpp does). Matrices are
// stored as matrix_type (F32, F16, Q8_0, Q4_0, Q4_1); norms and biases as F32. In
// expected, returns each HF tensor's exact dequantized values (HF layout).
std::vector<uint8_t> tiny_gguf(const TinyModel& m, uint32_t matrix_type, uint32_t version,
                               std::map<std::string, std::vector<double>>* expected);

}  // namespace ringinfer::test
