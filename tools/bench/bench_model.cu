// Usage: bench_model [--config FILE] [--contexts 8192,32768,131072] [--decode N] [--chunk N]
//                    [--layers L] [--json FILE]
// End-to-end single-GPU throughput of the engine on the CUDA backend with random weights
// of a real model shape (default tests/fixtures/configs/llama-3.1-8b.json): for each
// context S, one generate call of a random S-token prompt: prefill seconds (the whole
// prompt through every layer plus the first token), then decode tokens/s over N steps.
//
// Model FLOPs (MFU): per prompt token 2 * (linear parameters of all layers), plus causal
// attention 4 * S^2 / 2 * H * D per layer (the FlashAttention convention), plus one LM-head
// row. MFU is reported against two peaks: the bf16 GEMM rate cuBLAS reaches on this GPU in
// the same run (8192^3, median of 10), and the datasheet dense bf16 peak given by
// --peak-tflops (default 989.4, H100 SXM). Decode bytes/s counts the weights (bf16) and
// the KV cache (bf16) read once per step, against a 2 GiB device copy measured here.
// One JSON object per line goes to --json and stdout.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_timing.h"
#include "ringinfer/cuda_backend.h"
#include "ringinfer/cuda_check.h"
#include "ringinfer/engine.h"
#include "ringinfer/model_config.h"

using namespace ringinfer;

namespace {

uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// shape, filled with uniform [-a, a) in parallel (deterministic for a seed).
HostTensor random_tensor(std::vector<int64_t> shape, float a, uint64_t seed) {
  HostTensor t;
  t.shape = shape;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  t.data.resize(static_cast<size_t>(n));
  const unsigned nt = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  std::vector<std::thread> th;
  for (unsigned k = 0; k < nt; ++k)
    th.emplace_back([&, k] {
      for (int64_t i = k; i < n; i += nt)
        t.data[i] = a * (static_cast<float>(splitmix(seed * 0x100000001b3ull + i) >> 40) / float(1 << 24) * 2.f - 1.f);
    });
  for (auto& x : th) x.join();
  return t;
}

HostTensor ones(int64_t n) {
  HostTensor t;
  t.shape = {n};
  t.data.assign(static_cast<size_t>(n), 1.0f);
  return t;
}

// Random weights scaled like a trained model's (uniform with std 1/sqrt(fan_in)) so the
// residual stream neither explodes nor vanishes; norms are ones.
ModelWeights random_weights(const ModelConfig& c) {
  const int64_t h = c.hidden_size, D = c.head_dim, H = c.n_heads, Hkv = c.n_kv_heads, I = c.intermediate_size;
  const float ah = std::sqrt(3.0f / h), ai = std::sqrt(3.0f / I), ao = std::sqrt(3.0f / (H * D));
  ModelWeights w;
  w.embed = random_tensor({c.vocab_size, h}, 1.0f, 1);
  w.final_norm = ones(h);
  if (!c.tie_word_embeddings) w.lm_head = random_tensor({c.vocab_size, h}, ah, 2);
  // Every layer gets the same values (timing does not depend on them; it halves setup time).
  LayerWeights L;
  L.attn_norm = ones(h);
  L.ffn_norm = ones(h);
  L.wq = random_tensor({H * D, h}, ah, 3);
  L.wk = random_tensor({Hkv * D, h}, ah, 4);
  L.wv = random_tensor({Hkv * D, h}, ah, 5);
  L.wo = random_tensor({h, H * D}, ao, 6);
  L.w_gate = random_tensor({I, h}, ah, 7);
  L.w_up = random_tensor({I, h}, ah, 8);
  L.w_down = random_tensor({h, I}, ai, 9);
  if (c.qkv_bias) {
    L.bq = random_tensor({H * D}, 0.1f, 10);
    L.bk = random_tensor({Hkv * D}, 0.1f, 11);
    L.bv = random_tensor({Hkv * D}, 0.1f, 12);
  }
  w.layers.assign(static_cast<size_t>(c.n_layers), L);
  return w;
}


// The bf16 GEMM rate cuBLAS reaches here: 8192^3, fp32 accumulation, random inputs.
double measured_gemm_tflops() {
  const int n = 8192;
  __nv_bfloat16 *a, *b, *c;
  CUDA_CHECK(cudaMalloc(&a, size_t(n) * n * 2));
  CUDA_CHECK(cudaMalloc(&b, size_t(n) * n * 2));
  CUDA_CHECK(cudaMalloc(&c, size_t(n) * n * 2));
  std::vector<__nv_bfloat16> host(size_t(n) * n);
  for (size_t i = 0; i < host.size(); ++i)
    host[i] = __float2bfloat16(static_cast<float>(splitmix(i) >> 40) / float(1 << 24) - 0.5f);
  CUDA_CHECK(cudaMemcpy(a, host.data(), host.size() * 2, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(b, host.data(), host.size() * 2, cudaMemcpyHostToDevice));
  cublasHandle_t h;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) throw Error("cublasCreate failed");
  const float one = 1.f, zero = 0.f;
  const double ms = bench::median_ms(
      [&] {
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n, &zero, c,
                     CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      },
      3, 10);
  cublasDestroy(h);
  CUDA_CHECK(cudaFree(a));
  CUDA_CHECK(cudaFree(b));
  CUDA_CHECK(cudaFree(c));
  return 2.0 * n * n * double(n) / (ms * 1e-3) / 1e12;
}

double measured_copy_gbps() {
  const size_t bytes = size_t(2) << 30;
  return 2.0 * bytes / bench::copy_ms(bytes) / 1e6;
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> v;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, ',');) v.push_back(std::stoll(x));
  return v;
}

}  // namespace

int main(int argc, char** argv) try {
  std::string config_path = "tests/fixtures/configs/llama-3.1-8b.json", json_path;
  std::vector<int64_t> contexts = {8192, 32768, 131072};
  int64_t decode = 32, chunk = 4096, layers = -1;
  double peak_tflops = 989.4;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--config") config_path = next();
    else if (a == "--contexts") contexts = parse_list(next());
    else if (a == "--decode") decode = std::stoll(next());
    else if (a == "--chunk") chunk = std::stoll(next());
    else if (a == "--layers") layers = std::stoll(next());
    else if (a == "--json") json_path = next();
    else if (a == "--peak-tflops") peak_tflops = std::stod(next());
    else throw Error("bench_model: unknown argument " + a);
  }
  ModelConfig cfg = parse_model_config(config_path);
  if (layers > 0) cfg.n_layers = layers;
  cfg.eos_token_ids.clear();  // decode exactly --decode steps
  FILE* json = json_path.empty() ? nullptr : std::fopen(json_path.c_str(), "a");
  auto emit = [&](const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    if (json) std::fprintf(json, "%s\n", line.c_str()), std::fflush(json);
  };
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const double gemm = measured_gemm_tflops(), copy = measured_copy_gbps();
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "{\"kind\":\"peaks\",\"device\":\"%s\",\"gemm_bf16_tflops\":%.1f,\"copy_gbps\":%.0f,"
                "\"datasheet_bf16_tflops\":%.1f}",
                prop.name, gemm, copy, peak_tflops);
  emit(buf);

  const int64_t h = cfg.hidden_size, D = cfg.head_dim, H = cfg.n_heads, Hkv = cfg.n_kv_heads,
                I = cfg.intermediate_size, L = cfg.n_layers, V = cfg.vocab_size;
  const double linear_params = double(L) * (double(h) * (H + 2 * Hkv) * D + double(H) * D * h + 3.0 * h * I);
  const double weight_bytes = 2.0 * (linear_params + double(V) * h);  // bf16, LM head included
  const auto t0 = std::chrono::steady_clock::now();
  const ModelWeights weights = random_weights(cfg);
  auto backend = make_cuda_backend();
  EngineOptions eo;
  eo.chunk_tokens = chunk;
  Engine engine(*backend, cfg, weights, eo);
  const double setup_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "model %s x %lld layers ready in %.1f s (%.2f GB of bf16 weights)\n", config_path.c_str(),
               static_cast<long long>(L), setup_s, weight_bytes / 1e9);

  for (int64_t S : contexts) {
    std::vector<int32_t> prompt(static_cast<size_t>(S));
    for (int64_t i = 0; i < S; ++i) prompt[i] = static_cast<int32_t>(splitmix(1000 + i) % uint64_t(V));
    GenerateOptions g;
    g.max_new_tokens = decode;
    backend->reset_peak_bytes();
    GenerateResult r;
    try {
      r = engine.generate(prompt, g);
    } catch (const std::exception& e) {
      std::snprintf(buf, sizeof buf, "{\"kind\":\"model\",\"context\":%lld,\"error\":\"%s\"}",
                    static_cast<long long>(S), e.what());
      emit(buf);
      continue;
    }
    const double attn_flops = 4.0 * double(S) * double(S) / 2.0 * double(H) * D * L;
    const double prefill_flops = 2.0 * linear_params * S + attn_flops + 2.0 * double(V) * h;
    const double prefill_tflops = prefill_flops / r.prefill_seconds / 1e12;
    const double steps = static_cast<double>(r.tokens.size()) - 1;
    const double decode_tps = r.decode_seconds > 0 ? steps / r.decode_seconds : 0;
    // Per decode step: every weight once, and the KV cache of (about) S tokens.
    const double kv_bytes = 2.0 * 2.0 * double(L) * Hkv * D * double(S);
    const double decode_gbps = decode_tps * (weight_bytes + kv_bytes) / 1e9;
    std::snprintf(buf, sizeof buf,
                  "{\"kind\":\"model\",\"config\":\"%s\",\"layers\":%lld,\"context\":%lld,\"chunk\":%lld,"
                  "\"prefill_s\":%.3f,\"prefill_tokens_per_s\":%.0f,\"prefill_tflops\":%.1f,"
                  "\"mfu_vs_measured_gemm\":%.3f,\"mfu_vs_datasheet\":%.3f,\"attention_flop_share\":%.3f,"
                  "\"decode_steps\":%.0f,\"decode_tokens_per_s\":%.2f,\"decode_gbps\":%.0f,"
                  "\"decode_fraction_of_copy_bw\":%.3f,\"peak_device_bytes\":%lld}",
                  config_path.c_str(), static_cast<long long>(L), static_cast<long long>(S),
                  static_cast<long long>(chunk), r.prefill_seconds, S / r.prefill_seconds, prefill_tflops,
                  prefill_tflops / gemm, prefill_tflops / peak_tflops, attn_flops / prefill_flops, steps, decode_tps,
                  decode_gbps, decode_gbps / copy, static_cast<long long>(backend->peak_allocated_bytes()));
    emit(buf);
  }
  if (json) std::fclose(json);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_model: %s\n", e.what());
  return 1;
}
