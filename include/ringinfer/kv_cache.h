#pragma once
// One document's KV cache on one rank of a CP group (DESIGN §2, §4): the rank's stripe of
// every layer's K and V. Rank r of N holds the tokens t = r (mod N), token t at local row
// t div N; a document of S prompt tokens that may generate G more gets the capacity
// ceil((S + G - r) / N) rows per layer (the last generated token is never run through the
// model, but one rule for every rank keeps the formula simple).
#include <cstdint>
#include <vector>

#include "ringinfer/backend.h"
#include "ringinfer/striped.h"

namespace ringinfer {

struct KvCache {
  int rank = 0, n_ranks = 1;   // r and N of the CP group
  int64_t prompt_tokens = 0;   // S, the document's prompt length (the ring moves its stripes)
  int64_t capacity = 0;        // local rows per layer: ceil((S + G - r) / N)
  int64_t length = 0;          // local rows written so far (the same in every layer)
  std::vector<KvBlock> layers;  // n_layers x (capacity, Hkv*D) K,V in the cache's dtype

  // Allocates n_layers x capacity rows (uninitialised) for S prompt tokens and up to G
  // generated ones; length starts at 0.
  static KvCache allocate(Backend& be, int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, KvDtype dtype,
                          int64_t S, int64_t G, int r, int N);
  // local_len(S + G, r, N): the capacity one rank's cache needs.
  static int64_t capacity_for(int64_t S, int64_t G, int r, int N) { return local_len(S + G, r, N); }

  KvDtype dtype() const { return layers.empty() ? KvDtype::f32 : layers[0].dtype; }
  // Bytes of every layer at full capacity (without the allocation's padding).
  int64_t bytes() const;
  // Does this rank hold global position t (at local row local_index(t, N))?
  bool holds(int64_t t) const { return stripe_owner(t, n_ranks) == rank; }
  // Layer l's rows written so far.
  KvBlock stored(int l) const { return layers[static_cast<size_t>(l)].rows(0, length); }
};

}  // namespace ringinfer
