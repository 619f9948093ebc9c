#pragma once
// Model weights uploaded to a backend, checked against the config. Private to engine/.
// Under tensor parallelism (DESIGN §5) a rank uploads only its slice; the shapes below
// are this rank's: H_l = slice.q_heads, Hkv_l = slice.kv_heads, I_l = slice.inter,
// V_l = slice.vocab_rows (all equal to the model's with T = 1).
#include <vector>

#include "ringinfer/backend.h"
#include "ringinfer/model.h"
#include "ringinfer/model_loader.h"  // TensorParallelSlice

namespace ringinfer::engine {

struct BackendLayer {
  Tensor attn_norm;        // (hidden, 1)
  Tensor wq, wk, wv;       // (H_l*D, hidden), (Hkv_l*D, hidden), (Hkv_l*D, hidden)
  Tensor bq, bk, bv;       // (H_l*D, 1), (Hkv_l*D, 1), (Hkv_l*D, 1); empty without qkv_bias
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

// Each sharded tensor of `weights` may be whole (the model's shape: this function cuts the
// slice out on the host) or already the slice (read_weights with the slice). Throws
// Error("model: <tensor> has shape [..], expected [..]") on any other shape.
BackendWeights upload_weights(Backend& backend, const ModelConfig& config, const ModelWeights& weights,
                              const TensorParallelSlice& slice);
// T = 1.
BackendWeights upload_weights(Backend& backend, const ModelConfig& config, const ModelWeights& weights);

}  // namespace ringinfer::engine
