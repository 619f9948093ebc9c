// `ringinfer plan`: memory per rank, whether it fits, the smallest rank count that does,
// and ring-step and prefill time estimates (DESIGN §3, §5, §8).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "ringinfer/error.h"
#include "ringinfer/gguf.h"
#include "ringinfer/memory_plan.h"
#include "ringinfer/model_config.h"

namespace ringinfer::cli {
namespace {

ModelConfig load_config_only(const std::string& path) {
  namespace fs = std::filesystem;
  if (fs::is_directory(path)) return parse_model_config((fs::path(path) / "config.json").string());
  if (fs::path(path).extension() == ".gguf") return gguf_model_config(GgufFile(path));
  return parse_model_config(path);
}

std::string gb(double bytes) {
  char s[32];
  std::snprintf(s, sizeof s, "%.2f GB", bytes / 1e9);
  return s;
}

}  // namespace

int plan_command(const RunConfig& c) {
  const ModelConfig model = load_config_only(c.model);
  // plan counts a GPU run: bf16 weights, Q as the CUDA kernels read it, bf16 KV unless --kv-dtype says.
  PlanInput in = plan_input(c.kv_dtype == "auto" ? KvDtype::bf16 : parse_kv_dtype(c.kv_dtype), /*on_gpu=*/true,
                            model.head_dim);
  in.offload_residual = c.offload_residual;
  in.context = c.context;
  in.ranks = c.ranks;
  in.tp = c.tp;
  // plan_memory refuses a --tp the model does not split over (run's rule) and figures that
  // overflow; the option parser bounds --gpu-memory, so the capacity fits int64.
  const int64_t capacity = std::llround(c.gpu_memory_gb * 1e9);
  // run's default decode batch: as many documents of this context as fit (DESIGN §5).
  in.batch = std::max<int64_t>(1, largest_fitting_batch(model, in, capacity, kAutoMaxBatch));
  const MemoryPlan p = plan_memory(model, in);

  std::printf("model            %s: %lld layers, hidden %lld, heads %lld/%lld x %lld, vocab %lld\n",
              model.architecture.c_str(), (long long)model.n_layers, (long long)model.hidden_size,
              (long long)model.n_heads, (long long)model.n_kv_heads, (long long)model.head_dim,
              (long long)model.vocab_size);
  std::printf("rope             %s\n", describe_rope(model.rope).c_str());
  std::printf("layout           %d ranks = %d CP x %d TP; %lld tokens, %lld per rank\n", c.ranks, p.cp, c.tp,
              (long long)c.context, (long long)p.local_tokens);
  std::printf("parameters       %.3f B\n", p.params_total / 1e9);
  std::printf("KV per token     %lld bytes (%s, all layers)\n", (long long)p.kv_bytes_per_token, c.kv_dtype.c_str());
  std::printf("KV total         %s\n", gb(p.kv_total).c_str());
  std::printf("per rank:\n");
  std::printf("  weights        %s\n", gb(p.weights_per_rank).c_str());
  std::printf("  KV cache       %s per document, %s for the decode batch\n", gb(p.kv_per_rank).c_str(),
              gb(p.kv_batch_per_rank).c_str());
  std::printf("  activations    %s (%lld bytes per local token)\n", gb(p.activations_per_rank).c_str(),
              (long long)p.activation_bytes_per_local_token);
  std::printf("  scratch        %s\n", gb(p.scratch_per_rank).c_str());
  std::printf("  total          %s of %s: %s\n", gb(p.total_per_rank).c_str(), gb(double(capacity)).c_str(),
              p.total_per_rank <= capacity ? "fits" : "DOES NOT FIT");
  if (in.offload_residual)
    std::printf("  host           %s of pinned host memory beside that: the residual stream (--offload-residual)\n",
                gb(double(p.host_per_rank)).c_str());
  std::printf("decode batch     %lld documents of this context (run's default --max-batch: as many as fit, at most "
              "%lld)\n", (long long)in.batch, (long long)kAutoMaxBatch);
  in.batch = 1;  // the fewest ranks that hold one document
  const int smallest = smallest_fitting_ranks(model, in, capacity);
  if (smallest > 0) std::printf("smallest fitting %d ranks (--tp %d)\n", smallest, c.tp);
  else if (p.weights_per_rank >= capacity) std::printf("smallest fitting none: the weights alone exceed one GPU; raise --tp\n");
  else std::printf("smallest fitting none up to %d ranks\n", kMaxPlanRanks);

  // One ring step of one layer: send the local K,V block while computing on the one in hand.
  const double step_comm = p.ring_step_bytes / (c.link_gbps * 1e9);
  const double step_compute = p.ring_step_flops / (c.attention_tflops * 1e12);
  std::printf("ring step        %s sent, %.3f ms at %.0f GB/s; attention %.3f ms at %.0f TFLOP/s: %s-bound\n",
              gb(p.ring_step_bytes).c_str(), step_comm * 1e3, c.link_gbps, step_compute * 1e3, c.attention_tflops,
              step_comm > step_compute ? "communication" : "compute");
  // Prefill: N ring steps per layer (the overlapped maximum of each), plus the GEMMs of
  // every local token (2 FLOPs per parameter per token, LM head excluded).
  const double ring = model.n_layers * p.cp * std::max(step_comm, step_compute);
  const double gemm = 2.0 * (p.params_total - model.vocab_size * model.hidden_size) / c.tp *
                      static_cast<double>(p.local_tokens) / (c.matmul_tflops * 1e12);
  std::printf("prefill estimate %.1f s (attention ring %.1f s + projections/MLP %.1f s)\n", ring + gemm, ring, gemm);
  return kExitOk;
}

}  // namespace ringinfer::cli
