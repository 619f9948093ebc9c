// CPU attention: one block of local queries against one block of keys under the striped
// causal mask, merged into the running (O, LSE). Tiled with online softmax, so memory is
// O(tile) whatever the sequence length (no S x S matrix); GQA by head index.
//
// In float64 throughout (scores, running max and sum, O, the merge into a float64 running
// state): the keys a query sees are split into ring blocks and key tiles differently at
// every rank count, and fp32 sums in another order would differ in their last bits, which
// a bf16 / fp8 KV cache of the next layer then turns into a different rounding now and then
// (README "KV cache dtype"). In float64 those differences stay near 1e-16, and the
// caller rounds O to fp32 once, when the layer's attention is complete (RingAttention,
// DecodeAttention), so the fp32 result is the same at every rank count but for the rare
// value within float64's noise of an fp32 rounding boundary. The tile products are
// OpenBLAS dgemm / dgemv calls and the exponentials AVX2 (exp_avx2_pd) when the CPU has it.
// A bf16 or fp8 cache is dequantized one key tile at a time (kv_quant.h values, exact).
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_simd.h"
#include "ringinfer/kv_quant.h"
#include "ringinfer/striped.h"

namespace ringinfer::cpu {

namespace {
constexpr int64_t kQueryTile = 64;  // query rows per task: S and P tiles stay in L2
constexpr int64_t kKeyTile = 128;
constexpr int64_t kGemvRows = 4;    // up to this many rows per task (decode), sgemv per row

// p[j] = exp(s[j] - m) for j < n, returning their sum; s[j] = -inf gives 0.
double exp_row(const double* s, double m, int64_t n, double* p, bool simd) {
  int64_t j = 0;
  double sum = 0.0;
#if RI_X86_SIMD
  if (simd) {
    sum = exp_row_avx2_pd(s, m, n, p);
    j = n / 4 * 4;
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

// The values of all 256 e4m3 bit patterns.
const float* fp8_values() {
  static const std::vector<float> table = [] {
    std::vector<float> t(256);
    for (int b = 0; b < 256; ++b) t[b] = kvq::fp8_e4m3_value(static_cast<uint8_t>(b));
    return t;
  }();
  return table.data();
}

// Rows j0 .. j0+jn of head kvh of `values` (K or V of kv) as float64 (exact) in buf (jn x D).
void kv_tile(const KvBlock& kv, const Tensor& values, const Tensor& scales, int64_t j0, int64_t jn, int64_t kvh,
             double* buf) {
  const int64_t D = kv.head_dim, ks = kv.n_kv_heads * D;
  for (int64_t jj = 0; jj < jn; ++jj) {
    const int64_t at = (j0 + jj) * ks + kvh * D;
    double* out = buf + jj * D;
    if (kv.dtype == KvDtype::f32) {
      const float* b = values.f32() + at;
      for (int64_t d = 0; d < D; ++d) out[d] = b[d];
    } else if (kv.dtype == KvDtype::bf16) {
      const auto* b = static_cast<const uint16_t*>(values.data()) + at;
      for (int64_t d = 0; d < D; ++d) out[d] = kvq::bf16_value(b[d]);
    } else {
      const auto* b = static_cast<const uint8_t*>(values.data()) + at;
      const float* table = fp8_values();
      const float sc = scales.f32()[(j0 + jj) * kv.n_kv_heads + kvh];
      for (int64_t d = 0; d < D; ++d) out[d] = table[b[d]] * sc;  // exact in fp32 (kv_quant.h)
    }
  }
}
}  // namespace

void CpuBackend::attention(const Tensor& q, const KvBlock& kv, const AttentionShape& sh, const Tensor& o,
                           const Tensor& lse) {
  backend_checks::check_attention("cpu", q, kv, sh, o, lse, true, DType::f32, o.dtype());
  check(o.dtype() == DType::f32 || o.dtype() == DType::f64, "attention", "o and lse must be f32 or f64");
  const int64_t H = sh.n_heads, Hkv = sh.n_kv_heads, D = sh.head_dim;
  const int64_t nq = q.rows(), nk = kv.rows();
  if (nq == 0 || nk == 0) return;  // an empty block merges as the identity

  const int64_t group = H / Hkv, q_tiles = (nq + kQueryTile - 1) / kQueryTile;
  const int64_t qs = H * D;
  const double ninf = -std::numeric_limits<double>::infinity();
  const double scale = sh.scale;
  const bool flip = options_.flip_mask_diagonal, state64 = o.dtype() == DType::f64;

  // Per (KV head, query tile): online softmax over key tiles; S = Q K^T and O += P V are
  // dgemm calls (single-threaded; the team splits the tasks). With a full query tile the
  // `group` query heads that read one KV head go together (their rows packed), so each
  // K,V tile is converted once for all of them; fewer rows (decode) keep a task per head.
  const int64_t hg = nq >= kQueryTile ? group : 1;  // query heads per task
  const int64_t rmax_rows = kQueryTile * hg;
#pragma omp parallel
  {
    std::vector<double> qp(rmax_rows * D), acc(rmax_rows * D), sc(rmax_rows * kKeyTile), ob(D);
    std::vector<double> m(rmax_rows), l(rmax_rows), kbuf(kKeyTile * D), vbuf(kKeyTile * D);
    std::vector<float> of(state64 ? 0 : D);
    int64_t cnt[kQueryTile];
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t hh = 0; hh < H / hg; ++hh) {
      for (int64_t qt = 0; qt < q_tiles; ++qt) {
        const int64_t h0 = hh * hg, kvh = h0 / group, i0 = qt * kQueryTile, rows = std::min(kQueryTile, nq - i0);
        const int64_t R = rows * hg;  // row rr = j * rows + t: query i0 + t of head h0 + j
        int64_t kmax = 0;
        for (int64_t t = 0; t < rows; ++t) {
          const int64_t qi = sh.q_start + i0 + t;
          int64_t c = visible_key_count(qi, sh.q_rank, sh.k_rank, sh.n_ranks);
          if (flip && sh.k_rank == sh.q_rank) c = key_visible(qi, sh.q_rank, qi, sh.k_rank, sh.n_ranks) ? qi : qi + 1;
          cnt[t] = std::min(c, nk);
          kmax = std::max(kmax, cnt[t]);
        }
        std::fill(m.begin(), m.begin() + R, ninf);
        std::fill(l.begin(), l.begin() + R, 0.0);
        std::fill(acc.begin(), acc.begin() + R * D, 0.0);
        const float* qh = q.f32() + i0 * qs + h0 * D;
        for (int64_t j = 0; j < hg; ++j)
          for (int64_t t = 0; t < rows; ++t)
            std::copy_n(qh + t * qs + j * D, D, qp.data() + (j * rows + t) * D);
        for (int64_t j0 = 0; j0 < kmax; j0 += kKeyTile) {
          const int64_t jn = std::min(kKeyTile, kmax - j0);
          kv_tile(kv, kv.k, kv.k_scale, j0, jn, kvh, kbuf.data());
          kv_tile(kv, kv.v, kv.v_scale, j0, jn, kvh, vbuf.data());
          const int iD = static_cast<int>(D), ijn = static_cast<int>(jn), iT = static_cast<int>(kKeyTile);
          if (R <= kGemvRows) {  // decode: dgemv, without dgemm's packing of one query row
            for (int64_t rr = 0; rr < R; ++rr)
              cblas_dgemv(CblasRowMajor, CblasNoTrans, ijn, iD, scale, kbuf.data(), iD, qp.data() + rr * D, 1, 0.0,
                          sc.data() + rr * kKeyTile, 1);
          } else {
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(R), ijn, iD, scale, qp.data(), iD,
                        kbuf.data(), iD, 0.0, sc.data(), iT);
          }
          for (int64_t rr = 0; rr < R; ++rr) {
            double* srow = sc.data() + rr * kKeyTile;
            const int64_t vis = std::clamp<int64_t>(cnt[rr % rows] - j0, 0, jn);  // keys j0 + [0, vis) are visible
            double rmax = ninf;
            for (int64_t jj = 0; jj < vis; ++jj) rmax = std::max(rmax, srow[jj]);
            if (rmax == ninf) {  // nothing visible in this tile for this row: P row = 0
              std::fill(srow, srow + jn, 0.0);
              continue;
            }
            const double m_new = std::max(m[rr], rmax);
            const double alpha = std::exp(m[rr] - m_new);  // 0 when m[rr] = -inf
            l[rr] = l[rr] * alpha + exp_row(srow, m_new, vis, srow, simd_);
            std::fill(srow + vis, srow + jn, 0.0);
            if (alpha != 1.0) {
              double* a = acc.data() + rr * D;
              for (int64_t d = 0; d < D; ++d) a[d] *= alpha;
            }
            m[rr] = m_new;
          }
          if (R <= kGemvRows) {
            for (int64_t rr = 0; rr < R; ++rr)
              cblas_dgemv(CblasRowMajor, CblasTrans, ijn, iD, 1.0, vbuf.data(), iD, sc.data() + rr * kKeyTile, 1, 1.0,
                          acc.data() + rr * D, 1);
          } else {
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(R), iD, ijn, 1.0, sc.data(), iT,
                        vbuf.data(), iD, 1.0, acc.data(), iD);
          }
        }
        for (int64_t rr = 0; rr < R; ++rr) {
          const int64_t row = i0 + rr % rows, h = h0 + rr / rows;
          double lse_blk = ninf;
          if (l[rr] > 0.0) {
            for (int64_t d = 0; d < D; ++d) ob[d] = acc[rr * D + d] / l[rr];
            lse_blk = m[rr] + std::log(l[rr]);
          } else {
            std::fill(ob.begin(), ob.end(), 0.0);
          }
          if (state64) {
            merge_lse(o.f64() + row * qs + h * D, lse.f64() + row * H + h, ob.data(), lse_blk, D);
          } else {  // an fp32 running state: this block's result rounded once, merged in fp32
            for (int64_t d = 0; d < D; ++d) of[d] = static_cast<float>(ob[d]);
            merge_lse(o.f32() + row * qs + h * D, lse.f32() + row * H + h, of.data(), static_cast<float>(lse_blk), D);
          }
        }
      }
    }
  }
}

}  // namespace ringinfer::cpu
