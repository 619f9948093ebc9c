// Usage: bench_cpu_matmul [--in 576] [--out 1536] [--rows 1,2,4,5,64] [--types f32,f16,bf16,q8_0,q4_0,q4_1]
//                         [--ms 200] [--repeats 5] [--stream-mb 64]
// The CPU backend's matmul (out = x W^T) on random weights of each GGUF type kept as
// stored, for each x row count: decode is 1 row, prefill many. Calls cycle through copies
// of the weight totalling --stream-mb MB (default 64: more than the caches, as a model's
// layers stream from DRAM in decode; 0: one copy, cache-resident). Each (type, rows) runs for
// --ms milliseconds per repeat; the best of --repeats is reported (a shared machine's
// load only slows a run down). Threads: OMP_NUM_THREADS (the passive wait policy, as the
// ringinfer binary sets it). Prints one line per (type, rows): GFLOP/s (2 x rows x in x
// out per call) and Gweights/s (weights read per second, whatever their bytes).
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ringinfer/backend.h"
#include "ringinfer/model.h"
#include "ringinfer/runtime.h"

using namespace ringinfer;

namespace {

struct TypeInfo {
  const char* name;
  uint32_t ggml;        // 0: fp32 data
  int64_t block;        // values per block
  int64_t block_bytes;  // bytes per block
};
constexpr TypeInfo kTypes[] = {{"f32", 0, 1, 4},   {"f16", 1, 1, 2},    {"bf16", 30, 1, 2},
                               {"q8_0", 8, 32, 34}, {"q4_0", 2, 32, 18}, {"q4_1", 3, 32, 20}};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) v.push_back(item);
  return v;
}

// Random weights of type t: fp16 scales near 0.01 (0x2000 + small mantissa), random
// quants; f16/bf16 values in [-1, 1).
HostTensor random_weight(const TypeInfo& t, int64_t rows, int64_t cols, std::mt19937& gen) {
  HostTensor h;
  h.shape = {rows, cols};
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  if (t.ggml == 0) {
    h.data.resize(static_cast<size_t>(rows * cols));
    for (float& v : h.data) v = u(gen);
    return h;
  }
  h.ggml_type = t.ggml;
  h.blocks.resize(static_cast<size_t>(rows * cols / t.block * t.block_bytes));
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : h.blocks) b = static_cast<unsigned char>(byte(gen));
  if (t.ggml == 1 || t.ggml == 30)
    for (size_t i = 0; i + 1 < h.blocks.size(); i += 2) {
      float v = u(gen);
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      uint16_t s = static_cast<uint16_t>(bits >> 16);  // bf16 by truncation
      if (t.ggml == 1) s = static_cast<uint16_t>(0x2000 | (byte(gen) << 2) | ((bits >> 31) << 15));  // fp16 in +-[2^-7, 2^-6)
      h.blocks[i] = static_cast<unsigned char>(s & 0xff);
      h.blocks[i + 1] = static_cast<unsigned char>(s >> 8);
    }
  else
    for (size_t b = 0; b < h.blocks.size(); b += static_cast<size_t>(t.block_bytes)) {
      h.blocks[b] = static_cast<unsigned char>(byte(gen));
      h.blocks[b + 1] = 0x20;  // d ~ 2^-7
      if (t.ggml == 3) {
        h.blocks[b + 2] = static_cast<unsigned char>(byte(gen));
        h.blocks[b + 3] = 0xa0;  // m ~ -2^-7
      }
    }
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  exec_with_passive_omp_wait(argv);
  int64_t in = 576, of = 1536, ms = 200, repeats = 5, stream_mb = 64;
  std::string rows_s = "1,2,4,5,64", types_s = "f32,f16,bf16,q8_0,q4_0,q4_1";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--in") in = std::atoll(v.c_str());
    else if (a == "--out") of = std::atoll(v.c_str());
    else if (a == "--rows") rows_s = v;
    else if (a == "--types") types_s = v;
    else if (a == "--ms") ms = std::atoll(v.c_str());
    else if (a == "--repeats") repeats = std::atoll(v.c_str());
    else if (a == "--stream-mb") stream_mb = std::atoll(v.c_str());
    else {
      std::fprintf(stderr, "bench_cpu_matmul: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  auto be = make_cpu_backend();
  std::mt19937 gen(42);
  std::printf("# in %lld out %lld threads %d, best of %lld x %lld ms, weights cycling over %lld MB\n",
              static_cast<long long>(in), static_cast<long long>(of), omp_get_max_threads(),
              static_cast<long long>(repeats), static_cast<long long>(ms), static_cast<long long>(stream_mb));
  std::printf("%-6s %5s %10s %10s %12s\n", "type", "rows", "us/call", "GFLOP/s", "Gweights/s");
  for (const std::string& tn : split(types_s)) {
    const TypeInfo* t = nullptr;
    for (const TypeInfo& k : kTypes)
      if (tn == k.name) t = &k;
    if (!t) {
      std::fprintf(stderr, "bench_cpu_matmul: unknown type %s\n", tn.c_str());
      return 2;
    }
    const HostTensor h = random_weight(*t, of, in, gen);
    std::vector<Tensor> ws{be->upload_weight(h)};
    while (static_cast<int64_t>(ws.size() * ws[0].bytes()) < stream_mb * (int64_t{1} << 20))
      ws.push_back(be->upload_weight(h));
    for (const std::string& rs : split(rows_s)) {
      const int64_t n = std::atoll(rs.c_str());
      std::vector<float> xh(static_cast<size_t>(n * in));
      std::normal_distribution<float> nd(0.0f, 1.0f);
      for (float& v : xh) v = nd(gen);
      Tensor x = be->alloc(n, in, DType::f32), out = be->alloc(n, of, DType::f32);
      be->copy_from_host(x, xh.data());
      double best = 1e30;
      for (int64_t r = 0; r < repeats; ++r) {
        int64_t calls = 0;
        const auto t0 = std::chrono::steady_clock::now();
        double el = 0;
        do {
          be->matmul(x, ws[static_cast<size_t>(calls) % ws.size()], Tensor(), out, false);
          ++calls;
          el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        } while (el * 1e3 < static_cast<double>(ms));
        best = std::min(best, el / static_cast<double>(calls));
      }
      const double flops = 2.0 * static_cast<double>(n * in * of);
      std::printf("%-6s %5lld %10.2f %10.2f %12.2f\n", t->name, static_cast<long long>(n), best * 1e6,
                  flops / best * 1e-9, static_cast<double>(in * of) / best * 1e-9);
      std::fflush(stdout);
    }
  }
  return 0;
}
