#pragma once
// fp8 KV cache kernels (the rule is ringinfer/kv_quant.h, shared with the CPU backend, so
// both store the same bytes): quantize fp32 rows into e4m3 bytes + one scale per row, and
// dequantize such rows to bf16 for kernels that read bf16 (the prefill path).
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

}  // namespace ringinfer
