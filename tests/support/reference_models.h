#pragma once
// The tiny reference models of tests/fixtures/models/<name>/ (config, safetensors, and
// reference.json with float64 per-token logprobs from patched transformers), loaded once
// per process, and helpers the multi-rank engine tests share.
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "mpi_world.h"  // world_size, world_rank, all_ranks: the engine tests use them
#include "ringinfer/engine.h"
#include "ringinfer/model_loader.h"
#include "ringinfer/parallel_layout.h"

namespace ringinfer::test {

struct ReferenceModel {
  std::string dir;                           // tests/fixtures/models/<fixture>: reference.json
  LoadedModel model;                         // config + fp32 weights
  std::vector<std::vector<int32_t>> docs;    // the reference documents
  std::vector<std::vector<double>> logprobs; // float64 logprobs of each (size - 1 entries)
  std::vector<int32_t> greedy_prompt;
  const std::vector<int32_t>& longest() const { return docs.back(); }  // docs are by length
  const std::vector<double>& longest_logprobs() const { return logprobs.back(); }
};

// Loaded on first use and cached; throws when the fixture is missing or malformed.
const ReferenceModel& reference_model(const std::string& name);

// The names of the four fixtures: GQA with llama3 RoPE, Qwen2 with bias and tied
// embeddings, Mistral with one KV head, Qwen3 with QK-norm, YaRN, tied embeddings and a
// head_dim that is not hidden / heads.
inline const std::vector<std::string>& reference_model_names() {
  static const std::vector<std::string> names = {"llama3-gqa", "qwen2-bias-tied", "mistral-mqa", "qwen3-qknorm-yarn"};
  return names;
}
// The GGUF forms of three of them (tools/make-gguf-fixtures.py: the same F32 weights, so
// the same reference): llama (Q/K permuted, llama3 RoPE as rope_freqs for an original
// context of 64), qwen2, qwen3; and llama-kquants, a GGUF of its own whose matrices are
// Q2_K..Q6_K, Q5_x, IQ4_NL and IQ4_XS blocks (tools/make-kquant-fixtures.py: its reference.json is
// the float64 forward of the values the `gguf` package dequantizes them to). A name
// "<fixture>/model.gguf" loads that file.
inline const std::vector<std::string>& gguf_reference_model_names() {
  static const std::vector<std::string> names = {"llama3-gqa/model.gguf", "qwen2-bias-tied/model.gguf",
                                                 "qwen3-qknorm-yarn/model.gguf", "llama-kquants/model.gguf"};
  return names;
}
// The model path of a fixture name (its folder, or its GGUF), and its folder (reference.json).
std::string reference_model_path(const std::string& name);
std::string reference_model_dir(const std::string& name);

// The first n tokens of d, and the tokens t = r (mod N) of d.
std::vector<int32_t> prefix(const std::vector<int32_t>& d, size_t n);
std::vector<int32_t> stripe_of(const std::vector<int32_t>& d, int r, int N);

// A document for decode_batched: its whole prompt and its options.
struct BatchDoc {
  std::vector<int32_t> prompt;
  GenerateOptions options;
};
// Runs docs through Engine::join / step / take_finished as `run` does (continuous
// batching): document i (tag i, its stripe r of N) joins while the batch has room,
// otherwise the batch steps. Each finished document goes to on_finished (when given)
// before its result is kept; returns the results by tag. largest (when given): the
// largest batch seen.
std::map<uint64_t, GenerateResult> decode_batched(Engine& engine, const std::vector<BatchDoc>& docs, int r = 0,
                                                  int N = 1,
                                                  const std::function<void(const FinishedDocument&)>& on_finished = {},
                                                  int64_t* largest = nullptr);

// |a - b| / max(1, |b|): relative above magnitude 1, absolute below (logprobs near 0).
double rel_diff(double a, double b);

// One OpenMP / OpenBLAS thread per rank: oversubscribed ranks (np 4 on 2 cores) with a
// thread team each crawl. Call first in a test binary's setup.
void use_one_thread();
// use_one_thread() at static initialization, before any test runs: define one at
// namespace scope of a test binary (`const test::OneThreadPerRank kOneThread;`).
struct OneThreadPerRank {
  OneThreadPerRank() { use_one_thread(); }
};

// Collective over MPI_COMM_WORLD: this rank's communicators for --cp cp --tp tp (MPI only).
ParallelGroups world_groups(int cp, int tp);
// Engine options for the CP ring and TP group of g (ranks, sizes, communicators); every
// other option keeps its default.
EngineOptions group_engine_options(const ParallelGroups& g);

}  // namespace ringinfer::test
