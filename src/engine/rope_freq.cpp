// RoPE inverse frequencies in float64 (DESIGN §9), with the scalings of Hugging Face's
// modeling_rope_utils: linear divides every frequency by `factor`; llama3 divides the
// low frequencies (wavelength above original_max / low_freq_factor), keeps the high ones
// (wavelength below original_max / high_freq_factor) and interpolates in between.
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
  if (rope.scaling == RopeScalingType::linear) {
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

}  // namespace ringinfer
