#pragma once
// The striped layout (DESIGN §2) and the (O, LSE) merge (DESIGN §3): the arithmetic every
// backend, the engine and the ring schedule share. A CP group has N ranks; global position
// t lives on rank t mod N at local index t div N.
//
// The causal mask has ONE definition, key_visible(); every kernel and every test derives
// its masking from it (visible_key_count() is that rule solved for j).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace ringinfer {

// Rank that holds global position t.
inline int stripe_owner(int64_t t, int N) { return static_cast<int>(t % N); }

// Index of global position t within its owner's stripe.
inline int64_t local_index(int64_t t, int N) { return t / N; }

// Tokens of an S-token sequence held by rank r: ceil((S - r) / N), 0 when r >= S.
inline int64_t local_len(int64_t S, int r, int N) { return r >= S ? 0 : (S - r + N - 1) / N; }

// Global position of local index i on rank r.
inline int64_t global_pos(int64_t i, int r, int N) { return i * N + r; }

// The causal mask: may the query at local index qi of rank r see the key at local index
// kj of rank s?  Yes iff the key's global position is not after the query's.
inline bool key_visible(int64_t qi, int r, int64_t kj, int s, int N) {
  return global_pos(kj, s, N) <= global_pos(qi, r, N);
}

// Keys of rank s visible to query (qi, r) form the prefix j < visible_key_count(...):
// j <= qi when s <= r, j < qi when s > r (visibility is monotone in j and the boundary
// is j = qi, so the rule above decides it).
inline int64_t visible_key_count(int64_t qi, int r, int s, int N) {
  return key_visible(qi, r, qi, s, N) ? qi + 1 : qi;
}

// Merge weights of two partial softmax results with log-sum-exps l1, l2 (natural log):
// l = logaddexp(l1, l2), w1 = e^(l1 - l), w2 = e^(l2 - l). Both -inf gives l = -inf and
// w1 = w2 = 0 (an empty part merges as the identity; never NaN). T is float, or double
// for the CPU backend's fp64 attention state.
template <class T>
inline void merge_lse_weights(T l1, T l2, T* l, T* w1, T* w2) {
  const T ninf = -std::numeric_limits<T>::infinity();
  const T m = std::max(l1, l2);
  if (m == ninf) {
    *l = ninf;
    *w1 = 0;
    *w2 = 0;
    return;
  }
  const T e1 = std::exp(l1 - m), e2 = std::exp(l2 - m);  // one of them is 1
  const T sum = e1 + e2;
  *l = m + std::log(sum);
  *w1 = e1 / sum;
  *w2 = e2 / sum;
}

// Merges the partial result (o2, l2) of d values into (o1, l1), in place:
// O = O1 e^(L1-L) + O2 e^(L2-L), L = logaddexp(L1, L2).
template <class T>
inline void merge_lse(T* o1, T* l1, const T* o2, T l2, int64_t d) {
  T l, w1, w2;
  merge_lse_weights(*l1, l2, &l, &w1, &w2);
  for (int64_t k = 0; k < d; ++k) o1[k] = w1 * o1[k] + w2 * o2[k];
  *l1 = l;
}

}  // namespace ringinfer
