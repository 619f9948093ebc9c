#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "ringinfer/schedule.h"

namespace ringinfer {
namespace {

TEST(Schedule, EveryDocumentExactlyOnceLongestFirst) {
  std::mt19937 rng(7);
  for (int groups = 1; groups <= 5; ++groups) {
    std::vector<int64_t> lengths(37);
    for (auto& l : lengths) l = std::uniform_int_distribution<int64_t>(0, 5000)(rng);
    const auto a = assign_documents(lengths, groups);
    ASSERT_EQ(static_cast<int>(a.size()), groups);
    std::vector<int> seen(lengths.size(), 0);
    for (auto& g : a) {
      for (size_t i = 0; i < g.size(); ++i) {
        ++seen[g[i]];
        if (i > 0) {
          EXPECT_GE(lengths[g[i - 1]], lengths[g[i]]) << "group order is not longest first";
        }
      }
    }
    for (int s : seen) EXPECT_EQ(s, 1);
    EXPECT_EQ(a, assign_documents(lengths, groups)) << "not deterministic";
  }
}

TEST(Schedule, BalancesByQuadraticCost) {
  // One 10K document costs more than many 1K documents: it gets a group to itself.
  std::vector<int64_t> lengths = {1000, 1000, 10000, 1000, 1000, 1000};
  const auto a = assign_documents(lengths, 2);
  EXPECT_EQ(a[0], std::vector<int64_t>({2}));
  EXPECT_EQ(a[1].size(), 5u);
}

}  // namespace
}  // namespace ringinfer
