// The KV cache's storage (backend.h KvBlock): names, sizes, the one-allocation layout.
#include <string>
#include <vector>

#include "ringinfer/backend.h"
#include "ringinfer/error.h"

namespace ringinfer {

const char* kv_dtype_name(KvDtype t) {
  switch (t) {
    case KvDtype::f32: return "f32";
    case KvDtype::bf16: return "bf16";
    case KvDtype::fp8: return "fp8";
  }
  return "?";
}

KvDtype parse_kv_dtype(const std::string& name) {
  for (KvDtype t : {KvDtype::f32, KvDtype::bf16, KvDtype::fp8})
    if (name == kv_dtype_name(t)) return t;
  throw Error("KV cache dtype must be f32, bf16 or fp8, not '" + name + "'");
}

namespace {
DType value_dtype(KvDtype t) {
  switch (t) {
    case KvDtype::f32: return DType::f32;
    case KvDtype::bf16: return DType::bf16;
    case KvDtype::fp8: return DType::u8;
  }
  return DType::f32;
}
}  // namespace

int64_t kv_bytes_per_token(KvDtype t, int64_t n_kv_heads, int64_t head_dim) {
  const int64_t scales = t == KvDtype::fp8 ? n_kv_heads * 4 : 0;
  return 2 * (n_kv_heads * head_dim * static_cast<int64_t>(dtype_bytes(value_dtype(t))) + scales);
}

KvBlock KvBlock::rows(int64_t begin, int64_t count) const {
  KvBlock b = *this;
  b.k = k.rows(begin, count);
  b.v = v.rows(begin, count);
  if (dtype == KvDtype::fp8) {
    b.k_scale = k_scale.rows(begin, count);
    b.v_scale = v_scale.rows(begin, count);
  }
  b.packed = Tensor();
  return b;
}

KvBlock Backend::alloc_kv(int64_t rows, int64_t n_kv_heads, int64_t head_dim, KvDtype dtype) {
  RI_CHECK(rows >= 0 && n_kv_heads > 0 && head_dim > 0, "alloc_kv: bad shape");
  RI_CHECK(supports_kv_dtype(dtype), std::string(name()) + " backend: a " + kv_dtype_name(dtype) +
                                         " KV cache is not supported on this device (--kv-dtype)");
  KvBlock b;
  b.dtype = dtype;
  b.n_kv_heads = n_kv_heads;
  b.head_dim = head_dim;
  const DType vt = value_dtype(dtype);
  const int64_t cols = n_kv_heads * head_dim;
  // Parts at 256-byte boundaries (16-byte vector loads in every kernel).
  auto round_up = [](int64_t n) { return (n + 255) / 256 * 256; };
  const int64_t value_bytes = round_up(rows * cols * static_cast<int64_t>(dtype_bytes(vt)));
  const int64_t scale_bytes = dtype == KvDtype::fp8 ? round_up(rows * n_kv_heads * 4) : 0;
  b.packed = alloc(1, 2 * value_bytes + 2 * scale_bytes, DType::u8);
  char* base = static_cast<char*>(b.packed.data());
  // A view at byte offset `at` of the packed allocation, sharing its ownership.
  auto part = [&](int64_t at, DType t, int64_t c) {
    return Tensor(std::shared_ptr<void>(b.packed.storage(), base + at), base + at, t, rows, c);
  };
  b.k = part(0, vt, cols);
  b.v = part(value_bytes, vt, cols);
  if (dtype == KvDtype::fp8) {
    b.k_scale = part(2 * value_bytes, DType::f32, n_kv_heads);
    b.v_scale = part(2 * value_bytes + scale_bytes, DType::f32, n_kv_heads);
  }
  return b;
}

const KvBlock* Backend::check_kv_rows(const Tensor& k, const Tensor& v, const std::vector<KvBlock>& dst) {
  if (static_cast<int64_t>(dst.size()) != k.rows() || v.rows() != k.rows())
    throw Error("backend: store_kv_rows: " + std::to_string(k.rows()) + " k rows, " + std::to_string(v.rows()) +
                " v rows, " + std::to_string(dst.size()) + " destinations");
  const KvBlock* first = nullptr;
  for (size_t b = 0; b < dst.size(); ++b) {
    if (dst[b].rows() == 0) continue;
    if (!first) first = &dst[b];
    if (dst[b].rows() != 1 || dst[b].dtype != first->dtype || dst[b].n_kv_heads != first->n_kv_heads ||
        dst[b].head_dim != first->head_dim)
      throw Error("backend: store_kv_rows: destination " + std::to_string(b) +
                  " is not a one-row block of the others' dtype and heads");
  }
  return first;
}

void Backend::copy_kv(const KvBlock& src, const KvBlock& dst) {
  RI_CHECK(src.dtype == dst.dtype && src.n_kv_heads == dst.n_kv_heads && src.head_dim == dst.head_dim &&
               src.rows() == dst.rows(),
           "copy_kv: blocks of different dtype or shape");
  copy(src.k, dst.k);
  copy(src.v, dst.v);
  if (src.dtype == KvDtype::fp8) {
    copy(src.k_scale, dst.k_scale);
    copy(src.v_scale, dst.v_scale);
  }
}

}  // namespace ringinfer
