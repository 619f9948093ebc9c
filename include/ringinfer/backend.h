#pragma once
// Backend: tensor buffers plus the coarse ops of one transformer forward (DESIGN §7).
// The engine is written once against this contract; the CPU (backend/cpu/) and CUDA
// (backend/cuda/) backends implement it.
//
// Contract:
// - Buffers are owned by the backend (host memory on the CPU, device memory on CUDA).
//   A Tensor is a 2-D row-major view (rows x cols, row stride = cols) that shares
//   ownership of its storage; rows() takes a contiguous row range without copying.
// - Every op is enqueued on the backend's compute stream() and may return before it has
//   run (CUDA). Host-visible results need copy_to_host(), which waits. Communication
//   (comm.h) takes stream() or comm_stream(); events order the two. On the CPU ops run
//   at once and streams and events are no-ops.
// - Activations, (O, LSE), logits and logprobs are fp32 (the running attention state may
//   be f64: attention_state_dtype(); the CPU backend's is). Weights and the KV cache may be
//   stored narrower (bf16 on CUDA); upload_weight() picks the weights' storage, the
//   caller the KV cache's (KvDtype; each backend names its default and what it supports).
// - bf16 is taken and handed by these ops only: copy() converts f32 <-> bf16 (rounding to
//   nearest even), and f64 -> f32 (to nearest) where attention_state_dtype() is f64;
//   attention() reads q in f32 or in attention_query_dtype() (bf16 on CUDA where its
//   tensor-core kernels run), so a caller may store a layer's queries at that width; KV
//   blocks (store_kv, copy_kv, attention_input) in their KvDtype. Every other op takes and
//   hands fp32 (or i32 / f64 where it says so).
// - Host-resident buffers (alloc_host) are touched by copy_async() only, which moves them
//   to and from backend buffers on any stream; no op reads them.
// - Masking follows striped.h's key_visible() alone; RoPE angles are computed in float64
//   from global positions, cos/sin then rounded to fp32 (DESIGN §9).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ringinfer/comm.h"   // Stream
#include "ringinfer/error.h"
#include "ringinfer/model.h"  // HostTensor, RopeConfig
#include "ringinfer/sampling.h"  // SamplingParams
#include "ringinfer/striped.h"  // merge_lse, for merge_attention's default

namespace ringinfer {

// u8: raw bytes (fp8 e4m3 bits, packed buffers).
// q8_0 .. q5_1, iq4_nl: ggml's blocks of 32 weights, q2_k .. q6_k, iq4_xs its super-blocks of 256
// (model/dtype_convert.h gives the layouts), kept quantized by the CPU backend for GGUF
// weights (Backend::takes_quantized_weights).
enum class DType { f32, bf16, i32, f64, u8, f16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs };

// Elements per storage block (32 or 256 for the quantized types, else 1) and bytes per block.
inline int64_t dtype_block(DType t) {
  switch (t) {
    case DType::q8_0: case DType::q4_0: case DType::q4_1: case DType::q5_0: case DType::q5_1: case DType::iq4_nl:
      return 32;
    case DType::q2_k: case DType::q3_k: case DType::q4_k: case DType::q5_k: case DType::q6_k: case DType::iq4_xs:
      return 256;
    default: return 1;
  }
}
inline size_t dtype_block_bytes(DType t) {
  switch (t) {
    case DType::u8: return 1;
    case DType::bf16: case DType::f16: return 2;
    case DType::f32: case DType::i32: return 4;
    case DType::f64: return 8;
    case DType::q8_0: return 34;
    case DType::q4_0: return 18;
    case DType::q4_1: return 20;
    case DType::q5_0: return 22;
    case DType::q5_1: return 24;
    case DType::q2_k: return 84;
    case DType::q3_k: return 110;
    case DType::q4_k: return 144;
    case DType::q5_k: return 176;
    case DType::q6_k: return 210;
    case DType::iq4_nl: return 18;
    case DType::iq4_xs: return 136;
  }
  return 0;
}
// Bytes per element of the unblocked types (a block type's bytes need storage_bytes).
inline size_t dtype_bytes(DType t) { return dtype_block(t) == 1 ? dtype_block_bytes(t) : 0; }
// Bytes of n elements (whole blocks).
inline size_t storage_bytes(DType t, int64_t n) {
  return static_cast<size_t>(n / dtype_block(t)) * dtype_block_bytes(t);
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
    case DType::f64: return "f64";
    case DType::u8: return "u8";
    case DType::f16: return "f16";
    case DType::q8_0: return "q8_0";
    case DType::q4_0: return "q4_0";
    case DType::q4_1: return "q4_1";
    case DType::q5_0: return "q5_0";
    case DType::q5_1: return "q5_1";
    case DType::q2_k: return "q2_k";
    case DType::q3_k: return "q3_k";
    case DType::q4_k: return "q4_k";
    case DType::q5_k: return "q5_k";
    case DType::q6_k: return "q6_k";
    case DType::iq4_nl: return "iq4_nl";
    case DType::iq4_xs: return "iq4_xs";
  }
  return "?";
}

class Tensor {
 public:
  Tensor() = default;
  Tensor(std::shared_ptr<void> storage, void* data, DType dtype, int64_t rows, int64_t cols)
      : storage_(std::move(storage)), data_(data), dtype_(dtype), rows_(rows), cols_(cols) {}

  bool empty() const { return data_ == nullptr || rows_ * cols_ == 0; }
  void* data() const { return data_; }
  const std::shared_ptr<void>& storage() const { return storage_; }  // for views of other types (KvBlock)
  DType dtype() const { return dtype_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t numel() const { return rows_ * cols_; }
  size_t bytes() const { return storage_bytes(dtype_, numel()); }
  // Rows [begin, begin + count) of this tensor, sharing its storage. Throws when out of range.
  Tensor rows(int64_t begin, int64_t count) const {
    if (begin < 0 || count < 0 || begin + count > rows_)
      throw Error("tensor: rows [" + std::to_string(begin) + ", " + std::to_string(begin + count) +
                  ") outside a tensor of " + std::to_string(rows_) + " rows");
    return Tensor(storage_, static_cast<char*>(data_) + storage_bytes(dtype_, begin * cols_), dtype_, count, cols_);
  }
  // The same elements seen as (rows, cols), sharing storage; rows * cols must equal numel().
  // With rows() this gives column ranges of a one-row tensor: t.reshaped(n, 1).rows(b, c).reshaped(1, c).
  Tensor reshaped(int64_t rows, int64_t cols) const {
    if (rows < 0 || cols < 0 || rows * cols != numel())
      throw Error("tensor: cannot view " + std::to_string(rows_) + " x " + std::to_string(cols_) + " as " +
                  std::to_string(rows) + " x " + std::to_string(cols));
    return Tensor(storage_, data_, dtype_, rows, cols);
  }
  // Typed pointers (host memory on the CPU backend only).
  float* f32() const { return static_cast<float*>(data_); }
  int32_t* i32() const { return static_cast<int32_t*>(data_); }
  double* f64() const { return static_cast<double*>(data_); }

 private:
  std::shared_ptr<void> storage_;  // keeps the allocation alive; null for an empty tensor
  void* data_ = nullptr;           // first element of this view
  DType dtype_ = DType::f32;
  int64_t rows_ = 0, cols_ = 0;
};

// Shapes and stripe coordinates of one attention call: local queries of rank q_rank
// against a block of keys of rank k_rank (DESIGN §2). Query row i has local index
// q_start + i; key row j has local index j.
struct AttentionShape {
  int64_t n_heads = 0;     // query heads H
  int64_t n_kv_heads = 0;  // key/value heads Hkv; query head h reads kv head h / (H / Hkv)
  int64_t head_dim = 0;    // D
  int64_t q_start = 0;     // local index of query row 0
  int q_rank = 0;          // rank r that owns the queries
  int k_rank = 0;          // rank s that owns the keys
  int n_ranks = 1;         // N, the CP group size
  float scale = 0.0f;      // softmax scale, 1/sqrt(D)
};

// ---------------------------------------------------------------- the KV cache
// Element type of the KV cache (kv_quant.h defines the rounding of each): f32 (CPU
// only), bf16, or fp8 e4m3 with one f32 scale per token and KV head.
enum class KvDtype { f32, bf16, fp8 };
const char* kv_dtype_name(KvDtype t);             // "f32" | "bf16" | "fp8"
KvDtype parse_kv_dtype(const std::string& name);  // throws Error for any other name
// Bytes of one token's K and V, Hkv heads of D values, scales included.
int64_t kv_bytes_per_token(KvDtype t, int64_t n_kv_heads, int64_t head_dim);

// K and V of `rows` tokens, Hkv heads of D values each: a layer's cache, a ring block, or
// a row range of one. Backend::alloc_kv() makes the four parts views of one allocation,
// `packed`, so a ring step moves one buffer (values and scales together).
struct KvBlock {
  KvDtype dtype = KvDtype::f32;
  int64_t n_kv_heads = 0, head_dim = 0;
  Tensor k, v;              // (rows, Hkv*D): f32, bf16, or u8 holding e4m3 bits (fp8)
  Tensor k_scale, v_scale;  // (rows, Hkv) f32 dequantization scales; fp8 only, else empty
  Tensor packed;            // (1, bytes) u8: the whole allocation; empty in a rows() view

  int64_t rows() const { return k.rows(); }
  // Tokens [begin, begin + count), sharing storage (not packed). Throws when out of range.
  KvBlock rows(int64_t begin, int64_t count) const;
};

// An ordering point on a stream (cudaEvent_t on CUDA; nothing on the CPU).
class Event {
 public:
  virtual ~Event() = default;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;  // "cpu" | "cuda"

  // ---------------------------------------------------------------- streams, events
  virtual Stream stream() = 0;       // where every op below is enqueued
  virtual Stream comm_stream() = 0;  // high-priority stream for ring transfers
  virtual Stream copy_stream() = 0;  // host <-> backend copies (copy_async) beside compute
  virtual std::unique_ptr<Event> record(Stream s) = 0;
  virtual void wait(Stream s, const Event& e) = 0;  // later work on s waits for e
  virtual void synchronize() = 0;                   // host waits for all three streams

  // ---------------------------------------------------------------- memory
  virtual Tensor alloc(int64_t rows, int64_t cols, DType dtype) = 0;  // uninitialised
  // A weight matrix (out, in) or vector (n): rows = shape[0], cols = the rest (1 for vectors).
  virtual Tensor upload_weight(const HostTensor& w) = 0;
  // Whether upload_weight() takes GGUF weights still quantized (HostTensor::blocks) and
  // computes on them; otherwise loaders hand it fp32.
  virtual bool takes_quantized_weights() const { return false; }
  // KV storage for `rows` tokens (uninitialised), one allocation; throws Error when this
  // backend does not store `dtype`.
  KvBlock alloc_kv(int64_t rows, int64_t n_kv_heads, int64_t head_dim, KvDtype dtype);
  virtual KvDtype default_kv_dtype() const = 0;  // f32 on the CPU, bf16 on CUDA
  virtual bool supports_kv_dtype(KvDtype t) const = 0;
  virtual void copy_from_host(const Tensor& dst, const void* src) = 0;  // dst.bytes() bytes
  virtual void copy_to_host(void* dst, const Tensor& src) = 0;         // waits for stream()
  // A buffer in host memory (uninitialised) that copy_async() moves to and from backend
  // buffers: pinned on CUDA, so the copies run beside compute; on the CPU the same memory
  // as alloc() (and counted by allocated_bytes(), which elsewhere counts backend memory only).
  virtual Tensor alloc_host(int64_t rows, int64_t cols, DType dtype) = 0;
  // dst = src, the same shape and dtype, one of them from alloc_host() and the other a
  // backend buffer, enqueued on s (CUDA: returns at once; order it against the other
  // streams with record()/wait(), and keep both buffers alive until it has run).
  virtual void copy_async(const Tensor& src, const Tensor& dst, Stream s) = 0;

  // ---------------------------------------------------------------- ops
  // dst = src, same shape; f32 -> bf16 rounds to nearest even; f64 -> f32 (to nearest) on
  // backends whose attention_state_dtype() is f64, for the state's final rounding.
  virtual void copy(const Tensor& src, const Tensor& dst) = 0;
  // out (n, hidden) = table[tokens[i]]; tokens (n, 1) i32, each in [0, table.rows()).
  virtual void embed(const Tensor& table, const Tensor& tokens, const Tensor& out) = 0;
  // out = weight * x / sqrt(mean(x^2) + eps), row by row; out may be x.
  virtual void rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) = 0;
  // out (n, out_f) = x (n, in_f) W^T (+ bias (out_f) when not empty) (+ out when accumulate).
  // x is f32, or gemm_input_dtype() where that is narrower (read as it is).
  virtual void matmul(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out,
                      bool accumulate) = 0;
  // The element type this backend's products read their input in: f32 on the CPU; on CUDA
  // bf16 (its products multiply bf16 operands and convert an f32 x once per call), so a
  // caller that writes a product's input anyway (the MLP's silu(gate) * up for the down
  // projection) hands it over in bf16 and saves the conversion pass. Rounding an f32 x to
  // it and passing that gives bitwise the result of passing the f32 x.
  virtual DType gemm_input_dtype() const { return DType::f32; }
  // out = x w^T (+ bias) for each product, all of the same x (a layer's Q, K, V; gate and
  // up), as matmul() without accumulate gives each: the default runs matmul() for each; CUDA
  // runs decode-sized ones as one launch.
  struct Product {
    Tensor w, bias, out;
  };
  virtual void matmuls(const Tensor& x, const std::vector<Product>& products) {
    for (const Product& p : products) matmul(x, p.w, p.bias, p.out, false);
  }
  // matmuls() of RMSNorm(x) (rmsnorm() with norm_weight and eps), the RMSNorm into
  // `normed` (x's shape) first. With `gated` the products are gate and up of one shape and
  // products[0].out receives swiglu()'s silu(gate) * up; products[1].out is then scratch.
  // With `gated` and `gated_out` (gate's shape, f32 or gemm_input_dtype()), silu(gate) * up
  // goes there instead, rounded once to its type, and both products' outs are scratch.
  // `normed` is scratch too: a backend may form the products without writing it. The
  // default runs the ops named; CUDA runs decode-sized ones as one launch (small_gemm.h)
  // and larger ones from one bf16 RMSNorm, with no f32 `normed` and no conversion per
  // product (the same bits).
  virtual void rmsnorm_matmuls(const Tensor& x, const Tensor& norm_weight, float eps, const Tensor& normed,
                               const std::vector<Product>& products, bool gated = false,
                               const Tensor& gated_out = Tensor()) {
    check_rmsnorm_matmuls(products, gated, gated_out);
    rmsnorm(x, norm_weight, eps, normed);
    matmuls(normed, products);
    if (!gated) return;
    swiglu(products[0].out, products[1].out);
    if (!gated_out.empty()) copy(products[0].out, gated_out);
  }
  // rmsnorm_matmuls()'s product list, gated flag and gated_out (throws Error when they do
  // not go together).
  void check_rmsnorm_matmuls(const std::vector<Product>& products, bool gated, const Tensor& gated_out) const;
  // In place on x (n, n_heads * D), Hugging Face pairing (d, d + D/2). Row i has global
  // position pos_start + i * pos_stride; angle = position * inv_freq[d] in float64;
  // inv_freq (1, D/2) f64 from rope_inv_freq().
  virtual void rope(const Tensor& x, int64_t n_heads, const Tensor& inv_freq, int64_t pos_start,
                    int64_t pos_stride) = 0;
  // rope() of a decode batch: row i of x (B, n_heads * D) at global position positions[i]
  // (positions.size() == B; any order, repeats allowed), each row rotated exactly as
  // rope(x.rows(i, 1), n_heads, inv_freq, positions[i], 1) rotates it. The default calls
  // rope() row by row; CUDA rotates the rows in one launch (a few for large B).
  virtual void rope_rows(const Tensor& x, int64_t n_heads, const Tensor& inv_freq,
                         const std::vector<int64_t>& positions) {
    if (static_cast<int64_t>(positions.size()) != x.rows())
      throw Error("backend: rope_rows: " + std::to_string(x.rows()) + " rows, " + std::to_string(positions.size()) +
                  " positions");
    for (int64_t i = 0; i < x.rows(); ++i) rope(x.rows(i, 1), n_heads, inv_freq, positions[i], 1);
  }
  // Writes the fp32 rows k, v (n, Hkv*D) into dst (n rows) in dst's dtype, rounding as
  // kv_quant.h defines (fp8: each (token, head) gets its scale here).
  virtual void store_kv(const Tensor& k, const Tensor& v, const KvBlock& dst) = 0;
  // store_kv() of a decode batch: row b of k, v (B, Hkv*D) fp32 into dst[b], a one-row
  // block (each document's own cache), or nowhere when dst[b] has no rows (a row this rank
  // does not own: its destination is left untouched). dst.size() == B; the blocks that
  // are stored into share one dtype and (Hkv, D). The bytes are exactly those store_kv()
  // writes row by row, which is what the default does; CUDA stores the rows in one launch
  // (a few for large B).
  virtual void store_kv_rows(const Tensor& k, const Tensor& v, const std::vector<KvBlock>& dst) {
    check_kv_rows(k, v, dst);
    for (int64_t b = 0; b < k.rows(); ++b)
      if (dst[b].rows() != 0) store_kv(k.rows(b, 1), v.rows(b, 1), dst[b]);
  }
  // The end of a decode batch's projection: rope_rows() of q (n_heads) and of k
  // (n_kv_heads) at `positions`, then copy(q, q_out) (q_out may be q), then
  // store_kv_rows(k, v, dst) of the rotated k. k and v empty: Q only; dst empty: nothing
  // stored. The default runs those ops; CUDA runs them as one launch for up to 32 rows.
  virtual void rope_store_rows(const Tensor& q, const Tensor& q_out, const Tensor& k, const Tensor& v,
                               int64_t n_heads, int64_t n_kv_heads, const Tensor& inv_freq,
                               const std::vector<int64_t>& positions, const std::vector<KvBlock>& dst) {
    rope_rows(q, n_heads, inv_freq, positions);
    copy(q, q_out);
    if (k.empty()) return;
    rope_rows(k, n_kv_heads, inv_freq, positions);
    if (!dst.empty()) store_kv_rows(k, v, dst);
  }
  // The end of a prefill chunk's projection: rope() of q (n_heads) and of k (n_kv_heads) at
  // positions pos_start + i * pos_stride, then copy(q, q_out) (q_out may be q), then
  // store_kv(k, v, dst) of the rotated k (dst: k's rows). k and v empty: Q only; dst empty:
  // nothing stored. The default runs those ops; CUDA runs them as one pass over the rows.
  virtual void rope_store(const Tensor& q, const Tensor& q_out, const Tensor& k, const Tensor& v, int64_t n_heads,
                          int64_t n_kv_heads, const Tensor& inv_freq, int64_t pos_start, int64_t pos_stride,
                          const KvBlock& dst) {
    rope(q, n_heads, inv_freq, pos_start, pos_stride);
    copy(q, q_out);
    if (k.empty()) return;
    rope(k, n_kv_heads, inv_freq, pos_start, pos_stride);
    if (dst.rows() != 0) store_kv(k, v, dst);
  }
  // store_kv_rows()'s arguments: one destination per row of k and v, the ones stored into
  // one-row blocks of one dtype and heads (throws Error otherwise). Returns the first
  // destination stored into, or null when every row is skipped.
  static const KvBlock* check_kv_rows(const Tensor& k, const Tensor& v, const std::vector<KvBlock>& dst);
  // dst = src: the same dtype and heads, dst.rows() == src.rows() (packing a ring block).
  void copy_kv(const KvBlock& src, const KvBlock& dst);
  // The element type of the running attention state (O, LSE) that attention() merges into
  // and merge_attention() merges: f32 on CUDA (DESIGN §9), f64 on the CPU, whose attention
  // computes in float64 so that its result does not depend on how the keys are split into
  // ring blocks and tiles, that is on the rank count (cpu_attention.cpp says why). Callers
  // keep the state in this type while a layer's keys arrive and round it to fp32 (copy())
  // once when it is complete (RingAttention, DecodeAttention). attention(), attention_reset()
  // and merge_attention() take f32 state on every backend too.
  virtual DType attention_state_dtype() const { return DType::f32; }
  // o = 0, lse = -inf: the identity of the merge (o, lse f32, or f64 where
  // attention_state_dtype() is f64).
  virtual void attention_reset(const Tensor& o, const Tensor& lse) = 0;
  // Attention of q (nq, H*D) against the nk = kv.rows() keys and values of kv (their
  // dequantized values) under the striped mask, merged into the running o (nq, H*D,
  // normalised) and lse (nq, H), f32 (or f64 where attention_state_dtype() is f64). q is
  // f32 or attention_query_dtype(D); both give bitwise the same result when the bf16 q is
  // copy() of the f32 one.
  virtual void attention(const Tensor& q, const KvBlock& kv, const AttentionShape& shape, const Tensor& o,
                         const Tensor& lse) = 0;
  // Decode of a batch: query row b of q (B, H*D) against kv[b] under shapes[b] (each row
  // its own document's keys on this rank), written to row b of o (B, H*D) and lse (B, H),
  // not merged (o, lse of the state type, as attention()'s). The default resets and calls
  // attention() row by row; CUDA runs the rows in one launch of its split-KV kernel over
  // the list of sequences.
  virtual void attention_rows(const Tensor& q, const std::vector<KvBlock>& kv,
                              const std::vector<AttentionShape>& shapes, const Tensor& o, const Tensor& lse) {
    const int64_t B = q.rows();
    if (static_cast<int64_t>(kv.size()) != B || static_cast<int64_t>(shapes.size()) != B || o.rows() != B ||
        lse.rows() != B)
      throw Error("backend: attention_rows: " + std::to_string(B) + " query rows, " + std::to_string(kv.size()) +
                  " KV blocks, " + std::to_string(shapes.size()) + " shapes");
    attention_reset(o, lse);
    for (int64_t b = 0; b < B; ++b) attention(q.rows(b, 1), kv[b], shapes[b], o.rows(b, 1), lse.rows(b, 1));
  }
  // The element type attention() reads queries of head_dim D in: queries stored in it are
  // read as they are, f32 ones are converted on every call (CUDA: to bf16 for its
  // tensor-core kernels, once per call, so a layer's queries would be converted once per
  // ring step). f32 on the CPU; default_attention_query_dtype() gives the rule per backend.
  virtual DType attention_query_dtype(int64_t head_dim) const = 0;
  // The form of kv that attention() reads fastest when it is called many times on the same
  // block (prefill's query chunks): kv itself, or on CUDA an fp8 block dequantized once to a
  // bf16 copy in scratch. Valid until the next attention_input() call; kv must not change
  // meanwhile.
  virtual KvBlock attention_input(const KvBlock& kv) { return kv; }
  // gate = silu(gate) * up, elementwise (n, intermediate).
  virtual void swiglu(const Tensor& gate, const Tensor& up) = 0;
  // out (n, 1) = log_softmax(logits (n, V))[targets[i]]; targets (n, 1) i32.
  virtual void target_logprobs(const Tensor& logits, const Tensor& targets, const Tensor& out) = 0;
  // token (1, 1) i32 from logits (1, V): first the penalties of p on the tokens with
  // counts (1, V) i32 > 0 (counts may be empty when !p.penalized(); logits are changed in
  // place), then argmax (lowest id on ties) when p.temperature <= 0, else top-k / min-p /
  // top-p sampling with the uniform u in [0, 1). sampling.h defines the rule.
  virtual void sample(const Tensor& logits, const SamplingParams& p, double u, const Tensor& counts,
                      const Tensor& token) = 0;

  // Merges the partial attention (o2, lse2) into (o, lse) per row and head, as
  // striped.h's merge_lse does: decode's fixed-order merge of the ranks' gathered parts.
  // o, o2 (n, H*D) and lse, lse2 (n, H), all f32 or all f64 (attention_state_dtype()).
  // The default goes through host memory.
  virtual void merge_attention(const Tensor& o, const Tensor& lse, const Tensor& o2, const Tensor& lse2) {
    if (o.empty() || lse.empty()) return;
    if (o2.rows() != o.rows() || o2.cols() != o.cols() || lse2.rows() != lse.rows() || lse2.cols() != lse.cols() ||
        lse.rows() != o.rows() || o.cols() % lse.cols() != 0)
      throw Error("backend: merge_attention: mismatched shapes");
    const DType t = o.dtype();
    if ((t != DType::f32 && t != DType::f64) || lse.dtype() != t || o2.dtype() != t || lse2.dtype() != t)
      throw Error("backend: merge_attention: o, lse, o2, lse2 must be all f32 or all f64");
    if (t == DType::f32)
      merge_on_host<float>(o, lse, o2, lse2);
    else
      merge_on_host<double>(o, lse, o2, lse2);
  }

  // ---------------------------------------------------------------- recorded steps
  // A decode step as one launch. begin_recording() returns true when this backend records:
  // the ops enqueued on stream() after it are recorded, not run, until end_recording(true)
  // runs them all as one launch (CUDA: a graph captured from stream(); the launch replaces
  // the kernels' hundreds of launches, the host's work is the same) and returns true.
  // end_recording(false) drops them unrun (an exception came between); so does
  // end_recording(true) when the backend could not make them one launch, returning false:
  // the caller then enqueues the ops again, op by op. Between the two only ops that never
  // wait for the host may come: not copy_to_host, copy_from_host, copy_async, synchronize,
  // record/wait, communication, nor sample() where samples_on_device(p) is false (these
  // throw while recording). The CPU backend runs every op at once: begin_recording() is
  // false and end_recording() does nothing.
  virtual bool begin_recording() { return false; }
  virtual bool end_recording(bool run) { (void)run; return false; }
  // Whether sample() with p stays on the backend (no read of the logits by the host).
  virtual bool samples_on_device(const SamplingParams& p) const { (void)p; return true; }

  // ---------------------------------------------------------------- accounting
  // Bytes of backend buffers alive now, and their high-water mark since the last
  // reset_peak_bytes() (which sets it to the bytes alive now). -1: not tracked.
  virtual int64_t allocated_bytes() const { return -1; }
  virtual int64_t peak_allocated_bytes() const { return -1; }
  virtual void reset_peak_bytes() {}

 private:
  template <class T>
  void merge_on_host(const Tensor& o, const Tensor& lse, const Tensor& o2, const Tensor& lse2) {
    const int64_t n = o.rows(), H = lse.cols(), D = o.cols() / H;
    std::vector<T> ho(o.numel()), hl(lse.numel()), ho2(o2.numel()), hl2(lse2.numel());
    copy_to_host(ho.data(), o);
    copy_to_host(hl.data(), lse);
    copy_to_host(ho2.data(), o2);
    copy_to_host(hl2.data(), lse2);
    for (int64_t i = 0; i < n * H; ++i) merge_lse(ho.data() + i * D, hl.data() + i, ho2.data() + i * D, hl2[i], D);
    copy_from_host(o, ho.data());
    copy_from_host(lse, hl.data());
  }
};

// The element type each backend's attention() reads queries of head_dim D in, for callers
// that plan without a backend (memory_plan.h): f32 on the CPU; on CUDA bf16 at head_dim 64
// or 128, where its flash, split-KV decode and cuDNN kernels take bf16 queries, else f32
// (its generic kernel reads fp32). The CUDA backend answers attention_query_dtype() with it.
DType default_attention_query_dtype(bool cuda, int64_t head_dim);

// RoPE inverse frequencies (D/2 values) in float64, with linear, llama3, yarn or
// rope_freqs (verbatim divisors) scaling.
std::vector<double> rope_inv_freq(const RopeConfig& rope, int64_t head_dim);
// The softmax scale 1/sqrt(D), times YaRN's attention factor squared (rope_freq.cpp says why).
double rope_softmax_scale(const RopeConfig& rope, int64_t head_dim);

struct CpuBackendOptions {
  // Test only: flips the diagonal of the causal mask (a query does not see its own key),
  // so the suite can show it detects striping errors.
  bool flip_mask_diagonal = false;
  // Test only: the portable C++ kernels even on a CPU with AVX2/FMA, so the suite checks both.
  bool portable_kernels = false;
};

std::unique_ptr<Backend> make_cpu_backend(const CpuBackendOptions& options = {});

}  // namespace ringinfer
