#include "model_files.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace ringinfer::test {

// ---------------------------------------------------------------- encodings

uint16_t float_to_fp16(float f) {
  const double a = std::fabs(static_cast<double>(f));
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  if (a == 0) return sign;
  int e = 0;
  std::frexp(a, &e);
  int E = e - 1;  // a = 1.m * 2^E
  if (E < -14) {  // subnormal: multiples of 2^-24 (nearbyint rounds half to even)
    const auto q = static_cast<uint16_t>(std::nearbyint(a / std::ldexp(1.0, -24)));
    return sign | q;  // q == 1024 encodes the smallest normal
  }
  auto mant = static_cast<uint32_t>(std::nearbyint((a / std::ldexp(1.0, E) - 1.0) * 1024.0));
  if (mant == 1024) mant = 0, ++E;
  if (E > 15) return sign | 0x7c00;
  return static_cast<uint16_t>(sign | ((E + 15) << 10) | mant);
}

uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

double fp16_value(uint16_t h) {
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const double s = (h & 0x8000) ? -1.0 : 1.0;
  if (e == 0) return s * std::ldexp(m, -24);
  if (e == 31) return m ? NAN : s * INFINITY;
  return s * std::ldexp(1.0 + m / 1024.0, e - 15);
}

double bf16_value(uint16_t b) {
  const int e = (b >> 7) & 0xff, m = b & 0x7f;
  const double s = (b & 0x8000) ? -1.0 : 1.0;
  if (e == 0) return s * std::ldexp(m, -133);
  if (e == 255) return m ? NAN : s * INFINITY;
  return s * std::ldexp(1.0 + m / 128.0, e - 127);
}

void put_le(std::vector<uint8_t>& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

static void put_f32(std::vector<uint8_t>& out, float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  put_le(out, u, 4);
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream o(path, std::ios::binary | std::ios::trunc);
  o.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!o) throw std::runtime_error("cannot write " + path);
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream i(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(i), std::istreambuf_iterator<char>());
}

// ---------------------------------------------------------------- safetensors

StTensor random_st_tensor(const std::string& name, const std::string& dtype, const std::vector<int64_t>& shape,
                          std::mt19937_64& rng) {
  StTensor t{name, dtype, shape, {}, {}};
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (int64_t i = 0; i < n; ++i) {
    const float x = dist(rng);
    if (dtype == "F32") {
      put_f32(t.bytes, x);
      t.values.push_back(x);
    } else if (dtype == "F16") {
      const uint16_t h = float_to_fp16(x);
      put_le(t.bytes, h, 2);
      t.values.push_back(fp16_value(h));
    } else if (dtype == "BF16") {
      const uint16_t b = float_to_bf16(x);
      put_le(t.bytes, b, 2);
      t.values.push_back(bf16_value(b));
    } else {
      throw std::runtime_error("random_st_tensor: dtype " + dtype);
    }
  }
  return t;
}

nlohmann::json safetensors_header(const std::vector<StTensor>& tensors) {
  nlohmann::json h = nlohmann::json::object();
  uint64_t off = 0;
  for (const auto& t : tensors) {
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes.size()}}};
    off += t.bytes.size();
  }
  h["__metadata__"] = {{"format", "pt"}};
  return h;
}

void write_safetensors_raw(const std::string& path, const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out;
  put_le(out, header.size(), 8);
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  write_bytes(path, out);
}

void write_safetensors(const std::string& path, const std::vector<StTensor>& tensors) {
  std::vector<uint8_t> data;
  for (const auto& t : tensors) data.insert(data.end(), t.bytes.begin(), t.bytes.end());
  write_safetensors_raw(path, safetensors_header(tensors).dump(), data);
}

// ---------------------------------------------------------------- quantization

std::vector<uint8_t> quantize_q8_0(const std::vector<float>& x, std::vector<double>* deq) {
  std::vector<uint8_t> out;
  for (size_t b = 0; b < x.size(); b += 32) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b + j]));
    const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
    const uint16_t dh = float_to_fp16(d);
    put_le(out, dh, 2);
    for (int j = 0; j < 32; ++j) {
      const auto q = static_cast<int8_t>(std::lround(x[b + j] * id));
      out.push_back(static_cast<uint8_t>(q));
      deq->push_back(q * fp16_value(dh));
    }
  }
  return out;
}

std::vector<uint8_t> quantize_q4_0(const std::vector<float>& x, std::vector<double>* deq) {
  std::vector<uint8_t> out;
  for (size_t b = 0; b < x.size(); b += 32) {
    float amax = 0, max = 0;  // max: the value of largest magnitude, with its sign
    for (int j = 0; j < 32; ++j)
      if (std::fabs(x[b + j]) > amax) amax = std::fabs(x[b + j]), max = x[b + j];
    const float d = max / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
    const uint16_t dh = float_to_fp16(d);
    put_le(out, dh, 2);
    int q[32];
    for (int j = 0; j < 32; ++j) q[j] = std::min(15, static_cast<int>(x[b + j] * id + 8.5f));
    for (int j = 0; j < 16; ++j) out.push_back(static_cast<uint8_t>(q[j] | (q[j + 16] << 4)));
    for (int j = 0; j < 32; ++j) deq->push_back((q[j] - 8) * fp16_value(dh));
  }
  return out;
}

std::vector<uint8_t> quantize_q4_1(const std::vector<float>& x, std::vector<double>* deq) {
  std::vector<uint8_t> out;
  for (size_t b = 0; b < x.size(); b += 32) {
    float lo = x[b], hi = x[b];
    for (int j = 0; j < 32; ++j) lo = std::min(lo, x[b + j]), hi = std::max(hi, x[b + j]);
    const float d = (hi - lo) / 15.0f, id = d != 0 ? 1.0f / d : 0.0f;
    const uint16_t dh = float_to_fp16(d), mh = float_to_fp16(lo);
    put_le(out, dh, 2);
    put_le(out, mh, 2);
    int q[32];
    for (int j = 0; j < 32; ++j) q[j] = std::min(15, std::max(0, static_cast<int>((x[b + j] - lo) * id + 0.5f)));
    for (int j = 0; j < 16; ++j) out.push_back(static_cast<uint8_t>(q[j] | (q[j + 16] << 4)));
    // q * d is exact in float, so rounding the double sum once matches the float result.
    for (int j = 0; j < 32; ++j) deq->push_back(static_cast<float>(q[j] * fp16_value(dh) + fp16_value(mh)));
  }
  return out;
}

// ---------------------------------------------------------------- GGUF writer

std::vector<uint8_t> gguf_string(const std::string& s) {
  std::vector<uint8_t> o;
  put_le(o, s.size(), 8);
  o.insert(o.end(), s.begin(), s.end());
  return o;
}

void GgufBuilder::kv_raw(const std::string& k, uint32_t type, const std::vector<uint8_t>& value) {
  auto key = gguf_string(k);
  kvs_.insert(kvs_.end(), key.begin(), key.end());
  put_le(kvs_, type, 4);
  kvs_.insert(kvs_.end(), value.begin(), value.end());
  ++n_kv_;
}
void GgufBuilder::kv_u32(const std::string& k, uint32_t v) { std::vector<uint8_t> b; put_le(b, v, 4); kv_raw(k, kU32, b); }
void GgufBuilder::kv_i32(const std::string& k, int32_t v) { std::vector<uint8_t> b; put_le(b, static_cast<uint32_t>(v), 4); kv_raw(k, kI32, b); }
void GgufBuilder::kv_u64(const std::string& k, uint64_t v) { std::vector<uint8_t> b; put_le(b, v, 8); kv_raw(k, kU64, b); }
void GgufBuilder::kv_f32(const std::string& k, float v) { std::vector<uint8_t> b; put_f32(b, v); kv_raw(k, kF32, b); }
void GgufBuilder::kv_bool(const std::string& k, bool v) { kv_raw(k, kBool, {static_cast<uint8_t>(v)}); }
void GgufBuilder::kv_str(const std::string& k, const std::string& v) { kv_raw(k, kStr, gguf_string(v)); }
void GgufBuilder::kv_str_array(const std::string& k, const std::vector<std::string>& v) {
  std::vector<uint8_t> b;
  put_le(b, kStr, 4);
  put_le(b, v.size(), 8);
  for (const auto& s : v) { auto e = gguf_string(s); b.insert(b.end(), e.begin(), e.end()); }
  kv_raw(k, kArr, b);
}
void GgufBuilder::kv_i32_array(const std::string& k, const std::vector<int32_t>& v) {
  std::vector<uint8_t> b;
  put_le(b, kI32, 4);
  put_le(b, v.size(), 8);
  for (int32_t x : v) put_le(b, static_cast<uint32_t>(x), 4);
  kv_raw(k, kArr, b);
}
void GgufBuilder::kv_f32_array(const std::string& k, const std::vector<float>& v) {
  std::vector<uint8_t> b;
  put_le(b, kF32, 4);
  put_le(b, v.size(), 8);
  for (float x : v) put_f32(b, x);
  kv_raw(k, kArr, b);
}

void GgufBuilder::tensor(const std::string& name, const std::vector<int64_t>& ne, uint32_t type,
                         const std::vector<uint8_t>& data, int64_t offset) {
  tensors_.push_back({name, ne, type, data, offset});
}

std::vector<uint8_t> GgufBuilder::build(uint32_t version, uint32_t alignment) const {
  std::vector<uint8_t> out = {'G', 'G', 'U', 'F'};
  put_le(out, version, 4);
  put_le(out, tensors_.size(), 8);
  put_le(out, n_kv_, 8);
  out.insert(out.end(), kvs_.begin(), kvs_.end());
  // Data offsets: each tensor at the next aligned position unless given.
  std::vector<uint64_t> offs;
  uint64_t off = 0;
  for (const auto& t : tensors_) {
    off = (off + alignment - 1) / alignment * alignment;
    offs.push_back(t.offset >= 0 ? static_cast<uint64_t>(t.offset) : off);
    off += t.data.size();
  }
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const auto& t = tensors_[i];
    auto n = gguf_string(t.name);
    out.insert(out.end(), n.begin(), n.end());
    put_le(out, t.ne.size(), 4);
    for (int64_t d : t.ne) put_le(out, static_cast<uint64_t>(d), 8);
    put_le(out, t.type, 4);
    put_le(out, offs[i], 8);
  }
  if (tensors_.empty()) return out;
  while (out.size() % alignment) out.push_back(0);
  const size_t base = out.size();
  uint64_t pos = 0;
  for (const auto& t : tensors_) {
    pos = (pos + alignment - 1) / alignment * alignment;
    out.resize(base + pos, 0);
    out.insert(out.end(), t.data.begin(), t.data.end());
    pos += t.data.size();
  }
  return out;
}

// ---------------------------------------------------------------- tiny model

TinyModel make_tiny_model(std::mt19937_64& rng, int n_layers, bool qkv_bias, bool tied) {
  TinyModel m;
  const int64_t hidden = 64, heads = 4, kv = 2, hd = 16, ffn = 96, vocab = 40;
  m.n_heads = heads, m.n_kv_heads = kv, m.head_dim = hd;
  m.config = {{"architectures", {qkv_bias ? "Qwen2ForCausalLM" : "LlamaForCausalLM"}},
              {"hidden_size", hidden}, {"num_hidden_layers", n_layers}, {"num_attention_heads", heads},
              {"num_key_value_heads", kv}, {"intermediate_size", ffn}, {"vocab_size", vocab},
              {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}, {"max_position_embeddings", 128},
              {"tie_word_embeddings", tied}, {"bos_token_id", 1}, {"eos_token_id", 2}, {"hidden_act", "silu"}};
  std::normal_distribution<float> dist(0.0f, 0.5f);
  auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = dist(rng);
    m.shapes[name] = shape;
    m.values[name] = v;
  };
  add("model.embed_tokens.weight", {vocab, hidden});
  add("model.norm.weight", {hidden});
  if (!tied) add("lm_head.weight", {vocab, hidden});
  for (int l = 0; l < n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {hidden});
    add(p + "self_attn.q_proj.weight", {heads * hd, hidden});
    add(p + "self_attn.k_proj.weight", {kv * hd, hidden});
    add(p + "self_attn.v_proj.weight", {kv * hd, hidden});
    if (qkv_bias) {
      add(p + "self_attn.q_proj.bias", {heads * hd});
      add(p + "self_attn.k_proj.bias", {kv * hd});
      add(p + "self_attn.v_proj.bias", {kv * hd});
    }
    add(p + "self_attn.o_proj.weight", {hidden, heads * hd});
    add(p + "post_attention_layernorm.weight", {hidden});
    add(p + "mlp.gate_proj.weight", {ffn, hidden});
    add(p + "mlp.up_proj.weight", {ffn, hidden});
    add(p + "mlp.down_proj.weight", {hidden, ffn});
  }
  return m;
}

static StTensor f32_tensor(const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& v) {
  StTensor t{name, "F32", shape, {}, {}};
  for (float x : v) put_f32(t.bytes, x), t.values.push_back(x);
  return t;
}

void write_tiny_hf(const std::string& dir, const TinyModel& m, int shards) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json") << m.config.dump(2);
  std::vector<std::vector<StTensor>> parts(static_cast<size_t>(shards));
  nlohmann::json wm = nlohmann::json::object();
  size_t i = 0;
  for (const auto& kv : m.shapes) {
    const size_t s = i++ % static_cast<size_t>(shards);
    parts[s].push_back(f32_tensor(kv.first, kv.second, m.values.at(kv.first)));
    wm[kv.first] = "model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(shards) + ".safetensors";
  }
  if (shards == 1) {
    write_safetensors(dir + "/model.safetensors", parts[0]);
    return;
  }
  for (int s = 0; s < shards; ++s)
    write_safetensors(dir + "/model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(shards) + ".safetensors",
                      parts[static_cast<size_t>(s)]);
  std::ofstream(dir + "/model.safetensors.index.json") << nlohmann::json{{"metadata", {}}, {"weight_map", wm}}.dump(2);
}

std::vector<float> llama_cpp_permute(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t n_head) {
  // view as [n_head][2][half][cols]; output [n_head][half][2][cols]
  const int64_t half = rows / n_head / 2;
  std::vector<float> out(w.size());
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t two = 0; two < 2; ++two)
      for (int64_t j = 0; j < half; ++j)
        for (int64_t c = 0; c < cols; ++c)
          out[((h * half + j) * 2 + two) * cols + c] = w[((h * 2 + two) * half + j) * cols + c];
  return out;
}

static std::string gguf_name(const std::string& hf) {
  static const std::vector<std::pair<std::string, std::string>> k = {
      {"input_layernorm.weight", "attn_norm.weight"}, {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},   {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},       {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.bias", "attn_v.bias"},       {"self_attn.o_proj.weight", "attn_output.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"}, {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},        {"mlp.down_proj.weight", "ffn_down.weight"}};
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  const size_t dot = hf.find('.', 13);  // after "model.layers."
  const std::string layer = hf.substr(13, dot - 13), rest = hf.substr(dot + 1);
  for (const auto& p : k)
    if (p.first == rest) return "blk." + layer + "." + p.second;
  throw std::runtime_error("gguf_name: " + hf);
}

static std::vector<uint8_t> encode(const std::vector<float>& v, uint32_t type, std::vector<double>* deq) {
  std::vector<uint8_t> b;
  switch (type) {
    case kGF32: for (float x : v) put_f32(b, x), deq->push_back(x); return b;
    case kGF16: for (float x : v) { uint16_t h = float_to_fp16(x); put_le(b, h, 2); deq->push_back(fp16_value(h)); } return b;
    case kGBF16: for (float x : v) { uint16_t h = float_to_bf16(x); put_le(b, h, 2); deq->push_back(bf16_value(h)); } return b;
    case kGQ8_0: return quantize_q8_0(v, deq);
    case kGQ4_0: return quantize_q4_0(v, deq);
    case kGQ4_1: return quantize_q4_1(v, deq);
  }
  throw std::runtime_error("encode: type");
}

std::vector<uint8_t> tiny_gguf(const TinyModel& m, uint32_t matrix_type, uint32_t version,
                               std::map<std::string, std::vector<double>>* expected) {
  const nlohmann::json& c = m.config;
  GgufBuilder g;
  g.kv_str("general.architecture", "llama");
  g.kv_u32("llama.embedding_length", c["hidden_size"].get<uint32_t>());
  g.kv_u32("llama.block_count", c["num_hidden_layers"].get<uint32_t>());
  g.kv_u32("llama.attention.head_count", static_cast<uint32_t>(m.n_heads));
  g.kv_u32("llama.attention.head_count_kv", static_cast<uint32_t>(m.n_kv_heads));
  g.kv_u32("llama.feed_forward_length", c["intermediate_size"].get<uint32_t>());
  g.kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  g.kv_f32("llama.rope.freq_base", 10000.0f);
  g.kv_u32("llama.rope.dimension_count", static_cast<uint32_t>(m.head_dim));
  g.kv_u32("llama.context_length", 128);
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  for (int i = 0; i < c["vocab_size"].get<int>(); ++i) tokens.push_back("tok" + std::to_string(i)), types.push_back(1);
  g.kv_str("tokenizer.ggml.model", "gpt2");
  g.kv_str("tokenizer.ggml.pre", "smollm");
  g.kv_str_array("tokenizer.ggml.tokens", tokens);
  g.kv_i32_array("tokenizer.ggml.token_type", types);
  g.kv_str_array("tokenizer.ggml.merges", {"t o", "to k"});
  g.kv_u32("tokenizer.ggml.bos_token_id", 1);
  g.kv_u32("tokenizer.ggml.eos_token_id", 2);
  for (const auto& kv : m.shapes) {
    const std::string& name = kv.first;
    const auto& shape = kv.second;
    const std::vector<float>& v = m.values.at(name);
    const bool matrix = shape.size() == 2;
    const uint32_t type = matrix ? matrix_type : static_cast<uint32_t>(kGF32);
    // Expected: the HF-layout values through the same encoding (row-wise, so it commutes
    // with the row permutation).
    std::vector<double> deq;
    encode(v, type, &deq);
    (*expected)[name] = deq;
    std::vector<float> stored = v;
    const bool is_q = name.find("q_proj") != std::string::npos, is_k = name.find("k_proj") != std::string::npos;
    if (is_q || is_k)
      stored = llama_cpp_permute(v, shape[0], matrix ? shape[1] : 1, is_q ? m.n_heads : m.n_kv_heads);
    std::vector<double> unused;
    g.tensor(gguf_name(name), std::vector<int64_t>(shape.rbegin(), shape.rend()), type, encode(stored, type, &unused));
  }
  return g.build(version);
}

}  // namespace ringinfer::test
