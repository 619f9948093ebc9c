#pragma once
// Opening a model: a Hugging Face folder (config.json + *.safetensors [+ tokenizer.json])
// or a .gguf file. Tensors are addressed by their Hugging Face names whatever the format
// ("model.layers.3.self_attn.q_proj.weight"), in HF layout ([out, in] row-major), fp32.
// A tensor-parallel rank reads only the rows (column-parallel projections: q/k/v,
// gate/up) or columns (row-parallel: o, down) it owns: see read_tensor(name, RowRange).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ringinfer/error.h"
#include "ringinfer/gguf.h"
#include "ringinfer/model.h"

namespace ringinfer {

struct RowRange {  // rows [begin, end) of the first dimension (elements of a 1-D tensor)
  int64_t begin = 0, end = 0;
};
struct ColRange {  // columns [begin, end) of a 2-D tensor
  int64_t begin = 0, end = 0;
};

// A model's tensors by HF name. Implementations: safetensors checkpoint, GGUF file
// (which maps names, dequantizes and undoes llama.cpp's Q/K row permutation).
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual const std::string& path() const = 0;
  virtual bool has(const std::string& name) const = 0;
  virtual std::vector<int64_t> shape(const std::string& name) const = 0;  // HF layout; throws when missing
  virtual HostTensor read(const std::string& name) const = 0;
  virtual HostTensor read_rows(const std::string& name, int64_t begin, int64_t end) const = 0;
  virtual HostTensor read_cols(const std::string& name, int64_t begin, int64_t end) const = 0;
  // From now on read() and read_rows() give a GGUF's quantized (and F16/BF16) matrices as
  // stored (HostTensor::blocks) for a backend that computes on them; a no-op elsewhere.
  virtual void keep_quantized(bool) {}
  // The bytes the weights take as keep_quantized(true) gives them: a GGUF's kept matrices
  // as stored, every other tensor as fp32; -1 where nothing is kept (safetensors).
  virtual int64_t kept_weight_bytes() const { return -1; }
};

HostTensor read_tensor(const TensorSource& src, const std::string& name);
HostTensor read_tensor(const TensorSource& src, const std::string& name, RowRange rows);
HostTensor read_tensor(const TensorSource& src, const std::string& name, ColRange cols);

enum class ModelFormat { safetensors, gguf };

// An opened model whose weights have not been read yet.
struct ModelSource {
  std::string path;                                   // the folder or .gguf file given
  ModelFormat format = ModelFormat::safetensors;
  ModelConfig config;
  std::unique_ptr<TensorSource> tensors;
  std::string tokenizer_json;                         // folder/tokenizer.json, "" when absent or GGUF
  std::shared_ptr<const GgufMetadata> gguf_metadata;  // GGUF only (tokenizer.ggml.* lives here)
};

// Opens path: a .gguf file, or a folder with config.json. Validates the config, and every
// tensor the config calls for against its shape (check_model_tensors), so a config that
// contradicts its tensors is reported before any memory is planned from it; reads no
// weights. Throws Error("<path>: ...").
ModelSource open_model(const std::string& path);

// HF tensor names of layer l ("model.layers.<l>.<suffix>").
std::string layer_tensor_name(int64_t layer, const std::string& suffix);

// Checks that every tensor the config calls for is present with the shape the config
// implies. Throws Error("<config file>: does not match the weights: tensor 'x' has shape
// [..] but the config implies [..]") (config file: config.json, or the GGUF itself).
void check_model_tensors(const ModelSource& model);

// Reads every weight the config calls for, checking each tensor's shape against the
// config ("<path>: tensor 'x' has shape [a, b] but the config implies [c, d]") and that
// none is missing. lm_head stays empty when embeddings are tied.
ModelWeights read_weights(const ModelSource& model);

// One rank's share of the model under tensor parallelism (DESIGN §5, Megatron layout):
//   column-parallel (rows of the (out, in) weight): q (+bias), k/v (+bias), gate, up
//   row-parallel (columns): o_proj, down_proj; o's bias and the norms stay whole
//   vocabulary-parallel: LM-head rows [vocab_begin, vocab_begin + vocab_rows)
//   replicated: embedding, final norm
struct TensorParallelSlice {
  int rank = 0;                 // tp_rank
  int size = 1;                 // T
  int64_t q_head_begin = 0;     // first query head owned
  int64_t q_heads = 0;          // H / T query heads
  int64_t kv_head_begin = 0;    // first KV head those read
  int64_t kv_heads = 0;         // max(1, Hkv / T); when T > Hkv the head is replicated on T / Hkv ranks
  int64_t inter_begin = 0;      // first FFN (intermediate) channel owned
  int64_t inter = 0;            // intermediate_size / T
  int64_t vocab_begin = 0;      // first LM-head row owned: rank * vocab_part
  int64_t vocab_rows = 0;       // LM-head rows owned: vocab_part, the last rank's may be fewer
  int64_t vocab_part = 0;       // ceil(V / T): each rank's slot in a gathered logits row

  RowRange q_rows(int64_t head_dim) const { return {q_head_begin * head_dim, (q_head_begin + q_heads) * head_dim}; }
  RowRange kv_rows(int64_t head_dim) const {
    return {kv_head_begin * head_dim, (kv_head_begin + kv_heads) * head_dim};
  }
  RowRange inter_rows() const { return {inter_begin, inter_begin + inter}; }
  RowRange vocab_range() const { return {vocab_begin, vocab_begin + vocab_rows}; }
};

// The slice of rank tp_rank of tp_size. Throws Error when the model cannot be split that
// way, e.g. "--tp 3: the model's 4 query heads are not divisible by 3".
TensorParallelSlice tensor_parallel_slice(const ModelConfig& config, int tp_rank, int tp_size);

// Reads only `slice`'s rows and columns of the sharded tensors (and the replicated ones
// whole), after the same name and shape checks as read_weights. lm_head holds the slice's
// vocabulary rows (empty when tied: the engine takes them from the embedding).
ModelWeights read_weights(const ModelSource& model, const TensorParallelSlice& slice);

// ---- streaming: one tensor at a time

// The per-layer slots (WeightSlot, model.h) in LayerWeights' field order.
const std::vector<WeightSlot>& layer_weight_slots();

// The field of w that (slot, layer) names; layer is ignored for embed, final_norm, lm_head
// and must be < w.layers.size() for the others.
HostTensor& weight_of(ModelWeights& w, WeightSlot slot, int64_t layer);
const HostTensor& weight_of(const ModelWeights& w, WeightSlot slot, int64_t layer);

// The member of `w` that holds (slot, layer), for any weights struct with ModelWeights'
// member names (ModelWeights on the host, the engine's BackendWeights on the backend).
template <class Weights>
auto& weight_slot(Weights& w, WeightSlot slot, int64_t layer) {
  switch (slot) {
    case WeightSlot::embed: return w.embed;
    case WeightSlot::final_norm: return w.final_norm;
    case WeightSlot::lm_head: return w.lm_head;
    default: break;
  }
  RI_CHECK(layer >= 0 && layer < static_cast<int64_t>(w.layers.size()),
           "model: layer " + std::to_string(layer) + " outside " + std::to_string(w.layers.size()) + " layers");
  auto& L = w.layers[static_cast<size_t>(layer)];
  switch (slot) {
    case WeightSlot::attn_norm: return L.attn_norm;
    case WeightSlot::wq: return L.wq;
    case WeightSlot::wk: return L.wk;
    case WeightSlot::wv: return L.wv;
    case WeightSlot::bq: return L.bq;
    case WeightSlot::bk: return L.bk;
    case WeightSlot::bv: return L.bv;
    case WeightSlot::q_norm: return L.q_norm;
    case WeightSlot::k_norm: return L.k_norm;
    case WeightSlot::wo: return L.wo;
    case WeightSlot::bo: return L.bo;
    case WeightSlot::ffn_norm: return L.ffn_norm;
    case WeightSlot::w_gate: return L.w_gate;
    case WeightSlot::w_up: return L.w_up;
    default: return L.w_down;
  }
}

// Receives weights one tensor at a time. The tensor is the sink's to keep or to drop: a
// sink that uploads each one and lets it go bounds loading's extra host memory by the
// largest tensor instead of the rank's whole shard.
class WeightSink {
 public:
  virtual ~WeightSink() = default;
  // layer: 0..n_layers-1 for per-layer slots, -1 for embed, final_norm and lm_head.
  virtual void take(WeightSlot slot, int64_t layer, HostTensor&& tensor) = 0;
};

// read_weights(model, slice) without the ModelWeights: after the same name and shape
// checks (all of them, before any tensor is read), each tensor of the family's table
// (model_family.h) that the config uses is read and handed to `sink` before the next is
// read: the qkv/o biases and q/k norms only when the config uses them; lm_head not when
// embeddings are tied.
void read_weights(const ModelSource& model, const TensorParallelSlice& slice, WeightSink& sink);

struct LoadedModel {
  std::string path;
  ModelFormat format = ModelFormat::safetensors;
  ModelConfig config;
  ModelWeights weights;
  std::string tokenizer_json;                         // as in ModelSource
  std::shared_ptr<const GgufMetadata> gguf_metadata;  // as in ModelSource
};

// open_model + read_weights.
LoadedModel load_model(const std::string& path);

}  // namespace ringinfer
