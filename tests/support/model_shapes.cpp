#include "model_shapes.h"

namespace ringinfer::test {

ModelConfig llama_8b() {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.hidden_size = 4096; c.n_layers = 32; c.n_heads = 32; c.n_kv_heads = 8; c.head_dim = 128;
  c.intermediate_size = 14336; c.vocab_size = 128256;
  return c;
}

}  // namespace ringinfer::test
