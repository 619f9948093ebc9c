#pragma once
// The shapes of real checkpoints, built by hand (no weights, no RoPE or token details):
// what the memory plan and the memory check compute from.
#include "ringinfer/model.h"

namespace ringinfer::test {

// Llama-3.1-8B: hidden 4096, 32 layers, 32 / 8 heads of 128, MLP 14336, vocabulary 128256.
ModelConfig llama_8b();

}  // namespace ringinfer::test
