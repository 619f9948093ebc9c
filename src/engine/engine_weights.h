#pragma once
// Model weights uploaded to a backend, checked against the config. Private to engine/.
// Under tensor parallelism (DESIGN §5) a rank uploads only its slice; the shapes below
// are this rank's: H_l = slice.q_heads, Hkv_l = slice.kv_heads, I_l = slice.inter,
// V_l = slice.vocab_rows (all equal to the model's with T = 1).
// Weights go up one tensor at a time (WeightUploader): loading from a model file never
// holds more than the tensor in hand on the host beside what the backend keeps.
#include <vector>

#include "ringinfer/backend.h"
#include "ringinfer/model.h"
#include "ringinfer/model_loader.h"  // TensorParallelSlice, WeightSink

namespace ringinfer::engine {

struct BackendLayer {
  Tensor attn_norm;        // (hidden, 1)
  Tensor wq, wk, wv;       // (H_l*D, hidden), (Hkv_l*D, hidden), (Hkv_l*D, hidden)
  Tensor bq, bk, bv;       // (H_l*D, 1), (Hkv_l*D, 1), (Hkv_l*D, 1); empty without qkv_bias
  Tensor q_norm, k_norm;   // (D, 1) each; empty without qk_norm
  Tensor wo;               // (hidden, H_l*D): this rank's columns of o_proj
  Tensor bo;               // (hidden, 1), whole; empty without o_bias (added once, by TP rank 0)
  Tensor ffn_norm;         // (hidden, 1)
  Tensor w_gate, w_up;     // (I_l, hidden)
  Tensor w_down;           // (hidden, I_l): this rank's columns of down_proj
};

struct BackendWeights {
  Tensor embed;                     // (vocab, hidden), whole on every rank
  std::vector<BackendLayer> layers;  // n_layers
  Tensor final_norm;                // (hidden, 1)
  Tensor lm_head;                   // (V_l, hidden): rows [vocab_begin, +V_l); a view of embed when tied
  Tensor inv_freq;                  // (1, head_dim/2) f64, RoPE inverse frequencies
};

// Uploads weights as they come, each checked against the config and the slice. Each
// sharded tensor may be whole (the model's shape: cut here, on the host) or already this
// rank's part; any other shape throws Error("model: <tensor> has shape [..], expected [..]").
class WeightUploader : public WeightSink {
 public:
  // Throws Error("model: inconsistent sizes ...") when the config cannot be a model.
  WeightUploader(Backend& backend, const ModelConfig& config, const TensorParallelSlice& slice);
  // Uploads t; a bias the config does not use must be empty (nothing is uploaded).
  void upload(WeightSlot slot, int64_t layer, const HostTensor& t);
  void take(WeightSlot slot, int64_t layer, HostTensor&& t) override { upload(slot, layer, t); }
  // The weights, after the last tensor: lm_head becomes a view of the embedding when none
  // came (tied embeddings only), and the RoPE frequencies are uploaded.
  BackendWeights finish();

 private:
  Backend& be_;
  const ModelConfig& c_;
  TensorParallelSlice sl_;
  BackendWeights out_;
};

// The weights of `weights` (whole or this rank's slice, see WeightUploader).
BackendWeights upload_weights(Backend& backend, const ModelConfig& config, const ModelWeights& weights,
                              const TensorParallelSlice& slice);
// T = 1.
BackendWeights upload_weights(Backend& backend, const ModelConfig& config, const ModelWeights& weights);

// Reads `slice` of the model and uploads it tensor by tensor (read_weights' checks, then
// WeightUploader's); the host copy of each tensor is freed before the next is read.
BackendWeights load_weights(Backend& backend, const ModelSource& model, const TensorParallelSlice& slice);

}  // namespace ringinfer::engine
