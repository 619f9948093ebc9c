#include "ringinfer/kv_cache.h"

#include <string>

#include "ringinfer/error.h"

namespace ringinfer {

KvCache KvCache::allocate(Backend& be, int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, KvDtype dtype,
                          int64_t S, int64_t G, int r, int N) {
  RI_CHECK(S >= 0 && G >= 0 && N >= 1 && r >= 0 && r < N, "kv cache: bad document or stripe shape");
  KvCache c;
  c.rank = r;
  c.n_ranks = N;
  c.prompt_tokens = S;
  c.capacity = capacity_for(S, G, r, N);
  for (int64_t l = 0; l < n_layers; ++l) c.layers.push_back(be.alloc_kv(c.capacity, n_kv_heads, head_dim, dtype));
  return c;
}

int64_t KvCache::bytes() const {
  if (layers.empty()) return 0;
  const KvBlock& b = layers[0];
  return static_cast<int64_t>(layers.size()) * capacity * kv_bytes_per_token(b.dtype, b.n_kv_heads, b.head_dim);
}

}  // namespace ringinfer
