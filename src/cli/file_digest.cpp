#include "cli/file_digest.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "cli/output_path.h"
#include "ringinfer/error.h"

namespace ringinfer::cli {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kMul1 = 0x9E3779B97F4A7C15ull;
constexpr uint64_t kMul2 = 0xC2B2AE3D27D4EB4Full;

uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

// splitmix64's finalizer: a bijection that spreads every input bit over the output.
uint64_t mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// One lane step: a bijection in both the state and the word, so one changed word always
// changes the lane.
uint64_t step(uint64_t h, uint64_t word) { return rotl(h ^ (word * kMul1), 29) * kMul2; }

class Fd {
 public:
  explicit Fd(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

void read_at(int fd, uint8_t* buf, uint64_t size, uint64_t offset, const std::string& path) {
  uint64_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, buf + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    RI_CHECK(n >= 0, path + ": cannot read: " + std::strerror(errno));
    RI_CHECK(n > 0, path + ": file shrank while it was read");
    done += static_cast<uint64_t>(n);
  }
}

}  // namespace

uint64_t hash64(const uint8_t* data, size_t size, uint64_t seed) {
  // Four independent lanes keep the multiplier pipelined (several GB/s).
  uint64_t h[4] = {seed ^ 0x243F6A8885A308D3ull, seed ^ 0x13198A2E03707344ull, seed ^ 0xA4093822299F31D0ull,
                   seed ^ 0x082EFA98EC4E6C89ull};
  size_t i = 0;
  for (; i + 32 <= size; i += 32) {
    uint64_t w[4];
    std::memcpy(w, data + i, 32);
    for (int l = 0; l < 4; ++l) h[l] = step(h[l], w[l]);
  }
  for (; i + 8 <= size; i += 8) {
    uint64_t w;
    std::memcpy(&w, data + i, 8);
    h[0] = step(h[0], w);
  }
  uint64_t tail = 0;
  std::memcpy(&tail, data + i, size - i);
  h[1] = step(h[1], tail);
  return mix(h[0] + mix(h[1] + mix(h[2] + mix(h[3] ^ size))));
}

uint64_t file_digest(const std::string& path) {
  Fd fd(path);
  RI_CHECK(fd.get() >= 0, path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  RI_CHECK(::fstat(fd.get(), &st) == 0, path + ": cannot stat: " + std::strerror(errno));
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  std::vector<uint64_t> offsets;
  if (size <= kWholeDigestMaxBytes) {
    for (uint64_t o = 0; o < size; o += kDigestBlockBytes) offsets.push_back(o);
  } else {
    const uint64_t span = size - kDigestBlockBytes;  // the last block starts here
    for (int i = 0; i < kDigestBlocks; ++i) offsets.push_back(span / (kDigestBlocks - 1) * i +
                                                              span % (kDigestBlocks - 1) * i / (kDigestBlocks - 1));
  }
  std::vector<uint8_t> block(kDigestBlockBytes);
  uint64_t h = mix(size ^ kMul2);
  for (uint64_t o : offsets) {
    const uint64_t n = std::min(kDigestBlockBytes, size - o);
    read_at(fd.get(), block.data(), n, o, path);
    h = mix(h ^ hash64(block.data(), n, o));
  }
  return h;
}

std::string content_identity(const std::string& path) {
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  RI_CHECK(!ec, path + ": cannot read: " + ec.message());
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(file_digest(path)));
  return "size=" + std::to_string(size) + " digest=" + hex;
}

std::string model_identity(const std::string& model, const std::string& output) {
  std::error_code ec;
  if (!fs::is_directory(model, ec)) return content_identity(model);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(model, ec)) {
    const std::string name = e.path().filename().string();
    std::error_code file_ec;  // a dangling link is skipped, not an error
    if (name.empty() || name[0] == '.' || !fs::is_regular_file(e.path(), file_ec)) continue;
    if (is_output_companion(e.path().string(), output, true)) continue;
    names.push_back(name);
  }
  RI_CHECK(!ec, model + ": cannot list the model folder: " + ec.message());
  std::sort(names.begin(), names.end());
  std::string id;
  for (const std::string& name : names) id += "\n  " + name + " " + content_identity((fs::path(model) / name).string());
  return id;
}

}  // namespace ringinfer::cli
