#include "ringinfer/gguf.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "model/dtype_convert.h"
#include "ringinfer/error.h"

namespace ringinfer {
namespace {

constexpr int kMaxArrayDepth = 8;  // nesting beyond this is hostile, not a model
constexpr uint32_t kMaxDims = 4;   // GGML_MAX_DIMS

struct TypeTraits {
  const char* name;
  int64_t block;      // elements per block
  int64_t type_size;  // bytes per block
};

// ggml's type table (gguf-py GGML_QUANT_SIZES); ids not listed are unknown.
const TypeTraits* type_traits(uint32_t t) {
  static const std::map<uint32_t, TypeTraits> k = {
      {0, {"F32", 1, 4}},         {1, {"F16", 1, 2}},        {2, {"Q4_0", 32, 18}},      {3, {"Q4_1", 32, 20}},
      {6, {"Q5_0", 32, 22}},      {7, {"Q5_1", 32, 24}},     {8, {"Q8_0", 32, 34}},      {9, {"Q8_1", 32, 40}},
      {10, {"Q2_K", 256, 84}},    {11, {"Q3_K", 256, 110}},  {12, {"Q4_K", 256, 144}},   {13, {"Q5_K", 256, 176}},
      {14, {"Q6_K", 256, 210}},   {15, {"Q8_K", 256, 292}},  {16, {"IQ2_XXS", 256, 66}}, {17, {"IQ2_XS", 256, 74}},
      {18, {"IQ3_XXS", 256, 98}}, {19, {"IQ1_S", 256, 50}},  {20, {"IQ4_NL", 32, 18}},   {21, {"IQ3_S", 256, 110}},
      {22, {"IQ2_S", 256, 82}},   {23, {"IQ4_XS", 256, 136}}, {24, {"I8", 1, 1}},        {25, {"I16", 1, 2}},
      {26, {"I32", 1, 4}},        {27, {"I64", 1, 8}},       {28, {"F64", 1, 8}},        {29, {"IQ1_M", 256, 56}},
      {30, {"BF16", 1, 2}},       {34, {"TQ1_0", 256, 54}},  {35, {"TQ2_0", 256, 66}},   {39, {"MXFP4", 32, 17}}};
  auto it = k.find(t);
  return it == k.end() ? nullptr : &it->second;
}

// Bounds-checked little-endian reads over the mapped file.
struct Cursor {
  const unsigned char* p;
  uint64_t size;
  uint64_t pos;
  const std::string& path;

  uint64_t left() const { return size - pos; }
  void need(uint64_t n, const std::string& what) const {
    if (n > left())
      throw Error(path + ": truncated at byte " + std::to_string(pos) + " while reading " + what);
  }
  uint64_t le(int bytes, const std::string& what) {
    need(bytes, what);
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[pos + i];
    pos += bytes;
    return v;
  }
  uint32_t u32(const std::string& what) { return static_cast<uint32_t>(le(4, what)); }
  uint64_t u64(const std::string& what) { return le(8, what); }
  std::string str(const std::string& what) {
    const uint64_t n = u64(what + " (string length)");
    need(n, what + " (" + std::to_string(n) + "-byte string)");
    std::string s(reinterpret_cast<const char*>(p + pos), n);
    pos += n;
    return s;
  }
};

uint64_t min_value_size(GgufType t) {
  switch (t) {
    case GgufType::u8: case GgufType::i8: case GgufType::boolean: return 1;
    case GgufType::u16: case GgufType::i16: return 2;
    case GgufType::u32: case GgufType::i32: case GgufType::f32: return 4;
    case GgufType::u64: case GgufType::i64: case GgufType::f64: case GgufType::string: return 8;
    case GgufType::array: return 12;
  }
  return 0;
}

GgufType checked_type(uint32_t raw, const std::string& path, const std::string& key) {
  if (raw > 12) throw Error(path + ": metadata key '" + key + "' has unknown value type " + std::to_string(raw));
  return static_cast<GgufType>(raw);
}

GgufValue read_value(Cursor& c, GgufType type, const std::string& key, int depth) {
  GgufValue v;
  v.type = type;
  const std::string what = "metadata '" + key + "'";
  uint32_t bits32;
  uint64_t bits64;
  switch (type) {
    case GgufType::u8: v.i = static_cast<uint8_t>(c.le(1, what)); break;
    case GgufType::i8: v.i = static_cast<int8_t>(c.le(1, what)); break;
    case GgufType::u16: v.i = static_cast<uint16_t>(c.le(2, what)); break;
    case GgufType::i16: v.i = static_cast<int16_t>(c.le(2, what)); break;
    case GgufType::u32: v.i = static_cast<uint32_t>(c.le(4, what)); break;
    case GgufType::i32: v.i = static_cast<int32_t>(c.le(4, what)); break;
    case GgufType::u64:
      v.u = c.u64(what);
      v.big_unsigned = v.u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
      v.i = static_cast<int64_t>(v.u);
      break;
    case GgufType::i64: v.i = static_cast<int64_t>(c.u64(what)); break;
    case GgufType::f32: {
      bits32 = c.u32(what);
      float f;
      std::memcpy(&f, &bits32, 4);
      v.f = f;
      break;
    }
    case GgufType::f64: {
      bits64 = c.u64(what);
      std::memcpy(&v.f, &bits64, 8);
      break;
    }
    case GgufType::boolean: v.b = c.le(1, what) != 0; v.i = v.b; break;
    case GgufType::string: v.s = c.str(what); break;
    case GgufType::array: {
      if (depth >= kMaxArrayDepth)
        throw Error(c.path + ": metadata key '" + key + "' nests arrays deeper than " + std::to_string(kMaxArrayDepth));
      v.elem_type = checked_type(c.u32(what + " (array type)"), c.path, key);
      const uint64_t n = c.u64(what + " (array length)");
      // Refuse a huge count before allocating: each element needs at least this many bytes.
      if (n > c.left() / min_value_size(v.elem_type))
        throw Error(c.path + ": metadata key '" + key + "' claims " + std::to_string(n) +
                    " array elements, more than the file can hold");
      v.items.reserve(n);
      for (uint64_t i = 0; i < n; ++i) v.items.push_back(read_value(c, v.elem_type, key, depth + 1));
      break;
    }
  }
  return v;
}

}  // namespace

// ---------------------------------------------------------------- metadata

const char* gguf_type_name(GgufType t) {
  static const char* k[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
  const auto i = static_cast<uint32_t>(t);
  return i <= 12 ? k[i] : "unknown";
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufType::u8: case GgufType::i8: case GgufType::u16: case GgufType::i16: case GgufType::u32:
    case GgufType::i32: case GgufType::u64: case GgufType::i64: return true;
    default: return false;
  }
}

const GgufValue* GgufMetadata::find(const std::string& key) const {
  auto it = values_.find(key);
  return it == values_.end() ? nullptr : &it->second;
}

const GgufValue& GgufMetadata::at(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) throw Error(source_ + ": metadata key '" + key + "' is missing");
  return *v;
}

void GgufMetadata::wrong_type(const std::string& key, const char* wanted) const {
  const GgufValue& v = at(key);
  std::string got = gguf_type_name(v.type);
  if (v.type == GgufType::array) got += std::string(" of ") + gguf_type_name(v.elem_type);
  throw Error(source_ + ": metadata key '" + key + "' is " + got + ", expected " + wanted);
}

int64_t GgufMetadata::get_int(const std::string& key) const {
  const GgufValue& v = at(key);
  if (!v.is_integer() && v.type != GgufType::boolean) wrong_type(key, "an integer");
  if (v.big_unsigned) throw Error(source_ + ": metadata key '" + key + "' = " + std::to_string(v.u) + " is too large");
  return v.i;
}
int64_t GgufMetadata::get_int_or(const std::string& key, int64_t dflt) const { return has(key) ? get_int(key) : dflt; }

double GgufMetadata::get_float(const std::string& key) const {
  const GgufValue& v = at(key);
  if (v.type == GgufType::f32 || v.type == GgufType::f64) return v.f;
  if (v.is_integer()) return v.big_unsigned ? static_cast<double>(v.u) : static_cast<double>(v.i);
  wrong_type(key, "a number");
}
double GgufMetadata::get_float_or(const std::string& key, double dflt) const { return has(key) ? get_float(key) : dflt; }

bool GgufMetadata::get_bool(const std::string& key) const {
  const GgufValue& v = at(key);
  if (v.type != GgufType::boolean) wrong_type(key, "a bool");
  return v.b;
}

std::string GgufMetadata::get_string(const std::string& key) const {
  const GgufValue& v = at(key);
  if (v.type != GgufType::string) wrong_type(key, "a string");
  return v.s;
}
std::string GgufMetadata::get_string_or(const std::string& key, const std::string& dflt) const {
  return has(key) ? get_string(key) : dflt;
}

std::vector<std::string> GgufMetadata::get_string_array(const std::string& key) const {
  const GgufValue& v = at(key);
  if (v.type != GgufType::array || v.elem_type != GgufType::string) wrong_type(key, "an array of string");
  std::vector<std::string> r;
  r.reserve(v.items.size());
  for (const auto& x : v.items) r.push_back(x.s);
  return r;
}

std::vector<int64_t> GgufMetadata::get_int_array(const std::string& key) const {
  const GgufValue& v = at(key);
  GgufValue probe;
  probe.type = v.elem_type;
  if (v.type != GgufType::array || !probe.is_integer()) wrong_type(key, "an array of integers");
  std::vector<int64_t> r;
  r.reserve(v.items.size());
  for (const auto& x : v.items) {
    if (x.big_unsigned) throw Error(source_ + ": metadata key '" + key + "' holds a value too large for int64");
    r.push_back(x.i);
  }
  return r;
}

std::vector<double> GgufMetadata::get_float_array(const std::string& key) const {
  const GgufValue& v = at(key);
  if (v.type != GgufType::array || (v.elem_type != GgufType::f32 && v.elem_type != GgufType::f64))
    wrong_type(key, "an array of float");
  std::vector<double> r;
  r.reserve(v.items.size());
  for (const auto& x : v.items) r.push_back(x.f);
  return r;
}

size_t GgufMetadata::array_size(const std::string& key) const {
  const GgufValue& v = at(key);
  if (v.type != GgufType::array) wrong_type(key, "an array");
  return v.items.size();
}

// ---------------------------------------------------------------- tensors

const char* ggml_type_name(uint32_t type) {
  const TypeTraits* t = type_traits(type);
  return t ? t->name : "unknown";
}

std::vector<int64_t> GgufTensorInfo::hf_shape() const { return std::vector<int64_t>(ne.rbegin(), ne.rend()); }

int64_t GgufTensorInfo::numel() const {
  // The parser bounds the product of the non-zero dimensions by the file size; with a zero
  // dimension the others may be anything, so multiply only when none is zero.
  for (int64_t d : ne)
    if (d == 0) return 0;
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

GgufFile::~GgufFile() = default;

GgufFile::GgufFile(const std::string& path) : path_(path) {
  file_ = std::make_unique<dtype::MappedFile>(path);
  metadata_ = std::make_shared<GgufMetadata>(path);
  const uint64_t size = file_->size();
  Cursor c{file_->data(), size, 0, path_};
  auto fail = [&](const std::string& what) { throw Error(path_ + ": " + what); };

  c.need(4, "the magic");
  if (std::memcmp(file_->data(), "GGUF", 4) != 0) fail("not a GGUF file (bad magic)");
  c.pos = 4;
  version_ = c.u32("the version");
  if (version_ == 1) fail("GGUF version 1 is not supported (2 or 3)");
  if (version_ != 2 && version_ != 3)
    fail("GGUF version " + std::to_string(version_) + " is not supported (2 or 3; a big-endian file?)");
  const uint64_t n_tensors = c.u64("the tensor count");
  const uint64_t n_kv = c.u64("the metadata count");
  // Smallest possible entries: a KV is key length + type + 1 byte; a tensor info is
  // name length + n_dims + one dim + type + offset.
  if (n_kv > c.left() / 13) fail("metadata count " + std::to_string(n_kv) + " is more than the file can hold");
  if (n_tensors > c.left() / 32) fail("tensor count " + std::to_string(n_tensors) + " is more than the file can hold");

  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = c.str("metadata key " + std::to_string(k));
    GgufType type = checked_type(c.u32("metadata '" + key + "' type"), path_, key);
    GgufValue v = read_value(c, type, key, 0);
    if (!metadata_->values().emplace(key, std::move(v)).second) fail("metadata key '" + key + "' appears twice");
  }
  if (const GgufValue* a = metadata_->find("general.alignment")) {
    if (a->type != GgufType::u32 || a->i == 0 || (a->i & (a->i - 1)) != 0)
      fail("general.alignment must be a u32 power of two");
    alignment_ = static_cast<uint64_t>(a->i);
  }

  if (n_tensors > c.left() / 32) fail("tensor count " + std::to_string(n_tensors) + " is more than the file can hold");
  tensors_.reserve(n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo t;
    t.name = c.str("tensor name " + std::to_string(k));
    const std::string tn = "tensor '" + t.name + "'";
    const uint32_t n_dims = c.u32(tn + " dims");
    if (n_dims < 1 || n_dims > kMaxDims) fail(tn + " has " + std::to_string(n_dims) + " dimensions (1 to 4 allowed)");
    // Every dimension is bounded by the file size so that products cannot overflow.
    uint64_t numel = 1;
    bool empty = false;  // a zero dimension: no elements, whatever the others say
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = c.u64(tn + " shape");
      if (ne > (1ull << 62)) fail(tn + " dimension " + std::to_string(d) + " = " + std::to_string(ne) + " is absurd");
      t.ne.push_back(static_cast<int64_t>(ne));
      if (ne == 0) empty = true;
      else if (numel > (size * 32) / ne) numel = size * 32 + 1;  // saturate: fails the size check below
      else numel *= ne;
    }
    if (empty) numel = 0;
    t.type = c.u32(tn + " type");
    const TypeTraits* tt = type_traits(t.type);
    if (!tt) fail(tn + " has unknown ggml type " + std::to_string(t.type));
    t.offset = c.u64(tn + " offset");
    if (t.ne[0] % tt->block != 0)
      fail(tn + " has " + std::to_string(t.ne[0]) + " columns, not a multiple of the " + tt->name + " block (" +
           std::to_string(tt->block) + ")");
    if (numel > size * 32) fail(tn + " has more elements than the file can hold");
    t.nbytes = numel / tt->block * tt->type_size;
    if (t.offset % alignment_ != 0)
      fail(tn + " offset " + std::to_string(t.offset) + " is not a multiple of the alignment " + std::to_string(alignment_));
    if (!index_.emplace(t.name, tensors_.size()).second) fail(tn + " appears twice");
    tensors_.push_back(std::move(t));
  }

  data_start_ = (c.pos + alignment_ - 1) / alignment_ * alignment_;
  const uint64_t data_size = data_start_ <= size ? size - data_start_ : 0;
  if (!tensors_.empty() && data_start_ > size) fail("the data section starts past the end of the file (truncated?)");
  std::vector<const GgufTensorInfo*> by_offset;
  for (const auto& t : tensors_) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      fail("tensor '" + t.name + "' data [" + std::to_string(t.offset) + ", +" + std::to_string(t.nbytes) +
           ") lies past the end of the data section (" + std::to_string(data_size) + " bytes; truncated?)");
    if (t.nbytes > 0) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const auto* a, const auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->offset < by_offset[i - 1]->offset + by_offset[i - 1]->nbytes)
      fail("tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name + "' overlap");
}

const GgufTensorInfo* GgufFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensorInfo& GgufFile::info(const std::string& name) const {
  const auto* t = find(name);
  if (!t) throw Error(path_ + ": tensor '" + name + "' is missing");
  return *t;
}

namespace {

using BlockDequantizer = void (*)(const unsigned char*, int64_t, float*);

// The dequantizer of a block type (dtype_convert.h), or null: element types and types we
// cannot read.
BlockDequantizer block_dequantizer(uint32_t type) {
  switch (type) {
    case 8: return dtype::dequant_q8_0;
    case 2: return dtype::dequant_q4_0;
    case 3: return dtype::dequant_q4_1;
    case 6: return dtype::dequant_q5_0;
    case 7: return dtype::dequant_q5_1;
    case 10: return dtype::dequant_q2_k;
    case 11: return dtype::dequant_q3_k;
    case 12: return dtype::dequant_q4_k;
    case 13: return dtype::dequant_q5_k;
    case 14: return dtype::dequant_q6_k;
    case 20: return dtype::dequant_iq4_nl;
    case 23: return dtype::dequant_iq4_xs;
    default: return nullptr;
  }
}

}  // namespace

void GgufFile::dequant(const GgufTensorInfo& t, int64_t first, int64_t n, float* dst) const {
  const TypeTraits& tt = *type_traits(t.type);
  const unsigned char* base = file_->data() + data_start_ + t.offset;
  switch (t.type) {
    case 0: dtype::f32_to_f32(base + first * 4, n, dst); return;
    case 1: dtype::f16_to_f32(base + first * 2, n, dst); return;
    case 30: dtype::bf16_to_f32(base + first * 2, n, dst); return;
    case 28: dtype::f64_to_f32(base + first * 8, n, dst); return;
    default: break;
  }
  const BlockDequantizer block_fn = block_dequantizer(t.type);
  if (!block_fn)
    throw Error(path_ + ": tensor '" + t.name + "' has type " + tt.name +
                ", which is not supported (F32, F16, BF16, F64, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, "
                "Q5_K, Q6_K, IQ4_NL, IQ4_XS)");
  if (n <= 0) return;
  const int64_t b0 = first / tt.block, b1 = (first + n + tt.block - 1) / tt.block;
  if (first % tt.block == 0 && n % tt.block == 0) {
    const int64_t nb = b1 - b0;
    constexpr int64_t kChunk = 2048;  // blocks per parallel task
    const int64_t chunks = (nb + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 4)
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const int64_t b = b0 + ch * kChunk, len = std::min(kChunk, b1 - b);
      block_fn(base + b * tt.type_size, len, dst + (b - b0) * tt.block);
    }
    return;
  }
  // A range that cuts blocks (column reads): dequantize the covering blocks, copy the middle.
  std::vector<float> tmp(static_cast<size_t>((b1 - b0) * tt.block));
  block_fn(base + b0 * tt.type_size, b1 - b0, tmp.data());
  std::copy_n(tmp.data() + (first - b0 * tt.block), n, dst);
}

HostTensor GgufFile::read(const std::string& name) const {
  const auto& t = info(name);
  HostTensor out;
  out.shape = t.hf_shape();
  out.data.resize(static_cast<size_t>(t.numel()));
  dequant(t, 0, t.numel(), out.data.data());
  file_->drop_resident(data_start_ + t.offset, t.nbytes);
  return out;
}

HostTensor GgufFile::read_rows(const std::string& name, int64_t begin, int64_t end) const {
  const auto& t = info(name);
  const bool vec = t.ne.size() == 1;
  const int64_t row_elems = vec ? 1 : t.ne[0];
  const int64_t rows = vec ? t.ne[0] : (row_elems == 0 ? 0 : t.numel() / row_elems);
  if (begin < 0 || begin > end || end > rows)
    throw Error(path_ + ": tensor '" + name + "': rows [" + std::to_string(begin) + ", " + std::to_string(end) +
                ") are outside its " + std::to_string(rows) + " rows");
  HostTensor out;
  // A >2-D tensor's rows are flattened over its outer dimensions.
  out.shape = vec ? std::vector<int64_t>{end - begin} : std::vector<int64_t>{end - begin, row_elems};
  out.data.resize(static_cast<size_t>((end - begin) * row_elems));
  dequant(t, begin * row_elems, (end - begin) * row_elems, out.data.data());
  file_->drop_resident(data_start_ + t.offset, t.nbytes);
  return out;
}

namespace {

// Whether read_rows_stored gives t's stored bytes (a matrix of F16, BF16 or a block type,
// which the CPU backend computes on as stored) rather than fp32 values.
bool kept_as_stored(const GgufTensorInfo& t) {
  const bool kept_type = t.type == 1 || t.type == 30 || block_dequantizer(t.type) != nullptr;
  return kept_type && t.ne.size() == 2 && t.ne[0] % type_traits(t.type)->block == 0;
}

}  // namespace

int64_t GgufFile::kept_bytes() const {
  int64_t sum = 0;
  for (const auto& t : tensors_) sum += kept_as_stored(t) ? static_cast<int64_t>(t.nbytes) : 4 * t.numel();
  return sum;
}

HostTensor GgufFile::read_rows_stored(const std::string& name, int64_t begin, int64_t end) const {
  const auto& t = info(name);
  const TypeTraits& tt = *type_traits(t.type);
  if (!kept_as_stored(t)) return read_rows(name, begin, end);
  const int64_t rows = t.ne[1], row_bytes = t.ne[0] / tt.block * tt.type_size;
  if (begin < 0 || begin > end || end > rows) return read_rows(name, begin, end);  // reports the bad range
  HostTensor out;
  out.shape = {end - begin, t.ne[0]};
  out.ggml_type = t.type;
  const unsigned char* base = file_->data() + data_start_ + t.offset;
  out.blocks.assign(base + begin * row_bytes, base + end * row_bytes);
  file_->drop_resident(data_start_ + t.offset, t.nbytes);
  return out;
}

HostTensor GgufFile::read_cols(const std::string& name, int64_t begin, int64_t end) const {
  const auto& t = info(name);
  if (t.ne.size() != 2) throw Error(path_ + ": tensor '" + name + "' is not 2-D; column reads need 2-D");
  const int64_t cols = t.ne[0], rows = t.ne[1];
  if (begin < 0 || begin > end || end > cols)
    throw Error(path_ + ": tensor '" + name + "': columns [" + std::to_string(begin) + ", " + std::to_string(end) +
                ") are outside its " + std::to_string(cols) + " columns");
  HostTensor out;
  out.shape = {rows, end - begin};
  out.data.resize(static_cast<size_t>(rows * (end - begin)));
  for (int64_t r = 0; r < rows; ++r) dequant(t, r * cols + begin, end - begin, out.data.data() + r * (end - begin));
  file_->drop_resident(data_start_ + t.offset, t.nbytes);  // a column read touches every page
  return out;
}

// ---------------------------------------------------------------- Q/K permutation

int64_t gguf_permuted_row(int64_t hf_row, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  const int64_t h = hf_row / head_dim, i = hf_row % head_dim;
  const int64_t s = i / half, j = i % half;
  return h * head_dim + 2 * j + s;
}

}  // namespace ringinfer
