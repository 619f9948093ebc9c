// Usage: bench_model [--config FILE] [--contexts 8192,32768,131072] [--decode N] [--chunk N]
//                    [--layers L] [--json FILE] [--peak-tflops T] [--cp N] [--kv-dtype bf16|fp8]
//                    [--attention auto|native|cudnn] [--job DOCS --job-prompt 8192 --job-new-tokens 128 --batches 1,32] [--offload-residual]
//                    [--matmul-rows 1,2,4,8] [--cublas-only] [--decode-variant V] [--decode-splits N]
//                    [--no-decode-graph] [--flash-variant V]
//        mpirun -np N bench_model --cp N ...        (ring prefill over N ranks)
// End-to-end throughput of the engine on the CUDA backend with random weights of a real
// model shape (default tests/fixtures/configs/llama-3.1-8b.json): for each context S, one
// generate call of a random S-token prompt: prefill seconds (the whole prompt through every
// layer plus the first token), then decode tokens/s over N steps.
//
// --kv-dtype (default bf16): the KV cache's element type (fp8: e4m3 + a scale per token and
// KV head, half the bytes: the longest context one GPU holds, issue 17).
// --cublas-only: every weight product through cuBLAS, as before the few-row kernel
// (CudaBackendOptions::use_small_gemm = false): the same run's baseline for decode.
// --decode-variant V, --decode-splits N: the split-KV decode kernel's tile variant and key
// splits (CudaBackendOptions; default -1 / 0: decode_attention's own choice).
// --flash-variant V: the flash prefill kernel's variant at head_dim 128 (CudaBackendOptions;
// default -1: its own default, 0); "flash_variant" in the model lines.
// --no-decode-graph: every decode step launched op by op; by default (or --decode-graph) the
// steps after each burst's first are launched as one CUDA graph each (EngineOptions::decode_graph).
// "graph_steps" in the model and job lines: decode steps launched as graphs so far.
// --offload-residual: the residual stream waits in pinned host memory between layers
// (EngineOptions::offload_residual), for the longest contexts.
// --cp N (default 1): the N ranks of the job (mpirun -np N; the world size must be N) form
// one context-parallel group; each holds its stripe of the prompt and of the KV cache
// (EngineOptions cp_rank / cp_size / cp_comm), prefill is the ring of DESIGN §3. The device
// communicator comes from RINGINFER_CUDA_COMM: nccl (one GPU per rank) or mpi (host-staged,
// ranks may share a GPU); unset, nccl when every node has a GPU per rank, else mpi. The
// times reported are the slowest rank's (prefill, decode); rank 0 prints and writes.
//
// Model FLOPs (MFU): per prompt token 2 * (linear parameters of all layers), plus causal
// attention 4 * S^2 / 2 * H * D per layer (the FlashAttention convention), plus one LM-head
// row. MFU is reported per GPU against two peaks: the bf16 GEMM rate cuBLAS reaches on rank
// 0's GPU in the same run (8192^3, median of 10), and the datasheet dense bf16 peak given by
// --peak-tflops (default 989.4, H100 SXM). Decode bytes/s counts, per rank, the weights
// (bf16) and that rank's KV stripe (bf16) read once per step, against a 2 GiB device copy
// measured here. With ranks sharing a GPU these per-GPU figures mean nothing (the JSON
// says "shared_gpu": true).
// One JSON object per line goes to --json and stdout:
//   peaks     {"device", "gemm_bf16_tflops", "copy_gbps", "datasheet_bf16_tflops"}
//   matmul    per x row count of --matmul-rows (default 1,2,4,8; "" skips) and projection of
//             the model (q, k, qkv and gate_up: the products that share x, one launch; o,
//             down, lm_head): the few-row kernel decode uses (small_gemm.h; "ms" -1 where it
//             does not take the shape) and cuBLAS as the backend runs larger batches (x ->
//             bf16, then cublasGemmEx per weight) on the same shapes: "ms", "cublas_ms", each
//             one's weight bytes per second as a fraction of the copy bandwidth,
//             "speedup_vs_cublas" (rank 0 only)
//   model     per context: the fields above, and "cp", "comm", "gpus", "shared_gpu",
//             "prefill_s_min" (fastest rank), per-rank maxima of the engine's statistics
//             (EngineStats: "tokens_held", "kv_bytes", "cp_bytes_sent" over prefill and
//             decode) and "ring_gbps" = cp_bytes_sent / prefill_s (what the ring moved per
//             rank per second of prefill; 0 at cp 1). EngineStats has no per-step compute
//             or communication times.
//   scaling   {"gpus", "n", "ms", "layers", "comm"}: the prefill for tools/plot.py's ring
//             figure; written only when every rank has a GPU of its own.
// Every model line also gives "plan_bytes", `ringinfer plan`'s per-rank total for that
// context (prompt + decode) and chunk, and "peak_over_plan" = peak_device_bytes / plan_bytes.
//
// --job DOCS (issue 20): after the contexts, a job of DOCS documents of --job-prompt random
// tokens, --job-new-tokens new tokens each, run once per decode batch B of --batches
// (default 1,32) by continuous batching (Engine::join / step, as `run --max-batch B`
// does); --contexts "" runs the job alone. One line per B:
//   job       {"docs", "batch", "prompt", "new_tokens", "job_s", "job_tokens_per_s" (every
//             generated token over the whole job, prefills included), "decode_s" (the
//             step() calls alone), "decode_tokens_per_s" (the tokens step() made over
//             decode_s), "decode_bound_tokens_per_s" (B tokens per step / the time to read
//             the weights and B KV caches once at the measured copy rate), "peak_device_bytes",
//             "plan_bytes", "peak_over_plan"}
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "backend_ops.h"
#include "bench_timing.h"
#include "comm/cuda_comm_choice.h"
#include "ringinfer/comm.h"
#include "ringinfer/cuda_backend.h"
#include "ringinfer/cuda_check.h"
#include "ringinfer/error.h"
#include "ringinfer/engine.h"
#include "ringinfer/memory_plan.h"
#include "ringinfer/model_config.h"
#include "ringinfer/runtime.h"
#include "small_gemm.h"

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

// The model's decode-sized products (small_gemm.h) against cuBLAS on the same shapes, the
// way the backend runs it for larger batches (x converted to bf16 by a kernel, then
// cublasGemmEx per weight; here with a default handle on the legacy stream), for each x
// row count in `rows`: one "matmul" line per (rows, projection); "qkv" and "gate_up" are
// the products that share x, one launch of ours.
// Weight bytes per second are given as a fraction of the copy bandwidth.
void bench_matmuls(const ModelConfig& c, const std::vector<int64_t>& rows, double copy_gbps,
                   const std::function<void(const std::string&)>& emit) {
  struct Shape { const char* name; int64_t in; std::vector<int64_t> of; };
  const int64_t h = c.hidden_size, HD = c.n_heads * c.head_dim, KD = c.n_kv_heads * c.head_dim,
                I = c.intermediate_size;
  const Shape shapes[] = {{"q", h, {HD}},          {"k", h, {KD}},           {"qkv", h, {HD, KD, KD}},
                          {"o", HD, {h}},          {"gate_up", h, {I, I}},   {"down", I, {h}},
                          {"lm_head", h, {c.vocab_size}}};
  int64_t most_w = 0, most_x = 0, most_o = 0, most_n = 1;
  for (int64_t n : rows) most_n = std::max(most_n, n);
  for (const Shape& s : shapes) {
    int64_t of = 0;
    for (int64_t o : s.of) of += o;
    most_w = std::max(most_w, s.in * of), most_x = std::max(most_x, s.in), most_o = std::max(most_o, of);
  }
  __nv_bfloat16 *w, *xb;
  float *x, *out;
  CUDA_CHECK(cudaMalloc(&w, size_t(most_w) * 2));
  CUDA_CHECK(cudaMalloc(&xb, size_t(most_n * most_x) * 2));
  CUDA_CHECK(cudaMalloc(&x, size_t(most_n * most_x) * 4));
  CUDA_CHECK(cudaMalloc(&out, size_t(most_n * most_o) * 4));
  CUDA_CHECK(cudaMemset(w, 0x3c, size_t(most_w) * 2));  // bf16 ~0.0115: finite products
  CUDA_CHECK(cudaMemset(x, 0x3c, size_t(most_n * most_x) * 4));
  cublasHandle_t hb;
  if (cublasCreate(&hb) != CUBLAS_STATUS_SUCCESS) throw Error("cublasCreate failed");
  const float one = 1.f, zero = 0.f;
  char buf[512];
  for (int64_t n : rows)
    for (const Shape& s : shapes) {
      // The products one after another in w and out.
      std::vector<SmallGemmProduct> products;
      int64_t w_off = 0, o_off = 0;
      for (int64_t of : s.of) {
        SmallGemmProduct p;
        p.w = w + w_off;
        p.out = out + o_off;
        p.of = of;
        products.push_back(p);
        w_off += of * s.in, o_off += n * of;
      }
      const double bytes = 2.0 * double(w_off);
      double ours = -1;
      if (small_gemm_supported(n, s.in, s.of[0], x, w))
        ours = bench::median_ms(
            [&] { small_gemm_bf16(x, n, s.in, products.data(), int(products.size()), false, nullptr); }, 3, 20);
      const double theirs = bench::median_ms(
          [&] {
            convert_f32_to_bf16(x, xb, n * s.in, nullptr);
            for (const SmallGemmProduct& p : products)
              CUBLAS_CHECK(cublasGemmEx(hb, CUBLAS_OP_T, CUBLAS_OP_N, int(p.of), int(n), int(s.in), &one, p.w,
                                        CUDA_R_16BF, int(s.in), xb, CUDA_R_16BF, int(s.in), &zero, p.out, CUDA_R_32F,
                                        int(p.of), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
          },
          3, 20);
      std::snprintf(buf, sizeof buf,
                    "{\"kind\":\"matmul\",\"rows\":%lld,\"proj\":\"%s\",\"in\":%lld,\"out\":%lld,"
                    "\"ms\":%.4f,\"fraction_of_copy_bw\":%.3f,\"cublas_ms\":%.4f,\"cublas_fraction_of_copy_bw\":%.3f,"
                    "\"speedup_vs_cublas\":%.2f}",
                    static_cast<long long>(n), s.name, static_cast<long long>(s.in),
                    static_cast<long long>(w_off / s.in), ours, ours > 0 ? bytes / ours / 1e6 / copy_gbps : 0.0,
                    theirs, bytes / theirs / 1e6 / copy_gbps, ours > 0 ? theirs / ours : 0.0);
      emit(buf);
    }
  cublasDestroy(hb);
  CUDA_CHECK(cudaFree(w));
  CUDA_CHECK(cudaFree(xb));
  CUDA_CHECK(cudaFree(x));
  CUDA_CHECK(cudaFree(out));
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> v;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, ',');) v.push_back(std::stoll(x));
  return v;
}

// A message as a JSON string's contents (quotes, backslashes and control bytes escaped).
std::string json_escape(const std::string& in) {
  std::string out;
  for (char c : in) {
    if (c == '"' || c == '\\') out += '\\', out += c;
    else if (static_cast<unsigned char>(c) < 0x20) out += ' ';
    else out += c;
  }
  return out;
}

// How the ranks of the CP group move device buffers (see the header comment).
enum class CommKind { none, nccl, staged };
const char* to_string(CommKind k) { return k == CommKind::nccl ? "nccl" : k == CommKind::staged ? "mpi" : "none"; }

// Collective over `world` (MPI_COMM_WORLD): every rank returns the same kind, or every
// rank throws (agreed_cuda_comm).
CommKind choose_comm(int cp, const RankInfo& me, int gpus, Comm& world) {
  if (cp == 1) return CommKind::none;
  int own = gpus >= me.local_size ? 1 : 0;
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &own, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
  const CudaCommChoice pick = agreed_cuda_comm(world, own ? CudaCommChoice::nccl : CudaCommChoice::staged_mpi);
  RI_CHECK(pick == CudaCommChoice::staged_mpi || own,
           "RINGINFER_CUDA_COMM=nccl needs a GPU per rank: " + std::to_string(me.local_size) + " ranks on host " +
               me.host + " with " + std::to_string(gpus) + " visible GPU(s) (RINGINFER_CUDA_COMM=mpi shares them)");
  return pick == CudaCommChoice::nccl ? CommKind::nccl : CommKind::staged;
}

// v reduced over MPI_COMM_WORLD with op (MPI_MAX, MPI_MIN, MPI_SUM).
template <typename T>
T reduce(T v, MPI_Op op) {
  static_assert(std::is_same_v<T, double> || std::is_same_v<T, int64_t>, "double or int64_t");
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &v, 1, std::is_same_v<T, double> ? MPI_DOUBLE : MPI_INT64_T, op,
                          MPI_COMM_WORLD));
  return v;
}

// The --job mode (issue 20): `docs` documents of `prompt` random tokens, `decode` new
// tokens each, through the engine's continuous batching at each decode batch B of
// `batches`: join() while the batch has room and documents wait, else step().
template <typename Emit, typename PlanBytes>
void run_job(Engine& engine, Backend& backend, int64_t docs, int64_t prompt, int64_t decode,
             const std::vector<int64_t>& batches, int64_t vocab, double copy_gbps, double weight_bytes,
             double kv_bytes_per_token, bool decode_graph, PlanBytes plan_bytes, Emit emit) {
  using clock = std::chrono::steady_clock;
  for (int64_t B : batches) {
    RI_CHECK(B >= 1 && B <= engine.max_batch(), "--batches: each must be in [1, " +
                                                     std::to_string(engine.max_batch()) + "]");
    backend.reset_peak_bytes();
    CUDA_CHECK(cudaDeviceSynchronize());
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    int64_t next = 0, generated = 0, step_tokens = 0;
    double decode_s = 0;
    const auto t0 = clock::now();
    while (next < docs || engine.batch_size() > 0) {
      if (next < docs && engine.batch_size() < B) {
        std::vector<int32_t> p(static_cast<size_t>(prompt));
        for (int64_t i = 0; i < prompt; ++i)
          p[i] = static_cast<int32_t>(splitmix(uint64_t(next) * 1000003u + 7 + uint64_t(i)) % uint64_t(vocab));
        GenerateOptions g;
        g.max_new_tokens = decode;
        g.doc_key = static_cast<uint64_t>(next);
        engine.join(p, prompt, g, static_cast<uint64_t>(next));  // cp 1: the stripe is the prompt
        ++next;
      } else {
        const auto s0 = clock::now();
        engine.step();  // a burst: up to EngineOptions::decode_burst tokens per document
        decode_s += std::chrono::duration<double>(clock::now() - s0).count();
      }
      // Counted from the finished documents: join() made each one's first token, step() the rest.
      for (const FinishedDocument& f : engine.take_finished()) {
        const int64_t n = static_cast<int64_t>(f.result.tokens.size());
        generated += n;
        step_tokens += std::max<int64_t>(n - 1, 0);
      }
    }
    const double job_s = std::chrono::duration<double>(clock::now() - t0).count();
    // One step of B documents reads every weight once and each document's KV cache
    // (about prompt + decode/2 tokens on average) once.
    const double step_bytes = weight_bytes + double(B) * kv_bytes_per_token * (double(prompt) + decode / 2.0);
    const double bound_tps = double(B) / (step_bytes / (copy_gbps * 1e9));
    const int64_t peak = backend.peak_allocated_bytes(), plan = plan_bytes(prompt + decode, B);
    char buf[1024];
    std::snprintf(buf, sizeof buf,
                  "{\"kind\":\"job\",\"docs\":%lld,\"batch\":%lld,\"prompt\":%lld,\"new_tokens\":%lld,"
                  "\"job_s\":%.3f,\"job_tokens_per_s\":%.1f,\"decode_s\":%.3f,\"decode_tokens_per_s\":%.1f,"
                  "\"decode_bound_tokens_per_s\":%.1f,\"peak_device_bytes\":%lld,\"plan_bytes\":%lld,"
                  "\"peak_over_plan\":%.3f,\"decode_graph\":%s,\"graph_steps\":%lld}",
                  static_cast<long long>(docs), static_cast<long long>(B), static_cast<long long>(prompt),
                  static_cast<long long>(generated), job_s, double(generated) / job_s, decode_s,
                  decode_s > 0 ? double(step_tokens) / decode_s : 0.0, bound_tps, static_cast<long long>(peak),
                  static_cast<long long>(plan), double(peak) / double(plan), decode_graph ? "true" : "false",
                  static_cast<long long>(cuda_backend_recorded_steps(backend)));
    emit(std::string(buf));
  }
}

int run_bench(int argc, char** argv, const RankInfo& me) {
  std::string config_path = "tests/fixtures/configs/llama-3.1-8b.json", json_path;
  std::vector<int64_t> contexts = {8192, 32768, 131072};
  int64_t decode = 32, chunk = 4096, layers = -1;
  int cp = 1;
  int64_t job_docs = 0, job_prompt = 8192, job_new_tokens = 128;
  bool offload_residual = false;
  std::vector<int64_t> batches = {1, 32};
  std::vector<int64_t> matmul_rows = {1, 2, 4, 8};
  bool cublas_only = false;
  bool decode_graph = EngineOptions{}.decode_graph;
  int decode_variant = -1, decode_splits = 0, flash_variant = -1;
  AttentionPath attention = AttentionPath::auto_select;  // the CUDA backend's --attention
  double peak_tflops = 989.4;
  KvDtype kv_dtype = KvDtype::bf16;
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
    else if (a == "--cp") cp = std::stoi(next());
    else if (a == "--kv-dtype") kv_dtype = parse_kv_dtype(next());
    else if (a == "--attention") attention = parse_attention_path(next());
    else if (a == "--job") job_docs = std::stoll(next());
    else if (a == "--job-prompt") job_prompt = std::stoll(next());
    else if (a == "--job-new-tokens") job_new_tokens = std::stoll(next());
    else if (a == "--offload-residual") offload_residual = true;
    else if (a == "--batches") batches = parse_list(next());
    else if (a == "--matmul-rows") matmul_rows = parse_list(next());
    else if (a == "--cublas-only") cublas_only = true;
    else if (a == "--decode-graph") decode_graph = true;
    else if (a == "--no-decode-graph") decode_graph = false;
    else if (a == "--decode-variant") decode_variant = std::stoi(next());
    else if (a == "--flash-variant") flash_variant = std::stoi(next());
    else if (a == "--decode-splits") decode_splits = std::stoi(next());
    else throw Error("bench_model: unknown argument " + a);
  }
  RI_CHECK(cp >= 1, "--cp " + std::to_string(cp) + ": must be at least 1");
  RI_CHECK(me.world_size == cp, "--cp " + std::to_string(cp) + " needs exactly " + std::to_string(cp) +
                                    " ranks (mpirun -np " + std::to_string(cp) + "); this job has " +
                                    std::to_string(me.world_size));
  const bool root = me.world_rank == 0;
  ModelConfig cfg = parse_model_config(config_path);
  if (layers > 0) cfg.n_layers = layers;
  cfg.eos_token_ids.clear();  // decode exactly --decode steps
  FILE* json = nullptr;
  if (root && !json_path.empty()) {
    json = std::fopen(json_path.c_str(), "a");
    RI_CHECK(json != nullptr, json_path + ": cannot open for appending");
  }
  auto emit = [&](const std::string& line) {
    if (!root) return;
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    if (json) std::fprintf(json, "%s\n", line.c_str()), std::fflush(json);
  };

  const int gpus = visible_gpu_count();
  MpiComm world(MPI_COMM_WORLD);
  const CommKind kind = choose_comm(cp, me, gpus, world);
  CudaBackendOptions bo;
  bo.device = bind_gpu(me, /*allow_shared=*/kind == CommKind::staged);
  bo.attention = attention;
  bo.use_small_gemm = !cublas_only;
  bo.decode_variant = decode_variant;
  bo.flash_variant = flash_variant;
  bo.decode_splits = decode_splits;
  // Distinct GPUs of the group: bind_gpu deals local ranks round-robin, so the first
  // `gpus` local ranks of each node are the first on their device.
  const int64_t gpus_used = reduce<int64_t>(me.local_rank < gpus ? 1 : 0, MPI_SUM);
  const bool shared_gpu = gpus_used < cp;
  if (root && shared_gpu)
    std::fprintf(stderr, "bench_model: %d ranks share %lld GPU(s): times are not a ring-scaling measurement\n", cp,
                 static_cast<long long>(gpus_used));

  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, bo.device));
  // Rank 0 alone, so ranks sharing a GPU do not halve each other's peaks.
  double gemm = 0, copy = 0;
  if (root) gemm = measured_gemm_tflops(), copy = measured_copy_gbps();
  gemm = reduce(gemm, MPI_MAX);
  copy = reduce(copy, MPI_MAX);
  char buf[2048];
  std::snprintf(buf, sizeof buf,
                "{\"kind\":\"peaks\",\"device\":\"%s\",\"gemm_bf16_tflops\":%.1f,\"copy_gbps\":%.0f,"
                "\"datasheet_bf16_tflops\":%.1f}",
                prop.name, gemm, copy, peak_tflops);
  emit(buf);
  if (root) bench_matmuls(cfg, matmul_rows, copy, emit);

  const int64_t h = cfg.hidden_size, D = cfg.head_dim, H = cfg.n_heads, Hkv = cfg.n_kv_heads,
                I = cfg.intermediate_size, L = cfg.n_layers, V = cfg.vocab_size;
  const double linear_params = double(L) * (double(h) * (H + 2 * Hkv) * D + double(H) * D * h + 3.0 * h * I);
  const double weight_bytes = 2.0 * (linear_params + double(V) * h);  // bf16, LM head included
  const auto t0 = std::chrono::steady_clock::now();
  auto backend = make_cuda_backend(bo);
  std::unique_ptr<Comm> device_comm;  // outlives the engine
  if (kind == CommKind::nccl) device_comm = make_nccl_comm(MPI_COMM_WORLD);
  if (kind == CommKind::staged) device_comm = make_staged_comm(world);
  EngineOptions eo;
  eo.chunk_tokens = chunk;
  eo.cp_rank = me.world_rank;
  eo.cp_size = cp;
  eo.cp_comm = device_comm.get();
  eo.kv_dtype = kv_dtype;
  eo.offload_residual = offload_residual;
  eo.decode_graph = decode_graph;
  if (job_docs > 0) eo.max_batch = *std::max_element(batches.begin(), batches.end());
  // Long prefills (minutes) say how far they are, layer by layer: the time the host has
  // enqueued the layer, which runs ahead of the GPU by at most its launch queue.
  int64_t context_now = 0;
  auto context_t0 = std::chrono::steady_clock::now();
  eo.on_progress = [&](const EngineProgress& p) {
    if (root && p.kind == EngineProgress::Kind::prefill_layer && context_now >= 262144)
      std::fprintf(stderr, "  context %lld: prefill layer %d/%d enqueued at %.1f s\n",
                   static_cast<long long>(context_now), p.layer, p.layers,
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - context_t0).count());
  };
  std::unique_ptr<Engine> engine;
  {
    // The host copy (fp32, every layer) is freed once the engine has uploaded it.
    const ModelWeights weights = random_weights(cfg);
    engine = std::make_unique<Engine>(*backend, cfg, weights, eo);
  }
  const double setup_s =
      reduce(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), MPI_MAX);
  if (root)
    std::fprintf(stderr, "model %s x %lld layers ready in %.1f s (%.2f GB of bf16 weights per rank), cp %d over %s\n",
                 config_path.c_str(), static_cast<long long>(L), setup_s, weight_bytes / 1e9, cp, to_string(kind));

  // `ringinfer plan`'s per-rank figure for a document of `tokens` tokens, `batch` of them
  // in decode: what the peak should match (issue 17, 20).
  auto plan_bytes = [&](int64_t tokens, int64_t batch) {
    PlanInput in = plan_input(kv_dtype, /*on_gpu=*/true, cfg.head_dim);
    in.context = tokens;
    in.ranks = cp;
    in.token_chunk = chunk;
    in.batch = batch;
    in.offload_residual = offload_residual;
    return plan_memory(cfg, in).total_per_rank;
  };
  for (int64_t S : contexts) {
    std::vector<int32_t> prompt(static_cast<size_t>(S));
    for (int64_t i = 0; i < S; ++i) prompt[i] = static_cast<int32_t>(splitmix(1000 + i) % uint64_t(V));
    GenerateOptions g;
    g.max_new_tokens = decode;
    backend->reset_peak_bytes();
    GenerateResult r;
    // Start together: a rank still finishing the previous context would count as ring time.
    CUDA_CHECK(cudaDeviceSynchronize());
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    context_now = S;
    context_t0 = std::chrono::steady_clock::now();
    try {
      r = engine->generate(prompt, g);
    } catch (const std::exception& e) {
      std::snprintf(buf, sizeof buf, "{\"kind\":\"model\",\"context\":%lld,\"cp\":%d,\"rank\":%d,\"error\":\"%s\"}",
                    static_cast<long long>(S), cp, me.world_rank, json_escape(e.what()).c_str());
      if (cp == 1) {
        emit(buf);
        continue;
      }
      // Another rank may wait in a collective this one left: run_guarded aborts the job.
      std::printf("%s\n", buf);
      std::fflush(stdout);
      throw;
    }
    const EngineStats& st = engine->last_stats();
    const double prefill_s = reduce(r.prefill_seconds, MPI_MAX), prefill_s_min = reduce(r.prefill_seconds, MPI_MIN);
    const double decode_s = reduce(r.decode_seconds, MPI_MAX);
    const int64_t tokens_held = reduce<int64_t>(st.tokens_held, MPI_MAX);
    const int64_t kv_bytes = reduce<int64_t>(st.kv_bytes, MPI_MAX);
    const int64_t sent = reduce<int64_t>(st.bytes_sent, MPI_MAX);
    const int64_t peak = reduce<int64_t>(backend->peak_allocated_bytes(), MPI_MAX);

    const double attn_flops = 4.0 * double(S) * double(S) / 2.0 * double(H) * D * L;
    const double prefill_flops = 2.0 * linear_params * S + attn_flops + 2.0 * double(V) * h;
    const double prefill_tflops = prefill_flops / prefill_s / 1e12;  // the whole group
    const double per_gpu_tflops = prefill_tflops / double(gpus_used);
    const double steps = static_cast<double>(r.tokens.size()) - 1;
    const double decode_tps = decode_s > 0 ? steps / decode_s : 0;
    // Per decode step and rank: every weight once, and the rank's stripe of the KV cache
    // of (about) S tokens.
    const double kv_read = double(kv_bytes_per_token(kv_dtype, Hkv, D)) * double(L) * double(S) / double(cp);
    const double decode_gbps = decode_tps * (weight_bytes + kv_read) / 1e9;
    std::snprintf(buf, sizeof buf,
                  "{\"kind\":\"model\",\"attention\":\"%s\",\"cudnn_plans\":%lld,\"config\":\"%s\",\"layers\":%lld,"
                  "\"context\":%lld,\"chunk\":%lld,"
                  "\"prefill_s\":%.3f,\"prefill_tokens_per_s\":%.0f,\"prefill_tflops\":%.1f,"
                  "\"mfu_vs_measured_gemm\":%.3f,\"mfu_vs_datasheet\":%.3f,\"attention_flop_share\":%.3f,"
                  "\"decode_steps\":%.0f,\"decode_tokens_per_s\":%.2f,\"decode_gbps\":%.0f,"
                  "\"decode_fraction_of_copy_bw\":%.3f,\"peak_device_bytes\":%lld,"
                  "\"cp\":%d,\"comm\":\"%s\",\"gpus\":%lld,\"shared_gpu\":%s,\"prefill_s_min\":%.3f,"
                  "\"tokens_held\":%lld,\"kv_bytes\":%lld,\"cp_bytes_sent\":%lld,\"ring_gbps\":%.1f,\"kv_dtype\":\"%s\","
                  "\"plan_bytes\":%lld,\"peak_over_plan\":%.3f,\"offload_residual\":%s,\"small_gemm\":%s,"
                  "\"decode_variant\":%d,\"decode_splits\":%d,\"decode_graph\":%s,\"graph_steps\":%lld,"
                  "\"flash_variant\":%d}",
                  to_string(attention), static_cast<long long>(cuda_backend_cudnn_plans(*backend)),
                  config_path.c_str(), static_cast<long long>(L), static_cast<long long>(S),
                  static_cast<long long>(chunk), prefill_s, S / prefill_s, prefill_tflops, per_gpu_tflops / gemm,
                  per_gpu_tflops / peak_tflops, attn_flops / prefill_flops, steps, decode_tps, decode_gbps,
                  decode_gbps / copy, static_cast<long long>(peak), cp, to_string(kind),
                  static_cast<long long>(gpus_used), shared_gpu ? "true" : "false", prefill_s_min,
                  static_cast<long long>(tokens_held), static_cast<long long>(kv_bytes), static_cast<long long>(sent),
                  cp > 1 ? double(sent) / prefill_s / 1e9 : 0.0, kv_dtype_name(kv_dtype),
                  static_cast<long long>(plan_bytes(S + decode, 1)), double(peak) / double(plan_bytes(S + decode, 1)), offload_residual ? "true" : "false",
                  cublas_only ? "false" : "true", decode_variant, decode_splits, decode_graph ? "true" : "false",
                  static_cast<long long>(cuda_backend_recorded_steps(*backend)), flash_variant);
    emit(buf);
    if (!shared_gpu) {
      std::snprintf(buf, sizeof buf,
                    "{\"kind\":\"scaling\",\"gpus\":%d,\"n\":%lld,\"ms\":%.1f,\"layers\":%lld,\"comm\":\"%s\"}", cp,
                    static_cast<long long>(S), prefill_s * 1e3, static_cast<long long>(L), to_string(kind));
      emit(buf);
    }
  }
  if (job_docs > 0) {
    RI_CHECK(cp == 1, "--job: one rank (--cp 1): the job passes whole prompts to join()");
    run_job(*engine, *backend, job_docs, job_prompt, job_new_tokens, batches, V, copy,
            weight_bytes, double(kv_bytes_per_token(kv_dtype, Hkv, D)) * double(L) / double(cp), decode_graph,
            plan_bytes, emit);
  }
  if (json) std::fclose(json);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  MpiRuntime mpi(&argc, &argv);
  // Errors print "[rank r] error: ..." and abort the job when it has several ranks.
  return run_guarded([&] { return run_bench(argc, argv, mpi.info()); }, 1);
}
