#include "ringinfer/model_tokenizer.h"

#include "ringinfer/error.h"
#include "ringinfer/gguf.h"

namespace ringinfer {

std::optional<Tokenizer> find_tokenizer(const ModelSource& model) {
  if (model.format == ModelFormat::gguf) {
    RI_CHECK(model.gguf_metadata, model.path + ": GGUF metadata missing");
    const GgufMetadata& m = *model.gguf_metadata;
    if (!m.has("tokenizer.ggml.tokens")) return std::nullopt;
    const std::string model_kind = m.get_string_or("tokenizer.ggml.model", "gpt2");
    RI_CHECK(model_kind == "gpt2", model.path + ": tokenizer.ggml.model is '" + model_kind +
                                       "'; only byte-level BPE ('gpt2') tokenizers are supported");
    std::vector<int32_t> types;
    if (m.has("tokenizer.ggml.token_type"))
      for (int64_t t : m.get_int_array("tokenizer.ggml.token_type")) types.push_back(static_cast<int32_t>(t));
    Tokenizer tok = Tokenizer::from_vocab(
        m.get_string_array("tokenizer.ggml.tokens"), m.get_string_array("tokenizer.ggml.merges"), types,
        m.get_string_or("tokenizer.ggml.pre", "gpt-2"),
        static_cast<int32_t>(m.get_int_or("tokenizer.ggml.bos_token_id", -1)),
        static_cast<int32_t>(m.get_int_or("tokenizer.ggml.eos_token_id", -1)), model.path);
    if (m.has("tokenizer.ggml.add_bos_token")) tok.set_add_bos_by_default(m.get_bool("tokenizer.ggml.add_bos_token"));
    return tok;
  }
  if (model.tokenizer_json.empty()) return std::nullopt;
  return Tokenizer::from_tokenizer_json(model.tokenizer_json);
}

Tokenizer load_tokenizer(const ModelSource& model) {
  std::optional<Tokenizer> tok = find_tokenizer(model);
  RI_CHECK(tok.has_value(), model.path + ": the model has no tokenizer (tokenizer.json or GGUF tokenizer.ggml.*)");
  return std::move(*tok);
}

}  // namespace ringinfer
