#include "ringinfer/model_loader.h"

#include <algorithm>
#include <filesystem>

#include "ringinfer/error.h"
#include "ringinfer/model_config.h"
#include "ringinfer/safetensors.h"

namespace ringinfer {
namespace {

namespace fs = std::filesystem;

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

class SafetensorsSource : public TensorSource {
 public:
  explicit SafetensorsSource(const std::string& dir) : ckpt_(dir) {}
  const std::string& path() const override { return ckpt_.dir(); }
  bool has(const std::string& n) const override { return ckpt_.has(n); }
  std::vector<int64_t> shape(const std::string& n) const override { return ckpt_.info(n).shape; }
  HostTensor read(const std::string& n) const override { return ckpt_.read(n); }
  HostTensor read_rows(const std::string& n, int64_t b, int64_t e) const override { return ckpt_.read_rows(n, b, e); }
  HostTensor read_cols(const std::string& n, int64_t b, int64_t e) const override { return ckpt_.read_cols(n, b, e); }

 private:
  SafetensorsCheckpoint ckpt_;
};

// GGUF tensors under HF names, with llama.cpp's Q/K row permutation undone.
class GgufSource : public TensorSource {
 public:
  GgufSource(std::shared_ptr<GgufFile> f, int64_t head_dim) : f_(std::move(f)), head_dim_(head_dim) {}
  const std::string& path() const override { return f_->path(); }
  bool has(const std::string& n) const override { return f_->find(gguf_tensor_name(n)) != nullptr; }
  std::vector<int64_t> shape(const std::string& n) const override { return info(n).hf_shape(); }
  HostTensor read(const std::string& n) const override {
    const auto& t = info(n);
    if (!permuted(n) && !keep_quantized_) return f_->read(t.name);
    return read_rows(n, 0, t.hf_shape()[0]);
  }
  HostTensor read_rows(const std::string& n, int64_t b, int64_t e) const override {
    const auto& t = info(n);
    auto read = [&](int64_t rb, int64_t re) {
      return keep_quantized_ ? f_->read_rows_stored(t.name, rb, re) : f_->read_rows(t.name, rb, re);
    };
    if (!permuted(n)) return read(b, e);
    const int64_t rows = t.hf_shape()[0];
    if (rows % head_dim_ != 0)
      throw Error(f_->path() + ": tensor '" + t.name + "' has " + std::to_string(rows) +
                  " rows, not a multiple of head_dim " + std::to_string(head_dim_));
    if (b < 0 || b > e || e > rows) return f_->read_rows(t.name, b, e);  // reports the bad range
    // The permutation stays within a head: read the heads touched, then gather.
    const int64_t hb = b / head_dim_ * head_dim_, he = (e + head_dim_ - 1) / head_dim_ * head_dim_;
    HostTensor src = read(hb, he);
    HostTensor out;
    out.shape = src.shape;
    out.shape[0] = e - b;
    out.ggml_type = src.ggml_type;
    // Rows are whole: fp32 values, or stored bytes when kept quantized.
    auto gather = [&](const auto& from, auto& to) {
      const int64_t row = static_cast<int64_t>(from.size()) / std::max<int64_t>(he - hb, 1);
      to.resize(static_cast<size_t>((e - b) * row));
      for (int64_t r = b; r < e; ++r)
        std::copy_n(from.data() + (gguf_permuted_row(r, head_dim_) - hb) * row, row, to.data() + (r - b) * row);
    };
    if (src.blocks.empty()) gather(src.data, out.data);
    else gather(src.blocks, out.blocks);
    return out;
  }
  void keep_quantized(bool on) override { keep_quantized_ = on; }
  HostTensor read_cols(const std::string& n, int64_t b, int64_t e) const override {
    const auto& t = info(n);
    HostTensor c = f_->read_cols(t.name, b, e);
    if (!permuted(n)) return c;
    const int64_t rows = c.shape[0], w = c.shape[1];
    if (rows % head_dim_ != 0)
      throw Error(f_->path() + ": tensor '" + t.name + "' rows are not a multiple of head_dim");
    HostTensor out = c;
    for (int64_t r = 0; r < rows; ++r)
      std::copy_n(c.data.data() + gguf_permuted_row(r, head_dim_) * w, w, out.data.data() + r * w);
    return out;
  }

 private:
  const GgufTensorInfo& info(const std::string& n) const {
    const std::string g = gguf_tensor_name(n);
    const GgufTensorInfo* t = g.empty() ? nullptr : f_->find(g);
    if (!t) throw Error(f_->path() + ": tensor '" + (g.empty() ? n : g) + "' is missing");
    return *t;
  }
  static bool ends_with(const std::string& s, const std::string& x) {
    return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
  }
  static bool permuted(const std::string& n) {
    return ends_with(n, "q_proj.weight") || ends_with(n, "k_proj.weight") || ends_with(n, "q_proj.bias") ||
           ends_with(n, "k_proj.bias");
  }
  std::shared_ptr<GgufFile> f_;
  int64_t head_dim_;
  bool keep_quantized_ = false;
};

}  // namespace

HostTensor read_tensor(const TensorSource& src, const std::string& name) { return src.read(name); }
HostTensor read_tensor(const TensorSource& src, const std::string& name, RowRange r) {
  return src.read_rows(name, r.begin, r.end);
}
HostTensor read_tensor(const TensorSource& src, const std::string& name, ColRange c) {
  return src.read_cols(name, c.begin, c.end);
}

std::string layer_tensor_name(int64_t layer, const std::string& suffix) {
  return "model.layers." + std::to_string(layer) + "." + suffix;
}

ModelSource open_model(const std::string& path) {
  ModelSource m;
  m.path = path;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    const fs::path cfg = dir / "config.json";
    if (!fs::exists(cfg)) throw Error(path + ": no config.json (expected a Hugging Face model folder or a .gguf file)");
    m.format = ModelFormat::safetensors;
    m.config = parse_model_config(cfg.string());
    m.tensors = std::make_unique<SafetensorsSource>(path);
    if (fs::exists(dir / "tokenizer.json")) m.tokenizer_json = (dir / "tokenizer.json").string();
    return m;
  }
  if (!fs::exists(path, ec)) throw Error(path + ": no such file or folder");
  // Any other file is taken as GGUF whatever its name; the magic check refuses the rest.
  auto f = std::make_shared<GgufFile>(path);
  m.format = ModelFormat::gguf;
  m.config = gguf_model_config(*f);
  m.gguf_metadata = f->shared_metadata();
  m.tensors = std::make_unique<GgufSource>(f, m.config.head_dim);
  return m;
}

namespace {

// Every tensor the config calls for, with its expected shape (HF layout), in load order.
std::vector<std::pair<std::string, std::vector<int64_t>>> expected_tensors(const ModelConfig& c, int64_t layer) {
  const int64_t h = c.hidden_size, q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim,
                f = c.intermediate_size;
  auto n = [&](const char* s) { return layer_tensor_name(layer, s); };
  std::vector<std::pair<std::string, std::vector<int64_t>>> r = {
      {n("input_layernorm.weight"), {h}},       {n("self_attn.q_proj.weight"), {q, h}},
      {n("self_attn.k_proj.weight"), {kv, h}},  {n("self_attn.v_proj.weight"), {kv, h}}};
  if (c.qkv_bias)
    r.insert(r.end(), {{n("self_attn.q_proj.bias"), {q}}, {n("self_attn.k_proj.bias"), {kv}},
                       {n("self_attn.v_proj.bias"), {kv}}});
  r.push_back({n("self_attn.o_proj.weight"), {h, q}});
  if (c.o_bias) r.push_back({n("self_attn.o_proj.bias"), {h}});
  r.insert(r.end(), {{n("post_attention_layernorm.weight"), {h}}, {n("mlp.gate_proj.weight"), {f, h}},
                     {n("mlp.up_proj.weight"), {f, h}}, {n("mlp.down_proj.weight"), {h, f}}});
  return r;
}

void check_tensor(const TensorSource& src, const std::string& name, const std::vector<int64_t>& want) {
  if (!src.has(name)) throw Error(src.path() + ": tensor '" + name + "' is missing");
  const std::vector<int64_t> got = src.shape(name);
  if (got != want)
    throw Error(src.path() + ": tensor '" + name + "' has shape " + shape_str(got) + " but the config implies " +
                shape_str(want));
}

}  // namespace

TensorParallelSlice tensor_parallel_slice(const ModelConfig& c, int tp_rank, int T) {
  const std::string tp = "--tp " + std::to_string(T) + ": ";
  RI_CHECK(T >= 1, "--tp must be at least 1 (got " + std::to_string(T) + ")");
  RI_CHECK(tp_rank >= 0 && tp_rank < T, tp + "rank " + std::to_string(tp_rank) + " is outside the group");
  const int64_t H = c.n_heads, Hkv = c.n_kv_heads, I = c.intermediate_size, V = c.vocab_size;
  RI_CHECK(H > 0 && Hkv > 0 && H % Hkv == 0 && I > 0 && V > 0,
           "model: inconsistent sizes (heads " + std::to_string(H) + "/" + std::to_string(Hkv) + ")");
  RI_CHECK(H % T == 0,
           tp + "the model's " + std::to_string(H) + " query heads are not divisible by " + std::to_string(T));
  RI_CHECK(Hkv % T == 0 || T % Hkv == 0, tp + "the model's " + std::to_string(Hkv) +
                                             " key/value heads neither divide into nor evenly replicate over " +
                                             std::to_string(T) + " ranks");
  RI_CHECK(I % T == 0, tp + "the model's intermediate size " + std::to_string(I) + " is not divisible by " +
                           std::to_string(T));
  TensorParallelSlice s;
  s.rank = tp_rank;
  s.size = T;
  s.q_heads = H / T;
  s.q_head_begin = tp_rank * s.q_heads;
  // A rank's query heads read KV heads q / (H / Hkv): Hkv / T of them, or, when T > Hkv,
  // one head shared with the other T / Hkv - 1 ranks of its KV group.
  s.kv_heads = std::max<int64_t>(1, Hkv / T);
  s.kv_head_begin = s.q_head_begin / (H / Hkv);
  s.inter = I / T;
  s.inter_begin = tp_rank * s.inter;
  s.vocab_part = (V + T - 1) / T;
  RI_CHECK(s.vocab_part * (T - 1) < V, tp + "the model's vocabulary of " + std::to_string(V) +
                                           " tokens leaves a rank without LM-head rows");
  s.vocab_begin = tp_rank * s.vocab_part;
  s.vocab_rows = std::min(V, s.vocab_begin + s.vocab_part) - s.vocab_begin;
  return s;
}

ModelWeights read_weights(const ModelSource& m) { return read_weights(m, tensor_parallel_slice(m.config, 0, 1)); }

const std::vector<WeightSlot>& layer_weight_slots() {
  using S = WeightSlot;
  static const std::vector<WeightSlot> slots = {S::attn_norm, S::wq, S::wk,       S::wv,   S::bq,   S::bk,
                                                S::bv,        S::wo, S::bo,       S::ffn_norm, S::w_gate, S::w_up,
                                                S::w_down};
  return slots;
}

const HostTensor& weight_of(const ModelWeights& w, WeightSlot slot, int64_t layer) {
  return weight_slot(w, slot, layer);
}

HostTensor& weight_of(ModelWeights& w, WeightSlot slot, int64_t layer) {
  return const_cast<HostTensor&>(weight_of(static_cast<const ModelWeights&>(w), slot, layer));
}

ModelWeights read_weights(const ModelSource& m, const TensorParallelSlice& tp) {
  // Collects what the streaming read hands over: the one read path.
  struct Collect : WeightSink {
    ModelWeights w;
    size_t n_layers = 0;
    void take(WeightSlot slot, int64_t layer, HostTensor&& t) override {
      // Sized at the first tensor, after every check: a corrupt layer count fails with a
      // message before anything is allocated.
      if (w.layers.size() != n_layers) w.layers.resize(n_layers);
      weight_of(w, slot, layer) = std::move(t);
    }
  } sink;
  sink.n_layers = static_cast<size_t>(std::max<int64_t>(m.config.n_layers, 0));
  read_weights(m, tp, sink);
  return std::move(sink.w);
}

void read_weights(const ModelSource& m, const TensorParallelSlice& tp, WeightSink& sink) {
  const ModelConfig& c = m.config;
  const TensorParallelSlice& sl = tp;
  const TensorSource& src = *m.tensors;
  const int64_t h = c.hidden_size;
  // Check every name and shape before allocating anything: a corrupt layer count or size
  // must fail with a message, not an out-of-memory.
  std::vector<std::pair<std::string, std::vector<int64_t>>> top = {{"model.embed_tokens.weight", {c.vocab_size, h}},
                                                                   {"model.norm.weight", {h}}};
  if (!c.tie_word_embeddings) top.push_back({"lm_head.weight", {c.vocab_size, h}});
  for (const auto& t : top) check_tensor(src, t.first, t.second);
  for (int64_t l = 0; l < c.n_layers; ++l)
    for (const auto& t : expected_tensors(c, l)) check_tensor(src, t.first, t.second);

  // T = 1 reads whole tensors (one contiguous read each); T > 1 only the slice's part.
  const bool whole = sl.size == 1;
  auto rows = [&](const std::string& name, RowRange r) { return whole ? src.read(name) : read_tensor(src, name, r); };
  auto cols = [&](const std::string& name, RowRange r) {
    return whole ? src.read(name) : read_tensor(src, name, ColRange{r.begin, r.end});
  };
  const int64_t D = c.head_dim;
  sink.take(WeightSlot::embed, -1, src.read(top[0].first));
  sink.take(WeightSlot::final_norm, -1, src.read(top[1].first));
  if (!c.tie_word_embeddings) sink.take(WeightSlot::lm_head, -1, rows(top[2].first, sl.vocab_range()));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    auto n = [&](const char* s) { return layer_tensor_name(l, s); };
    auto give = [&](WeightSlot slot, HostTensor&& t) { sink.take(slot, l, std::move(t)); };
    give(WeightSlot::attn_norm, src.read(n("input_layernorm.weight")));
    give(WeightSlot::wq, rows(n("self_attn.q_proj.weight"), sl.q_rows(D)));
    give(WeightSlot::wk, rows(n("self_attn.k_proj.weight"), sl.kv_rows(D)));
    give(WeightSlot::wv, rows(n("self_attn.v_proj.weight"), sl.kv_rows(D)));
    if (c.qkv_bias) {
      give(WeightSlot::bq, rows(n("self_attn.q_proj.bias"), sl.q_rows(D)));
      give(WeightSlot::bk, rows(n("self_attn.k_proj.bias"), sl.kv_rows(D)));
      give(WeightSlot::bv, rows(n("self_attn.v_proj.bias"), sl.kv_rows(D)));
    }
    give(WeightSlot::wo, cols(n("self_attn.o_proj.weight"), sl.q_rows(D)));
    if (c.o_bias) give(WeightSlot::bo, src.read(n("self_attn.o_proj.bias")));
    give(WeightSlot::ffn_norm, src.read(n("post_attention_layernorm.weight")));
    give(WeightSlot::w_gate, rows(n("mlp.gate_proj.weight"), sl.inter_rows()));
    give(WeightSlot::w_up, rows(n("mlp.up_proj.weight"), sl.inter_rows()));
    give(WeightSlot::w_down, cols(n("mlp.down_proj.weight"), sl.inter_rows()));
  }
}

LoadedModel load_model(const std::string& path) {
  ModelSource m = open_model(path);
  LoadedModel out;
  out.weights = read_weights(m);
  out.path = m.path;
  out.format = m.format;
  out.config = m.config;
  out.tokenizer_json = m.tokenizer_json;
  out.gguf_metadata = m.gguf_metadata;
  return out;
}

}  // namespace ringinfer
