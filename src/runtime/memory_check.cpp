#include "ringinfer/memory_check.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "ringinfer/error.h"

#ifdef RINGINFER_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace ringinfer {
namespace {

std::string with_gib(int64_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, " bytes (%.1f GiB)", double(bytes) / double(int64_t(1) << 30));
  return std::to_string(bytes) + buf;
}

}  // namespace

int64_t parse_meminfo_available(const std::string& text, const std::string& source) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, 13, "MemAvailable:") != 0) continue;
    std::istringstream fields(line.substr(13));
    long long kb = -1;
    std::string unit;
    fields >> kb >> unit;
    RI_CHECK(fields && kb >= 0 && unit == "kB", source + ": malformed MemAvailable line '" + line + "'");
    RI_CHECK(kb <= INT64_MAX / 1024, source + ": MemAvailable out of range");
    return int64_t(kb) * 1024;
  }
  throw Error(source + ": no MemAvailable line (pass --memory-limit)");
}

int64_t available_bytes(MemoryKind device, int64_t memory_limit) {
  if (memory_limit >= 0) return memory_limit;
  if (device == MemoryKind::host) {
    std::ifstream f("/proc/meminfo");
    RI_CHECK(f, "/proc/meminfo: cannot open (pass --memory-limit)");
    std::stringstream ss;
    ss << f.rdbuf();
    return parse_meminfo_available(ss.str());
  }
#ifdef RINGINFER_HAVE_CUDA
  size_t free_b = 0, total_b = 0;
  const cudaError_t rc = cudaMemGetInfo(&free_b, &total_b);
  if (rc != cudaSuccess) throw_library_error("CUDA", __FILE__, __LINE__, cudaGetErrorString(rc));
  return static_cast<int64_t>(free_b);
#else
  throw Error("memory check: GPU memory asked for, but this ringinfer was built without CUDA");
#endif
}

MemoryPlan check_memory(const ModelConfig& config, const PlanInput& in, MemoryKind device, int64_t available) {
  // Checked here, in run's words, before plan_memory's generic refusal.
  RI_CHECK(in.context <= kMaxContextTokens,
           "memory check: a document of " + std::to_string(in.context) +
               " tokens (prompt plus --max-new-tokens) is longer than the " + std::to_string(kMaxContextTokens) +
               " tokens of context ringinfer supports: lower --max-new-tokens");
  const MemoryPlan p = plan_memory(config, in);
  if (p.total_per_rank <= available) return p;
  const std::string what = in.batch > 1 ? std::to_string(in.batch) + " documents of " : "a document of ";
  std::string msg = "memory check: " + what + std::to_string(in.context) + " tokens " +
                    (in.batch > 1 ? "need " : "needs ") +
                    with_gib(p.total_per_rank) + " per rank with " + std::to_string(in.ranks) + " ranks (cp " +
                    std::to_string(p.cp) + " x tp " + std::to_string(in.tp) + "), but only " + with_gib(available) +
                    " of " + (device == MemoryKind::gpu ? "GPU" : "host") + " memory are available; ";
  const int64_t batch_fit = in.batch > 1 ? largest_fitting_batch(config, in, available, in.batch) : 0;
  if (batch_fit > 0) {
    msg += "--max-batch " + std::to_string(batch_fit) + " fits";
    throw Error(msg);
  }
  const int fit = smallest_fitting_ranks(config, in, available);
  if (fit > 0)
    msg += "the smallest rank count that fits is " + std::to_string(fit);
  else
    msg += "no rank count fits: the weights alone need " + with_gib(p.weights_per_rank) + " per rank";
  throw Error(msg);
}

void check_host_memory(const MemoryPlan& plan, int64_t host_available) {
  if (plan.host_per_rank <= host_available) return;
  throw Error("memory check: --offload-residual keeps " + with_gib(plan.host_per_rank) +
              " of the residual stream per rank in pinned host memory, but only " + with_gib(host_available) +
              " of host memory are available per rank; run without --offload-residual or on more ranks");
}

}  // namespace ringinfer
