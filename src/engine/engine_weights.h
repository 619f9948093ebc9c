#pragma once
// Model weights uploaded to a backend, checked against the config. Private to engine/.
#include <vector>

#include "ringinfer/backend.h"
#include "ringinfer/model.h"

namespace ringinfer::engine {

struct BackendLayer {
  Tensor attn_norm;        // (hidden, 1)
  Tensor wq, wk, wv;       // (H*D, hidden), (Hkv*D, hidden), (Hkv*D, hidden)
  Tensor bq, bk, bv;       // (H*D, 1), (Hkv*D, 1), (Hkv*D, 1); empty without qkv_bias
  Tensor wo;               // (hidden, H*D)
  Tensor bo;               // (hidden, 1); empty without o_bias
  Tensor ffn_norm;         // (hidden, 1)
  Tensor w_gate, w_up;     // (intermediate, hidden)
  Tensor w_down;           // (hidden, intermediate)
};

struct BackendWeights {
  Tensor embed;                     // (vocab, hidden)
  std::vector<BackendLayer> layers;  // n_layers
  Tensor final_norm;                // (hidden, 1)
  Tensor lm_head;                   // (vocab, hidden); the embed tensor itself when tied
  Tensor inv_freq;                  // (1, head_dim/2) f64, RoPE inverse frequencies
};

// Throws Error("model: <tensor> has shape [..], expected [..]") on any mismatch.
BackendWeights upload_weights(Backend& backend, const ModelConfig& config, const ModelWeights& weights);

}  // namespace ringinfer::engine
