#include <gtest/gtest.h>

#include <string>

#include "ringinfer/error.h"
#include "ringinfer/parallel_layout.h"

namespace ringinfer {
namespace {

void expect_layout_error(int world, int rank, std::optional<int> cp, int tp, const std::string& message) {
  try {
    make_parallel_layout(world, rank, cp, tp);
    ADD_FAILURE() << "no error; expected: " << message;
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), message);
  }
}

// Counting world ranks with TP innermost, then CP, then DP must meet every rank's
// layout in order: the definition of "TP fastest-varying", without the formula.
TEST(ParallelLayout, TpVariesFastestThenCpThenDp) {
  for (int world = 1; world <= 24; ++world)
    for (int cp = 1; cp <= world; ++cp)
      for (int tp = 1; cp * tp <= world; ++tp) {
        if (world % (cp * tp) != 0) continue;
        int w = 0;
        for (int d = 0; d < world / (cp * tp); ++d)
          for (int c = 0; c < cp; ++c)
            for (int t = 0; t < tp; ++t, ++w) {
              const ParallelLayout l = make_parallel_layout(world, w, cp, tp);
              ASSERT_EQ(l.world_size, world);
              ASSERT_EQ(l.world_rank, w);
              ASSERT_EQ(l.cp, cp);
              ASSERT_EQ(l.tp, tp);
              ASSERT_EQ(l.dp, world / (cp * tp));
              ASSERT_EQ(l.dp_rank, d) << "world " << world << " cp " << cp << " tp " << tp << " rank " << w;
              ASSERT_EQ(l.cp_rank, c) << "world " << world << " cp " << cp << " tp " << tp << " rank " << w;
              ASSERT_EQ(l.tp_rank, t) << "world " << world << " cp " << cp << " tp " << tp << " rank " << w;
              ASSERT_EQ(l.world_rank_of(d, c, t), w);
            }
        ASSERT_EQ(w, world);
      }
}

TEST(ParallelLayout, HandExamples) {
  // 16 ranks, 2 DP groups of CP 4 x TP 2: rank 13 is dp 1, cp 2, tp 1.
  const ParallelLayout a = make_parallel_layout(16, 13, 4, 2);
  EXPECT_EQ(a.dp, 2);
  EXPECT_EQ(a.dp_rank, 1);
  EXPECT_EQ(a.cp_rank, 2);
  EXPECT_EQ(a.tp_rank, 1);
  // Its CP ring: ranks 9, 11, 13, 15 (2 apart); its TP group: 12, 13.
  EXPECT_EQ(a.world_rank_of(1, 0, 1), 9);
  EXPECT_EQ(a.world_rank_of(1, 3, 1), 15);
  EXPECT_EQ(a.world_rank_of(1, 2, 0), 12);
  // Pure data parallel: --cp 1.
  const ParallelLayout b = make_parallel_layout(6, 4, 1, 1);
  EXPECT_EQ(b.dp, 6);
  EXPECT_EQ(b.dp_rank, 4);
  EXPECT_EQ(b.cp_rank, 0);
}

TEST(ParallelLayout, CpDefaultsToTheWorldOverTp) {
  const ParallelLayout a = make_parallel_layout(8, 5, std::nullopt);
  EXPECT_EQ(a.cp, 8);
  EXPECT_EQ(a.dp, 1);
  EXPECT_EQ(a.tp, 1);
  EXPECT_EQ(a.cp_rank, 5);
  const ParallelLayout b = make_parallel_layout(8, 5, std::nullopt, 2);
  EXPECT_EQ(b.cp, 4);
  EXPECT_EQ(b.dp, 1);
  EXPECT_EQ(b.cp_rank, 2);
  EXPECT_EQ(b.tp_rank, 1);
}

TEST(ParallelLayout, Errors) {
  expect_layout_error(4, 0, 3, 1, "--cp 3 --tp 1: the world size 4 is not a multiple of cp x tp = 3");
  expect_layout_error(8, 0, 2, 3, "--cp 2 --tp 3: the world size 8 is not a multiple of cp x tp = 6");
  expect_layout_error(4, 0, 8, 1, "--cp 8 --tp 1: the world size 4 is not a multiple of cp x tp = 8");
  expect_layout_error(4, 0, 0, 1, "--cp must be at least 1 (got 0)");
  expect_layout_error(4, 0, -2, 1, "--cp must be at least 1 (got -2)");
  expect_layout_error(4, 0, 1, 0, "--tp must be at least 1 (got 0)");
  expect_layout_error(4, 0, std::nullopt, 3, "--tp 3: the world size 4 is not a multiple of it");
  // 65536 x 65536 wraps a 32-bit int to 0: must be an error, not a division by zero.
  expect_layout_error(4, 0, 65536, 65536,
                      "--cp 65536 --tp 65536: the world size 4 is not a multiple of cp x tp = 4294967296");
  expect_layout_error(4, 4, 2, 1, "parallel layout: rank 4 is outside a world of 4");
  expect_layout_error(0, 0, 1, 1, "parallel layout: world size must be at least 1 (got 0)");
}

}  // namespace
}  // namespace ringinfer
