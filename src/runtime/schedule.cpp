#include "ringinfer/schedule.h"

#include <algorithm>
#include <numeric>

#include "ringinfer/error.h"

namespace ringinfer {

double document_cost(int64_t tokens, int64_t new_tokens) {
  // Per token of projections and MLP ~ 4096 "units"; attention over S keys ~ S units.
  // Only ratios matter: short documents cost linear, long ones quadratic.
  const double s = static_cast<double>(tokens), g = static_cast<double>(new_tokens);
  return s * s + 4096.0 * (s + g) + g * s;
}

std::vector<std::vector<int64_t>> assign_documents(const std::vector<int64_t>& lengths, int n_groups,
                                                   int64_t new_tokens) {
  RI_CHECK(n_groups >= 1, "assign_documents: no groups");
  std::vector<int64_t> order(lengths.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return lengths[a] > lengths[b]; });
  std::vector<std::vector<int64_t>> groups(n_groups);
  std::vector<double> load(n_groups, 0.0);
  for (int64_t d : order) {
    const int g = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    groups[g].push_back(d);
    load[g] += document_cost(lengths[d], new_tokens);
  }
  return groups;
}

}  // namespace ringinfer
