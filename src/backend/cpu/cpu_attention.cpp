// CPU attention: one block of local queries against one block of keys under the striped
// causal mask, merged into the running (O, LSE). Tiled with online softmax, so memory is
// O(tile) whatever the sequence length (no S x S matrix); GQA by head index. A bf16 or
// fp8 cache is dequantized one key tile at a time (kv_quant.h values, exact in fp32).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "ringinfer/kv_quant.h"
#include "ringinfer/striped.h"

namespace ringinfer::cpu {

namespace {
constexpr int64_t kQueryTile = 16;
constexpr int64_t kKeyTile = 64;

inline float dot(const float* a, const float* b, int64_t d) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < d; ++k) s += a[k] * b[k];
  return s;
}

// The values of all 256 e4m3 bit patterns.
const float* fp8_values() {
  static const std::vector<float> table = [] {
    std::vector<float> t(256);
    for (int b = 0; b < 256; ++b) t[b] = kvq::fp8_e4m3_value(static_cast<uint8_t>(b));
    return t;
  }();
  return table.data();
}

// Rows j0 .. j0+jn of head kvh of `values` (K or V of kv) as fp32: a pointer with a row
// stride, straight into an f32 cache, else dequantized into buf (jn x D).
const float* kv_tile(const KvBlock& kv, const Tensor& values, const Tensor& scales, int64_t j0, int64_t jn,
                     int64_t kvh, float* buf, int64_t* stride) {
  const int64_t D = kv.head_dim, ks = kv.n_kv_heads * D;
  if (kv.dtype == KvDtype::f32) {
    *stride = ks;
    return values.f32() + j0 * ks + kvh * D;
  }
  *stride = D;
  for (int64_t jj = 0; jj < jn; ++jj) {
    const int64_t at = (j0 + jj) * ks + kvh * D;
    float* out = buf + jj * D;
    if (kv.dtype == KvDtype::bf16) {
      const auto* b = static_cast<const uint16_t*>(values.data()) + at;
      for (int64_t d = 0; d < D; ++d) out[d] = kvq::bf16_value(b[d]);
    } else {
      const auto* b = static_cast<const uint8_t*>(values.data()) + at;
      const float* table = fp8_values();
      const float sc = scales.f32()[(j0 + jj) * kv.n_kv_heads + kvh];
      for (int64_t d = 0; d < D; ++d) out[d] = table[b[d]] * sc;
    }
  }
  return buf;
}
}  // namespace

void CpuBackend::attention(const Tensor& q, const KvBlock& kv, const AttentionShape& sh, const Tensor& o,
                           const Tensor& lse) {
  backend_checks::check_attention("cpu", q, kv, sh, o, lse, true);
  const int64_t H = sh.n_heads, Hkv = sh.n_kv_heads, D = sh.head_dim;
  const int64_t nq = q.rows(), nk = kv.rows();
  if (nq == 0 || nk == 0) return;  // an empty block merges as the identity

  const int64_t group = H / Hkv, q_tiles = (nq + kQueryTile - 1) / kQueryTile;
  const int64_t qs = H * D;
  const float ninf = -std::numeric_limits<float>::infinity();
  const bool flip = options_.flip_mask_diagonal;

#pragma omp parallel
  {
    std::vector<float> acc(kQueryTile * D), sc(kQueryTile * kKeyTile), ob(D), kbuf(kKeyTile * D),
        vbuf(kKeyTile * D);
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t qt = 0; qt < q_tiles; ++qt) {
        const int64_t kvh = h / group, i0 = qt * kQueryTile, rows = std::min(kQueryTile, nq - i0);
        float m[kQueryTile], l[kQueryTile];
        int64_t cnt[kQueryTile];
        int64_t kmax = 0;
        for (int64_t t = 0; t < rows; ++t) {
          const int64_t qi = sh.q_start + i0 + t;
          int64_t c = visible_key_count(qi, sh.q_rank, sh.k_rank, sh.n_ranks);
          if (flip && sh.k_rank == sh.q_rank) c = key_visible(qi, sh.q_rank, qi, sh.k_rank, sh.n_ranks) ? qi : qi + 1;
          cnt[t] = std::min(c, nk);
          kmax = std::max(kmax, cnt[t]);
          m[t] = ninf;
          l[t] = 0.0f;
        }
        std::fill(acc.begin(), acc.begin() + rows * D, 0.0f);
        for (int64_t j0 = 0; j0 < kmax; j0 += kKeyTile) {
          const int64_t jn = std::min(kKeyTile, kmax - j0);
          int64_t kst = 0, vst = 0;
          const float* kt = kv_tile(kv, kv.k, kv.k_scale, j0, jn, kvh, kbuf.data(), &kst);
          const float* vt = kv_tile(kv, kv.v, kv.v_scale, j0, jn, kvh, vbuf.data(), &vst);
          for (int64_t t = 0; t < rows; ++t) {
            const float* qrow = q.f32() + (i0 + t) * qs + h * D;
            float* srow = sc.data() + t * kKeyTile;
            float rmax = ninf;
            for (int64_t jj = 0; jj < jn; ++jj) {
              const int64_t j = j0 + jj;
              srow[jj] = j < cnt[t] ? dot(qrow, kt + jj * kst, D) * sh.scale : ninf;
              rmax = std::max(rmax, srow[jj]);
            }
            if (rmax == ninf) continue;  // nothing visible in this tile for this row
            const float m_new = std::max(m[t], rmax);
            const float alpha = std::exp(m[t] - m_new);  // 0 when m[t] = -inf
            float* a = acc.data() + t * D;
            l[t] *= alpha;
            for (int64_t d = 0; d < D; ++d) a[d] *= alpha;
            for (int64_t jj = 0; jj < jn; ++jj) {
              if (srow[jj] == ninf) continue;
              const float p = std::exp(srow[jj] - m_new);
              l[t] += p;
              const float* vrow = vt + jj * vst;
#pragma omp simd
              for (int64_t d = 0; d < D; ++d) a[d] += p * vrow[d];
            }
            m[t] = m_new;
          }
        }
        for (int64_t t = 0; t < rows; ++t) {
          const int64_t row = i0 + t;
          float lse_blk = ninf;
          if (l[t] > 0.0f) {
            const float inv = 1.0f / l[t];
            for (int64_t d = 0; d < D; ++d) ob[d] = acc[t * D + d] * inv;
            lse_blk = m[t] + std::log(l[t]);
          } else {
            std::fill(ob.begin(), ob.end(), 0.0f);
          }
          merge_lse(o.f32() + row * qs + h * D, lse.f32() + row * H + h, ob.data(), lse_blk, D);
        }
      }
    }
  }
}

}  // namespace ringinfer::cpu
