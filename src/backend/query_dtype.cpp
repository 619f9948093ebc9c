// Which element type each backend's attention reads queries in (backend.h).
#include "ringinfer/backend.h"

namespace ringinfer {

DType default_attention_query_dtype(bool cuda, int64_t head_dim) {
  // The CUDA flash / split-KV decode / cuDNN kernels run at these head dims on bf16
  // queries; every other head dim goes to the generic fp32 kernel (cuda_attention.cpp).
  return cuda && (head_dim == 64 || head_dim == 128) ? DType::bf16 : DType::f32;
}

}  // namespace ringinfer
