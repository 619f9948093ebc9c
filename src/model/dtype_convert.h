#pragma once
// Element conversions shared by the safetensors and GGUF loaders: fp16/bf16 -> fp32 and
// dequantization of ggml's block formats. Block layouts follow ggml (ggml-common.h):
//   Q8_0: fp16 d, int8 q[32]              x = q * d
//   Q4_0: fp16 d, uint8 qs[16]            x = (nibble - 8) * d
//   Q4_1: fp16 d, fp16 m, uint8 qs[16]    x = nibble * d + m
//   Q5_0: fp16 d, u32 qh, uint8 qs[16]    x = (nibble | bit << 4) - 16) * d
//   Q5_1: fp16 d, fp16 m, u32 qh, qs[16]  x = (nibble | bit << 4) * d + m
// In Q4_x and Q5_x, byte j holds element j in its low nibble and element j + 16 in its
// high nibble; bit i of Q5_x's qh is element i's fifth bit.
// The k-quants (256 values a super-block, in sub-blocks of 16 or 32 with scales of their
// own; dequant_q2_k .. dequant_q6_k in dtype_convert.cpp give each layout) compute, as ggml,
// d * scale (and dmin * min) in fp32 first, then one product (and difference) per value.
#include <cstddef>
#include <cstdint>
#include <string>

namespace ringinfer::dtype {

constexpr int64_t kQBlock = 32;          // elements per Q8_0 / Q4_0 / Q4_1 block
constexpr int64_t kQ8_0Bytes = 34;       // bytes per Q8_0 block
constexpr int64_t kQ4_0Bytes = 18;
constexpr int64_t kQ4_1Bytes = 20;
constexpr int64_t kQ5_0Bytes = 22;
constexpr int64_t kQ5_1Bytes = 24;
constexpr int64_t kQKBlock = 256;        // elements per k-quant super-block
constexpr int64_t kQ2_KBytes = 84;
constexpr int64_t kQ3_KBytes = 110;
constexpr int64_t kQ4_KBytes = 144;
constexpr int64_t kQ5_KBytes = 176;
constexpr int64_t kQ6_KBytes = 210;
constexpr int64_t kIQ4_NLBytes = 18;
constexpr int64_t kIQ4_XSBytes = 136;

float fp16_to_fp32(uint16_t h);
float bf16_to_fp32(uint16_t b);

// Little-endian loads from unaligned bytes (file data need not be aligned for us).
uint16_t load_u16(const unsigned char* p);

// Converts n elements starting at src (raw little-endian bytes) to fp32.
void f32_to_f32(const unsigned char* src, int64_t n, float* dst);
void f16_to_f32(const unsigned char* src, int64_t n, float* dst);
void bf16_to_f32(const unsigned char* src, int64_t n, float* dst);
void f64_to_f32(const unsigned char* src, int64_t n, float* dst);

// Dequantizes n_blocks consecutive blocks (n_blocks * 32 values) into dst.
void dequant_q8_0(const unsigned char* src, int64_t n_blocks, float* dst);
void dequant_q4_0(const unsigned char* src, int64_t n_blocks, float* dst);
void dequant_q4_1(const unsigned char* src, int64_t n_blocks, float* dst);
void dequant_q5_0(const unsigned char* src, int64_t n_blocks, float* dst);
void dequant_q5_1(const unsigned char* src, int64_t n_blocks, float* dst);
// n_blocks super-blocks (n_blocks * 256 values).
void dequant_q2_k(const unsigned char* src, int64_t n_blocks, float* dst);
void dequant_q3_k(const unsigned char* src, int64_t n_blocks, float* dst);
void dequant_q4_k(const unsigned char* src, int64_t n_blocks, float* dst);
void dequant_q5_k(const unsigned char* src, int64_t n_blocks, float* dst);
void dequant_q6_k(const unsigned char* src, int64_t n_blocks, float* dst);
// IQ4_NL (32 values: fp16 d, 16 bytes of 4-bit indices, nibbles as Q4_0) and IQ4_XS (256
// values: fp16 d, 6-bit signed sub-block scales, then IQ4_NL's indices per 32 values):
// each index picks one of ggml's 16 non-linear levels (kvalues_iq4nl), times d (IQ4_XS:
// times d (scale - 32), computed first).
void dequant_iq4_nl(const unsigned char* src, int64_t n_blocks, float* dst);
void dequant_iq4_xs(const unsigned char* src, int64_t n_blocks, float* dst);
// Q4_K / Q5_K: the 6-bit scale and min of sub-block j (< 8) from the 12 packed bytes at q:
// sub-blocks 0-3 in the low 6 bits of bytes 0-3 (scale) and 4-7 (min); 4-7 in the nibbles
// of bytes 8-11 (scale low, min high) with their top 2 bits in the top bits of bytes 0-7.
void scale_min_k4(int j, const unsigned char* q, int* scale, int* min);

// A whole file mapped read-only (weights are read in place, never copied whole).
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // throws Error("<path>: cannot open ...")
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const unsigned char* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Drops the pages of bytes [offset, offset + bytes) from this process's resident set
  // once they have been converted (they stay in the page cache and fault back in if read
  // again), so loading a model's shard keeps resident memory near the shard, not the file.
  void drop_resident(uint64_t offset, uint64_t bytes) const;

 private:
  std::string path_;
  const unsigned char* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace ringinfer::dtype
