#pragma once
// The CUDA backend: bf16 weight matrices (vectors such as norm weights and biases stay
// fp32), bf16 or fp8 KV cache, fp32 activations and accumulation. Ops are enqueued on one
// compute stream; comm_stream() is a second, high-priority stream for ring transfers.
// Memory: plain cudaMalloc at alloc() time (the engine allocates outside its layer loop),
// cudaMallocHost for alloc_host() (moved by copy_async() on copy_stream(), a third stream),
// plus grow-only scratch (bf16 copies of GEMM / attention inputs, the decode workspace)
// taken stream-ordered with cudaMallocAsync. Private to backend/cuda/.
// Host waits (synchronize, copy_to_host, large copy_from_host) never block in the CUDA
// runtime: they poll the stream and throw after comm_timeout() seconds, because NCCL work
// queued on these streams never finishes when a peer rank has died
// (runtime/cuda/device_wait_cuda.h). Device -> host copies therefore go through pinned staging (a pageable
// destination would make cudaMemcpyAsync itself block until the stream reaches it).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend_checks.h"
#include "ringinfer/cuda_backend.h"

namespace ringinfer {
struct SmallGemmProduct;  // kernels/small_gemm.h
}

namespace ringinfer::cuda {

class CudnnSdpa;

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const CudaBackendOptions& options);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;
  const char* name() const override { return "cuda"; }

  Stream stream() override { return Stream{stream_}; }
  Stream comm_stream() override { return Stream{comm_stream_}; }
  Stream copy_stream() override { return Stream{copy_stream_}; }
  std::unique_ptr<Event> record(Stream s) override;
  void wait(Stream s, const Event& e) override;
  void synchronize() override;

  Tensor alloc(int64_t rows, int64_t cols, DType dtype) override;
  Tensor upload_weight(const HostTensor& w) override;
  KvDtype default_kv_dtype() const override { return KvDtype::bf16; }
  bool supports_kv_dtype(KvDtype t) const override { return t == KvDtype::bf16 || t == KvDtype::fp8; }
  void copy_from_host(const Tensor& dst, const void* src) override;
  void copy_to_host(void* dst, const Tensor& src) override;
  Tensor alloc_host(int64_t rows, int64_t cols, DType dtype) override;  // pinned (cudaMallocHost)
  void copy_async(const Tensor& src, const Tensor& dst, Stream s) override;

  void copy(const Tensor& src, const Tensor& dst) override;
  void embed(const Tensor& table, const Tensor& tokens, const Tensor& out) override;
  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) override;
  void matmul(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out, bool accumulate) override;
  void matmuls(const Tensor& x, const std::vector<Product>& products) override;
  void rmsnorm_matmuls(const Tensor& x, const Tensor& norm_weight, float eps, const Tensor& normed,
                       const std::vector<Product>& products, bool gated, const Tensor& gated_out) override;
  void rope(const Tensor& x, int64_t n_heads, const Tensor& inv_freq, int64_t pos_start, int64_t pos_stride) override;
  void rope_rows(const Tensor& x, int64_t n_heads, const Tensor& inv_freq,
                 const std::vector<int64_t>& positions) override;
  void store_kv(const Tensor& k, const Tensor& v, const KvBlock& dst) override;
  void store_kv_rows(const Tensor& k, const Tensor& v, const std::vector<KvBlock>& dst) override;
  void rope_store_rows(const Tensor& q, const Tensor& q_out, const Tensor& k, const Tensor& v, int64_t n_heads,
                       int64_t n_kv_heads, const Tensor& inv_freq, const std::vector<int64_t>& positions,
                       const std::vector<KvBlock>& dst) override;
  void rope_store(const Tensor& q, const Tensor& q_out, const Tensor& k, const Tensor& v, int64_t n_heads,
                  int64_t n_kv_heads, const Tensor& inv_freq, int64_t pos_start, int64_t pos_stride,
                  const KvBlock& dst) override;
  void attention_reset(const Tensor& o, const Tensor& lse) override;
  void attention(const Tensor& q, const KvBlock& kv, const AttentionShape& shape, const Tensor& o,
                 const Tensor& lse) override;
  void attention_rows(const Tensor& q, const std::vector<KvBlock>& kv, const std::vector<AttentionShape>& shapes,
                      const Tensor& o, const Tensor& lse) override;
  KvBlock attention_input(const KvBlock& kv) override;
  DType attention_query_dtype(int64_t head_dim) const override;
  DType gemm_input_dtype() const override { return DType::bf16; }  // upload_weight() gives bf16 matrices
  void swiglu(const Tensor& gate, const Tensor& up) override;
  void target_logprobs(const Tensor& logits, const Tensor& targets, const Tensor& out) override;
  void sample(const Tensor& logits, const SamplingParams& p, double u, const Tensor& counts,
              const Tensor& token) override;
  void merge_attention(const Tensor& o, const Tensor& lse, const Tensor& o2, const Tensor& lse2) override;
  // Decode steps as CUDA graphs: each recording is captured from stream_ and becomes one
  // graph launch; the executable graph of the last step is updated in place when the new
  // one has its shape (the same kernels; only arguments such as positions changed), else
  // instantiated anew. Should the driver refuse a capture or a graph, a warning says so
  // and recording stops for this backend's life (begin_recording() is false after).
  bool begin_recording() override;
  bool end_recording(bool run) override;
  int64_t recorded_steps() const { return recorded_steps_; }  // graphs launched (cuda_backend_recorded_steps)
  // Greedy: sample()'s argmax kernel; other sampling reads the logits row on the host.
  bool samples_on_device(const SamplingParams& p) const override { return p.temperature <= 0.0; }

  // Bytes of alloc()/alloc_kv()/upload_weight() buffers alive now and their high-water
  // mark (the grow-only scratch is not counted).
  int64_t allocated_bytes() const override { return mem_->live.load(); }
  int64_t peak_allocated_bytes() const override { return mem_->peak.load(); }
  void reset_peak_bytes() override { mem_->peak.store(mem_->live.load()); }
  // cuDNN SDPA plans built so far (cuda_backend_cudnn_plans).
  int64_t cudnn_plans() const;

 private:
  // Grow-only device scratch, one per use, so two live at once never alias.
  enum Slot { kGemmInput, kGemmWide, kAttnQuery, kDecodeWork, kDecodeO, kDecodeLse, kFp8KeysBf16, kFp8ValuesBf16,
              kSdpaO, kSdpaStats, kSdpaWork, kSdpaLens, kArgmax, kSlots };
  void* scratch(Slot slot, size_t bytes);
  // Throws when a host wait comes while a step is being recorded (Backend::begin_recording).
  void check_not_recording(const char* op) const;
  void stop_graphs(const std::string& why);
  struct Retired;
  void free_scratch(const Retired& r);  // cudaFree or stream-ordered cudaFreeAsync, as it was taken
  // rope's and rope_rows' checks of x (n, n_heads * D) f32 and inv_freq (1, D/2) f64 (throws).
  void check_rope(const char* op, const Tensor& x, int64_t n_heads, const Tensor& inv_freq);
  // matmul's shape checks (throws); false when the product is empty.
  bool check_matmul(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out);
  // Whether the few-row kernel (kernels/small_gemm.h) takes x W^T, and one product of it.
  bool small_gemm_takes(const Tensor& x, const Tensor& w) const;
  static SmallGemmProduct small_gemm_product(const Tensor& w, const Tensor& bias, const Tensor& out);
  // The products of one x as one few-row launch (each checked as matmul() checks it), or
  // empty when the kernel does not take them all.
  std::vector<SmallGemmProduct> small_gemm_launch(const Tensor& x, const std::vector<Product>& products);
  // The cuDNN path of attention() (cuda_attention.cpp): false when it does not take this
  // call (no cuDNN, a shape cuDNN refuses, a mask that is not one bottom-right block), and
  // the caller runs the native kernels instead.
  bool attention_cudnn(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionShape& shape,
                       const Tensor& o, const Tensor& lse);
  // Whether attention() offers a block of nk keys to the cuDNN path (--attention and
  // CudaBackendOptions::auto_cudnn_min_keys).
  bool offers_cudnn(const AttentionShape& shape, int64_t nk) const;
  // cudnn_, made on first use under auto (--attention cudnn makes it in the constructor);
  // null when the build has none or it did not start (said once in the log).
  CudnnSdpa* cudnn();
  // q (f32 or bf16) as bf16 for the tensor-core kernels: q itself when it is bf16, else
  // converted into scratch (valid until the next call).
  const __nv_bfloat16* query_bf16(const Tensor& q);
  // Enqueues the read of error_ into error_host_ on stream_; after the host has waited
  // for stream_, throw_kernel_errors throws the first error a kernel left there.
  void read_kernel_errors();
  void throw_kernel_errors();
  // The host may write staging_ once the uploads queued from it have been copied
  // (a bounded wait, as every host wait here: device_wait_cuda.h).
  void wait_staging_free();

  // Shared with every buffer's deleter, so a tensor may outlive the backend.
  struct MemoryCounters {
    std::atomic<int64_t> live{0}, peak{0};
  };
  std::shared_ptr<MemoryCounters> mem_ = std::make_shared<MemoryCounters>();
  CudaBackendOptions options_;
  int device_ = 0;
  cudaStream_t stream_ = nullptr, comm_stream_ = nullptr, copy_stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  void* cublas_workspace_ = nullptr;  // kCublasWorkspaceBytes, cuBLAS's (its recommended size on Hopper)
  static constexpr size_t kCublasWorkspaceBytes = size_t(32) << 20;
  int* error_ = nullptr;  // device int[2]: KernelError code and value (backend_ops.h)
  int* error_host_ = nullptr;      // pinned int[2]: error_ as last read back
  char* staging_ = nullptr;        // pinned kStagingBytes: host copies in chunks of this size
  cudaEvent_t staging_free_ = nullptr;  // recorded after the last upload queued from staging_
  bool staging_queued_ = false;    // staging_free_ recorded and not yet seen complete
  // Copies at most this many bytes per host wait (pinned memory is scarce, 4 MiB keeps a
  // logits row or a token chunk in one piece); larger copies loop over chunks.
  static constexpr size_t kStagingBytes = size_t(4) << 20;
  // Uploads up to this size go straight from pageable memory: the driver stages them at
  // once, so cudaMemcpyAsync neither blocks nor needs our staging (the decode token).
  static constexpr size_t kDirectUploadBytes = size_t(64) << 10;
  CudnnSdpa* cudnn_ = nullptr;  // made by the constructor (--attention cudnn) or by cudnn() (auto)
  bool cudnn_failed_ = false;   // auto: cuDNN did not start or failed; every block runs native from then on
  void* scratch_[kSlots] = {};
  size_t scratch_bytes_[kSlots] = {};
  // Scratch grown while recording is plain cudaMalloc memory (a stream-ordered allocation
  // would become the graph's own), freed with cudaFree; the buffers it replaced are freed
  // once the recorded step is launched (retired_).
  bool scratch_plain_[kSlots] = {};
  struct Retired {
    void* p;
    bool plain;
  };
  std::vector<Retired> retired_;
  bool recording_ = false;               // stream_ is being captured
  bool graphs_off_ = false;              // a capture or graph failed: no more recording (stop_graphs)
  int64_t recorded_steps_ = 0;
  cudaGraphExec_t step_graph_ = nullptr;  // the last recorded step, updated for the next
};

// Throws Error("cuda backend: <op>: <what>") unless cond holds (backend/backend_checks.h).
inline void check(bool cond, const char* op, const std::string& what) {
  backend_checks::check(cond, "cuda", op, what);
}
inline void expect(const Tensor& t, int64_t rows, int64_t cols, DType dtype, const char* op, const char* what) {
  backend_checks::expect(t, rows, cols, dtype, "cuda", op, what);
}
using backend_checks::shape;

}  // namespace ringinfer::cuda
