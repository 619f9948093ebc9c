#pragma once
// The memory check before work (DESIGN §3 "Memory per rank"): compares what one rank of
// the job needs for a document (plan_memory) with what its device has, and refuses to
// start work that cannot fit, naming the bytes needed, the bytes available and the
// smallest rank count that would fit.
#include <cstdint>
#include <string>

#include "ringinfer/memory_plan.h"
#include "ringinfer/model.h"

namespace ringinfer {

enum class MemoryKind { host, gpu };  // which memory a rank works in

// MemAvailable of /proc/meminfo-formatted `text`, in bytes; throws Error naming `source`
// when the line is missing or malformed.
int64_t parse_meminfo_available(const std::string& text, const std::string& source = "/proc/meminfo");

// Bytes this rank may use: memory_limit when >= 0 (--memory-limit), otherwise MemAvailable
// of /proc/meminfo (host) or cudaMemGetInfo's free bytes on the current device (gpu; an
// Error in builds without CUDA).
int64_t available_bytes(MemoryKind device, int64_t memory_limit = -1);

// Plans `in` (context = document length, ranks, tp, element sizes) and throws Error when
// the per-rank total exceeds `available`:
//   "memory check: a document of S tokens needs X bytes (x.x GiB) per rank with N ranks
//    (cp C x tp T), but only Y bytes (y.y GiB) of host memory are available; the smallest
//    rank count that fits is R"  (or "...; no rank count fits: the weights alone need W bytes per rank")
// Returns the plan when it fits. A context beyond kMaxContextTokens is refused first, naming
// --max-new-tokens (the only way run gets there).
MemoryPlan check_memory(const ModelConfig& config, const PlanInput& in, MemoryKind device, int64_t available);

// With --offload-residual the residual stream waits in pinned host memory: throws Error when
// plan.host_per_rank exceeds `host_available` (the host memory one rank may use):
//   "memory check: --offload-residual keeps X bytes (x.x GiB) of the residual stream per rank
//    in pinned host memory, but only Y bytes (y.y GiB) of host memory are available per rank;
//    run without --offload-residual or on more ranks"
void check_host_memory(const MemoryPlan& plan, int64_t host_available);

}  // namespace ringinfer
