// Engine on the CPU backend against the float64 reference fixtures of
// tools/make-reference-models.py (tests/fixtures/models/*: Hugging Face transformers in
// float64 with RoPE and RMSNorm patched to float64, cross-checked with an independent
// numpy forward to ~1e-14). Tolerance: 1e-4 absolute on every token's logprob (DESIGN §9).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "ringinfer/engine.h"
#include "ringinfer/kv_quant.h"
#include "ringinfer/model_loader.h"
#include "ringinfer/sampling.h"
#include "forwarding_backend.h"
#include "gtest_helpers.h"
#include "reference_models.h"
#include "test_paths.h"

using namespace ringinfer;

namespace {

struct Reference {
  LoadedModel model;
  std::vector<std::vector<int32_t>> docs;
  std::vector<std::vector<double>> logprobs;
  std::vector<int32_t> greedy_prompt, greedy_tokens;
  std::vector<double> greedy_margins;
};

Reference load_reference(const std::string& name) {
  const std::string dir = test::reference_model_dir(name);
  Reference ref;
  ref.model = load_model(test::reference_model_path(name));
  std::ifstream in(dir + "/reference.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  for (const auto& d : j.at("documents")) {
    ref.docs.push_back(d.at("tokens").get<std::vector<int32_t>>());
    ref.logprobs.push_back(d.at("logprobs").get<std::vector<double>>());
  }
  ref.greedy_prompt = j.at("greedy").at("prompt").get<std::vector<int32_t>>();
  ref.greedy_tokens = j.at("greedy").at("tokens").get<std::vector<int32_t>>();
  ref.greedy_margins = j.at("greedy").at("margins").get<std::vector<double>>();
  return ref;
}

// Largest |engine - reference| over every token of every document; with check_sums, also
// expects each document's summed logprob within 1e-4 per token of the reference's.
double max_score_error(Engine& engine, const Reference& ref, bool check_sums) {
  double worst = 0;
  for (size_t d = 0; d < ref.docs.size(); ++d) {
    const DocumentScore r = engine.score(ref.docs[d]);
    EXPECT_EQ(r.logprobs.size(), ref.logprobs[d].size());
    if (r.logprobs.size() != ref.logprobs[d].size()) return 1e30;
    double sum = 0;
    for (size_t k = 0; k < r.logprobs.size(); ++k) {
      worst = std::max(worst, std::fabs(double(r.logprobs[k]) - ref.logprobs[d][k]));
      sum += ref.logprobs[d][k];
    }
    if (check_sums && !r.logprobs.empty()) {
      EXPECT_NEAR(r.sum_logprob, sum, 1e-4 * r.logprobs.size());
    }
  }
  return worst;
}

class EngineFixture : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(EngineFixture, ScoreMatchesFloat64Reference) {
  const Reference ref = load_reference(GetParam());
  auto be = make_cpu_backend();
  for (int64_t chunk : {256, 7}) {  // one chunk per document, and many small ones
    EngineOptions opt;
    opt.chunk_tokens = chunk;
    opt.logits_chunk = chunk == 7 ? 5 : 32;
    Engine engine(*be, ref.model.config, ref.model.weights, opt);
    const double err = max_score_error(engine, ref, true);
    EXPECT_LT(err, 1e-4) << GetParam() << " chunk " << chunk;
    std::printf("[ engine   ] %s chunk %lld: max |logprob - float64| = %.3g\n", GetParam().c_str(),
                static_cast<long long>(chunk), err);
  }
}

TEST_P(EngineFixture, WrongMaskIsCaught) {
  // Negative control: the diagonal of the causal mask flipped (a token does not see
  // itself) must move logprobs far beyond the 1e-4 tolerance, so the suite catches
  // striping errors.
  const Reference ref = load_reference(GetParam());
  CpuBackendOptions bad;
  bad.flip_mask_diagonal = true;
  auto be = make_cpu_backend(bad);
  Engine engine(*be, ref.model.config, ref.model.weights);
  const double err = max_score_error(engine, ref, false);
  EXPECT_GT(err, 1e-2) << GetParam();
  std::printf("[ engine   ] %s with a flipped mask diagonal: max error %.3g\n", GetParam().c_str(), err);
}

TEST_P(EngineFixture, GreedyGenerationMatchesReferenceAndRepeats) {
  const Reference ref = load_reference(GetParam());
  auto be = make_cpu_backend();
  Engine engine(*be, ref.model.config, ref.model.weights);
  GenerateOptions g;
  g.max_new_tokens = static_cast<int64_t>(ref.greedy_tokens.size());
  ModelConfig no_eos = ref.model.config;
  no_eos.eos_token_ids.clear();  // the reference continuation ignores EOS
  Engine free_running(*be, no_eos, ref.model.weights);
  const GenerateResult a = free_running.generate(ref.greedy_prompt, g);
  const GenerateResult b = free_running.generate(ref.greedy_prompt, g);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.finish, FinishReason::length);
  // Compare up to the first step whose top-2 logit margin is within float32 noise.
  ASSERT_EQ(a.tokens.size(), ref.greedy_tokens.size());
  for (size_t k = 0; k < a.tokens.size() && ref.greedy_margins[k] > 1e-3; ++k)
    EXPECT_EQ(a.tokens[k], ref.greedy_tokens[k]) << GetParam() << " step " << k;
}

// --offload-residual keeps x in host memory between layers and streams it through two
// chunk buffers: the same ops on the same values, so every logprob and token is bitwise
// the same, whatever the chunk sizes (one chunk per document; chunks and LM-head chunks
// that end mid-document and differ from each other).
TEST_P(EngineFixture, OffloadedResidualIsBitwiseTheSame) {
  const Reference ref = load_reference(GetParam());
  auto be = make_cpu_backend();
  ModelConfig no_eos = ref.model.config;
  no_eos.eos_token_ids.clear();
  for (int64_t chunk : {256, 7}) {
    EngineOptions opt;
    opt.chunk_tokens = chunk;
    opt.logits_chunk = chunk == 7 ? 5 : 32;
    Engine plain(*be, no_eos, ref.model.weights, opt);
    opt.offload_residual = true;
    Engine offloaded(*be, no_eos, ref.model.weights, opt);
    for (const auto& doc : ref.docs) {
      const DocumentScore a = plain.score(doc), b = offloaded.score(doc);
      ASSERT_EQ(a.logprobs.size(), b.logprobs.size());
      // (memcmp of an empty document's null data is undefined: UBSan stops there)
      EXPECT_TRUE(a.logprobs.empty() ||
                  std::memcmp(a.logprobs.data(), b.logprobs.data(), a.logprobs.size() * sizeof(float)) == 0)
          << GetParam();
      EXPECT_EQ(std::memcmp(&a.sum_logprob, &b.sum_logprob, sizeof(double)), 0) << GetParam();
    }
    GenerateOptions g;
    g.max_new_tokens = 6;
    EXPECT_EQ(plain.generate(ref.greedy_prompt, g).tokens, offloaded.generate(ref.greedy_prompt, g).tokens);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EngineFixture, ::testing::ValuesIn(test::reference_model_names()), test::param_name);
INSTANTIATE_TEST_SUITE_P(Gguf, EngineFixture, ::testing::ValuesIn(test::gguf_reference_model_names()),
                         test::param_name);

TEST(Engine, EmptyAndSingleTokenDocuments) {
  const Reference ref = load_reference("llama3-gqa");
  auto be = make_cpu_backend();
  Engine engine(*be, ref.model.config, ref.model.weights);
  const DocumentScore s0 = engine.score({});
  EXPECT_TRUE(s0.logprobs.empty());
  EXPECT_TRUE(std::isnan(s0.perplexity));
  const DocumentScore s1 = engine.score({42});
  EXPECT_TRUE(s1.logprobs.empty());
  GenerateOptions g;
  g.max_new_tokens = 4;
  const GenerateResult e = engine.generate({}, g);
  EXPECT_TRUE(e.tokens.empty());
  EXPECT_EQ(e.finish, FinishReason::empty_prompt);
  ModelConfig no_eos = ref.model.config;
  no_eos.eos_token_ids.clear();
  Engine free_running(*be, no_eos, ref.model.weights);
  const GenerateResult one = free_running.generate({42}, g);
  EXPECT_EQ(one.tokens.size(), 4u);
  // Perplexity is exp(-mean logprob) of the scored entries.
  const DocumentScore s2 = engine.score(ref.docs[2]);
  EXPECT_NEAR(s2.perplexity, std::exp(-s2.sum_logprob / s2.logprobs.size()), 1e-9 * s2.perplexity);
}

// Negative controls for the Qwen3 fixture: dropping any of its differences (QK-norm,
// YaRN's frequencies, YaRN's attention factor) moves logprobs far past the 1e-4
// tolerance, so ScoreMatchesFloat64Reference checks each of them.
TEST(Engine, Qwen3DifferencesAreEachCaught) {
  const Reference ref = load_reference("qwen3-qknorm-yarn");
  auto be = make_cpu_backend();
  struct Case {
    const char* what;
    std::function<void(ModelConfig&, ModelWeights&)> edit;
  };
  const std::vector<Case> cases = {
      {"no QK-norm",
       [](ModelConfig& c, ModelWeights& w) {
         c.qk_norm = false;
         for (LayerWeights& L : w.layers) L.q_norm = L.k_norm = HostTensor();
       }},
      {"no YaRN frequencies", [](ModelConfig& c, ModelWeights&) {
         const double m = c.rope.attention_factor;
         const double theta = c.rope.theta;
         c.rope = RopeConfig();
         c.rope.theta = theta;
         c.rope.scaling = RopeScalingType::yarn;  // the attention factor alone
         c.rope.factor = 1.0;
         c.rope.attention_factor = m;
       }},
      {"no attention factor", [](ModelConfig& c, ModelWeights&) { c.rope.attention_factor = 1.0; }},
  };
  for (const Case& k : cases) {
    ModelConfig c = ref.model.config;
    ModelWeights w = ref.model.weights;
    k.edit(c, w);
    Engine engine(*be, c, w);
    const double err = max_score_error(engine, ref, false);
    EXPECT_GT(err, 1e-2) << k.what;
    std::printf("[ engine   ] qwen3-qknorm-yarn with %s: max error %.6g\n", k.what, err);
  }
}

TEST(Engine, StopsAtEos) {
  const Reference ref = load_reference("mistral-mqa");
  auto be = make_cpu_backend();
  ModelConfig cfg = ref.model.config;
  cfg.eos_token_ids = {ref.greedy_tokens[2]};  // the third greedy token becomes an EOS
  Engine engine(*be, cfg, ref.model.weights);
  GenerateOptions g;
  g.max_new_tokens = 10;
  const GenerateResult r = engine.generate(ref.greedy_prompt, g);
  ASSERT_LE(r.tokens.size(), 3u);
  EXPECT_EQ(r.finish, FinishReason::eos);
  EXPECT_EQ(r.tokens.back(), ref.greedy_tokens[2]);
}

// The CPU backend with Backend::begin_recording's contract acted out, as a CUDA graph
// makes it: ops enqueued while recording are queued, not run, and run in order by
// end_recording(true) (dropped by false); a host wait while recording throws, as does
// sample() of parameters that samples_on_device() (greedy only, as on CUDA) refuses.
class RecordingCpuBackend final : public Backend {
 public:
  RecordingCpuBackend() : b_(make_cpu_backend()) {}
  int recorded_steps = 0;  // end_recording(true) calls

  bool begin_recording() override {
    if (recording_) throw Error("recording: begin_recording while recording");
    recording_ = true;
    return true;
  }
  bool end_recording(bool run) override {
    if (!recording_) throw Error("recording: end_recording without begin_recording");
    recording_ = false;
    std::vector<std::function<void()>> ops = std::move(queued_);
    queued_.clear();
    if (!run) return false;
    ++recorded_steps;
    if (refuse_every > 0 && recorded_steps % refuse_every == 0) return false;  // dropped: the caller reruns
    for (auto& op : ops) op();
    return true;
  }
  int refuse_every = 0;  // > 0: every refuse_every-th recording is not run (a refused graph)
  bool samples_on_device(const SamplingParams& p) const override { return p.temperature <= 0.0; }

  const char* name() const override { return b_->name(); }
  Stream stream() override { return b_->stream(); }
  Stream comm_stream() override { return b_->comm_stream(); }
  Stream copy_stream() override { return b_->copy_stream(); }
  std::unique_ptr<Event> record(Stream s) override { return host("record"), b_->record(s); }
  void wait(Stream s, const Event& e) override { host("wait"), b_->wait(s, e); }
  void synchronize() override { host("synchronize"), b_->synchronize(); }
  Tensor alloc(int64_t r, int64_t c, DType t) override { return b_->alloc(r, c, t); }
  Tensor upload_weight(const HostTensor& w) override { return b_->upload_weight(w); }
  bool takes_quantized_weights() const override { return b_->takes_quantized_weights(); }
  KvDtype default_kv_dtype() const override { return b_->default_kv_dtype(); }
  bool supports_kv_dtype(KvDtype t) const override { return b_->supports_kv_dtype(t); }
  void copy_from_host(const Tensor& d, const void* s) override { host("copy_from_host"), b_->copy_from_host(d, s); }
  void copy_to_host(void* d, const Tensor& s) override { host("copy_to_host"), b_->copy_to_host(d, s); }
  Tensor alloc_host(int64_t r, int64_t c, DType t) override { return b_->alloc_host(r, c, t); }
  void copy_async(const Tensor& s, const Tensor& d, Stream st) override { host("copy_async"), b_->copy_async(s, d, st); }
  DType attention_state_dtype() const override { return b_->attention_state_dtype(); }
  DType attention_query_dtype(int64_t d) const override { return b_->attention_query_dtype(d); }
  KvBlock attention_input(const KvBlock& kv) override { return b_->attention_input(kv); }

  void copy(const Tensor& s, const Tensor& d) override { op([=] { b_->copy(s, d); }); }
  void embed(const Tensor& t, const Tensor& k, const Tensor& o) override { op([=] { b_->embed(t, k, o); }); }
  void rmsnorm(const Tensor& x, const Tensor& w, float eps, const Tensor& o) override {
    op([=] { b_->rmsnorm(x, w, eps, o); });
  }
  void matmul(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& o, bool acc) override {
    op([=] { b_->matmul(x, w, b, o, acc); });
  }
  void matmuls(const Tensor& x, const std::vector<Product>& p) override { op([=] { b_->matmuls(x, p); }); }
  void rmsnorm_matmuls(const Tensor& x, const Tensor& nw, float eps, const Tensor& n, const std::vector<Product>& p,
                       bool gated, const Tensor& go) override {
    op([=] { b_->rmsnorm_matmuls(x, nw, eps, n, p, gated, go); });
  }
  void rope(const Tensor& x, int64_t h, const Tensor& f, int64_t p0, int64_t ps) override {
    op([=] { b_->rope(x, h, f, p0, ps); });
  }
  void rope_rows(const Tensor& x, int64_t h, const Tensor& f, const std::vector<int64_t>& p) override {
    op([=] { b_->rope_rows(x, h, f, p); });
  }
  void store_kv(const Tensor& k, const Tensor& v, const KvBlock& d) override { op([=] { b_->store_kv(k, v, d); }); }
  void store_kv_rows(const Tensor& k, const Tensor& v, const std::vector<KvBlock>& d) override {
    op([=] { b_->store_kv_rows(k, v, d); });
  }
  void rope_store_rows(const Tensor& q, const Tensor& qo, const Tensor& k, const Tensor& v, int64_t h, int64_t hkv,
                       const Tensor& f, const std::vector<int64_t>& p, const std::vector<KvBlock>& d) override {
    op([=] { b_->rope_store_rows(q, qo, k, v, h, hkv, f, p, d); });
  }
  void attention_reset(const Tensor& o, const Tensor& l) override { op([=] { b_->attention_reset(o, l); }); }
  void attention(const Tensor& q, const KvBlock& kv, const AttentionShape& sh, const Tensor& o,
                 const Tensor& l) override {
    op([=] { b_->attention(q, kv, sh, o, l); });
  }
  void attention_rows(const Tensor& q, const std::vector<KvBlock>& kv, const std::vector<AttentionShape>& sh,
                      const Tensor& o, const Tensor& l) override {
    op([=] { b_->attention_rows(q, kv, sh, o, l); });
  }
  void swiglu(const Tensor& g, const Tensor& u) override { op([=] { b_->swiglu(g, u); }); }
  void target_logprobs(const Tensor& l, const Tensor& t, const Tensor& o) override {
    op([=] { b_->target_logprobs(l, t, o); });
  }
  void sample(const Tensor& l, const SamplingParams& p, double u, const Tensor& c, const Tensor& t) override {
    if (recording_ && !samples_on_device(p)) throw Error("recording: sample() on the host while recording");
    op([=] { b_->sample(l, p, u, c, t); });
  }
  void merge_attention(const Tensor& o, const Tensor& l, const Tensor& o2, const Tensor& l2) override {
    op([=] { b_->merge_attention(o, l, o2, l2); });
  }

 private:
  void host(const char* what) const {
    if (recording_) throw Error(std::string("recording: ") + what + " waits for the host while recording");
  }
  void op(std::function<void()> f) {
    if (recording_)
      queued_.push_back(std::move(f));
    else
      f();
  }
  std::unique_ptr<Backend> b_;
  bool recording_ = false;
  std::vector<std::function<void()>> queued_;
};

// The CPU backend acting out a backend whose products read bf16 (Backend::gemm_input_dtype),
// as CUDA's do: bf16 tensors in host memory, copy() rounding f32 into them (to nearest even)
// and matmul() reading them back exactly. With round_swiglu instead, gemm_input_dtype()
// stays f32 and swiglu() rounds its output to bf16 values in place: the numbers the down
// projection reads from a bf16 hand-off, reached without one.
class NarrowGemmCpuBackend final : public test::ForwardingBackend {
 public:
  explicit NarrowGemmCpuBackend(bool round_swiglu) : ForwardingBackend(make_cpu_backend()), round_swiglu_(round_swiglu) {}
  int64_t bf16_products = 0;  // matmul() calls that read a bf16 x

  DType gemm_input_dtype() const override { return round_swiglu_ ? DType::f32 : DType::bf16; }
  void copy(const Tensor& s, const Tensor& d) override {
    if (s.dtype() != DType::f32 || d.dtype() != DType::bf16) return inner().copy(s, d);
    if (s.rows() != d.rows() || s.cols() != d.cols()) throw Error("narrow: copy of mismatched shapes");
    auto* bits = static_cast<uint16_t*>(d.data());
    for (int64_t i = 0; i < s.numel(); ++i) bits[i] = kvq::bf16_bits(s.f32()[i]);
  }
  void matmul(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& o, bool acc) override {
    if (x.dtype() != DType::bf16) return inner().matmul(x, w, b, o, acc);
    ++bf16_products;
    const Tensor xf = inner().alloc(x.rows(), x.cols(), DType::f32);
    const auto* bits = static_cast<const uint16_t*>(x.data());
    for (int64_t i = 0; i < x.numel(); ++i) xf.f32()[i] = widen(bits[i]);
    inner().matmul(xf, w, b, o, acc);
  }
  void swiglu(const Tensor& g, const Tensor& u) override {
    inner().swiglu(g, u);
    if (round_swiglu_)
      for (int64_t i = 0; i < g.numel(); ++i) g.f32()[i] = widen(kvq::bf16_bits(g.f32()[i]));
  }

 private:
  static float widen(uint16_t bits) {
    const uint32_t u = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
  bool round_swiglu_;
};

// Prefill hands SwiGLU's output to the down projection in the backend's gemm_input_dtype()
// (Engine's act buffer): a backend that reads bf16 gets, chunk by chunk, exactly the values an
// f32 hand-off rounded to bf16 would give (the same logprobs, bit for bit), and these differ
// from the all-f32 CPU's, so the rounding did happen. Chunks of 5 rows over documents of
// 1..23 tokens put the last chunk at every length.
TEST(Engine, PrefillHandsTheMlpActivationOverInTheProductsInputType) {
  const Reference ref = load_reference("llama3-gqa");
  EngineOptions o;
  o.chunk_tokens = 5;
  NarrowGemmCpuBackend narrow(false), rounded(true);
  auto plain = make_cpu_backend();
  Engine en(narrow, ref.model.config, ref.model.weights, o), er(rounded, ref.model.config, ref.model.weights, o),
      ep(*plain, ref.model.config, ref.model.weights, o);
  const std::vector<int32_t>& doc = ref.docs.back();
  int differs = 0;
  for (size_t S : {2, 5, 6, 11, 23}) {
    ASSERT_LE(S, doc.size());
    const std::vector<int32_t> d(doc.begin(), doc.begin() + S);
    const int64_t before = narrow.bf16_products;
    const auto a = en.score(d).logprobs, b = er.score(d).logprobs, c = ep.score(d).logprobs;
    EXPECT_EQ(narrow.bf16_products - before, ref.model.config.n_layers * int64_t((S + 4) / 5)) << "S " << S;
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0]))) << "S " << S;
    differs += a != c;
  }
  EXPECT_GT(differs, 0) << "the bf16 hand-off changed nothing: not exercised";
}

// Decode bursts (EngineOptions::decode_burst: steps run back to back, their tokens read
// once) and recorded steps (decode_graph, on RecordingCpuBackend) change nothing a caller
// sees: a batch of documents that end by EOS, by a stop string and by length at different
// steps, greedy and sampled, one with penalties (which runs a step at a time), gives the
// same tokens, finish reasons and progress events at every burst length, documents
// joining as others finish.
TEST(Engine, DecodeBurstsChangeNoOutput) {
  const Reference ref = load_reference("qwen2-bias-tied");
  ModelConfig cfg = ref.model.config;
  cfg.eos_token_ids = {ref.greedy_tokens[4]};  // the greedy prompt's fifth token ends it
  using Doc = test::BatchDoc;
  std::vector<Doc> docs;
  for (int d = 0; d < 7; ++d) {
    Doc doc;
    doc.prompt = d % 2 ? ref.greedy_prompt : std::vector<int32_t>(ref.greedy_prompt.begin() + d, ref.greedy_prompt.end());
    doc.options.max_new_tokens = std::vector<int64_t>{13, 1, 5, 17, 2, 9, 11}[d];
    doc.options.doc_key = doc_key("doc-" + std::to_string(d));
    doc.options.seed = 7;
    if (d == 2 || d == 5) doc.options.sampling.temperature = 1.3;
    if (d == 3) doc.options.stop_here = [](const std::vector<int32_t>& t) { return t.size() == 3; };
    if (d == 6) doc.options.sampling.repetition_penalty = 1.3;
    docs.push_back(doc);
  }
  int recorded = 0;
  auto run = [&](const std::vector<Doc>& docs, int64_t burst, bool recording, int refuse_every = 0) {
    std::unique_ptr<Backend> be = make_cpu_backend();
    if (recording) {
      auto rb = std::make_unique<RecordingCpuBackend>();
      rb->refuse_every = refuse_every;
      be = std::move(rb);
    }
    EngineOptions o;
    o.max_batch = 3;
    o.decode_burst = burst;
    o.decode_graph = recording;
    std::vector<std::string> events;
    o.on_progress = [&](const EngineProgress& p) {
      if (p.kind == EngineProgress::Kind::decode_token)
        events.push_back(std::to_string(p.tag) + ":" + std::to_string(p.generated));
    };
    Engine engine(*be, cfg, ref.model.weights, o);
    const std::map<uint64_t, GenerateResult> out = test::decode_batched(engine, docs);
    std::sort(events.begin(), events.end());
    if (recording) recorded += static_cast<RecordingCpuBackend&>(*be).recorded_steps;
    return std::make_pair(out, events);
  };
  auto expect_same = [](const std::pair<std::map<uint64_t, GenerateResult>, std::vector<std::string>>& got,
                        const std::pair<std::map<uint64_t, GenerateResult>, std::vector<std::string>>& want,
                        const std::string& what) {
    ASSERT_EQ(got.first.size(), want.first.size()) << what;
    for (const auto& [tag, r] : want.first) {
      EXPECT_EQ(got.first.at(tag).tokens, r.tokens) << what << " document " << tag;
      EXPECT_EQ(got.first.at(tag).finish, r.finish) << what << " document " << tag;
    }
    EXPECT_EQ(got.second, want.second) << what;
  };
  const auto one = run(docs, 1, false);
  ASSERT_EQ(one.first.size(), docs.size());
  EXPECT_EQ(one.first.at(0).finish, FinishReason::eos);
  EXPECT_EQ(one.first.at(3).finish, FinishReason::stop);
  EXPECT_EQ(one.first.at(1).finish, FinishReason::length);
  for (int64_t burst : {2, 3, 8, 64}) expect_same(run(docs, burst, false), one, "burst " + std::to_string(burst));
  // Recorded: batches with a sampled document are not (sample() reads the host there).
  expect_same(run(docs, 8, true), one, "recorded, burst 8");
  // Greedy documents only: the steps after each burst's first are recorded.
  std::vector<Doc> greedy = docs;
  for (Doc& d : greedy) d.options.sampling = SamplingParams();
  const auto greedy_one = run(greedy, 1, false);
  for (int64_t burst : {8, 3}) {
    recorded = 0;
    expect_same(run(greedy, burst, true), greedy_one, "greedy, recorded, burst " + std::to_string(burst));
    EXPECT_GT(recorded, 0) << "burst " << burst;
  }
  // A recording the backend could not run (end_recording(true) false) is enqueued again.
  expect_same(run(greedy, 8, true, 3), greedy_one, "greedy, every third recording refused");
}

TEST(Engine, SamplingIsReproducibleAndKeyed) {
  const Reference ref = load_reference("qwen2-bias-tied");
  auto be = make_cpu_backend();
  ModelConfig cfg = ref.model.config;
  cfg.eos_token_ids.clear();
  Engine engine(*be, cfg, ref.model.weights);
  GenerateOptions g;
  g.max_new_tokens = 24;
  g.sampling.temperature = 1.5;
  g.sampling.top_p = 0.95;
  g.seed = 1234;
  g.doc_key = doc_key("doc-a");
  const GenerateResult a = engine.generate(ref.greedy_prompt, g), b = engine.generate(ref.greedy_prompt, g);
  EXPECT_EQ(a.tokens, b.tokens);
  for (int32_t t : a.tokens) EXPECT_TRUE(t >= 0 && t < cfg.vocab_size);
  GenerateOptions other = g;
  other.seed = 1235;
  EXPECT_NE(engine.generate(ref.greedy_prompt, other).tokens, a.tokens);
  other = g;
  other.doc_key = doc_key("doc-b");
  EXPECT_NE(engine.generate(ref.greedy_prompt, other).tokens, a.tokens);
  g.sampling.temperature = 0.0;  // greedy ignores the RNG entirely
  GenerateOptions g2 = g;
  g2.seed = 99;
  EXPECT_EQ(engine.generate(ref.greedy_prompt, g).tokens, engine.generate(ref.greedy_prompt, g2).tokens);
}

// The penalties see the document's generated tokens: with a presence penalty far above
// the logits' spread, greedy never picks a token twice; neutral controls give today's
// tokens; stop_here ends the generation with finish `stop`.
TEST(Engine, PenaltiesAndStopActOnTheGeneratedTokens) {
  const Reference ref = load_reference("qwen2-bias-tied");
  auto be = make_cpu_backend();
  ModelConfig cfg = ref.model.config;
  cfg.eos_token_ids.clear();
  Engine engine(*be, cfg, ref.model.weights);
  GenerateOptions g;
  g.max_new_tokens = 40;
  const GenerateResult greedy = engine.generate(ref.greedy_prompt, g);
  const std::set<int32_t> distinct_greedy(greedy.tokens.begin(), greedy.tokens.end());
  ASSERT_LT(distinct_greedy.size(), greedy.tokens.size()) << "the fixture's greedy run should repeat itself";
  GenerateOptions neutral = g;
  neutral.sampling.repetition_penalty = 1.0;
  neutral.sampling.frequency_penalty = 0.0;
  neutral.sampling.presence_penalty = 0.0;
  neutral.sampling.top_k = 5;  // no effect on greedy
  EXPECT_EQ(engine.generate(ref.greedy_prompt, neutral).tokens, greedy.tokens);
  GenerateOptions fresh = g;
  fresh.sampling.presence_penalty = 100.0;
  const GenerateResult f = engine.generate(ref.greedy_prompt, fresh);
  EXPECT_EQ(std::set<int32_t>(f.tokens.begin(), f.tokens.end()).size(), f.tokens.size());
  EXPECT_EQ(f.tokens[0], greedy.tokens[0]);  // nothing generated yet: the first pick is unchanged
  GenerateOptions stopping = g;
  stopping.stop_here = [&](const std::vector<int32_t>& t) { return t.size() == 5; };
  const GenerateResult s = engine.generate(ref.greedy_prompt, stopping);
  EXPECT_EQ(s.finish, FinishReason::stop);
  EXPECT_EQ(s.tokens, std::vector<int32_t>(greedy.tokens.begin(), greedy.tokens.begin() + 5));
}

TEST(Engine, RejectsBadInputsWithMessages) {
  const Reference ref = load_reference("llama3-gqa");
  auto be = make_cpu_backend();
  Engine engine(*be, ref.model.config, ref.model.weights);
  try {
    engine.score({1, 2, 300, 4});
    FAIL() << "no error for a token outside the vocabulary";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "document: token 300 at index 2 is outside the vocabulary (300)");
  }
  ModelWeights w = ref.model.weights;
  w.layers[1].wk.shape = {16, 64};
  w.layers[1].wk.data.resize(16 * 64);
  try {
    Engine bad(*be, ref.model.config, w);
    FAIL() << "no error for a weight of the wrong shape";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "model: model.layers.1.self_attn.k_proj.weight has shape [16, 64], expected [32, 64]");
  }
  EngineOptions cp;
  cp.cp_size = 2;
  EXPECT_THROW(Engine(*be, ref.model.config, ref.model.weights, cp), Error);
}
