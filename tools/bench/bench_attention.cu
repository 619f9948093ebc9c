// Usage: bench_attention [--json FILE] [--quick] [--decode-sweep KEYS]
// Times our attention kernels on the current GPU (CUDA events, median of repeats, random
// bf16 inputs) and writes one JSON object per line to FILE (default: stdout only):
//   copy:    device-to-device cudaMemcpy of 2 GiB; GB/s counts bytes read + written
//   prefill: causal flash attention, H=32, Hkv=8, D=128, n = 8K/32K/128K tokens, every
//            variant; TFLOP/s counts 4 * n^2 * D * H / 2 (causal half, the PyTorch convention)
//   decode:  1 query token, n_k = 128K and 1M keys, every variant; GB/s counts the K and V
//            bytes read, "of_copy" is that over the copy line's GB/s
//   decode_fp8: the same with an fp8 cache (e4m3 bytes + a float scale per token and KV
//            head), every fp8 variant ("default" marks the one variant -1 picks), with the
//            scales laid out as the cache does ("scales": "key_major") and head-major; GB/s
//            counts those bytes (D + 4 per token and head, for K and for V), "of_copy" as
//            for decode, and "vs_bf16" is the bf16 variant-0 time over this one
//   prefill_fp8: the CUDA backend's fp8 prefill step, the block dequantized to bf16 once
//            (dequantize_kv_fp8 of K and V) then the variant-0 flash kernel; TFLOP/s as for
//            prefill, "vs_bf16" = the bf16 variant-0 time over this one
//   path:    the CUDA backend's attention op (what the engine calls: fp32 Q rounded to bf16,
//            merged into fp32 (O, LSE)) on each --attention path (native, cudnn), same
//            shapes as prefill, one call over all n queries ("chunk": n) and the engine's
//            4096-row query chunks; wall time of the calls plus one synchronize, median;
//            "first_ms" is the first call, plan building included
// With --decode-sweep KEYS (e.g. 8192,32768) only: copy, then for each key count, decode
// per variant and split count ("decode_split" lines, splits 0 = the automatic choice, "auto"
// the count it chose) over enough copies of K and V (cycled call by call) that the L2 cache
// holds none of them, as in a model step, where the weights pass through L2 between layers.
// tools/bench_attention_peer.py times PyTorch SDPA on the same shapes and prints the table.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backend_ops.h"
#include "decode_attention.h"
#include "flash_attention.h"
#include "kv_cache_ops.h"
#include "bench_timing.h"
#include "ringinfer/backend.h"
#include "ringinfer/cuda_backend.h"
#include "ringinfer/cuda_check.h"

using namespace ringinfer;

namespace {

__global__ void fill_random_bf16(__nv_bfloat16* x, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ (uint32_t(i >> 32) * 40503u) ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    h *= 3266489917u;
    h ^= h >> 16;
    x[i] = __float2bfloat16((h & 0xffffff) / float(0x1000000) * 2.f - 1.f);  // uniform [-1, 1)
  }
}

// Finite e4m3 bytes (0x77 masks out the NaN codes 0x7f/0xff) and scales of 1/448.
__global__ void fill_fp8_cache(uint8_t* x, size_t n, float* scale, size_t n_scales) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    x[i] = static_cast<uint8_t>(h & 0x77);
    if (i < n_scales) scale[i] = 1.f / 448.f;
  }
}

// K and V of `rows` tokens as an fp8 cache (e4m3 bytes and a scale per token and KV head),
// filled by fill_fp8_cache; freed on destruction.
struct DeviceFp8Cache {
  uint8_t *k8 = nullptr, *v8 = nullptr;
  float *ks = nullptr, *vs = nullptr;
  DeviceFp8Cache(size_t rows, int Hkv, int D) {
    const size_t n_val = rows * Hkv * D, n_sc = rows * Hkv;
    CUDA_CHECK(cudaMalloc(&k8, n_val));
    CUDA_CHECK(cudaMalloc(&v8, n_val));
    CUDA_CHECK(cudaMalloc(&ks, n_sc * sizeof(float)));
    CUDA_CHECK(cudaMalloc(&vs, n_sc * sizeof(float)));
    fill_fp8_cache<<<1024, 256>>>(k8, n_val, ks, n_sc);
    fill_fp8_cache<<<1024, 256>>>(v8, n_val, vs, n_sc);
    CUDA_CHECK_LAUNCH();
  }
  ~DeviceFp8Cache() {
    cudaFree(k8);
    cudaFree(v8);
    cudaFree(ks);
    cudaFree(vs);
  }
  DeviceFp8Cache(const DeviceFp8Cache&) = delete;
  DeviceFp8Cache& operator=(const DeviceFp8Cache&) = delete;
};

__nv_bfloat16* random_device_bf16(size_t n, uint32_t seed) {
  __nv_bfloat16* p;
  CUDA_CHECK(cudaMalloc(&p, n * sizeof(__nv_bfloat16)));
  fill_random_bf16<<<1024, 256>>>(p, n, seed);
  CUDA_CHECK_LAUNCH();
  return p;
}

// Device buffers of one attention call: random q [n_q, H, D], k and v [n_k, Hkv, D]
// (seeds seed, seed + 1, seed + 2) and fp32 outputs O [n_q, H, D], LSE [n_q, H].
struct AttnBuffers {
  __nv_bfloat16 *q, *k, *v;
  float *o, *lse;
  AttnBuffers(size_t n_q, size_t n_k, int H, int Hkv, int D, uint32_t seed)
      : q(random_device_bf16(n_q * H * D, seed)),
        k(random_device_bf16(n_k * Hkv * D, seed + 1)),
        v(random_device_bf16(n_k * Hkv * D, seed + 2)) {
    CUDA_CHECK(cudaMalloc(&o, n_q * H * D * sizeof(float)));
    CUDA_CHECK(cudaMalloc(&lse, n_q * H * sizeof(float)));
  }
  // Unchecked: a destructor must not throw while an error unwinds; kernel errors surface
  // in the timing's CUDA_CHECKs first.
  ~AttnBuffers() {
    cudaFree(q);
    cudaFree(k);
    cudaFree(v);
    cudaFree(o);
    cudaFree(lse);
  }
  AttnBuffers(const AttnBuffers&) = delete;
  AttnBuffers& operator=(const AttnBuffers&) = delete;
};

// Median milliseconds of decode_attention(p) (5 warm-ups, 50 timed) with its own workspace.
double decode_ms(const DecodeAttnParams& p) {
  const size_t ws_bytes = decode_attention_workspace_bytes(p);
  void* ws;
  CUDA_CHECK(cudaMalloc(&ws, ws_bytes));
  const double ms = bench::median_ms([&] { decode_attention(p, ws, ws_bytes, nullptr); }, 5, 50);
  CUDA_CHECK(cudaFree(ws));
  return ms;
}


FILE* json = nullptr;
void emit(const char* line) {
  std::printf("%s\n", line);
  if (json) std::fprintf(json, "%s\n", line), std::fflush(json);
}

// One query token of b against its n_k keys (H heads over Hkv KV heads of D), every key visible.
DecodeAttnParams one_token_decode(const AttnBuffers& b, int n_k, int H, int Hkv, int D) {
  DecodeAttnParams p;
  p.q = b.q;
  p.k = b.k;
  p.v = b.v;
  p.o = b.o;
  p.lse = b.lse;
  p.n_q = 1;
  p.n_k = n_k;
  p.n_heads = H;
  p.n_kv_heads = Hkv;
  p.head_dim = D;
  p.softmax_scale = float(1.0 / std::sqrt(double(D)));
  return p;
}

// --decode-sweep: decode over n_k keys (H = 32, Hkv = 8, D = 128) per variant and split count,
// cycling through copies of K and V that add up to 4x the L2 cache.
void decode_split_sweep(int n_k, double copy_gbps, size_t l2_bytes) {
  const int H = 32, Hkv = 8, D = 128;
  const double bytes = 2.0 * n_k * Hkv * D * sizeof(__nv_bfloat16);
  const int copies = std::max(1, int(4.0 * l2_bytes / bytes + 0.999));
  std::vector<std::unique_ptr<AttnBuffers>> bufs;
  for (int c = 0; c < copies; ++c) bufs.push_back(std::make_unique<AttnBuffers>(1, n_k, H, Hkv, D, 4 + 3 * c));
  char line[512];
  for (int variant = 0; variant < decode_attention_variants(); ++variant)
    for (int splits : {0, 8, 12, 16, 24, 33, 48, 66, 99, 132}) {
      std::vector<DecodeAttnParams> ps;
      for (const auto& b : bufs) {
        ps.push_back(one_token_decode(*b, n_k, H, Hkv, D));
        ps.back().variant = variant;
        ps.back().num_splits = splits;
      }
      const size_t ws_bytes = decode_attention_workspace_bytes(ps[0]);
      void* ws;
      CUDA_CHECK(cudaMalloc(&ws, ws_bytes));
      size_t call = 0;
      const double ms = bench::median_ms([&] { decode_attention(ps[call++ % ps.size()], ws, ws_bytes, nullptr); }, 5, 60);
      CUDA_CHECK(cudaFree(ws));
      std::snprintf(line, sizeof line,
                    "{\"kind\":\"decode_split\",\"n_k\":%d,\"variant\":%d,\"splits\":%d,\"auto\":%d,\"copies\":%d,"
                    "\"ms\":%.4f,\"gbps\":%.1f,\"of_copy\":%.3f}",
                    n_k, variant, splits, decode_attention_splits(ps[0]), copies, ms, bytes / ms / 1e6,
                    bytes / ms / 1e6 / copy_gbps);
      emit(line);
    }
}

// One query token against n_k keys (H heads over Hkv KV heads of D): the bf16 decode
// variants, then every fp8 variant against bf16 variant 0, then (unless quick) the split
// count sweep of the default variant.
void decode_kernels(int n_k, int H, int Hkv, int D, bool quick, double copy_gbps) {
  char line[512];
  const AttnBuffers b(1, n_k, H, Hkv, D, 4);
  const DecodeAttnParams base = one_token_decode(b, n_k, H, Hkv, D);
  const double bytes = 2.0 * n_k * Hkv * D * sizeof(__nv_bfloat16);
  for (int variant = 0; variant < decode_attention_variants(); ++variant) {
    DecodeAttnParams p = base;
    p.variant = variant;
    const double ms = decode_ms(p);
    std::snprintf(line, sizeof line,
                  "{\"kind\":\"decode\",\"n_k\":%d,\"H\":%d,\"Hkv\":%d,\"D\":%d,\"variant\":%d,\"splits\":%d,"
                  "\"ms\":%.4f,\"gbps\":%.1f,\"of_copy\":%.3f}",
                  n_k, H, Hkv, D, variant, decode_attention_splits(p), ms, bytes / ms / 1e6,
                  bytes / ms / 1e6 / copy_gbps);
    emit(line);
  }
  // fp8 cache, read directly by the same kernel, every fp8 tile configuration.
  {
    const DeviceFp8Cache c(size_t(n_k), Hkv, D);
    DecodeAttnParams bf16 = base;
    bf16.variant = 0;
    const double bf16_ms = decode_ms(bf16);
    const double fp8_bytes = 2.0 * n_k * Hkv * (D + sizeof(float));
    // Scales as the cache lays them out ([n_k, Hkv]: 16 keys of one head touch 16 sectors)
    // and head-major ([Hkv][n_k]: 2 sectors), the same bytes.
    for (const bool head_major : {false, true})
      for (int variant = 0; variant < decode_attention_fp8_variants(); ++variant) {
        DecodeAttnParams p = base;
        p.k = p.v = nullptr;
        p.k_fp8 = c.k8;
        p.v_fp8 = c.v8;
        p.k_scale = c.ks;
        p.v_scale = c.vs;
        if (head_major) {
          p.scale_key_stride = 1;
          p.scale_head_stride = n_k;
        }
        p.variant = variant;
        const double ms = decode_ms(p);
        std::snprintf(line, sizeof line,
                      "{\"kind\":\"decode_fp8\",\"n_k\":%d,\"H\":%d,\"Hkv\":%d,\"D\":%d,\"variant\":%d,"
                      "\"scales\":\"%s\",\"default\":%s,\"splits\":%d,\"ms\":%.4f,\"gbps\":%.1f,\"of_copy\":%.3f,"
                      "\"vs_bf16\":%.2f}",
                      n_k, H, Hkv, D, variant, head_major ? "head_major" : "key_major",
                      variant == kDecodeFp8DefaultVariant ? "true" : "false", decode_attention_splits(p), ms,
                      fp8_bytes / ms / 1e6, fp8_bytes / ms / 1e6 / copy_gbps, bf16_ms / ms);
        emit(line);
      }
  }
  // Split-count sweep for the default variant (how many waves of blocks pay off).
  for (int splits : {16, 33, 132, 264}) {
    if (quick) break;
    DecodeAttnParams p = base;
    p.num_splits = splits;
    const double ms = decode_ms(p);
    std::snprintf(line, sizeof line, "{\"kind\":\"decode_sweep\",\"n_k\":%d,\"D\":%d,\"splits\":%d,\"ms\":%.4f,\"gbps\":%.1f}",
                  n_k, D, splits, ms, bytes / ms / 1e6);
    emit(line);
  }
}

// Wall milliseconds of f() followed by be.synchronize(): the first call, then the median
// of `reps` more.
template <class F>
std::pair<double, double> backend_ms(Backend& be, F&& f, int reps) {
  auto once = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    be.synchronize();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  const double first = once();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) t.push_back(once());
  std::sort(t.begin(), t.end());
  return {first, t[t.size() / 2]};
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::vector<int> sweep_keys, decode_keys, prefill_lens;
  // "8192,32768" -> key counts; false on anything else.
  auto parse_keys = [](const char* c, std::vector<int>& out) {
    while (*c) {
      char* end;
      out.push_back(int(std::strtol(c, &end, 10)));
      if (out.back() <= 0 || (*end && *end != ',')) return false;
      c = *end == ',' ? end + 1 : end;
    }
    return !out.empty();
  };
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json = std::fopen(argv[++i], "w");
    else if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if ((!std::strcmp(argv[i], "--decode-sweep") || !std::strcmp(argv[i], "--decode-only") ||
              !std::strcmp(argv[i], "--prefill-only")) &&
             i + 1 < argc) {
      std::vector<int>& list = !std::strcmp(argv[i], "--decode-sweep")  ? sweep_keys
                               : !std::strcmp(argv[i], "--decode-only") ? decode_keys
                                                                         : prefill_lens;
      if (!parse_keys(argv[i + 1], list)) {
        std::fprintf(stderr, "bench_attention: %s takes key counts like 8192,32768\n", argv[i]);
        return 2;
      }
      ++i;
    } else {
      std::fprintf(stderr,
                   "usage: bench_attention [--json FILE] [--quick] [--decode-sweep KEYS] [--decode-only KEYS]\n"
                   "                       [--prefill-only LENGTHS]\n"
                   "  --decode-only KEYS: only the one-token decode kernels (bf16 and fp8) at these key counts\n"
                   "  --prefill-only LENGTHS: only the causal prefill kernel (every variant, fp8) at these lengths\n");
      return 2;
    }
  }
  if (!decode_keys.empty() && !prefill_lens.empty()) {
    std::fprintf(stderr, "bench_attention: --decode-only and --prefill-only exclude each other\n");
    return 2;
  }
  try {
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    char line[512];
    std::snprintf(line, sizeof line, "{\"kind\":\"device\",\"name\":\"%s\",\"sms\":%d,\"l2_mb\":%.1f}", prop.name,
                  prop.multiProcessorCount, prop.l2CacheSize / 1048576.0);
    emit(line);

    // ---- copy bandwidth (the memory ceiling)
    double copy_gbps = 0;
    {
      const size_t bytes = size_t(2) << 30;
      const double ms = bench::copy_ms(bytes);
      copy_gbps = 2.0 * bytes / ms / 1e6;
      std::snprintf(line, sizeof line, "{\"kind\":\"copy\",\"bytes\":%zu,\"ms\":%.4f,\"gbps\":%.1f}", bytes, ms,
                    copy_gbps);
      emit(line);
    }
    if (!sweep_keys.empty()) {
      for (int n_k : sweep_keys) decode_split_sweep(n_k, copy_gbps, size_t(prop.l2CacheSize));
      if (json) std::fclose(json);
      return 0;
    }

    // ---- causal prefill
    const int H = 32, Hkv = 8, D = 128;
    std::vector<int> lens = quick ? std::vector<int>{8192} : std::vector<int>{8192, 32768, 131072};
    if (!decode_keys.empty()) lens.clear();
    if (!prefill_lens.empty()) lens = prefill_lens;
    for (int n : lens) {
      const AttnBuffers b(n, n, H, Hkv, D, 1);
      FlashAttnParams p;
      p.q = b.q;
      p.k = b.k;
      p.v = b.v;
      p.o = b.o;
      p.lse = b.lse;
      p.n_q = p.n_k = n;
      p.n_heads = H;
      p.n_kv_heads = Hkv;
      p.head_dim = D;
      p.softmax_scale = 0.08838834764831845f;
      p.merge = false;
      const int reps = n >= 131072 ? 3 : n >= 32768 ? 10 : 30;
      const double flops = 4.0 * double(n) * n * D * H / 2;
      double bf16_ms = 0;
      for (int variant = 0; variant < flash_attention_variants(D); ++variant) {
        p.variant = variant;
        const double ms = bench::median_ms([&] { flash_attention_forward(p, nullptr); }, 1, reps);
        if (variant == 0) bf16_ms = ms;
        std::snprintf(line, sizeof line,
                      "{\"kind\":\"prefill\",\"n\":%d,\"H\":%d,\"Hkv\":%d,\"D\":%d,\"variant\":%d,\"ms\":%.4f,"
                      "\"tflops\":%.1f}",
                      n, H, Hkv, D, variant, ms, flops / ms / 1e9);
        emit(line);
      }
      {  // fp8 K/V: dequantize the block once into the bf16 buffers, then the same kernel
        const DeviceFp8Cache c(size_t(n), Hkv, D);
        p.variant = 0;
        const double ms = bench::median_ms(
            [&] {
              dequantize_kv_fp8(c.k8, c.ks, long(n) * Hkv, D, b.k, nullptr);
              dequantize_kv_fp8(c.v8, c.vs, long(n) * Hkv, D, b.v, nullptr);
              flash_attention_forward(p, nullptr);
            },
            1, reps);
        std::snprintf(line, sizeof line,
                      "{\"kind\":\"prefill_fp8\",\"n\":%d,\"H\":%d,\"Hkv\":%d,\"D\":%d,\"ms\":%.4f,"
                      "\"tflops\":%.1f,\"vs_bf16\":%.3f}",
                      n, H, Hkv, D, ms, flops / ms / 1e9, bf16_ms / ms);
        emit(line);
      }
    }

    // ---- the backend's attention op on each path
    for (int n : prefill_lens.empty() ? lens : std::vector<int>{}) {
      for (const AttentionPath path : {AttentionPath::native, AttentionPath::cudnn}) {
        if (path == AttentionPath::cudnn && !cuda_build_has_cudnn()) {
          emit("{\"kind\":\"path\",\"path\":\"cudnn\",\"error\":\"this build has no cuDNN path\"}");
          continue;
        }
        CudaBackendOptions opt;
        opt.attention = path;
        auto be = make_cuda_backend(opt);
        const AttnBuffers b(n, n, H, Hkv, D, 7);
        Tensor q = be->alloc(n, int64_t(H) * D, DType::f32), o = be->alloc(n, int64_t(H) * D, DType::f32);
        Tensor lse = be->alloc(n, H, DType::f32);
        const KvBlock kv = be->alloc_kv(n, Hkv, D, KvDtype::bf16);
        convert_bf16_to_f32(b.q, q.f32(), int64_t(n) * H * D, nullptr);
        CUDA_CHECK(cudaMemcpy(kv.k.data(), b.k, kv.k.bytes(), cudaMemcpyDeviceToDevice));
        CUDA_CHECK(cudaMemcpy(kv.v.data(), b.v, kv.v.bytes(), cudaMemcpyDeviceToDevice));
        CUDA_CHECK(cudaDeviceSynchronize());
        AttentionShape sh;
        sh.n_heads = H;
        sh.n_kv_heads = Hkv;
        sh.head_dim = D;
        sh.scale = 0.08838834764831845f;
        const int reps = n >= 131072 ? 3 : n >= 32768 ? 10 : 30;
        for (const int chunk : {n, 4096}) {
          if (chunk == 4096 && n == 4096) continue;
          const auto [first, ms] = backend_ms(*be, [&] {
            be->attention_reset(o, lse);
            for (int c = 0; c < n; c += chunk) {
              const int cn = std::min(chunk, n - c);
              sh.q_start = c;
              be->attention(q.rows(c, cn), kv, sh, o.rows(c, cn), lse.rows(c, cn));
            }
          }, reps);
          const double flops = 4.0 * double(n) * n * D * H / 2;
          std::snprintf(line, sizeof line,
                        "{\"kind\":\"path\",\"path\":\"%s\",\"n\":%d,\"H\":%d,\"Hkv\":%d,\"D\":%d,"
                        "\"chunk\":%d,\"ms\":%.4f,\"tflops\":%.1f,\"first_ms\":%.1f,\"cudnn_plans\":%lld}",
                        to_string(path), n, H, Hkv, D, chunk, ms, flops / ms / 1e9, first,
                        static_cast<long long>(cuda_backend_cudnn_plans(*be)));
          emit(line);
        }
      }
    }

    // ---- decode, one query token
    std::vector<int> keys = quick ? std::vector<int>{131072} : std::vector<int>{131072, 1048576};
    if (!decode_keys.empty()) keys = decode_keys;
    if (!prefill_lens.empty()) keys.clear();
    for (int n_k : keys) decode_kernels(n_k, H, Hkv, D, quick, copy_gbps);
    // Head dim 64 beside it: a KV head's row is 128 bytes in bf16 (as an fp8 row at 128)
    // and 64 in fp8, so the rates show what the size of each contiguous read costs.
    if (!decode_keys.empty())
      for (int n_k : keys) decode_kernels(n_k, H, 2 * Hkv, D / 2, true, copy_gbps);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_attention: %s\n", e.what());
    return 1;
  }
  if (json) std::fclose(json);
  return 0;
}
