// `run` and `score`: the SPMD job. Every rank opens the inputs, computes the same
// document schedule, runs its group's documents, and rank 0 assembles the output in
// input order from the group leaders' results.
#include <mpi.h>

#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/options.h"
#include "ringinfer/error.h"
#include "ringinfer/log.h"
#include "ringinfer/output.h"
#include "ringinfer/parallel_layout.h"
#include "ringinfer/result_codec.h"
#include "ringinfer/runtime.h"
#include "ringinfer/schedule.h"
#include "ringinfer/shard.h"
#include "ringinfer/striped.h"
#include "ringinfer/version.h"

namespace ringinfer::cli {
namespace {

// Concatenates every rank's encoded results on world rank 0 (empty elsewhere).
std::vector<Bytes> gather_results(const std::vector<Bytes>& mine, int world_rank, int world_size) {
  Bytes packed;
  for (const Bytes& b : mine) {
    const uint64_t n = b.size();
    packed.insert(packed.end(), reinterpret_cast<const uint8_t*>(&n), reinterpret_cast<const uint8_t*>(&n) + 8);
    packed.insert(packed.end(), b.begin(), b.end());
  }
  // Results are small (token ids and text): int counts suffice, but check.
  RI_CHECK(packed.size() < (size_t(1) << 31), "results of one rank exceed 2 GiB");
  int my_size = static_cast<int>(packed.size());
  std::vector<int> sizes(world_size), displs(world_size);
  MPI_CHECK(MPI_Gather(&my_size, 1, MPI_INT, sizes.data(), 1, MPI_INT, 0, MPI_COMM_WORLD));
  Bytes all;
  if (world_rank == 0) {
    int64_t total = 0;
    for (int r = 0; r < world_size; ++r) {
      displs[r] = static_cast<int>(total);
      total += sizes[r];
    }
    RI_CHECK(total < (int64_t(1) << 31), "gathered results exceed 2 GiB");
    all.resize(total);
  }
  MPI_CHECK(MPI_Gatherv(packed.data(), my_size, MPI_BYTE, all.data(), sizes.data(), displs.data(), MPI_BYTE, 0,
                        MPI_COMM_WORLD));
  std::vector<Bytes> out;
  for (size_t pos = 0; pos + 8 <= all.size();) {
    uint64_t n;
    std::memcpy(&n, all.data() + pos, 8);
    pos += 8;
    out.emplace_back(all.begin() + pos, all.begin() + pos + n);
    pos += n;
  }
  return out;
}

OutputAttributes output_attributes(const RunConfig& config, const ParallelLayout& layout) {
  return {{"model", config.model},
          {"configuration", format_config(config)},
          {"program_version", RINGINFER_VERSION},
          {"ranks", std::to_string(layout.world_size)},
          {"cp", std::to_string(layout.cp)}};
}

// --dry-run: every rank reads its stripes; the ring checks that the stripes add up to the
// document; generations are empty.
RunResult dry_run_document(const DocumentSet& docs, const DocInfo& doc, const ParallelLayout& layout,
                           ParallelGroups& groups) {
  const int N = layout.cp, r = layout.cp_rank;
  const auto stripes = docs.read_stripes(doc, {r, (r + 1) % N}, N);
  const int64_t expected = local_len(doc.length, r, N);
  RI_CHECK(static_cast<int64_t>(stripes[0].size()) == expected,
           "document " + doc.id + ": rank read " + std::to_string(stripes[0].size()) + " tokens of its stripe, expected " +
               std::to_string(expected));
  int64_t held = static_cast<int64_t>(stripes[0].size()), total = 0;
  groups.cp->all_reduce(&held, &total, 1, CommDtype::int64, ReduceOp::sum, Stream{});
  RI_CHECK(total == doc.length, "document " + doc.id + ": stripes hold " + std::to_string(total) + " of " +
                                    std::to_string(doc.length) + " tokens");
  RunResult res;
  res.id = doc.id;
  res.prompt_tokens = doc.length;
  res.finish_reason = "length";
  return res;
}

}  // namespace

int run_command(const RunConfig& config) {
  MpiRuntime mpi(nullptr, nullptr);
  return run_guarded(
      [&]() -> int {
        const RankInfo& me = mpi.info();
        const ParallelLayout layout = make_parallel_layout(
            me.world_size, me.world_rank, config.cp > 0 ? std::optional<int>(config.cp) : std::nullopt);
        ParallelGroups groups = make_parallel_groups(layout, MPI_COMM_WORLD);
        RI_CHECK(config.dry_run, "ringinfer " + config.command +
                                     ": the model engine is not wired into the CLI yet; use run --dry-run");

        DocumentSet docs = open_documents(config.inputs, -1);
        std::vector<int64_t> lengths;
        for (const DocInfo& d : docs.documents()) lengths.push_back(d.length);
        const auto schedule = assign_documents(lengths, layout.dp, config.max_new_tokens);
        log::info(std::to_string(docs.size()) + " documents, " + std::to_string(layout.dp) + " group(s) of " +
                  std::to_string(layout.cp) + " rank(s)");

        const bool leader = layout.cp_rank == 0 && layout.tp_rank == 0;
        std::vector<Bytes> mine;
        for (int64_t d : schedule[layout.dp_rank]) {
          const RunResult res = dry_run_document(docs, docs[d], layout, groups);
          if (leader) mine.push_back(encode_result(d, res));
        }

        const std::vector<Bytes> all = gather_results(mine, me.world_rank, me.world_size);
        if (me.world_rank == 0) {
          std::vector<std::optional<RunResult>> by_index(docs.size());
          for (const Bytes& b : all) {
            RunResult r;
            const int64_t i = decode_result(b.data(), b.size(), r, "gathered result");
            RI_CHECK(i >= 0 && i < static_cast<int64_t>(docs.size()) && !by_index[i], "duplicate or bad result index");
            by_index[i] = std::move(r);
          }
          std::vector<RunResult> results;
          for (size_t i = 0; i < by_index.size(); ++i) {
            RI_CHECK(by_index[i].has_value(), "no result for document " + docs[i].id);
            results.push_back(std::move(*by_index[i]));
          }
          write_run_output(config.output, results, output_attributes(config, layout));
          log::info("wrote " + config.output);
        }
        MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
        return kExitOk;
      },
      kExitUsage);
}

}  // namespace ringinfer::cli
