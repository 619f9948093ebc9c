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
// coordinates, q / o (nq, H*D) f32, k / v (nk, Hkv*D) of the backend's KV dtype, lse
// (nq, H) f32.
void check_attention(const char* backend, const Tensor& q, const Tensor& k, const Tensor& v,
                     const AttentionShape& sh, const Tensor& o, const Tensor& lse, DType kv_dtype);

}  // namespace ringinfer::backend_checks
