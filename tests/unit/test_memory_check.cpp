// The memory check before work: refuses a plan that does not fit, with the bytes needed,
// the bytes available and the smallest fitting rank count in the message.
#include <gtest/gtest.h>

#include <string>

#include "ringinfer/error.h"
#include "ringinfer/memory_check.h"
#include "model_shapes.h"

namespace ringinfer {
namespace {

using test::llama_8b;

std::string message_of(const ModelConfig& c, const PlanInput& in, MemoryKind d, int64_t avail) {
  try {
    check_memory(c, in, d, avail);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(MemoryCheck, FitsReturnsPlan) {
  PlanInput in; in.context = 1 << 20; in.ranks = 8;
  const MemoryPlan p = plan_memory(llama_8b(), in);
  const MemoryPlan q = check_memory(llama_8b(), in, MemoryKind::gpu, p.total_per_rank);
  EXPECT_EQ(q.total_per_rank, p.total_per_rank);
}

// A decode batch that does not fit names the batch that does.
// --offload-residual: the residual stream (ceil(S/N) x hidden x 4 bytes, counted here
// independently) must fit in the host memory a rank may use; it names both figures.
TEST(MemoryCheck, OffloadedResidualMustFitInHostMemory) {
  PlanInput in; in.context = 1000001; in.ranks = 3; in.offload_residual = true;
  const MemoryPlan p = plan_memory(llama_8b(), in);
  const int64_t residual = int64_t(333334) * 4096 * 4;
  EXPECT_EQ(p.host_per_rank, residual);
  EXPECT_NO_THROW(check_host_memory(p, residual));
  std::string msg;
  try {
    check_host_memory(p, residual - 1);
  } catch (const Error& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("memory check: --offload-residual keeps " + std::to_string(residual) + " bytes"),
            std::string::npos) << msg;
  EXPECT_NE(msg.find("but only " + std::to_string(residual - 1) + " bytes"), std::string::npos) << msg;
  in.offload_residual = false;
  EXPECT_EQ(plan_memory(llama_8b(), in).host_per_rank, 0);
}

TEST(MemoryCheck, TooLargeBatchNamesTheBatchThatFits) {
  PlanInput in; in.context = 8192; in.ranks = 1;
  const MemoryPlan one = plan_memory(llama_8b(), in);
  in.batch = 8;
  const int64_t avail = one.total_per_rank + 2 * one.kv_per_rank;  // 3 documents
  const std::string msg = message_of(llama_8b(), in, MemoryKind::gpu, avail);
  EXPECT_NE(msg.find("memory check: 8 documents of 8192 tokens need "), std::string::npos) << msg;
  EXPECT_NE(msg.find("--max-batch 3 fits"), std::string::npos) << msg;
}

TEST(MemoryCheck, TooSmallNamesNeededAvailableAndSmallestRanks) {
  PlanInput in; in.context = 1 << 20; in.ranks = 2;
  const int64_t avail = int64_t(80) << 30;  // one 80 GiB GPU
  const MemoryPlan p = plan_memory(llama_8b(), in);
  ASSERT_GT(p.total_per_rank, avail);
  const int fit = smallest_fitting_ranks(llama_8b(), in, avail);
  ASSERT_GT(fit, 2);
  // Independent check of "smallest": fit ranks fits, fit - 1 does not.
  PlanInput at = in; at.ranks = fit;
  EXPECT_LE(plan_memory(llama_8b(), at).total_per_rank, avail);
  at.ranks = fit - 1;
  EXPECT_GT(plan_memory(llama_8b(), at).total_per_rank, avail);
  const std::string msg = message_of(llama_8b(), in, MemoryKind::gpu, avail);
  EXPECT_NE(msg.find("memory check: a document of 1048576 tokens needs " + std::to_string(p.total_per_rank) +
                     " bytes"),
            std::string::npos) << msg;
  EXPECT_NE(msg.find("per rank with 2 ranks (cp 2 x tp 1), but only " + std::to_string(avail) +
                     " bytes (80.0 GiB) of GPU memory are available"),
            std::string::npos) << msg;
  EXPECT_NE(msg.find("the smallest rank count that fits is " + std::to_string(fit)), std::string::npos) << msg;
}

TEST(MemoryCheck, WeightsAloneTooLarge) {
  PlanInput in; in.context = 4096; in.ranks = 1;
  const std::string msg = message_of(llama_8b(), in, MemoryKind::host, int64_t(1) << 30);
  EXPECT_NE(msg.find("of host memory are available; no rank count fits: the weights alone need"), std::string::npos)
      << msg;
}

TEST(MemoryCheck, ContextBeyondTheLongestNamesMaxNewTokens) {
  PlanInput in; in.context = kMaxContextTokens + 1000; in.ranks = 1;
  EXPECT_EQ(message_of(llama_8b(), in, MemoryKind::host, INT64_MAX),
            "memory check: a document of 2147484647 tokens (prompt plus --max-new-tokens) is longer than the "
            "2147483647 tokens of context ringinfer supports: lower --max-new-tokens");
  // The longest context itself is planned (and does not fit 1 TB on one rank).
  in.context = kMaxContextTokens;
  EXPECT_NE(message_of(llama_8b(), in, MemoryKind::host, int64_t(1) << 40).find("the smallest rank count that fits"),
            std::string::npos);
}

TEST(MemoryCheck, MeminfoParsing) {
  EXPECT_EQ(parse_meminfo_available("MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:   12345678 kB\n"),
            int64_t(12345678) * 1024);
  try {
    parse_meminfo_available("MemTotal: 1 kB\n", "fake/meminfo");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "fake/meminfo: no MemAvailable line (pass --memory-limit)");
  }
  EXPECT_THROW(parse_meminfo_available("MemAvailable: lots\n"), Error);
  EXPECT_EQ(available_bytes(MemoryKind::host, 12345), 12345);
  EXPECT_GT(available_bytes(MemoryKind::host), 0);
}

}  // namespace
}  // namespace ringinfer
