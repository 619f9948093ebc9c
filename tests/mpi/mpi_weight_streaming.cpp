// Streaming weight loads (Engine(backend, ModelSource)) under mpirun -np 1..4, every
// TP size T in {1, 2, 4} that divides the world (CP 1, the rest data parallel):
//   - host memory: this binary counts every byte live through operator new (HostTensor
//     data included; the CPU backend's aligned_alloc is not counted). The bytes alive at
//     the peak of the load and freed by its end must stay below 2 x the largest tensor of
//     the rank's slice + 64 KiB, while the ModelWeights path (read_weights, then Engine)
//     must measure at least the slice's whole size: the measurement can tell them apart.
//     The model has 16 layers, so its slice is > 10x its largest tensor at every T.
//   - the weights: score logprobs of the streamed engine must equal, bit for bit, those of
//     an engine given the whole fp32 weights (the host cuts them), for the three reference
//     fixtures (GQA, Qwen2 bias + tied embeddings, MQA) and a GGUF (Q/K rows permuted on
//     disk) under CP x TP groups.
//   - errors: the loader's messages (missing tensor, shape against the config, a T that
//     cannot split the model, before any backend allocation) come through unchanged.
#include <gtest/gtest.h>
#include <malloc.h>
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <memory>
#include <new>
#include <random>

#include "gtest_helpers.h"
#include "model_files.h"
#include "ringinfer/comm.h"
#include "ringinfer/engine.h"
#include "ringinfer/error.h"
#include "ringinfer/model_loader.h"
#include "ringinfer/parallel_layout.h"
#include "reference_models.h"
#include "test_paths.h"

// ---- counting allocator (this binary only)
namespace {
std::atomic<int64_t> g_live{0}, g_peak{0};

void* counted_alloc(std::size_t n) {
  void* p = std::malloc(n ? n : 1);
  if (!p) return nullptr;
  const int64_t live = g_live.fetch_add(static_cast<int64_t>(malloc_usable_size(p))) +
                       static_cast<int64_t>(malloc_usable_size(p));
  for (int64_t peak = g_peak.load(); live > peak && !g_peak.compare_exchange_weak(peak, live);) {
  }
  return p;
}
void counted_free(void* p) noexcept {
  if (!p) return;
  g_live.fetch_sub(static_cast<int64_t>(malloc_usable_size(p)));
  std::free(p);
}
}  // namespace

void* operator new(std::size_t n) {
  if (void* p = counted_alloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { counted_free(p); }

namespace ringinfer {
namespace {

using test::all_ranks;
using test::world_rank;
using test::world_groups;
using test::world_size;

const test::OneThreadPerRank kOneThread;

// Bytes alive at the peak of f() that are freed by its end.
template <class F>
int64_t transient_bytes(F&& f) {
  g_peak.store(g_live.load());
  f();
  return g_peak.load() - g_live.load();
}

EngineOptions options(const ParallelGroups& g) {
  EngineOptions o = test::group_engine_options(g);
  o.chunk_tokens = 16;
  return o;
}

std::vector<int> tp_sizes() {
  std::vector<int> out;
  for (int tp : {1, 2, 4})
    if (world_size() % tp == 0) out.push_back(tp);
  return out;
}

// The fp32 sizes (elements) of every tensor of `sl`'s share, computed here from the config.
std::vector<int64_t> slice_sizes(const ModelConfig& c, const TensorParallelSlice& sl) {
  const int64_t h = c.hidden_size, D = c.head_dim;
  std::vector<int64_t> out = {c.vocab_size * h, h};
  if (!c.tie_word_embeddings) out.push_back(sl.vocab_rows * h);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const int64_t q = sl.q_heads * D, kv = sl.kv_heads * D, i = sl.inter;
    for (int64_t n : {h, q * h, kv * h, kv * h, h * q, h, i * h, i * h, h * i}) out.push_back(n);
    if (c.qkv_bias)
      for (int64_t n : {q, kv, kv}) out.push_back(n);
  }
  return out;
}

std::string tiny_model_dir(int layers, bool bias, bool tied, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::string dir = test::make_temp_dir("streamload");
  test::write_tiny_hf(dir, test::make_tiny_model(rng, layers, bias, tied));
  return dir;
}

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return t;
}

TEST(MpiWeightStreaming, HostHoldsAboutOneTensorWhileLoading) {
  for (bool tied : {false, true}) {
    const std::string dir = tiny_model_dir(16, /*bias=*/tied, tied, 7 + world_rank());
    const ModelSource m = open_model(dir);
    const ModelConfig& c = m.config;
    for (int tp : tp_sizes()) {
      ParallelGroups g = world_groups(1, tp);
      const TensorParallelSlice sl = tensor_parallel_slice(c, g.layout.tp_rank, tp);
      const std::vector<int64_t> sizes = slice_sizes(c, sl);
      int64_t shard = 0, largest = 0;
      for (int64_t n : sizes) shard += n * 4, largest = std::max(largest, n * 4);
      const std::string at = "tp " + std::to_string(tp) + (tied ? " tied" : "") + " rank " +
                             std::to_string(world_rank());
      ASSERT_GT(shard, 10 * largest) << at;  // else the two paths would not differ clearly
      auto be = make_cpu_backend();
      std::unique_ptr<Engine> e;  // alive across the measurement: its own allocations are not transient
      const int64_t streamed = transient_bytes([&] { e = std::make_unique<Engine>(*be, m, options(g)); });
      e.reset();
      const int64_t loaded = transient_bytes([&] {
        const ModelWeights w = read_weights(m, sl);
        e = std::make_unique<Engine>(*be, c, w, options(g));
      });
      e.reset();
      EXPECT_LE(streamed, 2 * largest + 64 * 1024) << at << ": slice " << shard << " B, largest " << largest;
      EXPECT_GE(loaded, shard) << at << ": the counter must see the ModelWeights path hold the whole slice";
      // The backend holds the slice once (the tied LM head is a view of the embedding).
      int64_t held = -1;
      {
        auto be2 = make_cpu_backend();
        Engine e(*be2, m, options(g));
        held = be2->allocated_bytes();
      }
      EXPECT_GE(held, shard) << at;
    }
  }
}

// The engine's scores with streamed weights, against an engine given the whole weights.
void expect_same_scores(const std::string& model_path, const ModelWeights& whole, const std::string& name) {
  const ModelSource m = open_model(model_path);
  const ModelConfig& c = m.config;
  const std::vector<int32_t> doc = random_tokens(37, c.vocab_size, 11);  // the same on every rank
  auto be = make_cpu_backend();
  for (int tp : tp_sizes()) {
    for (int cp = 1; cp * tp <= world_size(); ++cp) {
      if (world_size() % (cp * tp) != 0) continue;
      if (c.n_heads % tp != 0) continue;
      ParallelGroups g = world_groups(cp, tp);
      const std::string at = name + " cp " + std::to_string(cp) + " tp " + std::to_string(tp);
      Engine streamed(*be, m, options(g));
      Engine given(*be, c, whole, options(g));
      const DocumentScore a = streamed.score(doc), b = given.score(doc);
      ASSERT_EQ(a.logprobs.size(), doc.size() - 1) << at;
      ASSERT_EQ(a.logprobs, b.logprobs) << at;
      // Not vacuous: a real distribution over the vocabulary, not zeros.
      EXPECT_LT(a.sum_logprob, -1.0) << at;
    }
  }
}

TEST(MpiWeightStreaming, ScoresEqualTheWholeWeightsEngine) {
  std::vector<std::string> names = test::reference_model_names();
  for (const std::string& g : test::gguf_reference_model_names()) names.push_back(g);
  for (const std::string& name : names) {
    const test::ReferenceModel& f = test::reference_model(name);
    expect_same_scores(test::reference_model_path(name), f.model.weights, name);
  }
}

TEST(MpiWeightStreaming, GgufScoresEqualTheWholeWeightsEngine) {
  std::mt19937_64 rng(21);  // the same model on every rank
  const test::TinyModel tm = test::make_tiny_model(rng, 2, false, false);
  const std::string path = test::make_temp_dir("streamload-gguf") + "/m.gguf";
  std::map<std::string, std::vector<double>> values;  // tiny_gguf fills it; unused here
  test::write_bytes(path, test::tiny_gguf(tm, test::kGF32, 3, &values));
  expect_same_scores(path, load_model(path).weights, "gguf");
}

std::string engine_error(const ModelSource& m, const EngineOptions& o, int64_t* backend_bytes = nullptr) {
  auto be = make_cpu_backend();
  std::string msg;
  try {
    Engine e(*be, m, o);
  } catch (const Error& err) {
    msg = err.what();
  }
  if (backend_bytes) *backend_bytes = be->peak_allocated_bytes();
  return msg;
}

TEST(MpiWeightStreaming, LoaderErrorsComeThroughUnchanged) {
  std::mt19937_64 rng(5 + world_rank());
  test::TinyModel tm = test::make_tiny_model(rng, 2, false, false);
  const std::string up = "model.layers.1.mlp.up_proj.weight";
  test::TinyModel missing = tm;
  missing.shapes.erase(up);
  missing.values.erase(up);
  const std::string d1 = test::make_temp_dir("streamload-missing");
  test::write_tiny_hf(d1, missing);
  // open_model checks every tensor against the config, before any memory is planned.
  EXPECT_EQ(test::error_of([&] { open_model(d1); }), d1 + ": tensor '" + up + "' is missing");

  test::TinyModel wide = tm;
  wide.shapes[up] = {97, 64};
  wide.values[up].resize(97 * 64, 0.25f);
  const std::string d2 = test::make_temp_dir("streamload-shape");
  test::write_tiny_hf(d2, wide);
  EXPECT_EQ(test::error_of([&] { open_model(d2); }), d2 + "/config.json does not match the weights: tensor '" + up +
                                                         "' has shape [97, 64] but the config implies [96, 64]");

  // T = 3 cannot split 4 query heads: the same message on every rank, nothing allocated.
  const std::string d3 = test::make_temp_dir("streamload-tp");
  test::write_tiny_hf(d3, tm);
  EngineOptions o;
  o.tp_size = 3;
  o.tp_rank = world_rank() % 3;
  int64_t bytes = -1;
  const std::string tp3 = engine_error(open_model(d3), o, &bytes);
  EXPECT_EQ(tp3, "--tp 3: the model's 4 query heads are not divisible by 3");
  EXPECT_EQ(bytes, 0);
  EXPECT_TRUE(all_ranks(tp3 == "--tp 3: the model's 4 query heads are not divisible by 3"));

  // The ModelWeights path keeps its own checks (a bias the config does not use).
  ModelWeights w = load_model(d3).weights;
  w.layers[1].bq.shape = {64};
  w.layers[1].bq.data.assign(64, 0.5f);
  auto be = make_cpu_backend();
  std::string msg;
  try {
    Engine e(*be, open_model(d3).config, w);
  } catch (const Error& err) {
    msg = err.what();
  }
  EXPECT_EQ(msg, "model: model.layers.1.self_attn.q_proj.bias is present but the config does not use it");
}

}  // namespace
}  // namespace ringinfer
