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

namespace {

// Q5_x: element i (of 32) is its nibble (low nibbles first) with bit i of qh on top.
template <bool kHasMin>
void dequant_q5(const unsigned char* src, int64_t n_blocks, float* dst) {
  constexpr int64_t bytes = kHasMin ? kQ5_1Bytes : kQ5_0Bytes;
  for (int64_t b = 0; b < n_blocks; ++b) {
    const unsigned char* blk = src + b * bytes;
    const float d = fp16_to_fp32(load_u16(blk));
    const float m = kHasMin ? fp16_to_fp32(load_u16(blk + 2)) : 0.0f;
    const unsigned char* q = blk + (kHasMin ? 4 : 2);
    const uint32_t qh = load_u32(q);
    float* out = dst + b * kQBlock;
    for (int j = 0; j < 16; ++j) {
      const int lo = (q[4 + j] & 0x0f) | static_cast<int>((qh >> j) & 1) << 4;
      const int hi = (q[4 + j] >> 4) | static_cast<int>((qh >> (j + 16)) & 1) << 4;
      if (kHasMin) {
        out[j] = static_cast<float>(lo) * d + m;
        out[j + 16] = static_cast<float>(hi) * d + m;
      } else {
        out[j] = static_cast<float>(lo - 16) * d;
        out[j + 16] = static_cast<float>(hi - 16) * d;
      }
    }
  }
}

}  // namespace

void dequant_q5_0(const unsigned char* src, int64_t n_blocks, float* dst) { dequant_q5<false>(src, n_blocks, dst); }
void dequant_q5_1(const unsigned char* src, int64_t n_blocks, float* dst) { dequant_q5<true>(src, n_blocks, dst); }

// Q2_K: scales[16] (low nibble: scale, high nibble: min, of 16 values each), qs[64], fp16
// d, fp16 dmin. Each 128-value half reads 32 bytes of qs four times, 2 bits at a time
// (shift 0, 2, 4, 6); each pass is two 16-value sub-blocks (bytes 0-15, then 16-31).
void dequant_q2_k(const unsigned char* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    const unsigned char* blk = src + b * kQ2_KBytes;
    const unsigned char* scales = blk;
    const unsigned char* qs = blk + 16;
    const float d = fp16_to_fp32(load_u16(blk + 80)), dmin = fp16_to_fp32(load_u16(blk + 82));
    float* out = dst + b * kQKBlock;
    int sub = 0;
    for (int half = 0; half < 2; ++half, qs += 32)
      for (int shift = 0; shift < 8; shift += 2)
        for (int part = 0; part < 2; ++part, ++sub) {
          const float dl = d * static_cast<float>(scales[sub] & 0x0f);
          const float ml = dmin * static_cast<float>(scales[sub] >> 4);
          for (int l = 0; l < 16; ++l)
            *out++ = dl * static_cast<float>((qs[part * 16 + l] >> shift) & 3) - ml;
        }
  }
}

// Q3_K: hmask[32], qs[64], scales[12] (sixteen 6-bit signed scales, offset 32: low 4 bits
// of scale i in byte i % 8 at bit 4 (i / 8), high 2 bits in byte 8 + i % 4 at bit
// 2 (i / 4)), fp16 d. Values as Q2_K's 2-bit ones, minus 4 where the value's hmask bit is
// clear; the hmask bit index runs 0..7 over the eight 32-value passes (two per shift).
void dequant_q3_k(const unsigned char* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    const unsigned char* blk = src + b * kQ3_KBytes;
    const unsigned char* hmask = blk;
    const unsigned char* qs = blk + 32;
    const unsigned char* sc = blk + 96;
    const float d = fp16_to_fp32(load_u16(blk + 108));
    float* out = dst + b * kQKBlock;
    int sub = 0, bit = 0;
    for (int half = 0; half < 2; ++half, qs += 32)
      for (int shift = 0; shift < 8; shift += 2, ++bit)
        for (int part = 0; part < 2; ++part, ++sub) {
          const int scale = (((sc[sub % 8] >> (4 * (sub / 8))) & 0x0f) | (((sc[8 + sub % 4] >> (2 * (sub / 4))) & 3) << 4)) - 32;
          const float dl = d * static_cast<float>(scale);
          for (int l = part * 16; l < part * 16 + 16; ++l) {
            const int q = ((qs[l] >> shift) & 3) - ((hmask[l] >> bit) & 1 ? 0 : 4);
            *out++ = dl * static_cast<float>(q);
          }
        }
  }
}

void scale_min_k4(int j, const unsigned char* q, int* scale, int* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    *min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

namespace {

// Q4_K: fp16 d, fp16 dmin, scales[12], qs[128]; Q5_K adds qh[32] before qs. Each 64-value
// pass reads 32 bytes of qs: low nibbles are sub-block 2p, high nibbles 2p + 1; Q5_K's
// fifth bit of value l of sub-block s is bit s of qh[l].
template <bool kFive>
void dequant_qk4(const unsigned char* src, int64_t n_blocks, float* dst) {
  constexpr int64_t bytes = kFive ? kQ5_KBytes : kQ4_KBytes;
  for (int64_t b = 0; b < n_blocks; ++b) {
    const unsigned char* blk = src + b * bytes;
    const float d = fp16_to_fp32(load_u16(blk)), dmin = fp16_to_fp32(load_u16(blk + 2));
    const unsigned char* sc = blk + 4;
    const unsigned char* qh = blk + 16;
    const unsigned char* qs = blk + (kFive ? 48 : 16);
    float* out = dst + b * kQKBlock;
    for (int s = 0; s < 8; ++s) {
      int scale, min;
      scale_min_k4(s, sc, &scale, &min);
      const float dl = d * static_cast<float>(scale), ml = dmin * static_cast<float>(min);
      const unsigned char* q = qs + 32 * (s / 2);
      for (int l = 0; l < 32; ++l) {
        int v = s % 2 == 0 ? q[l] & 0x0f : q[l] >> 4;
        if (kFive) v |= ((qh[l] >> s) & 1) << 4;
        *out++ = dl * static_cast<float>(v) - ml;
      }
    }
  }
}

}  // namespace

void dequant_q4_k(const unsigned char* src, int64_t n_blocks, float* dst) { dequant_qk4<false>(src, n_blocks, dst); }
void dequant_q5_k(const unsigned char* src, int64_t n_blocks, float* dst) { dequant_qk4<true>(src, n_blocks, dst); }

// Q6_K: ql[128], qh[64], int8 scales[16] (of 16 values each), fp16 d. Per 128-value half
// (64 bytes of ql, 32 of qh): value l + 32 k (l < 32, k < 4) has low 4 bits from
// ql[l + 32 (k % 2)] (low nibble for k < 2, high for k >= 2) and high 2 bits from qh[l] at
// bit 2 k; minus 32, times d * scale[l / 16 + 2 k].
void dequant_q6_k(const unsigned char* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    const unsigned char* blk = src + b * kQ6_KBytes;
    const float d = fp16_to_fp32(load_u16(blk + 208));
    float* out = dst + b * kQKBlock;
    for (int half = 0; half < 2; ++half) {
      const unsigned char* ql = blk + 64 * half;
      const unsigned char* qh = blk + 128 + 32 * half;
      const auto* sc = reinterpret_cast<const int8_t*>(blk + 192 + 8 * half);
      for (int k = 0; k < 4; ++k)
        for (int l = 0; l < 32; ++l) {
          const int lo = k < 2 ? ql[l + 32 * k] & 0x0f : ql[l + 32 * (k - 2)] >> 4;
          const int q = (lo | ((qh[l] >> (2 * k)) & 3) << 4) - 32;
          *out++ = d * static_cast<float>(sc[l / 16 + 2 * k]) * static_cast<float>(q);
        }
    }
  }
}

// ggml's kvalues_iq4nl: the 16 levels of the IQ4 formats.
constexpr int8_t kIq4Levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

void dequant_iq4_nl(const unsigned char* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    const unsigned char* blk = src + b * kIQ4_NLBytes;
    const float d = fp16_to_fp32(load_u16(blk));
    float* out = dst + b * kQBlock;
    for (int j = 0; j < 16; ++j) {
      out[j] = d * static_cast<float>(kIq4Levels[blk[2 + j] & 0x0f]);
      out[j + 16] = d * static_cast<float>(kIq4Levels[blk[2 + j] >> 4]);
    }
  }
}

// IQ4_XS: fp16 d, u16 scales_h (2 high bits of sub-block s at bit 2 s), scales_l[4] (low 4
// bits of sub-block s in byte s / 2 at bit 4 (s % 2)), qs[128] (16 bytes per sub-block).
void dequant_iq4_xs(const unsigned char* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    const unsigned char* blk = src + b * kIQ4_XSBytes;
    const float d = fp16_to_fp32(load_u16(blk));
    const uint16_t scales_h = load_u16(blk + 2);
    float* out = dst + b * kQKBlock;
    for (int s = 0; s < 8; ++s, out += 32) {
      const int ls = (((blk[4 + s / 2] >> (4 * (s % 2))) & 0x0f) | (((scales_h >> (2 * s)) & 3) << 4)) - 32;
      const float dl = d * static_cast<float>(ls);
      const unsigned char* q = blk + 8 + 16 * s;
      for (int j = 0; j < 16; ++j) {
        out[j] = dl * static_cast<float>(kIq4Levels[q[j] & 0x0f]);
        out[j + 16] = dl * static_cast<float>(kIq4Levels[q[j] >> 4]);
      }
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
