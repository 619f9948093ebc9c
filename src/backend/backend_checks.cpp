#include "backend/backend_checks.h"

#include "ringinfer/error.h"

namespace ringinfer::backend_checks {

std::string shape(const Tensor& t) {
  return "(" + std::to_string(t.rows()) + ", " + std::to_string(t.cols()) + ") " + dtype_name(t.dtype());
}

void check(bool cond, const char* backend, const char* op, const std::string& what) {
  if (!cond) throw Error(std::string(backend) + " backend: " + op + ": " + what);
}

void expect(const Tensor& t, int64_t rows, int64_t cols, DType dtype, const char* backend, const char* op,
            const char* what) {
  if (t.rows() == rows && t.cols() == cols && t.dtype() == dtype) return;
  check(false, backend, op,
        std::string(what) + " is " + shape(t) + ", expected (" + std::to_string(rows) + ", " +
            std::to_string(cols) + ") " + dtype_name(dtype));
}

void check_kv_block(const char* backend, const char* op, const KvBlock& kv) {
  const int64_t n = kv.k.rows(), Hkv = kv.n_kv_heads, D = kv.head_dim;
  const DType vt = kv.dtype == KvDtype::f32 ? DType::f32 : kv.dtype == KvDtype::bf16 ? DType::bf16 : DType::u8;
  expect(kv.k, n, Hkv * D, vt, backend, op, "k");
  expect(kv.v, n, Hkv * D, vt, backend, op, "v");
  if (kv.dtype == KvDtype::fp8) {
    expect(kv.k_scale, n, Hkv, DType::f32, backend, op, "k_scale");
    expect(kv.v_scale, n, Hkv, DType::f32, backend, op, "v_scale");
  }
}

void check_attention(const char* backend, const Tensor& q, const KvBlock& kv, const AttentionShape& sh,
                     const Tensor& o, const Tensor& lse, bool kv_dtype_supported, DType q_dtype, DType state) {
  const int64_t H = sh.n_heads, Hkv = sh.n_kv_heads, D = sh.head_dim;
  check(H > 0 && Hkv > 0 && D > 0 && H % Hkv == 0, backend, "attention",
        "heads " + std::to_string(H) + "/" + std::to_string(Hkv) + " x " + std::to_string(D));
  check(sh.n_ranks >= 1 && sh.q_rank >= 0 && sh.q_rank < sh.n_ranks && sh.k_rank >= 0 && sh.k_rank < sh.n_ranks &&
            sh.q_start >= 0,
        backend, "attention", "bad stripe coordinates");
  check(kv_dtype_supported, backend, "attention", std::string("a ") + kv_dtype_name(kv.dtype) + " KV cache");
  check(kv.n_kv_heads == Hkv && kv.head_dim == D, backend, "attention", "the KV block's heads differ from the shape's");
  check_kv_block(backend, "attention", kv);
  const int64_t nq = q.rows();
  expect(q, nq, H * D, q.dtype() == q_dtype ? q_dtype : DType::f32, backend, "attention", "q");
  expect(o, nq, H * D, state, backend, "attention", "o");
  expect(lse, nq, H, state, backend, "attention", "lse");
}

}  // namespace ringinfer::backend_checks

namespace ringinfer {

void Backend::check_rmsnorm_matmuls(const std::vector<Product>& products, bool gated, const Tensor& gated_out) const {
  if (gated && products.size() != 2)
    throw Error("backend: rmsnorm_matmuls: gated takes two products (gate, up), got " +
                std::to_string(products.size()));
  if (gated_out.empty()) return;
  if (!gated) throw Error("backend: rmsnorm_matmuls: gated_out without gated");
  const Tensor& g = products[0].out;
  if (gated_out.rows() != g.rows() || gated_out.cols() != g.cols() ||
      (gated_out.dtype() != DType::f32 && gated_out.dtype() != gemm_input_dtype()))
    throw Error("backend: rmsnorm_matmuls: gated_out is " + backend_checks::shape(gated_out) + " for a gate of " +
                backend_checks::shape(g) + " (f32 or " + dtype_name(gemm_input_dtype()) + ")");
}

}  // namespace ringinfer
