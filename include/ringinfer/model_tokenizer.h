#pragma once
// The tokenizer that belongs to an opened model: tokenizer.json beside a Hugging Face
// checkpoint, or the tokenizer.ggml.* metadata of a GGUF file.
#include <optional>

#include "ringinfer/model_loader.h"
#include "ringinfer/tokenizer.h"

namespace ringinfer {

// The model's tokenizer, or nullopt when it ships none (a folder without tokenizer.json).
std::optional<Tokenizer> find_tokenizer(const ModelSource& model);

// As find_tokenizer, but a missing tokenizer is an Error naming the model.
Tokenizer load_tokenizer(const ModelSource& model);

}  // namespace ringinfer
