#include "ringinfer/model_loader.h"

#include <algorithm>
#include <filesystem>

#include "ringinfer/error.h"
#include "ringinfer/model_config.h"
#include "ringinfer/model_family.h"
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

// GGUF tensors under HF names (the family table's), with llama.cpp's Q/K row
// permutation undone where the table says the converter applied it.
class GgufSource : public TensorSource {
 public:
  GgufSource(std::shared_ptr<GgufFile> f, const ModelConfig& c) : f_(std::move(f)), config_(c) {}
  const std::string& path() const override { return f_->path(); }
  bool has(const std::string& n) const override {
    ModelTensor t;
    return find_model_tensor(config_, n, &t) && f_->find(t.gguf_name) != nullptr;
  }
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
    if (rows % config_.head_dim != 0)
      throw Error(f_->path() + ": tensor '" + t.name + "' has " + std::to_string(rows) +
                  " rows, not a multiple of head_dim " + std::to_string(config_.head_dim));
    if (b < 0 || b > e || e > rows) return f_->read_rows(t.name, b, e);  // reports the bad range
    // The permutation stays within a head: read the heads touched, then gather.
    const int64_t hd = config_.head_dim;
    const int64_t hb = b / hd * hd, he = (e + hd - 1) / hd * hd;
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
        std::copy_n(from.data() + (gguf_permuted_row(r, hd) - hb) * row, row, to.data() + (r - b) * row);
    };
    if (src.blocks.empty()) gather(src.data, out.data);
    else gather(src.blocks, out.blocks);
    return out;
  }
  void keep_quantized(bool on) override { keep_quantized_ = on; }
  int64_t kept_weight_bytes() const override { return f_->kept_bytes(); }
  HostTensor read_cols(const std::string& n, int64_t b, int64_t e) const override {
    const auto& t = info(n);
    HostTensor c = f_->read_cols(t.name, b, e);
    if (!permuted(n)) return c;
    const int64_t rows = c.shape[0], w = c.shape[1];
    if (rows % config_.head_dim != 0)
      throw Error(f_->path() + ": tensor '" + t.name + "' rows are not a multiple of head_dim");
    HostTensor out = c;
    for (int64_t r = 0; r < rows; ++r)
      std::copy_n(c.data.data() + gguf_permuted_row(r, config_.head_dim) * w, w, out.data.data() + r * w);
    return out;
  }

 private:
  const GgufTensorInfo& info(const std::string& n) const {
    ModelTensor m;
    const bool known = find_model_tensor(config_, n, &m);
    const GgufTensorInfo* t = known ? f_->find(m.gguf_name) : nullptr;
    if (!t) throw Error(f_->path() + ": tensor '" + (known ? m.gguf_name : n) + "' is missing");
    return *t;
  }
  bool permuted(const std::string& n) const {
    ModelTensor m;
    return find_model_tensor(config_, n, &m) && m.spec->gguf_rope_permuted;
  }
  std::shared_ptr<GgufFile> f_;
  ModelConfig config_;  // names and Q/K permutation come from its family's table
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
    check_model_tensors(m);
    return m;
  }
  if (!fs::exists(path, ec)) throw Error(path + ": no such file or folder");
  // Any other file is taken as GGUF whatever its name; the magic check refuses the rest.
  auto f = std::make_shared<GgufFile>(path);
  m.format = ModelFormat::gguf;
  m.config = gguf_model_config(*f);
  m.gguf_metadata = f->shared_metadata();
  m.tensors = std::make_unique<GgufSource>(f, m.config);
  check_model_tensors(m);
  return m;
}

void check_model_tensors(const ModelSource& m) {
  const TensorSource& src = *m.tensors;
  // A config.json beside safetensors is a file of its own: a shape that contradicts it
  // names it, so an absurd hidden_size reads as a bad config (a GGUF is one file).
  const std::string mismatch = m.format == ModelFormat::safetensors
                                   ? (fs::path(m.path) / "config.json").string() + " does not match the weights"
                                   : src.path();
  const bool gguf = m.format == ModelFormat::gguf;
  for_each_model_tensor(m.config, [&](const ModelTensor& t) {
    if (!src.has(t.hf_name)) throw Error(src.path() + ": tensor '" + (gguf ? t.gguf_name : t.hf_name) + "' is missing");
    const std::vector<int64_t> got = src.shape(t.hf_name);
    if (got != t.shape)
      throw Error(mismatch + ": tensor '" + t.hf_name + "' has shape " + shape_str(got) + " but the config implies " +
                  shape_str(t.shape));
  });
}

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
  // WeightSlot (model.h) lists the layer slots from attn_norm to w_down, in field order.
  static const std::vector<WeightSlot> slots = [] {
    std::vector<WeightSlot> v;
    for (int s = static_cast<int>(WeightSlot::attn_norm); s <= static_cast<int>(WeightSlot::w_down); ++s)
      v.push_back(static_cast<WeightSlot>(s));
    return v;
  }();
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

void read_weights(const ModelSource& m, const TensorParallelSlice& sl, WeightSink& sink) {
  const ModelConfig& c = m.config;
  const TensorSource& src = *m.tensors;
  // Check every name and shape before allocating anything: a corrupt layer count or size
  // must fail with a message, not an out-of-memory.
  check_model_tensors(m);
  // T = 1 reads whole tensors (one contiguous read each); T > 1 only the slice's part.
  for_each_model_tensor(c, [&](const ModelTensor& t) {
    const TpCut cut = t.spec->cut;
    HostTensor h;
    if (sl.size == 1 || cut == TpCut::whole) {
      h = src.read(t.hf_name);
    } else {
      const RowRange r = tp_range(cut, sl, c.head_dim);
      h = cuts_columns(cut) ? read_tensor(src, t.hf_name, ColRange{r.begin, r.end}) : read_tensor(src, t.hf_name, r);
    }
    sink.take(t.spec->slot, t.layer, std::move(h));
  });
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
