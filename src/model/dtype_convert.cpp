#include "model/dtype_convert.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>

#include "ringinfer/error.h"

namespace ringinfer::dtype {

uint16_t load_u16(const unsigned char* p) {
  return static_cast<uint16_t>(p[0] | (static_cast<uint16_t>(p[1]) << 8));
}

static uint32_t load_u32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

static float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    // Zero or subnormal: man * 2^-24, exact in fp32.
    const float v = std::ldexp(static_cast<float>(man), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_to_float(sign | 0x7f800000u | (man << 13));  // inf / nan
  return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
}

float bf16_to_fp32(uint16_t b) { return bits_to_float(static_cast<uint32_t>(b) << 16); }

void f32_to_f32(const unsigned char* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bits_to_float(load_u32(src + 4 * i));
}

void f16_to_f32(const unsigned char* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(load_u16(src + 2 * i));
}

void bf16_to_f32(const unsigned char* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(load_u16(src + 2 * i));
}

void f64_to_f32(const unsigned char* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) {
    uint64_t u = 0;
    for (int b = 7; b >= 0; --b) u = (u << 8) | src[8 * i + b];
    double d;
    std::memcpy(&d, &u, sizeof d);
    dst[i] = static_cast<float>(d);
  }
}

void dequant_q8_0(const unsigned char* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    const unsigned char* blk = src + b * kQ8_0Bytes;
    const float d = fp16_to_fp32(load_u16(blk));
    for (int j = 0; j < kQBlock; ++j)
      dst[b * kQBlock + j] = static_cast<float>(static_cast<int8_t>(blk[2 + j])) * d;
  }
}

void dequant_q4_0(const unsigned char* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    const unsigned char* blk = src + b * kQ4_0Bytes;
    const float d = fp16_to_fp32(load_u16(blk));
    float* out = dst + b * kQBlock;
    for (int j = 0; j < 16; ++j) {
      out[j] = static_cast<float>((blk[2 + j] & 0x0f) - 8) * d;
      out[j + 16] = static_cast<float>((blk[2 + j] >> 4) - 8) * d;
    }
  }
}

void dequant_q4_1(const unsigned char* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    const unsigned char* blk = src + b * kQ4_1Bytes;
    const float d = fp16_to_fp32(load_u16(blk));
    const float m = fp16_to_fp32(load_u16(blk + 2));
    float* out = dst + b * kQBlock;
    for (int j = 0; j < 16; ++j) {
      out[j] = static_cast<float>(blk[4 + j] & 0x0f) * d + m;
      out[j + 16] = static_cast<float>(blk[4 + j] >> 4) * d + m;
    }
  }
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      throw Error(path + ": cannot map (" + std::strerror(err) + ")");
    }
    data_ = static_cast<const unsigned char*>(p);
  }
  ::close(fd);  // the mapping keeps the file alive
}

void MappedFile::drop_resident(uint64_t offset, uint64_t bytes) const {
  if (!data_ || offset >= size_ || bytes == 0) return;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t begin = offset / page * page, end = std::min(size_, offset + bytes);
  // Advice only: a failure leaves the pages resident, nothing else.
  (void)::madvise(const_cast<unsigned char*>(data_) + begin, end - begin, MADV_DONTNEED);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<unsigned char*>(data_), size_);
}

}  // namespace ringinfer::dtype
