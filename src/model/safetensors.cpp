#include "ringinfer/safetensors.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/dtype_convert.h"
#include "ringinfer/error.h"

namespace ringinfer {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr uint64_t kMaxHeader = 100ull << 20;  // larger headers are corrupt, not big models

int64_t dtype_size(const std::string& d) {
  static const std::map<std::string, int64_t> k = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2}, {"I8", 1},
      {"U64", 8}, {"U32", 4}, {"U16", 2}, {"U8", 1}, {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  auto it = k.find(d);
  return it == k.end() ? 0 : it->second;
}

// Converts n elements to fp32, in parallel for large tensors.
void convert(const std::string& d, const std::string& where, const unsigned char* src, int64_t n, float* dst) {
  void (*fn)(const unsigned char*, int64_t, float*) = nullptr;
  int64_t es = 0;
  if (d == "F32") fn = dtype::f32_to_f32, es = 4;
  else if (d == "F16") fn = dtype::f16_to_f32, es = 2;
  else if (d == "BF16") fn = dtype::bf16_to_f32, es = 2;
  else if (d == "F64") fn = dtype::f64_to_f32, es = 8;
  else throw Error(where + ": dtype " + d + " cannot be read as weights (F32, F16, BF16, F64)");
  constexpr int64_t kChunk = 1 << 16;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 4)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t b = c * kChunk, len = std::min(kChunk, n - b);
    fn(src + b * es, len, dst + b);
  }
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace

int64_t SafetensorsTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile::~SafetensorsFile() = default;

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  file_ = std::make_unique<dtype::MappedFile>(path);
  const uint64_t size = file_->size();
  const unsigned char* p = file_->data();
  auto fail = [&](const std::string& what) { throw Error(path + ": " + what); };
  if (size < 8) fail("file is " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | p[i];
  if (n > kMaxHeader) fail("header length " + std::to_string(n) + " is absurd (> 100 MB); not a safetensors file?");
  if (n > size - 8)
    fail("header length " + std::to_string(n) + " is larger than the file (" + std::to_string(size) + " bytes)");
  data_start_ = 8 + n;
  const uint64_t data_size = size - data_start_;

  json h;
  try {
    h = json::parse(p + 8, p + 8 + n);
  } catch (const json::exception&) {
    fail("header is not valid JSON");
  }
  if (!h.is_object()) fail("header is not a JSON object");

  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (v.is_object())
        for (auto m = v.begin(); m != v.end(); ++m)
          if (m.value().is_string()) metadata_[m.key()] = m.value().get<std::string>();
      continue;
    }
    const std::string t = "tensor '" + name + "'";
    if (!v.is_object()) fail(t + " is not a JSON object");
    SafetensorsTensorInfo info;
    info.name = name;
    if (!v.contains("dtype") || !v["dtype"].is_string()) fail(t + " has no dtype string");
    info.dtype = v["dtype"].get<std::string>();
    info.elem_size = dtype_size(info.dtype);
    if (info.elem_size == 0) fail(t + " has unknown dtype '" + info.dtype + "'");

    if (!v.contains("shape") || !v["shape"].is_array()) fail(t + ": shape is not a list of non-negative integers");
    // numel is bounded by the data section, so a product above it is an error before it overflows.
    uint64_t numel = 1;
    for (const json& d : v["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        fail(t + ": shape is not a list of non-negative integers");
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > data_size / dim + 1) numel = data_size + 1;
      else numel *= dim;
      info.shape.push_back(static_cast<int64_t>(dim));
    }

    const json& off = v.contains("data_offsets") ? v["data_offsets"] : json();
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(t + ": data_offsets is not [begin, end]");
    info.begin = off[0].get<uint64_t>();
    info.end = off[1].get<uint64_t>();
    if (info.begin > info.end || info.end > data_size)
      fail(t + ": data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
           "] are not within the data section (" + std::to_string(data_size) + " bytes)");
    const uint64_t span = info.end - info.begin;
    if (numel > data_size || numel * static_cast<uint64_t>(info.elem_size) != span)
      fail(t + ": data_offsets span " + std::to_string(span) + " bytes but shape " + shape_str(info.shape) +
           " of " + info.dtype + " needs " +
           (numel > data_size ? std::string("more than the file") : std::to_string(numel * info.elem_size)));
    tensors_.emplace(name, std::move(info));
  }

  // Overlapping tensors would alias each other's bytes: a corrupt or hostile file.
  std::vector<const SafetensorsTensorInfo*> by_offset;
  for (const auto& kv : tensors_)
    if (kv.second.end > kv.second.begin) by_offset.push_back(&kv.second);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto* a, const auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end)
      fail("tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name + "' overlap in the data section");
}

const SafetensorsTensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const SafetensorsTensorInfo& SafetensorsFile::info(const std::string& name) const {
  const auto* t = find(name);
  if (!t) throw Error(path_ + ": tensor '" + name + "' is missing");
  return *t;
}

const unsigned char* SafetensorsFile::bytes(const SafetensorsTensorInfo& t) const {
  return file_->data() + data_start_ + t.begin;
}

HostTensor SafetensorsFile::read(const std::string& name) const {
  const auto& t = info(name);
  HostTensor out;
  out.shape = t.shape;
  out.data.resize(static_cast<size_t>(t.numel()));
  convert(t.dtype, path_ + ": tensor '" + name + "'", bytes(t), t.numel(), out.data.data());
  file_->drop_resident(data_start_ + t.begin, t.end - t.begin);
  return out;
}

HostTensor SafetensorsFile::read_rows(const std::string& name, int64_t begin, int64_t end) const {
  const auto& t = info(name);
  if (t.shape.empty()) throw Error(path_ + ": tensor '" + name + "' is a scalar; it has no rows");
  const int64_t rows = t.shape[0];
  if (begin < 0 || begin > end || end > rows)
    throw Error(path_ + ": tensor '" + name + "': rows [" + std::to_string(begin) + ", " + std::to_string(end) +
                ") are outside its " + std::to_string(rows) + " rows");
  const int64_t row_elems = rows == 0 ? 0 : t.numel() / rows;
  HostTensor out;
  out.shape = t.shape;
  out.shape[0] = end - begin;
  out.data.resize(static_cast<size_t>((end - begin) * row_elems));
  convert(t.dtype, path_ + ": tensor '" + name + "'", bytes(t) + begin * row_elems * t.elem_size,
          (end - begin) * row_elems, out.data.data());
  file_->drop_resident(data_start_ + t.begin, t.end - t.begin);
  return out;
}

HostTensor SafetensorsFile::read_cols(const std::string& name, int64_t begin, int64_t end) const {
  const auto& t = info(name);
  if (t.shape.size() != 2)
    throw Error(path_ + ": tensor '" + name + "' has shape " + shape_str(t.shape) + "; column reads need 2-D");
  const int64_t rows = t.shape[0], cols = t.shape[1];
  if (begin < 0 || begin > end || end > cols)
    throw Error(path_ + ": tensor '" + name + "': columns [" + std::to_string(begin) + ", " +
                std::to_string(end) + ") are outside its " + std::to_string(cols) + " columns");
  HostTensor out;
  out.shape = {rows, end - begin};
  out.data.resize(static_cast<size_t>(rows * (end - begin)));
  const std::string where = path_ + ": tensor '" + name + "'";
  for (int64_t r = 0; r < rows; ++r)
    convert(t.dtype, where, bytes(t) + (r * cols + begin) * t.elem_size, end - begin,
            out.data.data() + r * (end - begin));
  file_->drop_resident(data_start_ + t.begin, t.end - t.begin);  // a column read touches every page
  return out;
}

// ---------------------------------------------------------------- checkpoint folder

SafetensorsCheckpoint::SafetensorsCheckpoint(const std::string& dir) : dir_(dir) {
  const fs::path d(dir);
  const fs::path index = d / "model.safetensors.index.json";
  if (fs::exists(index)) {
    const std::string ipath = index.string();
    json j;
    {
      std::ifstream in(index);
      if (!in) throw Error(ipath + ": cannot open");
      try {
        j = json::parse(in);
      } catch (const json::exception&) {
        throw Error(ipath + ": not valid JSON");
      }
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      throw Error(ipath + ": weight_map is missing or not an object");
    std::map<std::string, const SafetensorsFile*> opened;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        throw Error(ipath + ": weight_map['" + it.key() + "'] is not a file name");
      const std::string shard = it.value().get<std::string>();
      // Shards are plain names next to the index; anything else could point outside the model.
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
        throw Error(ipath + ": weight_map['" + it.key() + "'] = '" + shard + "' is not a file name in the folder");
      auto f = opened.find(shard);
      if (f == opened.end()) {
        files_.push_back(std::make_unique<SafetensorsFile>((d / shard).string()));
        f = opened.emplace(shard, files_.back().get()).first;
      }
      if (!f->second->find(it.key()))
        throw Error(ipath + ": tensor '" + it.key() + "' is mapped to " + shard + ", which does not contain it");
      where_[it.key()] = f->second;
    }
    return;
  }
  fs::path single = d / "model.safetensors";
  if (!fs::exists(single)) {
    std::vector<fs::path> found;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(d, ec))
      if (e.path().extension() == ".safetensors") found.push_back(e.path());
    if (found.size() != 1)
      throw Error(dir + ": no model.safetensors or model.safetensors.index.json (found " +
                  std::to_string(found.size()) + " *.safetensors files)");
    single = found[0];
  }
  files_.push_back(std::make_unique<SafetensorsFile>(single.string()));
  for (const auto& kv : files_.back()->tensors()) where_[kv.first] = files_.back().get();
}

const SafetensorsFile& SafetensorsCheckpoint::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw Error(dir_ + ": tensor '" + name + "' is missing");
  return *it->second;
}

const SafetensorsTensorInfo& SafetensorsCheckpoint::info(const std::string& name) const {
  return *file_of(name).find(name);
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> r;
  for (const auto& kv : where_) r.push_back(kv.first);
  return r;
}

}  // namespace ringinfer
