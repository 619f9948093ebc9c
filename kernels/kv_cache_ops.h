#pragma once
// fp8 KV cache kernels (the rule is ringinfer/kv_quant.h, shared with the CPU backend, so
// both store the same bytes): quantize fp32 rows into e4m3 bytes + one scale per row, and
// dequantize such rows to bf16 for kernels that read bf16 (the prefill path); and store a
// decode batch's rows into their documents' caches in one launch.
// A "row" is one (token, KV head): D contiguous values. Host-callable; raw device
// pointers; CUDA builds only.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace ringinfer {

// x (rows, D) fp32 -> q (rows, D) e4m3 bits, scale (rows) fp32 = amax / 448 of each row.
void quantize_kv_fp8(const float* x, int64_t rows, int D, uint8_t* q, float* scale, cudaStream_t stream);

// out (rows, D) = bf16(value(q) * scale[row]), the inverse up to bf16 rounding.
void dequantize_kv_fp8(const uint8_t* q, const float* scale, int64_t rows, int D, __nv_bfloat16* out,
                       cudaStream_t stream);

// Where one row of a decode batch's K, V goes (scatter_kv_rows): one token of a document's
// cache, each document its own.
struct KvRowDst {
  int64_t src_row;  // row of the batch's k, v
  void* k;          // the token's Hkv*D values: bf16, or e4m3 bytes (fp8)
  void* v;
  float* k_scale;   // its Hkv scales (fp8); null for bf16
  float* v_scale;
};
// k, v (B, Hkv*D) fp32: for each of the n destinations (a host array), row dst[i].src_row
// of k and of v into dst[i], as bf16 (round to nearest even, the bits convert_f32_to_bf16
// writes) or fp8 (quantize_kv_fp8's bytes and scales). The destinations travel by value in
// the launch's parameters, kKvScatterMaxRows per launch: nothing to upload, nothing to wait for.
constexpr int kKvScatterMaxRows = 32;
void scatter_kv_rows(const float* k, const float* v, int n_kv_heads, int D, bool fp8, const KvRowDst* dst,
                     int64_t n, cudaStream_t stream);

// The end of a decode projection in one launch (Backend::rope_store_rows), n <=
// kRopeStoreMaxRows rows: row i of q (n, n_heads*D) and of k (n, n_kv_heads*D) rotated in
// place at pos[i] (inv_freq: D/2 float64) as rope_at_positions rotates them; q's rows
// then written to q_out, rounded to bf16 (q_out_bf16) or as f32 (q_out may be q); and the
// K, V rows with dst[i].k set (dst: n entries; src_row = i) stored as scatter_kv_rows
// stores them. k and v null: Q only.
constexpr int kRopeStoreMaxRows = 32;
void rope_store_rows(float* q, void* q_out, bool q_out_bf16, float* k, const float* v, int64_t n, int n_heads,
                     int n_kv_heads, int D, const double* inv_freq, const int64_t* pos, const KvRowDst* dst, bool fp8,
                     cudaStream_t stream);
// The same for a prefill chunk (Backend::rope_store), any n: row i at position pos_start +
// i * pos_stride, its K, V stored into row i of the block whose row 0 is dst (dst.k null:
// not stored; src_row unused): what rope_strided of q and k, the q conversion and store_kv
// (bf16 copy, or quantize_kv_fp8) write, bit for bit, in one pass.
void rope_store_strided(float* q, void* q_out, bool q_out_bf16, float* k, const float* v, int64_t n, int n_heads,
                        int n_kv_heads, int D, const double* inv_freq, int64_t pos_start, int64_t pos_stride,
                        const KvRowDst& dst, bool fp8, cudaStream_t stream);

}  // namespace ringinfer
