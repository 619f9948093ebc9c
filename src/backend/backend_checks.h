#pragma once
// Argument checks shared by the backends (backend/cpu/, backend/cuda/), so both reject
// the same calls with the same message: "<backend> backend: <op>: <what>", e.g.
// "cuda backend: attention: q is (3, 64) f32, expected (3, 128) f32".
#include <cstdint>
#include <string>

#include "ringinfer/backend.h"

namespace ringinfer::backend_checks {

// "(rows, cols) dtype", for messages.
std::string shape(const Tensor& t);

// Throws Error("<backend> backend: <op>: <what>") unless cond holds.
void check(bool cond, const char* backend, const char* op, const std::string& what);

// t must be (rows, cols) of dtype; the Error names it `what`.
void expect(const Tensor& t, int64_t rows, int64_t cols, DType dtype, const char* backend, const char* op,
            const char* what);

// The contract of Backend::attention (ringinfer/backend.h): head counts, stripe
// coordinates, q (nq, H*D) f32 or q_dtype (the backend's attention_query_dtype(D)), o (nq, H*D)
// of `state` (f32, or f64 where the backend keeps its running state so), kv of Hkv heads of
// D in a dtype the backend stores (its k / v (nk, Hkv*D), fp8 scales (nk, Hkv) f32), lse
// (nq, H) of `state`.
void check_attention(const char* backend, const Tensor& q, const KvBlock& kv, const AttentionShape& sh,
                     const Tensor& o, const Tensor& lse, bool kv_dtype_supported, DType q_dtype,
                     DType state = DType::f32);

// A KV block's parts: k / v (rows, Hkv*D) of its dtype's element type, scales when fp8.
void check_kv_block(const char* backend, const char* op, const KvBlock& kv);

}  // namespace ringinfer::backend_checks
