// CPU backend: memory and the elementwise ops (matmul is in cpu_matmul.cpp, attention in
// cpu_attention.cpp).
#include "backend/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "ringinfer/kv_quant.h"
#include "ringinfer/sampling.h"

namespace ringinfer {

std::unique_ptr<Backend> make_cpu_backend(const CpuBackendOptions& options) {
  return std::make_unique<cpu::CpuBackend>(options);
}

namespace cpu {

// ---------------------------------------------------------------- memory

Tensor CpuBackend::alloc(int64_t rows, int64_t cols, DType dtype) {
  check(rows >= 0 && cols >= 0, "alloc", "negative shape");
  check(cols % dtype_block(dtype) == 0, "alloc", std::string("rows of ") + dtype_name(dtype) + " must be whole blocks");
  const size_t bytes = storage_bytes(dtype, rows * cols);
  if (bytes == 0) return Tensor(nullptr, nullptr, dtype, rows, cols);
  // 64-byte aligned for vector loads; aligned_alloc wants a multiple of the alignment.
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!p) throw Error("cpu backend: out of memory allocating " + std::to_string(bytes) + " bytes");
  const int64_t counted = static_cast<int64_t>(bytes);
  std::shared_ptr<Counters> c = counters_;
  const int64_t live = c->live.fetch_add(counted) + counted;
  for (int64_t peak = c->peak.load(); live > peak && !c->peak.compare_exchange_weak(peak, live);) {
  }
  std::shared_ptr<void> storage(p, [c, counted](void* q) {
    std::free(q);
    c->live.fetch_sub(counted);
  });
  return Tensor(std::move(storage), p, dtype, rows, cols);
}

Tensor CpuBackend::upload_weight(const HostTensor& w) {
  check(!w.shape.empty(), "upload_weight", "tensor without a shape");
  int64_t rows = w.shape[0], cols = 1;
  for (size_t i = 1; i < w.shape.size(); ++i) cols *= w.shape[i];
  check(rows * cols == w.numel(), "upload_weight", "shape does not match its data");
  if (w.blocks.empty()) {
    Tensor t = alloc(rows, cols, DType::f32);
    if (!t.empty()) std::memcpy(t.data(), w.data.data(), t.bytes());
    return t;
  }
  // GGUF storage kept as is (ggml type ids, gguf.h); matmul and embed dequantize in place.
  DType type = DType::f32;
  switch (w.ggml_type) {
    case 1: type = DType::f16; break;
    case 30: type = DType::bf16; break;
    case 8: type = DType::q8_0; break;
    case 2: type = DType::q4_0; break;
    case 3: type = DType::q4_1; break;
    case 6: type = DType::q5_0; break;
    case 7: type = DType::q5_1; break;
    case 10: type = DType::q2_k; break;
    case 11: type = DType::q3_k; break;
    case 12: type = DType::q4_k; break;
    case 13: type = DType::q5_k; break;
    case 14: type = DType::q6_k; break;
    case 20: type = DType::iq4_nl; break;
    case 23: type = DType::iq4_xs; break;
    default: check(false, "upload_weight", "ggml type " + std::to_string(w.ggml_type) + " is not kept quantized");
  }
  Tensor t = alloc(rows, cols, type);
  check(t.bytes() == w.blocks.size(), "upload_weight", "stored bytes do not match the shape");
  if (!t.empty()) std::memcpy(t.data(), w.blocks.data(), t.bytes());
  return t;
}

void CpuBackend::copy_from_host(const Tensor& dst, const void* src) {
  if (!dst.empty()) std::memcpy(dst.data(), src, dst.bytes());
}

void CpuBackend::copy_to_host(void* dst, const Tensor& src) {
  if (!src.empty()) std::memcpy(dst, src.data(), src.bytes());
}

// ---------------------------------------------------------------- ops

void CpuBackend::copy(const Tensor& src, const Tensor& dst) {
  if (src.dtype() == DType::f64 && dst.dtype() == DType::f32) {  // the attention state's final rounding
    expect(dst, src.rows(), src.cols(), DType::f32, "copy", "dst");
    const double* a = src.f64();
    float* b = dst.f32();
    const int64_t n = src.numel();
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) b[i] = static_cast<float>(a[i]);
    return;
  }
  expect(dst, src.rows(), src.cols(), src.dtype(), "copy", "dst");
  if (!src.empty() && src.data() != dst.data()) std::memmove(dst.data(), src.data(), src.bytes());
}

void CpuBackend::embed(const Tensor& table, const Tensor& tokens, const Tensor& out) {
  const int64_t n = tokens.rows(), hidden = table.cols(), vocab = table.rows();
  expect(tokens, n, 1, DType::i32, "embed", "tokens");
  expect(out, n, hidden, DType::f32, "embed", "out");
  check(is_weight_dtype(table.dtype()), "embed", std::string("table of ") + dtype_name(table.dtype()));
  const int32_t* ids = tokens.i32();
  for (int64_t i = 0; i < n; ++i)
    check(ids[i] >= 0 && ids[i] < vocab, "embed",
          "token " + std::to_string(ids[i]) + " outside the vocabulary of " + std::to_string(vocab));
#pragma omp parallel for schedule(static) if (n * hidden >= kParallelMin)
  for (int64_t i = 0; i < n; ++i)
    dequant_row(table.dtype(), static_cast<const unsigned char*>(table.data()) + storage_bytes(table.dtype(), ids[i] * hidden),
                hidden, out.f32() + i * hidden, simd_);
}

void CpuBackend::rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) {
  const int64_t n = x.rows(), d = x.cols();
  expect(weight, d, 1, DType::f32, "rmsnorm", "weight");
  expect(out, n, d, DType::f32, "rmsnorm", "out");
  const float* w = weight.f32();
#pragma omp parallel for schedule(static) if (n * d >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x.f32() + i * d;
    float* oi = out.f32() + i * d;
    double ss = 0.0;
    for (int64_t k = 0; k < d; ++k) ss += static_cast<double>(xi[k]) * xi[k];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / d + eps));
    for (int64_t k = 0; k < d; ++k) oi[k] = w[k] * (xi[k] * inv);
  }
}

void CpuBackend::rope(const Tensor& x, int64_t n_heads, const Tensor& inv_freq, int64_t pos_start,
                      int64_t pos_stride) {
  const int64_t n = x.rows(), half = inv_freq.cols();
  check(x.dtype() == DType::f32 && n_heads > 0 && x.cols() == n_heads * 2 * half, "rope",
        "x is " + shape(x) + " for " + std::to_string(n_heads) + " heads of " + std::to_string(2 * half));
  expect(inv_freq, 1, half, DType::f64, "rope", "inv_freq");
  const double* f = inv_freq.f64();
#pragma omp parallel for schedule(static) if (n * x.cols() >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const double pos = static_cast<double>(pos_start + i * pos_stride);
    float* row = x.f32() + i * x.cols();
    for (int64_t d = 0; d < half; ++d) {
      // Angle in float64 (positions reach millions), cos/sin then rounded to fp32.
      const double angle = pos * f[d];
      const float c = static_cast<float>(std::cos(angle)), s = static_cast<float>(std::sin(angle));
      for (int64_t h = 0; h < n_heads; ++h) {
        float* xh = row + h * 2 * half;
        const float a = xh[d], b = xh[d + half];
        xh[d] = a * c - b * s;
        xh[d + half] = b * c + a * s;
      }
    }
  }
}

void CpuBackend::store_kv(const Tensor& k, const Tensor& v, const KvBlock& dst) {
  backend_checks::check_kv_block("cpu", "store_kv", dst);
  const int64_t n = dst.rows(), Hkv = dst.n_kv_heads, D = dst.head_dim;
  expect(k, n, Hkv * D, DType::f32, "store_kv", "k");
  expect(v, n, Hkv * D, DType::f32, "store_kv", "v");
  const Tensor* src[2] = {&k, &v};
  const Tensor* out[2] = {&dst.k, &dst.v};
  const Tensor* scale[2] = {&dst.k_scale, &dst.v_scale};
  for (int p = 0; p < 2; ++p) {
    const float* x = src[p]->f32();
    if (dst.dtype == KvDtype::f32) {
      copy(*src[p], *out[p]);
    } else if (dst.dtype == KvDtype::bf16) {
      auto* y = static_cast<uint16_t*>(out[p]->data());
      for (int64_t i = 0; i < n * Hkv * D; ++i) y[i] = kvq::bf16_bits(x[i]);
    } else {
      auto* y = static_cast<uint8_t*>(out[p]->data());
      float* sc = scale[p]->f32();
#pragma omp parallel for schedule(static)
      for (int64_t row = 0; row < n * Hkv; ++row) {  // one (token, head) of D values
        const float* xr = x + row * D;
        float amax = 0.0f;
        // fmax skips a NaN, which then quantizes to NaN bytes itself; an inf makes the
        // scale inf and the row NaN (kv_quant.h: nothing is hidden).
        for (int64_t d = 0; d < D; ++d) amax = std::fmax(amax, std::fabs(xr[d]));
        const float s = kvq::fp8_scale(amax);
        sc[row] = s;
        for (int64_t d = 0; d < D; ++d) y[row * D + d] = kvq::fp8_quantize(xr[d], s);
      }
    }
  }
}

void CpuBackend::attention_reset(const Tensor& o, const Tensor& lse) {
  check((o.dtype() == DType::f32 || o.dtype() == DType::f64) && lse.dtype() == o.dtype() && o.rows() == lse.rows(),
        "attention_reset", "o is " + shape(o) + ", lse is " + shape(lse));
  if (!o.empty()) std::memset(o.data(), 0, o.bytes());  // 0.0 in f32 and f64
  if (lse.dtype() == DType::f64) {
    std::fill_n(lse.f64(), lse.numel(), -std::numeric_limits<double>::infinity());
  } else {
    std::fill_n(lse.f32(), lse.numel(), -std::numeric_limits<float>::infinity());
  }
}

void CpuBackend::swiglu(const Tensor& gate, const Tensor& up) {
  expect(up, gate.rows(), gate.cols(), DType::f32, "swiglu", "up");
  check(gate.dtype() == DType::f32, "swiglu", "gate must be f32");
  float* g = gate.f32();
  const float* u = up.f32();
  const int64_t n = gate.numel();
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void CpuBackend::target_logprobs(const Tensor& logits, const Tensor& targets, const Tensor& out) {
  const int64_t n = logits.rows(), V = logits.cols();
  check(logits.dtype() == DType::f32, "target_logprobs", "logits must be f32");
  expect(targets, n, 1, DType::i32, "target_logprobs", "targets");
  expect(out, n, 1, DType::f32, "target_logprobs", "out");
  for (int64_t i = 0; i < n; ++i)
    check(targets.i32()[i] >= 0 && targets.i32()[i] < V, "target_logprobs",
          "target " + std::to_string(targets.i32()[i]) + " outside the vocabulary of " + std::to_string(V));
#pragma omp parallel for schedule(static) if (n * V >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float* l = logits.f32() + i * V;
    float m = l[0];
    for (int64_t k = 1; k < V; ++k) m = std::max(m, l[k]);
    double sum = 0.0;
    for (int64_t k = 0; k < V; ++k) sum += std::exp(static_cast<double>(l[k] - m));
    out.f32()[i] = static_cast<float>(static_cast<double>(l[targets.i32()[i]] - m) - std::log(sum));
  }
}

void CpuBackend::sample(const Tensor& logits, const SamplingParams& p, double u, const Tensor& counts,
                        const Tensor& token) {
  check(logits.rows() == 1 && logits.cols() >= 1 && logits.dtype() == DType::f32, "sample",
        "logits is " + shape(logits) + ", expected one f32 row");
  expect(token, 1, 1, DType::i32, "sample", "token");
  if (p.penalized()) {
    expect(counts, 1, logits.cols(), DType::i32, "sample", "counts");
    apply_penalties(logits.f32(), logits.cols(), counts.i32(), p);
  }
  token.i32()[0] = sample_token(logits.f32(), logits.cols(), p, u);
}

}  // namespace cpu
}  // namespace ringinfer
