#pragma once
// The CPU backend: fp32 activations, fp32 or GGUF-quantized weights (cpu_matmul.cpp),
// OpenBLAS (attention's float64 GEMMs) and OpenMP loops. The KV cache is fp32 by default; bf16 and fp8 caches
// store the very bytes the CUDA backend stores (kv_quant.h) and attention reads their
// dequantized values, so CI tests the numerics of those dtypes. Ops run synchronously on the calling thread's team, so streams and events are
// no-ops. Private to backend/cpu/.
#include <atomic>
#include <memory>

#include "backend/backend_checks.h"
#include "backend/cpu/cpu_simd.h"
#include "ringinfer/backend.h"

namespace ringinfer::cpu {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const CpuBackendOptions& options)
      : options_(options), simd_(!options.portable_kernels && have_avx2()), counters_(std::make_shared<Counters>()) {}
  const char* name() const override { return "cpu"; }

  Stream stream() override { return Stream{}; }
  Stream comm_stream() override { return Stream{}; }
  Stream copy_stream() override { return Stream{}; }
  std::unique_ptr<Event> record(Stream) override { return std::make_unique<Event>(); }
  void wait(Stream, const Event&) override {}
  void synchronize() override {}

  Tensor alloc(int64_t rows, int64_t cols, DType dtype) override;
  Tensor upload_weight(const HostTensor& w) override;
  bool takes_quantized_weights() const override { return true; }
  KvDtype default_kv_dtype() const override { return KvDtype::f32; }
  bool supports_kv_dtype(KvDtype) const override { return true; }
  void copy_from_host(const Tensor& dst, const void* src) override;
  void copy_to_host(void* dst, const Tensor& src) override;
  Tensor alloc_host(int64_t rows, int64_t cols, DType dtype) override { return alloc(rows, cols, dtype); }
  void copy_async(const Tensor& src, const Tensor& dst, Stream) override { copy(src, dst); }

  void copy(const Tensor& src, const Tensor& dst) override;
  void embed(const Tensor& table, const Tensor& tokens, const Tensor& out) override;
  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) override;
  void matmul(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out, bool accumulate) override;
  void matmuls(const Tensor& x, const std::vector<Product>& products) override;  // one parallel region
  void rope(const Tensor& x, int64_t n_heads, const Tensor& inv_freq, int64_t pos_start, int64_t pos_stride) override;
  void store_kv(const Tensor& k, const Tensor& v, const KvBlock& dst) override;
  // float64: attention over keys split in any way (ring blocks, tiles) agrees to ~1e-16
  // before its single rounding to fp32 (cpu_attention.cpp).
  DType attention_state_dtype() const override { return DType::f64; }
  void attention_reset(const Tensor& o, const Tensor& lse) override;
  void attention(const Tensor& q, const KvBlock& kv, const AttentionShape& shape, const Tensor& o,
                 const Tensor& lse) override;
  DType attention_query_dtype(int64_t) const override { return DType::f32; }  // its kernels are fp32
  void swiglu(const Tensor& gate, const Tensor& up) override;
  void target_logprobs(const Tensor& logits, const Tensor& targets, const Tensor& out) override;
  void sample(const Tensor& logits, const SamplingParams& p, double u, const Tensor& counts,
              const Tensor& token) override;

  int64_t allocated_bytes() const override { return counters_->live.load(); }
  int64_t peak_allocated_bytes() const override { return counters_->peak.load(); }
  void reset_peak_bytes() override { counters_->peak.store(counters_->live.load()); }

 private:
  // Shared with every allocation's deleter, so a tensor may outlive the backend.
  struct Counters {
    std::atomic<int64_t> live{0};  // bytes of buffers alive now
    std::atomic<int64_t> peak{0};  // high-water mark of live
  };
  // matmul() of x by each product's weight (accumulating into its out or not), every
  // product's panels in one parallel region (cpu_matmul.cpp).
  void matmul_products(const Tensor& x, const std::vector<Product>& products, bool accumulate);

  CpuBackendOptions options_;
  bool simd_;  // AVX2/FMA kernels (cpu_simd.h) rather than the portable ones
  std::shared_ptr<Counters> counters_;
};

// Elements of work below which an elementwise op runs on the calling thread alone: waking
// the team costs microseconds (more with a passive wait policy), and decode runs hundreds
// of one-row ops per token.
constexpr int64_t kParallelMin = 1 << 15;

// Weight storage matmul() and embed() accept: fp32, or a GGUF type kept as stored.
inline bool is_weight_dtype(DType t) {
  return t == DType::f32 || t == DType::f16 || t == DType::bf16 || dtype_block(t) > 1;
}
// n elements (whole blocks) of weight storage type t at src as fp32 (cpu_matmul.cpp).
// simd: the AVX2 code (only where have_avx2(), cpu_simd.h).
void dequant_row(DType t, const unsigned char* src, int64_t n, float* dst, bool simd);

// Throws Error("cpu backend: <op>: <what>") unless cond holds (backend/backend_checks.h).
inline void check(bool cond, const char* op, const std::string& what) {
  backend_checks::check(cond, "cpu", op, what);
}
inline void expect(const Tensor& t, int64_t rows, int64_t cols, DType dtype, const char* op, const char* what) {
  backend_checks::expect(t, rows, cols, dtype, "cpu", op, what);
}
using backend_checks::shape;

}  // namespace ringinfer::cpu
