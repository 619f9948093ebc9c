// Stripe reads under mpirun -np 1..4: every rank opens the same shards (written by rank
// 0), and its stripe (and the two-stripe read used by score) must equal the tokens
// t ≡ rank (mod np) of a full read; the stripes of all ranks, put back together, must
// give the document that the fixture generated.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ringinfer/error.h"
#include "ringinfer/shard.h"
#include "mpi_world.h"
#include "shard_fixture.h"
#include "test_paths.h"

namespace ringinfer {
namespace {

using test::shared_seed;
using test::world_rank;
using test::world_size;

std::vector<int32_t> stripe_of(const std::vector<int32_t>& doc, int r, int n) {
  std::vector<int32_t> out;
  for (size_t t = static_cast<size_t>(r); t < doc.size(); t += static_cast<size_t>(n)) out.push_back(doc[t]);
  return out;
}

TEST(StripeRead, MatchesFullRead) {
  const int rank = world_rank(), np = world_size();
  const uint64_t seed = shared_seed();
  const int64_t vocab = 128256;
  const std::vector<int64_t> lengths_a = {0, 1, np - 1, np};
  const std::vector<int64_t> lengths_b = {np + 1, 1000, 4099};
  // Every rank can regenerate the fixture's documents from the shared seed.
  const auto a = test::random_shard_data(lengths_a, vocab, seed, "a");
  const auto b = test::random_shard_data(lengths_b, vocab, seed + 1, "b");

  const std::string dir = test::shared_temp_dir("ri-mpi-stripe");
  if (rank == 0) {
    test::write_valid_shard(dir + "/a.h5", a);
    test::write_valid_shard(dir + "/b.h5", b);
  }
  MPI_Barrier(MPI_COMM_WORLD);

  {
    DocumentSet set = open_documents({dir + "/a.h5", dir + "/b.h5"}, vocab);
    ASSERT_EQ(set.size(), lengths_a.size() + lengths_b.size());
    for (size_t i = 0; i < set.size(); ++i) {
      const DocInfo& doc = set[i];
      const auto& expected = i < lengths_a.size() ? a.docs[i] : b.docs[i - lengths_a.size()];
      const std::vector<int32_t> full = set.read_document(doc);
      ASSERT_EQ(full, expected) << "seed " << seed << " doc " << doc.id;

      const std::vector<int32_t> mine = set.read_stripe(doc, rank, np);
      EXPECT_EQ(mine, stripe_of(full, rank, np)) << "seed " << seed << " doc " << doc.id << " rank " << rank;
      const auto two = set.read_stripes(doc, {rank, (rank + 1) % np}, np);
      EXPECT_EQ(two[0], mine) << doc.id;
      EXPECT_EQ(two[1], stripe_of(full, (rank + 1) % np, np)) << doc.id;

      // Interleave every rank's stripe back into the document.
      int n_mine = static_cast<int>(mine.size());
      std::vector<int> counts(static_cast<size_t>(np)), displs(static_cast<size_t>(np));
      MPI_Allgather(&n_mine, 1, MPI_INT, counts.data(), 1, MPI_INT, MPI_COMM_WORLD);
      int total = 0;
      for (int r = 0; r < np; ++r) {
        displs[static_cast<size_t>(r)] = total;
        total += counts[static_cast<size_t>(r)];
      }
      std::vector<int32_t> gathered(static_cast<size_t>(total));
      MPI_Allgatherv(mine.data(), n_mine, MPI_INT32_T, gathered.data(), counts.data(), displs.data(), MPI_INT32_T,
                     MPI_COMM_WORLD);
      ASSERT_EQ(total, static_cast<int>(doc.length)) << doc.id;
      std::vector<int32_t> rebuilt(static_cast<size_t>(total));
      for (int r = 0; r < np; ++r)
        for (int k = 0; k < counts[static_cast<size_t>(r)]; ++k)
          rebuilt[static_cast<size_t>(k) * np + r] = gathered[static_cast<size_t>(displs[r] + k)];
      EXPECT_EQ(rebuilt, expected) << "seed " << seed << " doc " << doc.id;
    }
  }
  test::remove_shared_temp_dir(dir);
}

// A bad shard gives the same message on every rank (so every rank stops, none hangs).
TEST(StripeRead, SameErrorOnEveryRank) {
  const std::string dir = test::shared_temp_dir("ri-mpi-stripe");
  std::string expected;
  if (world_rank() == 0) expected = test::write_malformed("bad-offsets", dir + "/bad.h5").message;
  MPI_Barrier(MPI_COMM_WORLD);
  std::string got;
  try {
    open_documents({dir + "/bad.h5"}, 1000);
  } catch (const Error& e) {
    got = e.what();
  }
  EXPECT_EQ(got, dir + "/bad.h5: /doc_offsets decreases at index 2 (3 after 5)");
  if (world_rank() == 0) {
    EXPECT_EQ(got, expected);
  }
  test::remove_shared_temp_dir(dir);
}

// A version-1 style shard (variable-length /doc_ids) is refused unread on every rank
// with the same advice, read by all ranks at once from one file.
TEST(StripeRead, VlenIdsRefusedOnEveryRank) {
  const std::string dir = test::shared_temp_dir("ri-mpi-stripe");
  if (world_rank() == 0) test::write_malformed("vlen-ids", dir + "/v1.h5");
  MPI_Barrier(MPI_COMM_WORLD);
  std::string got;
  try {
    open_documents({dir + "/v1.h5"});
  } catch (const Error& e) {
    got = e.what();
  }
  EXPECT_EQ(got, dir + "/v1.h5: /doc_ids uses variable-length strings (shard version 1, or not written by "
                       "ringinfer prep): re-run ringinfer prep");
  test::remove_shared_temp_dir(dir);
}

}  // namespace
}  // namespace ringinfer
