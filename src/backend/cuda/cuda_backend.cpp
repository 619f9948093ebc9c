// CUDA backend: streams, events, memory, cuBLAS GEMMs and the elementwise ops
// (attention is in cuda_attention.cpp, the kernels in kernels/backend_ops.cu).
#include "backend/cuda/cuda_backend.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <limits>
#include <vector>

#include "backend/cuda/cudnn_attention.h"
#include "backend_ops.h"
#include "kv_cache_ops.h"
#include "small_gemm.h"
#include "ringinfer/cuda_check.h"
#include "ringinfer/kv_quant.h"
#include "ringinfer/log.h"
#include "ringinfer/sampling.h"
#include "runtime/cuda/device_wait_cuda.h"

namespace ringinfer {

std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions& options) {
  return std::make_unique<cuda::CudaBackend>(options);
}

int64_t cuda_backend_recorded_steps(const Backend& backend) {
  const auto* be = dynamic_cast<const cuda::CudaBackend*>(&backend);
  return be ? be->recorded_steps() : 0;
}

namespace cuda {

namespace {

class CudaEvent final : public Event {
 public:
  CudaEvent() { CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming)); }
  ~CudaEvent() override { cudaEventDestroy(event); }
  cudaEvent_t event = nullptr;
};

cudaStream_t native(Stream s) { return static_cast<cudaStream_t>(s.native); }

// Where row b of a decode batch's K, V goes: d, a one-row block of a document's cache
// (checked as every KV block an op writes is).
KvRowDst kv_row_dst(int64_t b, const KvBlock& d, const char* op) {
  backend_checks::check_kv_block("cuda", op, d);
  const bool fp8 = d.dtype == KvDtype::fp8;
  return KvRowDst{b, d.k.data(), d.v.data(), fp8 ? d.k_scale.f32() : nullptr, fp8 ? d.v_scale.f32() : nullptr};
}

}  // namespace

// ---------------------------------------------------------------- lifetime, streams

CudaBackend::CudaBackend(const CudaBackendOptions& options) : options_(options) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();  // clear the sticky "no device" error
    throw Error("cuda backend: no CUDA device is visible");
  }
  if (options.device >= 0) {
    check(options.device < count, "device",
          "device " + std::to_string(options.device) + " requested, " + std::to_string(count) + " visible");
    CUDA_CHECK(cudaSetDevice(options.device));
  }
  CUDA_CHECK(cudaGetDevice(&device_));
  int least = 0, greatest = 0;  // numerically lower is higher priority
  CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, least));
  CUDA_CHECK(cudaStreamCreateWithPriority(&comm_stream_, cudaStreamNonBlocking, greatest));
  CUDA_CHECK(cudaStreamCreateWithPriority(&copy_stream_, cudaStreamNonBlocking, least));
  CUBLAS_CHECK(cublasCreate(&cublas_));
  CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
  // Our own workspace (cublasSetStream resets it, so after): a product recorded into a
  // decode step's graph then allocates nothing inside the capture.
  CUDA_CHECK(cudaMalloc(&cublas_workspace_, kCublasWorkspaceBytes));
  CUBLAS_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_, kCublasWorkspaceBytes));
  CUDA_CHECK(cudaMalloc(&error_, 2 * sizeof(int)));
  CUDA_CHECK(cudaMemset(error_, 0, 2 * sizeof(int)));
  CUDA_CHECK(cudaMallocHost(&error_host_, 2 * sizeof(int)));
  CUDA_CHECK(cudaMallocHost(&staging_, kStagingBytes));
  CUDA_CHECK(cudaEventCreateWithFlags(&staging_free_, cudaEventDisableTiming));
  if (options.attention == AttentionPath::cudnn) {
    check(cuda_build_has_cudnn(), "attention",
          "--attention cudnn: this build has no cuDNN path (CMake did not find cuDNN 9 and the cuDNN frontend "
          "headers; see the configure log)");
#ifdef RINGINFER_HAVE_CUDNN
    cudnn_ = new CudnnSdpa();  // throws when the library does not start
#endif
  }
}

CudaBackend::~CudaBackend() {
  // No throwing here: the destructor may run while an exception unwinds. The streams may
  // hold work that never finishes (a dead peer's NCCL kernel): wait a bounded time, and
  // if they do not drain, leak everything rather than hang in cudaFree / cublasDestroy,
  // which wait for the whole device. While an exception unwinds the wait is shorter
  // (device_wait::destructor_seconds).
  if (recording_) {  // a recording its caller never ended: drop it, so the stream can be waited on
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(stream_, &graph);
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    recording_ = false;
  }
  try {
    const device_wait::Deadline deadline(device_wait::destructor_seconds());
    device_wait::wait_stream(stream_, "cuda backend destructor: the compute stream", deadline);
    device_wait::wait_stream(comm_stream_, "cuda backend destructor: the communication stream", deadline);
    device_wait::wait_stream(copy_stream_, "cuda backend destructor: the copy stream", deadline);
  } catch (const std::exception& e) {
    log::error(std::string(e.what()) + "; its device memory is not freed");
  }
  cudaEventDestroy(staging_free_);
  cudaStreamDestroy(copy_stream_);
  cudaStreamDestroy(comm_stream_);
  cudaStreamDestroy(stream_);
  if (device_wait::stuck().load()) return;
#ifdef RINGINFER_HAVE_CUDNN
  delete cudnn_;
#endif
  if (step_graph_) cudaGraphExecDestroy(step_graph_);
  for (void* p : scratch_)
    if (p) cudaFree(p);
  cudaFree(error_);
  cudaFreeHost(error_host_);
  cudaFreeHost(staging_);
  cublasDestroy(cublas_);
  cudaFree(cublas_workspace_);
}

std::unique_ptr<Event> CudaBackend::record(Stream s) {
  check_not_recording("record");
  auto e = std::make_unique<CudaEvent>();
  CUDA_CHECK(cudaEventRecord(e->event, native(s)));
  return e;
}

void CudaBackend::wait(Stream s, const Event& e) {
  check_not_recording("wait");
  const auto* ce = dynamic_cast<const CudaEvent*>(&e);
  check(ce != nullptr, "wait", "the event was not recorded by the CUDA backend");
  CUDA_CHECK(cudaStreamWaitEvent(native(s), ce->event, 0));
}

void CudaBackend::synchronize() {
  check_not_recording("synchronize");
  read_kernel_errors();
  device_wait::wait_stream(comm_stream_, "cuda backend synchronize: the communication stream");
  device_wait::wait_stream(copy_stream_, "cuda backend synchronize: the copy stream");
  device_wait::wait_stream(stream_, "cuda backend synchronize: the compute stream");
  // All streams drained: whatever an earlier timeout left stuck has finished.
  device_wait::stuck().store(false);
  throw_kernel_errors();
}

void CudaBackend::wait_staging_free() {
  if (!staging_queued_) return;
  device_wait::wait_event(staging_free_, "cuda backend copy_from_host: the previous upload from pinned staging");
  staging_queued_ = false;
}

void CudaBackend::read_kernel_errors() {
  CUDA_CHECK(cudaMemcpyAsync(error_host_, error_, 2 * sizeof(int), cudaMemcpyDeviceToHost, stream_));
}

void CudaBackend::throw_kernel_errors() {
  const int err[2] = {error_host_[0], error_host_[1]};
  if (err[0] == kErrNone) return;
  error_host_[0] = kErrNone;
  CUDA_CHECK(cudaMemsetAsync(error_, 0, sizeof(err), stream_));
  if (err[0] == kErrTokenRange) throw Error("cuda backend: embed: token " + std::to_string(err[1]) + " outside the vocabulary");
  if (err[0] == kErrTargetRange)
    throw Error("cuda backend: target_logprobs: target " + std::to_string(err[1]) + " outside the vocabulary");
  if (err[0] == kErrNonFiniteLogit) throw Error("cuda backend: sample: " + non_finite_logits_message(err[1]));
  throw Error("cuda backend: kernel error code " + std::to_string(err[0]));
}

void* CudaBackend::scratch(Slot slot, size_t bytes) {
  if (bytes > scratch_bytes_[slot]) {
    const size_t grown = bytes + bytes / 4;
    void* old = scratch_[slot];
    const bool old_plain = scratch_plain_[slot];
    scratch_[slot] = nullptr;
    scratch_bytes_[slot] = 0;
    cudaError_t rc = cudaSuccess;
    if (recording_) {
      // Work queued before the recording may still read the old buffer: it is freed after
      // the recorded step's launch (end_recording).
      if (old) retired_.push_back(Retired{old, old_plain});
      rc = cudaMalloc(&scratch_[slot], grown);
      scratch_plain_[slot] = true;
    } else {
      if (old) free_scratch(Retired{old, old_plain});
      rc = cudaMallocAsync(&scratch_[slot], grown, stream_);
      scratch_plain_[slot] = false;
    }
    if (rc != cudaSuccess) {
      cudaGetLastError();  // not left behind for the next launch check to report
      scratch_[slot] = nullptr;
      throw Error("cuda backend: out of device memory growing scratch to " + std::to_string(grown) + " bytes (" +
                  cudaGetErrorString(rc) + ")");
    }
    scratch_bytes_[slot] = grown;
  }
  return scratch_[slot];
}

void CudaBackend::free_scratch(const Retired& r) {
  if (r.plain)
    CUDA_CHECK(cudaFree(r.p));  // waits for the device: rare (a growth)
  else
    CUDA_CHECK(cudaFreeAsync(r.p, stream_));  // after the work already queued that reads it
}

void CudaBackend::check_not_recording(const char* op) const {
  check(!recording_, op, "waits for the host while a decode step is being recorded (Backend::begin_recording)");
}

// ---------------------------------------------------------------- recorded steps

bool CudaBackend::begin_recording() {
  check_not_recording("begin_recording");
  if (graphs_off_) return false;
  // Relaxed: scratch may grow with cudaMalloc inside the capture.
  const cudaError_t rc = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed);
  if (rc != cudaSuccess) {
    cudaGetLastError();
    stop_graphs(std::string("cudaStreamBeginCapture: ") + cudaGetErrorString(rc));
    return false;
  }
  recording_ = true;
  return true;
}

bool CudaBackend::end_recording(bool run) {
  if (!recording_) return false;
  recording_ = false;
  cudaGraph_t graph = nullptr;
  const cudaError_t captured = cudaStreamEndCapture(stream_, &graph);
  std::unique_ptr<CUgraph_st, cudaError_t (*)(cudaGraph_t)> owned(graph, cudaGraphDestroy);
  if (captured != cudaSuccess) cudaGetLastError();
  bool ran = false;
  if (run && captured != cudaSuccess) stop_graphs(std::string("cudaStreamEndCapture: ") + cudaGetErrorString(captured));
  if (run && captured == cudaSuccess) {
    if (step_graph_) {
      cudaGraphExecUpdateResultInfo info{};
      if (cudaGraphExecUpdate(step_graph_, graph, &info) != cudaSuccess) {
        cudaGetLastError();  // another shape (batch, splits): a new executable graph
        cudaGraphExecDestroy(step_graph_);  // freed once its launches are done
        step_graph_ = nullptr;
      }
    }
    cudaError_t rc = cudaSuccess;
    if (!step_graph_) rc = cudaGraphInstantiate(&step_graph_, graph, 0);
    if (rc == cudaSuccess) rc = cudaGraphLaunch(step_graph_, stream_);
    if (rc == cudaSuccess) {
      ran = true;
      ++recorded_steps_;
    } else {
      cudaGetLastError();
      stop_graphs(std::string("instantiating or launching the graph: ") + cudaGetErrorString(rc));
    }
  }
  for (const Retired& r : retired_) free_scratch(r);
  retired_.clear();
  return ran;
}

void CudaBackend::stop_graphs(const std::string& why) {
  graphs_off_ = true;
  if (step_graph_) cudaGraphExecDestroy(step_graph_);
  step_graph_ = nullptr;
  log::warn("cuda backend: decode steps launch op by op from here on (a CUDA graph failed: " + why +
            "; if an earlier kernel failed, the step run op by op reports it)");
}

// ---------------------------------------------------------------- memory

Tensor CudaBackend::alloc(int64_t rows, int64_t cols, DType dtype) {
  check(rows >= 0 && cols >= 0, "alloc", "negative shape");
  const size_t bytes = static_cast<size_t>(rows * cols) * dtype_bytes(dtype);
  if (bytes == 0) return Tensor(nullptr, nullptr, dtype, rows, cols);
  void* p = nullptr;
  const cudaError_t rc = cudaMalloc(&p, bytes);
  if (rc != cudaSuccess) {
    cudaGetLastError();
    throw Error("cuda backend: out of device memory allocating " + std::to_string(bytes) + " bytes (" +
                cudaGetErrorString(rc) + ")");
  }
  const int64_t live = mem_->live.fetch_add(static_cast<int64_t>(bytes)) + static_cast<int64_t>(bytes);
  for (int64_t peak = mem_->peak.load(); live > peak && !mem_->peak.compare_exchange_weak(peak, live);) {
  }
  std::shared_ptr<MemoryCounters> mem = mem_;
  std::shared_ptr<void> storage(p, [mem, bytes](void* q) {
    // cudaFree waits for the whole device: after a device wait timed out it could hang.
    if (!device_wait::stuck().load()) cudaFree(q);
    mem->live.fetch_sub(static_cast<int64_t>(bytes));
  });
  return Tensor(std::move(storage), p, dtype, rows, cols);
}

Tensor CudaBackend::alloc_host(int64_t rows, int64_t cols, DType dtype) {
  check(rows >= 0 && cols >= 0 && dtype_block(dtype) == 1, "alloc_host", "negative shape or a block type");
  const size_t bytes = static_cast<size_t>(rows * cols) * dtype_bytes(dtype);
  if (bytes == 0) return Tensor(nullptr, nullptr, dtype, rows, cols);
  void* p = nullptr;
  const cudaError_t rc = cudaMallocHost(&p, bytes);
  if (rc != cudaSuccess) {
    cudaGetLastError();
    throw Error("cuda backend: out of pinned host memory allocating " + std::to_string(bytes) + " bytes (" +
                cudaGetErrorString(rc) + ")");
  }
  // Host memory: not counted by allocated_bytes(). cudaFreeHost waits for the device, like cudaFree.
  std::shared_ptr<void> storage(p, [](void* q) {
    if (!device_wait::stuck().load()) cudaFreeHost(q);
  });
  return Tensor(std::move(storage), p, dtype, rows, cols);
}

void CudaBackend::copy_async(const Tensor& src, const Tensor& dst, Stream s) {
  check_not_recording("copy_async");
  check(src.rows() == dst.rows() && src.cols() == dst.cols() && src.dtype() == dst.dtype(), "copy_async",
        "src is " + shape(src) + ", dst is " + shape(dst));
  // The direction follows from the pointers (unified addressing); pinned host memory keeps
  // the copy asynchronous.
  if (!src.empty()) CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), src.bytes(), cudaMemcpyDefault, native(s)));
}

Tensor CudaBackend::upload_weight(const HostTensor& w) {
  check(!w.shape.empty(), "upload_weight", "tensor without a shape");
  int64_t rows = w.shape[0], cols = 1;
  for (size_t i = 1; i < w.shape.size(); ++i) cols *= w.shape[i];
  check(rows * cols == w.numel(), "upload_weight", "shape does not match its data");
  // Blocking cudaMemcpy on the legacy default stream is kept here: it does not wait for
  // the non-blocking streams that carry NCCL work, so a dead peer cannot stall it, and
  // pageable copies run at full speed (weights are gigabytes, loaded before any comm).
  // Vectors (norm weights, biases) stay fp32: tiny, and read once per row.
  if (w.shape.size() == 1) {
    Tensor t = alloc(rows, 1, DType::f32);
    if (!t.empty()) CUDA_CHECK(cudaMemcpy(t.data(), w.data.data(), t.bytes(), cudaMemcpyHostToDevice));
    return t;
  }
  Tensor t = alloc(rows, cols, DType::bf16);
  std::vector<uint16_t> bits(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < bits.size(); ++i) bits[i] = kvq::bf16_bits(w.data[i]);
  if (!t.empty()) CUDA_CHECK(cudaMemcpy(t.data(), bits.data(), t.bytes(), cudaMemcpyHostToDevice));
  return t;
}

void CudaBackend::copy_from_host(const Tensor& dst, const void* src) {
  check_not_recording("copy_from_host");
  // Returns once src has been staged, so the caller may reuse it. Small copies: the
  // driver stages a pageable source at once. Larger ones may make the driver wait for the
  // stream, unbounded: they go through staging_ in chunks, each chunk waiting (bounded)
  // until the previous upload from staging_ has reached the device.
  const size_t bytes = dst.bytes();
  if (bytes == 0) return;
  if (bytes <= kDirectUploadBytes) {
    CUDA_CHECK(cudaMemcpyAsync(dst.data(), src, bytes, cudaMemcpyHostToDevice, stream_));
    return;
  }
  const char* from = static_cast<const char*>(src);
  char* to = static_cast<char*>(dst.data());
  for (size_t done = 0; done < bytes;) {
    const size_t n = std::min(bytes - done, kStagingBytes);
    wait_staging_free();
    std::memcpy(staging_, from + done, n);
    CUDA_CHECK(cudaMemcpyAsync(to + done, staging_, n, cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaEventRecord(staging_free_, stream_));
    staging_queued_ = true;
    done += n;
  }
}

void CudaBackend::copy_to_host(void* dst, const Tensor& src) {
  check_not_recording("copy_to_host");
  // Async copy into pinned staging and a polled wait; the kernel error words come back
  // with the last chunk, so a small copy costs one round trip.
  const size_t bytes = src.bytes();
  const char* from = static_cast<const char*>(src.data());
  char* to = static_cast<char*>(dst);
  size_t done = 0;
  do {
    const size_t n = std::min(bytes - done, kStagingBytes);
    // Uploads queued from staging_ run before this copy on stream_: no extra wait needed.
    if (n) CUDA_CHECK(cudaMemcpyAsync(staging_, from + done, n, cudaMemcpyDeviceToHost, stream_));
    if (done + n == bytes) read_kernel_errors();
    try {
      device_wait::wait_stream(stream_, "cuda backend copy_to_host: the compute stream");
    } catch (...) {
      // The copy into staging_ is still queued: a later upload must not write staging_
      // before it has run.
      if (n && cudaEventRecord(staging_free_, stream_) == cudaSuccess) staging_queued_ = true;
      throw;
    }
    staging_queued_ = false;  // the stream has drained past every upload
    if (n) std::memcpy(to + done, staging_, n);
    done += n;
  } while (done < bytes);
  throw_kernel_errors();
}

// ---------------------------------------------------------------- ops

void CudaBackend::copy(const Tensor& src, const Tensor& dst) {
  check(src.rows() == dst.rows() && src.cols() == dst.cols(), "copy",
        "src is " + shape(src) + ", dst is " + shape(dst));
  if (src.empty() || src.data() == dst.data()) return;
  if (src.dtype() == dst.dtype()) {
    CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), src.bytes(), cudaMemcpyDeviceToDevice, stream_));
  } else if (src.dtype() == DType::f32 && dst.dtype() == DType::bf16) {
    convert_f32_to_bf16(src.f32(), static_cast<__nv_bfloat16*>(dst.data()), src.numel(), stream_);
  } else if (src.dtype() == DType::bf16 && dst.dtype() == DType::f32) {
    convert_bf16_to_f32(static_cast<const __nv_bfloat16*>(src.data()), dst.f32(), src.numel(), stream_);
  } else {
    check(false, "copy", std::string("no conversion from ") + dtype_name(src.dtype()) + " to " + dtype_name(dst.dtype()));
  }
}

void CudaBackend::embed(const Tensor& table, const Tensor& tokens, const Tensor& out) {
  const int64_t n = tokens.rows(), hidden = table.cols(), vocab = table.rows();
  check(table.dtype() == DType::bf16 || table.dtype() == DType::f32, "embed", "table is " + shape(table));
  expect(tokens, n, 1, DType::i32, "embed", "tokens");
  expect(out, n, hidden, DType::f32, "embed", "out");
  embed_rows(table.data(), table.dtype() == DType::bf16, vocab, hidden, tokens.i32(), n, out.f32(), error_, stream_);
}

void CudaBackend::rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) {
  const int64_t n = x.rows(), d = x.cols();
  check(x.dtype() == DType::f32, "rmsnorm", "x is " + shape(x));
  expect(weight, d, 1, DType::f32, "rmsnorm", "weight");
  expect(out, n, d, DType::f32, "rmsnorm", "out");
  rmsnorm_rows(x.f32(), weight.f32(), eps, n, d, out.f32(), stream_);
}

void CudaBackend::matmul(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out, bool accumulate) {
  const bool shaped = check_matmul(x, w, bias, out);
  // A bf16 x (handed over in gemm_input_dtype()) widened to f32, exactly, where the product
  // reads f32: an f32 w, or a few rows (a prefill chunk's last ones) for the few-row kernel,
  // which rounds it back as it stages it; either way the bits an f32 hand-off of the same
  // values gets.
  Tensor xs = x;
  if (shaped && x.dtype() == DType::bf16 &&
      (w.dtype() == DType::f32 ||
       (options_.use_small_gemm && small_gemm_supported(x.rows(), x.cols(), w.rows(), x.data(), w.data())))) {
    auto* wide = static_cast<float*>(scratch(kGemmWide, static_cast<size_t>(x.numel()) * 4));
    convert_bf16_to_f32(static_cast<const __nv_bfloat16*>(x.data()), wide, x.numel(), stream_);
    xs = Tensor(nullptr, wide, DType::f32, x.rows(), x.cols());
  }
  if (shaped && small_gemm_takes(xs, w)) {
    const SmallGemmProduct p = small_gemm_product(w, bias, out);
    small_gemm_bf16(xs.f32(), xs.rows(), xs.cols(), &p, 1, accumulate, stream_);
    return;
  }
  const int64_t n = x.rows(), in = x.cols(), of = w.rows();
  if (n == 0 || of == 0) return;
  if (in == 0) {
    if (!accumulate) CUDA_CHECK(cudaMemsetAsync(out.data(), 0, out.bytes(), stream_));
  } else {
    // Row-major out (n, of) = x (n, in) W^T is column-major out^T (of, n) = W^T' x^T', i.e.
    // op(A) = W (stored column-major as (in, of), transposed), op(B) = x (column-major (in, n)).
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    const void* xin = xs.data();
    cudaDataType_t ab_type = w.dtype() == DType::bf16 ? CUDA_R_16BF : CUDA_R_32F;
    if (w.dtype() == DType::bf16 && xs.dtype() == DType::f32) {
      // bf16 operands for the tensor cores; products and sums in fp32.
      auto* xb = static_cast<__nv_bfloat16*>(scratch(kGemmInput, static_cast<size_t>(n * in) * 2));
      convert_f32_to_bf16(xs.f32(), xb, n * in, stream_);
      xin = xb;
    }
    CUBLAS_CHECK(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(of), static_cast<int>(n),
                              static_cast<int>(in), &alpha, w.data(), ab_type, static_cast<int>(in), xin, ab_type,
                              static_cast<int>(in), &beta, out.data(), CUDA_R_32F, static_cast<int>(of),
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  if (!bias.empty()) add_bias_rows(out.f32(), bias.f32(), n, of, stream_);
}

void CudaBackend::matmuls(const Tensor& x, const std::vector<Product>& products) {
  // Decode-sized products of bf16 weights: one launch of the few-row kernel for them all.
  const std::vector<SmallGemmProduct> launch = small_gemm_launch(x, products);
  if (launch.empty()) {
    for (const Product& p : products) matmul(x, p.w, p.bias, p.out, false);
    return;
  }
  small_gemm_bf16(x.f32(), x.rows(), x.cols(), launch.data(), static_cast<int>(launch.size()), false, stream_);
}

void CudaBackend::rmsnorm_matmuls(const Tensor& x, const Tensor& norm_weight, float eps, const Tensor& normed,
                                  const std::vector<Product>& products, bool gated, const Tensor& gated_out) {
  check_rmsnorm_matmuls(products, gated, gated_out);
  const bool norm_ok = x.dtype() == DType::f32 && norm_weight.dtype() == DType::f32 &&
                       norm_weight.numel() == x.cols() && (!gated || products[0].w.rows() == products[1].w.rows());
  // Decode-sized products of bf16 weights: one launch of the few-row kernel, which
  // normalizes x as it reads it (and with `gated` pairs gate and up rows and writes silu(g) * u),
  // so neither `normed` nor up is written.
  const std::vector<SmallGemmProduct> launch = small_gemm_launch(x, products);
  if (!launch.empty() && norm_ok && reinterpret_cast<uintptr_t>(norm_weight.data()) % 16 == 0) {
    expect(normed, x.rows(), x.cols(), DType::f32, "rmsnorm_matmuls", "normed");
    SmallGemmFusion fusion;
    fusion.norm = norm_weight.f32();
    fusion.eps = eps;
    fusion.swiglu = gated;
    small_gemm_bf16(x.f32(), x.rows(), x.cols(), launch.data(), static_cast<int>(launch.size()), false, stream_,
                    fusion);
    if (!gated_out.empty()) copy(products[0].out, gated_out);
    return;
  }
  // Larger products of bf16 weights (prefill chunks): the RMSNorm written once in bf16, which
  // every product reads as it is (matmul() would round an f32 `normed` once per product),
  // and with gated_out in bf16 silu(gate) * up rounded as it is written.
  bool bf16_weights = !products.empty();
  for (const Product& p : products) bf16_weights = bf16_weights && p.w.dtype() == DType::bf16;
  if (!bf16_weights || !norm_ok || x.rows() == 0) {
    Backend::rmsnorm_matmuls(x, norm_weight, eps, normed, products, gated, gated_out);
    return;
  }
  const int64_t n = x.rows(), d = x.cols();
  expect(normed, n, d, DType::f32, "rmsnorm_matmuls", "normed");
  auto* xb = static_cast<__nv_bfloat16*>(scratch(kGemmInput, static_cast<size_t>(n * d) * 2));
  rmsnorm_rows_bf16(x.f32(), norm_weight.f32(), eps, n, d, xb, stream_);
  const Tensor x_bf16(nullptr, xb, DType::bf16, n, d);
  // bf16 x: never kGemmInput (1-2 rows are widened into kGemmWide for the few-row kernel)
  for (const Product& p : products) matmul(x_bf16, p.w, p.bias, p.out, false);
  if (!gated) return;
  const Tensor &g = products[0].out, &u = products[1].out;
  expect(u, g.rows(), g.cols(), DType::f32, "rmsnorm_matmuls", "up");
  if (gated_out.dtype() == DType::bf16) {
    swiglu_to_bf16(g.f32(), u.f32(), g.numel(), static_cast<__nv_bfloat16*>(gated_out.data()), stream_);
    return;
  }
  swiglu_inplace(g.f32(), u.f32(), g.numel(), stream_);
  if (!gated_out.empty()) copy(g, gated_out);
}

bool CudaBackend::check_matmul(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out) {
  const int64_t n = x.rows(), in = x.cols(), of = w.rows();
  check((x.dtype() == DType::f32 || x.dtype() == DType::bf16) && (w.dtype() == DType::bf16 || w.dtype() == DType::f32),
        "matmul", "needs an f32 or bf16 x and a bf16 or f32 w, got x " + shape(x) + ", w " + shape(w));
  check(w.cols() == in, "matmul", "x is " + shape(x) + " but w is " + shape(w));
  expect(out, n, of, DType::f32, "matmul", "out");
  if (!bias.empty()) expect(bias, of, 1, DType::f32, "matmul", "bias");
  check(n < (int64_t(1) << 31) && in < (int64_t(1) << 31) && of < (int64_t(1) << 31), "matmul", "dimension over 2^31");
  return n > 0 && of > 0;
}

bool CudaBackend::small_gemm_takes(const Tensor& x, const Tensor& w) const {
  return options_.use_small_gemm && w.dtype() == DType::bf16 && x.dtype() == DType::f32 &&
         small_gemm_supported(x.rows(), x.cols(), w.rows(), x.data(), w.data());
}

SmallGemmProduct CudaBackend::small_gemm_product(const Tensor& w, const Tensor& bias, const Tensor& out) {
  SmallGemmProduct p;
  p.w = static_cast<const __nv_bfloat16*>(w.data());
  p.bias = bias.empty() ? nullptr : bias.f32();
  p.out = out.f32();
  p.of = w.rows();
  return p;
}

std::vector<SmallGemmProduct> CudaBackend::small_gemm_launch(const Tensor& x, const std::vector<Product>& products) {
  bool takes = !products.empty() && static_cast<int>(products.size()) <= kSmallGemmMaxProducts;
  for (const Product& p : products)  // every product checked, whatever the others
    takes = check_matmul(x, p.w, p.bias, p.out) && takes && small_gemm_takes(x, p.w);
  std::vector<SmallGemmProduct> launch;
  if (takes)
    for (const Product& p : products) launch.push_back(small_gemm_product(p.w, p.bias, p.out));
  return launch;
}

void CudaBackend::check_rope(const char* op, const Tensor& x, int64_t n_heads, const Tensor& inv_freq) {
  const int64_t half = inv_freq.cols();
  check(x.dtype() == DType::f32 && n_heads > 0 && x.cols() == n_heads * 2 * half, op,
        "x is " + shape(x) + " for " + std::to_string(n_heads) + " heads of " + std::to_string(2 * half));
  expect(inv_freq, 1, half, DType::f64, op, "inv_freq");
}

void CudaBackend::rope(const Tensor& x, int64_t n_heads, const Tensor& inv_freq, int64_t pos_start,
                       int64_t pos_stride) {
  check_rope("rope", x, n_heads, inv_freq);
  rope_strided(x.f32(), x.rows(), n_heads, inv_freq.cols(), inv_freq.f64(), pos_start, pos_stride, stream_);
}

void CudaBackend::rope_rows(const Tensor& x, int64_t n_heads, const Tensor& inv_freq,
                            const std::vector<int64_t>& positions) {
  check_rope("rope_rows", x, n_heads, inv_freq);
  const int64_t n = x.rows(), half = inv_freq.cols();
  check(static_cast<int64_t>(positions.size()) == n, "rope_rows",
        std::to_string(n) + " rows, " + std::to_string(positions.size()) + " positions");
  rope_at_positions(x.f32(), n, n_heads, half, inv_freq.f64(), positions.data(), stream_);
}

void CudaBackend::store_kv(const Tensor& k, const Tensor& v, const KvBlock& dst) {
  check(supports_kv_dtype(dst.dtype), "store_kv", std::string("a ") + kv_dtype_name(dst.dtype) + " KV cache");
  backend_checks::check_kv_block("cuda", "store_kv", dst);
  const int64_t n = dst.rows(), Hkv = dst.n_kv_heads, D = dst.head_dim;
  expect(k, n, Hkv * D, DType::f32, "store_kv", "k");
  expect(v, n, Hkv * D, DType::f32, "store_kv", "v");
  if (dst.dtype == KvDtype::bf16) {
    copy(k, dst.k);
    copy(v, dst.v);
    return;
  }
  check(D < (int64_t(1) << 31), "store_kv", "head_dim over 2^31");
  quantize_kv_fp8(k.f32(), n * Hkv, static_cast<int>(D), static_cast<uint8_t*>(dst.k.data()), dst.k_scale.f32(),
                  stream_);
  quantize_kv_fp8(v.f32(), n * Hkv, static_cast<int>(D), static_cast<uint8_t*>(dst.v.data()), dst.v_scale.f32(),
                  stream_);
}

void CudaBackend::store_kv_rows(const Tensor& k, const Tensor& v, const std::vector<KvBlock>& dst) {
  const int64_t B = k.rows();
  const KvBlock* first = check_kv_rows(k, v, dst);
  if (!first) return;
  check(supports_kv_dtype(first->dtype), "store_kv_rows", std::string("a ") + kv_dtype_name(first->dtype) + " KV cache");
  const bool fp8 = first->dtype == KvDtype::fp8;
  // The rows to store (a row without a destination belongs to another rank).
  std::vector<KvRowDst> rows;
  for (int64_t b = 0; b < B; ++b) {
    const KvBlock& d = dst[b];
    if (d.rows() == 0) continue;
    rows.push_back(kv_row_dst(b, d, "store_kv_rows"));
  }
  const int64_t Hkv = first->n_kv_heads, D = first->head_dim;
  expect(k, B, Hkv * D, DType::f32, "store_kv_rows", "k");
  expect(v, B, Hkv * D, DType::f32, "store_kv_rows", "v");
  check(D < (int64_t(1) << 31) && Hkv < (int64_t(1) << 31), "store_kv_rows", "heads or head_dim over 2^31");
  scatter_kv_rows(k.f32(), v.f32(), static_cast<int>(Hkv), static_cast<int>(D), fp8, rows.data(), static_cast<int64_t>(rows.size()), stream_);
}

void CudaBackend::rope_store_rows(const Tensor& q, const Tensor& q_out, const Tensor& k, const Tensor& v,
                                  int64_t n_heads, int64_t n_kv_heads, const Tensor& inv_freq,
                                  const std::vector<int64_t>& positions, const std::vector<KvBlock>& dst) {
  const int64_t n = q.rows(), D = 2 * inv_freq.cols();
  const bool with_kv = !k.empty();
  const KvBlock* first = with_kv && !dst.empty() ? check_kv_rows(k, v, dst) : nullptr;
  // One launch where the shapes are the ones it takes; otherwise the ops one by one (which
  // also say what is wrong with arguments that fit neither).
  const bool one_launch =
      n >= 1 && n <= kRopeStoreMaxRows && static_cast<int64_t>(positions.size()) == n && n_heads > 0 &&
      q.dtype() == DType::f32 && q.cols() == n_heads * D && inv_freq.dtype() == DType::f64 && inv_freq.rows() == 1 &&
      q_out.rows() == n && q_out.cols() == q.cols() && (q_out.dtype() == DType::bf16 || q_out.dtype() == DType::f32) &&
      D < (int64_t(1) << 30) && n_heads < (int64_t(1) << 24) &&
      (!with_kv || (n_kv_heads > 0 && n_kv_heads < (int64_t(1) << 24) && k.dtype() == DType::f32 &&
                    v.dtype() == DType::f32 && k.rows() == n && v.rows() == n && k.cols() == n_kv_heads * D &&
                    v.cols() == k.cols())) &&
      (!first || (supports_kv_dtype(first->dtype) && first->n_kv_heads == n_kv_heads && first->head_dim == D));
  if (!one_launch) {
    Backend::rope_store_rows(q, q_out, k, v, n_heads, n_kv_heads, inv_freq, positions, dst);
    return;
  }
  const bool fp8 = first && first->dtype == KvDtype::fp8;
  std::vector<KvRowDst> rows(static_cast<size_t>(n), KvRowDst{0, nullptr, nullptr, nullptr, nullptr});
  for (int64_t b = 0; first && b < n; ++b) {
    const KvBlock& d = dst[b];
    if (d.rows() == 0) continue;  // another rank owns the row
    rows[b] = kv_row_dst(b, d, "rope_store_rows");
  }
  ringinfer::rope_store_rows(q.f32(), q_out.data(), q_out.dtype() == DType::bf16, with_kv ? k.f32() : nullptr,
                             with_kv ? v.f32() : nullptr, n, static_cast<int>(n_heads), static_cast<int>(n_kv_heads),
                             static_cast<int>(D), inv_freq.f64(), positions.data(), rows.data(), fp8, stream_);
}

void CudaBackend::rope_store(const Tensor& q, const Tensor& q_out, const Tensor& k, const Tensor& v,
                             int64_t n_heads, int64_t n_kv_heads, const Tensor& inv_freq, int64_t pos_start,
                             int64_t pos_stride, const KvBlock& dst) {
  const int64_t n = q.rows(), D = 2 * inv_freq.cols();
  const bool with_kv = !k.empty(), store = with_kv && dst.rows() != 0;
  if (store) backend_checks::check_kv_block("cuda", "rope_store", dst);
  // One pass where the shapes are the ones it takes; otherwise the ops one by one (which
  // also say what is wrong with arguments that fit neither).
  const bool one_pass =
      n >= 1 && n_heads > 0 && q.dtype() == DType::f32 && q.cols() == n_heads * D && inv_freq.dtype() == DType::f64 &&
      inv_freq.rows() == 1 && D >= 2 && q_out.rows() == n && q_out.cols() == q.cols() &&
      (q_out.dtype() == DType::bf16 || q_out.dtype() == DType::f32) && D < (int64_t(1) << 30) &&
      n_heads < (int64_t(1) << 24) &&
      (!with_kv || (n_kv_heads > 0 && n_kv_heads < (int64_t(1) << 24) && k.dtype() == DType::f32 &&
                    v.dtype() == DType::f32 && k.rows() == n && v.rows() == n && k.cols() == n_kv_heads * D &&
                    v.cols() == k.cols())) &&
      (!store || (supports_kv_dtype(dst.dtype) && dst.rows() == n && dst.n_kv_heads == n_kv_heads &&
                  dst.head_dim == D));
  if (!one_pass) {
    Backend::rope_store(q, q_out, k, v, n_heads, n_kv_heads, inv_freq, pos_start, pos_stride, dst);
    return;
  }
  const bool fp8 = store && dst.dtype == KvDtype::fp8;
  const KvRowDst first = store ? kv_row_dst(0, dst, "rope_store") : KvRowDst{0, nullptr, nullptr, nullptr, nullptr};
  rope_store_strided(q.f32(), q_out.data(), q_out.dtype() == DType::bf16, with_kv ? k.f32() : nullptr,
                     with_kv ? v.f32() : nullptr, n, static_cast<int>(n_heads), static_cast<int>(n_kv_heads),
                     static_cast<int>(D), inv_freq.f64(), pos_start, pos_stride, first, fp8, stream_);
}

void CudaBackend::attention_reset(const Tensor& o, const Tensor& lse) {
  check(o.dtype() == DType::f32 && lse.dtype() == DType::f32 && o.rows() == lse.rows(), "attention_reset",
        "o is " + shape(o) + ", lse is " + shape(lse));
  if (!o.empty()) CUDA_CHECK(cudaMemsetAsync(o.data(), 0, o.bytes(), stream_));
  fill_f32(lse.f32(), -std::numeric_limits<float>::infinity(), lse.numel(), stream_);
}

void CudaBackend::swiglu(const Tensor& gate, const Tensor& up) {
  expect(up, gate.rows(), gate.cols(), DType::f32, "swiglu", "up");
  check(gate.dtype() == DType::f32, "swiglu", "gate must be f32");
  swiglu_inplace(gate.f32(), up.f32(), gate.numel(), stream_);
}

void CudaBackend::target_logprobs(const Tensor& logits, const Tensor& targets, const Tensor& out) {
  const int64_t n = logits.rows(), V = logits.cols();
  check(logits.dtype() == DType::f32 && V >= 1, "target_logprobs", "logits is " + shape(logits));
  expect(targets, n, 1, DType::i32, "target_logprobs", "targets");
  expect(out, n, 1, DType::f32, "target_logprobs", "out");
  target_logprobs_rows(logits.f32(), n, V, targets.i32(), out.f32(), error_, stream_);
}

void CudaBackend::sample(const Tensor& logits, const SamplingParams& p, double u, const Tensor& counts,
                         const Tensor& token) {
  check(logits.rows() == 1 && logits.cols() >= 1 && logits.dtype() == DType::f32, "sample",
        "logits is " + shape(logits) + ", expected one f32 row");
  expect(token, 1, 1, DType::i32, "sample", "token");
  // The counts live on the device (the engine keeps them there), so penalties cost one
  // kernel and no transfer.
  if (p.penalized()) {
    expect(counts, 1, logits.cols(), DType::i32, "sample", "counts");
    penalize_row(logits.f32(), logits.cols(), counts.i32(), p.repetition_penalty, p.frequency_penalty,
                 p.presence_penalty, stream_);
  }
  if (samples_on_device(p)) {  // greedy
    argmax_row(logits.f32(), logits.cols(), token.i32(), error_, scratch(kArgmax, kArgmaxWorkspaceBytes), stream_);
    return;
  }
  // Top-p on the host with the one shared rule (sampling.h): one row of V floats per
  // generated token, and bit-identical choices to the CPU backend for equal logits.
  std::vector<float> row(static_cast<size_t>(logits.cols()));
  copy_to_host(row.data(), logits);
  const int32_t id = sample_token(row.data(), logits.cols(), p, u);
  copy_from_host(token, &id);
  device_wait::wait_stream(stream_, "cuda backend sample: the compute stream");  // `id` lives on this frame
}

}  // namespace cuda
}  // namespace ringinfer
