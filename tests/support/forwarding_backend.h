#pragma once
// A Backend that hands every op it must implement to another backend, for tests that change
// one or two of its answers (the query dtype, the products' input type) and compare. The ops
// with a default in terms of the plain ones (matmuls, rmsnorm_matmuls, the row-wise decode
// forms, rope_store_rows, attention_rows) are deliberately not forwarded: they run Backend's
// defaults, so a test sees the plain ops one by one, as a backend without those fusions would.
#include <memory>
#include <utility>

#include "ringinfer/backend.h"

namespace ringinfer::test {

class ForwardingBackend : public Backend {
 public:
  explicit ForwardingBackend(std::unique_ptr<Backend> inner) : b_(std::move(inner)) {}

  const char* name() const override { return b_->name(); }
  Stream stream() override { return b_->stream(); }
  Stream comm_stream() override { return b_->comm_stream(); }
  Stream copy_stream() override { return b_->copy_stream(); }
  std::unique_ptr<Event> record(Stream s) override { return b_->record(s); }
  void wait(Stream s, const Event& e) override { b_->wait(s, e); }
  void synchronize() override { b_->synchronize(); }
  Tensor alloc(int64_t r, int64_t c, DType t) override { return b_->alloc(r, c, t); }
  Tensor upload_weight(const HostTensor& w) override { return b_->upload_weight(w); }
  bool takes_quantized_weights() const override { return b_->takes_quantized_weights(); }
  KvDtype default_kv_dtype() const override { return b_->default_kv_dtype(); }
  bool supports_kv_dtype(KvDtype t) const override { return b_->supports_kv_dtype(t); }
  void copy_from_host(const Tensor& d, const void* s) override { b_->copy_from_host(d, s); }
  void copy_to_host(void* d, const Tensor& s) override { b_->copy_to_host(d, s); }
  Tensor alloc_host(int64_t r, int64_t c, DType t) override { return b_->alloc_host(r, c, t); }
  void copy_async(const Tensor& s, const Tensor& d, Stream st) override { b_->copy_async(s, d, st); }
  void copy(const Tensor& s, const Tensor& d) override { b_->copy(s, d); }
  void embed(const Tensor& t, const Tensor& k, const Tensor& o) override { b_->embed(t, k, o); }
  void rmsnorm(const Tensor& x, const Tensor& w, float eps, const Tensor& o) override { b_->rmsnorm(x, w, eps, o); }
  void matmul(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& o, bool acc) override {
    b_->matmul(x, w, b, o, acc);
  }
  DType gemm_input_dtype() const override { return b_->gemm_input_dtype(); }
  void rope(const Tensor& x, int64_t h, const Tensor& f, int64_t p0, int64_t ps) override { b_->rope(x, h, f, p0, ps); }
  void store_kv(const Tensor& k, const Tensor& v, const KvBlock& d) override { b_->store_kv(k, v, d); }
  DType attention_state_dtype() const override { return b_->attention_state_dtype(); }
  void attention_reset(const Tensor& o, const Tensor& l) override { b_->attention_reset(o, l); }
  void attention(const Tensor& q, const KvBlock& kv, const AttentionShape& sh, const Tensor& o,
                 const Tensor& l) override {
    b_->attention(q, kv, sh, o, l);
  }
  DType attention_query_dtype(int64_t d) const override { return b_->attention_query_dtype(d); }
  KvBlock attention_input(const KvBlock& kv) override { return b_->attention_input(kv); }
  void swiglu(const Tensor& g, const Tensor& u) override { b_->swiglu(g, u); }
  void target_logprobs(const Tensor& l, const Tensor& t, const Tensor& o) override { b_->target_logprobs(l, t, o); }
  void sample(const Tensor& l, const SamplingParams& p, double u, const Tensor& c, const Tensor& t) override {
    b_->sample(l, p, u, c, t);
  }
  void merge_attention(const Tensor& o, const Tensor& l, const Tensor& o2, const Tensor& l2) override {
    b_->merge_attention(o, l, o2, l2);
  }
  int64_t allocated_bytes() const override { return b_->allocated_bytes(); }
  int64_t peak_allocated_bytes() const override { return b_->peak_allocated_bytes(); }
  void reset_peak_bytes() override { b_->reset_peak_bytes(); }

 protected:
  Backend& inner() { return *b_; }

 private:
  std::unique_ptr<Backend> b_;
};

}  // namespace ringinfer::test
