// RoPE inverse frequencies in float64 (DESIGN §9), with the scalings of Hugging Face's
// modeling_rope_utils: linear divides every frequency by `factor`; llama3 divides the
// low frequencies (wavelength above original_max / low_freq_factor), keeps the high ones
// (wavelength below original_max / high_freq_factor) and interpolates in between; yarn
// (_compute_yarn_parameters) blends the divided (interpolated) and kept (extrapolated)
// frequencies along a linear ramp over the dimensions whose rotations over the original
// context lie between beta_fast and beta_slow; freq_factors divides each frequency by a
// GGUF's rope_freqs entry, verbatim. YaRN's attention factor is not a frequency: the
// engine folds it into the softmax scale (rope_softmax_scale).
#include <algorithm>
#include <cmath>

#include "ringinfer/backend.h"
#include "ringinfer/error.h"

namespace ringinfer {

std::vector<double> rope_inv_freq(const RopeConfig& rope, int64_t head_dim) {
  RI_CHECK(head_dim > 0 && head_dim % 2 == 0, "model: RoPE needs an even head_dim, got " + std::to_string(head_dim));
  const int64_t half = head_dim / 2;
  std::vector<double> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    inv[i] = 1.0 / std::pow(rope.theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
  if (rope.scaling == RopeScalingType::yarn) {
    const double dim = static_cast<double>(head_dim), base = rope.theta;
    // The dimension whose frequency turns n times over the original context.
    auto correction_dim = [&](double n) {
      return dim * std::log(static_cast<double>(rope.original_max_position) / (n * 2.0 * M_PI)) / (2.0 * std::log(base));
    };
    double low = correction_dim(rope.beta_fast), high = correction_dim(rope.beta_slow);
    if (rope.truncate) low = std::floor(low), high = std::ceil(high);
    low = std::max(low, 0.0);
    high = std::min(high, dim - 1);
    if (low == high) high += 0.001;  // as transformers: no division by zero
    for (int64_t i = 0; i < half; ++i) {
      const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
      const double extrapolation = 1.0 - ramp;  // 1: frequency kept, 0: divided by factor
      inv[i] = inv[i] / rope.factor * (1.0 - extrapolation) + inv[i] * extrapolation;
    }
  } else if (rope.scaling == RopeScalingType::freq_factors) {
    RI_CHECK(static_cast<int64_t>(rope.freq_divisors.size()) == half,
             "model: " + std::to_string(rope.freq_divisors.size()) + " RoPE frequency divisors for head_dim " +
                 std::to_string(head_dim));
    for (int64_t i = 0; i < half; ++i) inv[i] /= rope.freq_divisors[i];
  } else if (rope.scaling == RopeScalingType::linear) {
    for (double& f : inv) f /= rope.factor;
  } else if (rope.scaling == RopeScalingType::llama3) {
    const double old = static_cast<double>(rope.original_max_position);
    const double lo = rope.low_freq_factor, hi = rope.high_freq_factor;
    const double low_freq_wavelen = old / lo, high_freq_wavelen = old / hi;
    for (double& f : inv) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen < high_freq_wavelen) continue;                     // high frequency: kept
      if (wavelen > low_freq_wavelen) { f /= rope.factor; continue; }  // low frequency: scaled
      const double smooth = (old / wavelen - lo) / (hi - lo);
      f = (1.0 - smooth) * f / rope.factor + smooth * f;
    }
  }
  return inv;
}

double rope_softmax_scale(const RopeConfig& rope, int64_t head_dim) {
  // YaRN multiplies cos and sin by the attention factor m, so both q and k after RoPE,
  // so every logit q.k by m^2: exactly a softmax scale of m^2 / sqrt(D), which needs no
  // extra op or argument in any backend.
  const double m = rope.scaling == RopeScalingType::yarn ? rope.attention_factor : 1.0;
  return m * m / std::sqrt(static_cast<double>(head_dim));
}

}  // namespace ringinfer
