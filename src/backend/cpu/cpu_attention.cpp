// CPU attention: one block of local queries against one block of keys under the striped
// causal mask, merged into the running (O, LSE). Tiled with online softmax, so memory is
// O(tile) whatever the sequence length (no S x S matrix); GQA by head index. The tile
// products are OpenBLAS sgemm calls and the exponentials AVX2 when the CPU has it.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_simd.h"
#include "ringinfer/striped.h"

namespace ringinfer::cpu {

namespace {
constexpr int64_t kQueryTile = 64;  // query rows per task: S and P tiles stay in L2
constexpr int64_t kKeyTile = 128;

// p[j] = exp(s[j] - m) for j < n, returning their sum; s[j] = -inf gives 0.
float exp_row(const float* s, float m, int64_t n, float* p, bool simd) {
  int64_t j = 0;
  float sum = 0.0f;
#if RI_X86_SIMD
  if (simd) {
    sum = exp_row_avx2(s, m, n, p);
    j = n / 8 * 8;
  }
#else
  (void)simd;
#endif
  for (; j < n; ++j) {
    p[j] = std::exp(s[j] - m);
    sum += p[j];
  }
  return sum;
}
}  // namespace

void CpuBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionShape& sh,
                           const Tensor& o, const Tensor& lse) {
  backend_checks::check_attention("cpu", q, k, v, sh, o, lse, DType::f32);
  const int64_t H = sh.n_heads, Hkv = sh.n_kv_heads, D = sh.head_dim;
  const int64_t nq = q.rows(), nk = k.rows();
  if (nq == 0 || nk == 0) return;  // an empty block merges as the identity

  const int64_t group = H / Hkv, q_tiles = (nq + kQueryTile - 1) / kQueryTile;
  const int64_t qs = H * D, ks = Hkv * D;
  const float ninf = -std::numeric_limits<float>::infinity();
  const bool flip = options_.flip_mask_diagonal;

  // Per (head, query tile): online softmax over key tiles; S = Q K^T and O += P V are
  // sgemm calls on the strided head slices (single-threaded; the team splits the tasks).
#pragma omp parallel
  {
    std::vector<float> acc(kQueryTile * D), sc(kQueryTile * kKeyTile), ob(D);
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
        const float* qh = q.f32() + i0 * qs + h * D;
        for (int64_t j0 = 0; j0 < kmax; j0 += kKeyTile) {
          const int64_t jn = std::min(kKeyTile, kmax - j0);
          const float* kh = k.f32() + j0 * ks + kvh * D;
          const float* vh = v.f32() + j0 * ks + kvh * D;
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(jn),
                      static_cast<int>(D), sh.scale, qh, static_cast<int>(qs), kh, static_cast<int>(ks), 0.0f,
                      sc.data(), static_cast<int>(kKeyTile));
          for (int64_t t = 0; t < rows; ++t) {
            float* srow = sc.data() + t * kKeyTile;
            const int64_t vis = std::clamp<int64_t>(cnt[t] - j0, 0, jn);  // keys j0 + [0, vis) are visible
            float rmax = ninf;
            for (int64_t jj = 0; jj < vis; ++jj) rmax = std::max(rmax, srow[jj]);
            if (rmax == ninf) {  // nothing visible in this tile for this row: P row = 0
              std::fill(srow, srow + jn, 0.0f);
              continue;
            }
            const float m_new = std::max(m[t], rmax);
            const float alpha = std::exp(m[t] - m_new);  // 0 when m[t] = -inf
            l[t] = l[t] * alpha + exp_row(srow, m_new, vis, srow, simd_);
            std::fill(srow + vis, srow + jn, 0.0f);
            if (alpha != 1.0f) {
              float* a = acc.data() + t * D;
              for (int64_t d = 0; d < D; ++d) a[d] *= alpha;
            }
            m[t] = m_new;
          }
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(D),
                      static_cast<int>(jn), 1.0f, sc.data(), static_cast<int>(kKeyTile), vh, static_cast<int>(ks),
                      1.0f, acc.data(), static_cast<int>(D));
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
