// open_documents and DocumentSet: validate input shards, read a document's stripes.
#include <algorithm>
#include <filesystem>
#include <unordered_map>

#include "io/h5_util.h"
#include "ringinfer/error.h"
#include "ringinfer/shard.h"

namespace ringinfer {

namespace {

// Tokens are read in blocks of this many elements (16 MiB), aligned to multiples of it
// in /tokens so that blocks cover whole chunks. Picking a stripe from a contiguous block
// in memory is far faster than a stride-N hyperslab, which HDF5 walks element by element.
constexpr int64_t kReadBlockElements = int64_t(4) << 20;
// Raw-data chunk cache of the open /tokens: the default 1 MiB is smaller than one
// 4 MiB chunk, so every partial-chunk read at a document edge would hit the disk again.
constexpr size_t kChunkCacheBytes = size_t(32) << 20;
constexpr size_t kChunkCacheSlots = 12421;  // a prime, ~100x the chunks that fit

std::string in_quotes(const std::string& s) { return "\"" + s + "\""; }

// Appended to the message for a variable-length string, which is refused unread unless
// the shard has passed the isolated check.
const std::string kVlenAdvice = " (shard version 1, or not written by ringinfer prep): re-run ringinfer prep";

// A string attribute: fixed-length always; variable-length (h5py's default) only once the
// file has passed the isolated check. Either way at most kMaxShardAttrBytes.
std::string shard_string_attr(hid_t fid, const std::string& path, const std::string& name, ShardStrings strings) {
  if (strings == ShardStrings::fixed_only)
    return h5::read_fixed_string_attr(fid, path, name, kMaxShardAttrBytes, kVlenAdvice);
  std::string v = h5::read_string_attr(fid, path, name);
  if (v.size() > kMaxShardAttrBytes)
    throw Error(path + ": attribute " + name + " is " + std::to_string(v.size()) + " bytes long, more than the " +
                std::to_string(kMaxShardAttrBytes) + " allowed");
  return v;
}

// /doc_ids: fixed-length strings, or variable-length ones (h5py's default for a list of
// str) once the file has passed the isolated check; each id at most kMaxDocIdBytes.
std::vector<std::string> shard_doc_ids(hid_t ids_d, const std::string& path, int64_t n, uint64_t file_bytes,
                                       ShardStrings strings) {
  h5::Handle type = h5::datatype(H5_CHECK(H5Dget_type(ids_d)));
  if (strings == ShardStrings::fixed_only || !h5::is_variable_string(type.get()))
    return h5::read_fixed_strings(ids_d, path, "/doc_ids", n, kMaxDocIdBytes, file_bytes, kVlenAdvice);
  // Each entry is a global-heap reference of at least 16 bytes in the file.
  if (static_cast<uint64_t>(n) > file_bytes / 16)
    throw Error(path + ": /doc_ids claims " + std::to_string(n) + " variable-length strings, more than the file's " +
                std::to_string(file_bytes) + " bytes can hold");
  std::vector<std::string> ids = h5::read_strings(ids_d, n);
  for (size_t d = 0; d < ids.size(); ++d)
    if (ids[d].size() > kMaxDocIdBytes || ids[d].find('\0') != std::string::npos)
      throw Error(path + ": /doc_ids[" + std::to_string(d) + "] is longer than " + std::to_string(kMaxDocIdBytes) +
                  " bytes or holds a NUL byte");
  return ids;
}

// Reads and checks one shard's attributes and datasets; appends its documents.
ShardInfo load_shard(const std::string& path, int shard_index, int64_t given_vocab, ShardStrings strings,
                     std::vector<DocInfo>* docs, std::vector<std::string>* ids) {
  h5::Handle f = h5::open_readonly(path);
  hid_t fid = f.get();

  ShardInfo info;
  info.path = path;
  hsize_t file_bytes = 0;
  H5_CHECK(H5Fget_filesize(fid, &file_bytes));
  // Strings go through the fixed-length readers only, which check the datatype before
  // reading: libhdf5's variable-length string reader trusts the file (ringinfer/shard.h).
  std::string format = shard_string_attr(fid, path, "format", strings);
  if (format != kShardFormat)
    throw Error(path + ": format attribute is " + in_quotes(format) + ", expected " + in_quotes(kShardFormat));
  int64_t version = h5::read_int_attr(fid, path, "version");
  if (version != kShardVersion)
    throw Error(path + ": unsupported version " + std::to_string(version) + " (this build reads version " +
                std::to_string(kShardVersion) + ")" + (version < kShardVersion ? ": re-run ringinfer prep" : ""));
  info.vocab_size = h5::read_int_attr(fid, path, "vocab_size");
  if (info.vocab_size <= 0)
    throw Error(path + ": vocab_size attribute is " + std::to_string(info.vocab_size) + ", expected a positive count");
  if (given_vocab >= 0 && info.vocab_size != given_vocab)
    throw Error(path + ": vocab_size attribute is " + std::to_string(info.vocab_size) +
                " but the model's vocabulary has " + std::to_string(given_vocab) + " tokens");
  info.tokenizer = shard_string_attr(fid, path, "tokenizer", strings);

  int64_t n_offsets = 0, n_ids = 0;
  h5::Handle tokens = h5::open_dataset_1d(fid, path, "/tokens", h5::Kind::Int32, &info.n_tokens);
  h5::Handle offsets_d = h5::open_dataset_1d(fid, path, "/doc_offsets", h5::Kind::Int64, &n_offsets);
  h5::Handle ids_d = h5::open_dataset_1d(fid, path, "/doc_ids", h5::Kind::String, &n_ids);
  h5::Handle ids_type = h5::datatype(H5_CHECK(H5Dget_type(ids_d.get())));
  if (strings == ShardStrings::fixed_only || !h5::is_variable_string(ids_type.get()))
    h5::check_fixed_strings(ids_d.get(), path, "/doc_ids", n_ids, kMaxDocIdBytes, file_bytes, kVlenAdvice);
  if (n_offsets != n_ids + 1)
    throw Error(path + ": /doc_offsets has " + std::to_string(n_offsets) + " entries but /doc_ids has " +
                std::to_string(n_ids) + " (expected " + std::to_string(n_ids + 1) + ")");
  info.n_documents = n_ids;
  // /doc_offsets is stored uncompressed too: a length the file cannot hold is corrupt
  // (and would otherwise become one huge allocation).
  if (static_cast<uint64_t>(n_offsets) > file_bytes / sizeof(int64_t))
    throw Error(path + ": /doc_offsets claims " + std::to_string(n_offsets) + " entries, more than the file's " +
                std::to_string(file_bytes) + " bytes can hold");

  std::vector<int64_t> offsets = h5::read_int64(offsets_d.get(), n_offsets);
  h5::check_offsets(path, "/doc_offsets", offsets, info.n_tokens, "/tokens");
  std::vector<std::string> shard_ids = shard_doc_ids(ids_d.get(), path, n_ids, file_bytes, strings);

  // Optional per-document options (DocOptions): both or neither, D entries each, in range.
  std::vector<int64_t> max_new(static_cast<size_t>(n_ids), -1);
  std::vector<double> temps(static_cast<size_t>(n_ids), -1.0);
  const bool has_max = h5::exists(fid, "/max_new_tokens"), has_temp = h5::exists(fid, "/temperature");
  if (has_max != has_temp)
    throw Error(path + ": has " + (has_max ? "/max_new_tokens" : "/temperature") + " without " +
                (has_max ? "/temperature" : "/max_new_tokens") + " (per-document options come together)");
  if (has_max) {
    int64_t n_max = 0, n_temp = 0;
    h5::Handle max_d = h5::open_dataset_1d(fid, path, "/max_new_tokens", h5::Kind::Int64, &n_max);
    h5::Handle temp_d = h5::open_dataset_1d(fid, path, "/temperature", h5::Kind::Float64, &n_temp);
    if (n_max != n_ids || n_temp != n_ids)
      throw Error(path + ": /max_new_tokens and /temperature have " + std::to_string(n_max) + " and " +
                  std::to_string(n_temp) + " entries, expected one per document (" + std::to_string(n_ids) + ")");
    max_new = h5::read_int64(max_d.get(), n_max);
    temps = h5::read_float64(temp_d.get(), n_temp);
    for (int64_t d = 0; d < n_ids; ++d) {
      const int64_t m = max_new[static_cast<size_t>(d)];
      const double t = temps[static_cast<size_t>(d)];
      if (m < -1 || m > kMaxDocNewTokens)
        throw Error(path + ": /max_new_tokens[" + std::to_string(d) + "] is " + std::to_string(m) +
                    ", expected -1 (the job's) or a count in [0, " + std::to_string(kMaxDocNewTokens) + "]");
      if (!(t == -1.0 || (t >= 0.0 && t <= kMaxDocTemperature)))  // NaN fails too
        throw Error(path + ": /temperature[" + std::to_string(d) + "] is " + std::to_string(t) +
                    ", expected -1 (the job's) or a value in [0, " + std::to_string(kMaxDocTemperature) + "]");
    }
  }

  std::unordered_map<std::string, int64_t> local;
  local.reserve(shard_ids.size());
  for (int64_t d = 0; d < n_ids; ++d) {
    std::string& id = shard_ids[static_cast<size_t>(d)];
    if (id.empty()) throw Error(path + ": /doc_ids[" + std::to_string(d) + "] is empty");
    auto [it, fresh] = local.emplace(id, d);
    if (!fresh)
      throw Error(path + ": duplicate doc id " + in_quotes(id) + " at /doc_ids[" + std::to_string(it->second) +
                  "] and [" + std::to_string(d) + "]");
    DocInfo doc;
    doc.index = static_cast<int64_t>(docs->size());
    doc.id = id;
    doc.shard = shard_index;
    doc.offset = offsets[static_cast<size_t>(d)];
    doc.length = offsets[static_cast<size_t>(d) + 1] - offsets[static_cast<size_t>(d)];
    doc.options.max_new_tokens = max_new[static_cast<size_t>(d)];
    doc.options.temperature = temps[static_cast<size_t>(d)];
    docs->push_back(std::move(doc));
    ids->push_back(std::move(id));
  }
  return info;
}

int64_t stripe_length(int64_t length, int rank, int n_ranks) {
  return length > rank ? (length - rank + n_ranks - 1) / n_ranks : 0;
}

}  // namespace

// ---------------------------------------------------------------- DocumentSet

struct DocumentSet::Reader {
  int shard = -1;              // which shard is open (-1: none)
  h5::Handle file;
  h5::Handle tokens;           // /tokens with the enlarged chunk cache
  std::vector<int32_t> block;  // up to kReadBlockElements tokens
};

DocumentSet::DocumentSet() : reader_(std::make_unique<Reader>()) {}
DocumentSet::~DocumentSet() = default;
DocumentSet::DocumentSet(DocumentSet&&) noexcept = default;
DocumentSet& DocumentSet::operator=(DocumentSet&&) noexcept = default;

DocumentSet open_documents(const std::vector<std::string>& paths, int64_t vocab_size, ShardStrings strings) {
  h5::init();
  if (paths.empty()) throw Error("no input shards given");
  DocumentSet set;
  set.vocab_size_ = vocab_size;
  std::vector<std::string> canonical;
  std::unordered_map<std::string, int> owner;  // doc id -> shard
  for (size_t s = 0; s < paths.size(); ++s) {
    const std::string& path = paths[s];
    std::error_code ec;
    std::string canon = std::filesystem::weakly_canonical(path, ec).string();
    if (ec) canon = path;
    for (size_t p = 0; p < canonical.size(); ++p)
      if (canonical[p] == canon) throw Error(path + ": given twice as input (also as " + paths[p] + ")");
    canonical.push_back(canon);

    std::vector<std::string> ids;
    size_t first = set.docs_.size();
    ShardInfo info = load_shard(path, static_cast<int>(s), vocab_size, strings, &set.docs_, &ids);
    if (vocab_size < 0 && !set.shards_.empty() && info.vocab_size != set.shards_[0].vocab_size)
      throw Error(path + ": vocab_size attribute is " + std::to_string(info.vocab_size) + " but " +
                  set.shards_[0].path + " has " + std::to_string(set.shards_[0].vocab_size));
    for (size_t k = 0; k < ids.size(); ++k) {
      auto [it, fresh] = owner.emplace(std::move(ids[k]), static_cast<int>(s));
      if (!fresh)
        throw Error(path + ": doc id \"" + set.docs_[first + k].id + "\" is also in " + paths[it->second]);
    }
    set.shards_.push_back(std::move(info));
  }
  if (set.vocab_size_ < 0) set.vocab_size_ = set.shards_[0].vocab_size;
  return set;
}

std::vector<std::vector<int32_t>> DocumentSet::read_stripes(const DocInfo& doc, const std::vector<int>& ranks,
                                                            int n_ranks) const {
  if (n_ranks < 1) throw Error("read_stripes: n_ranks must be at least 1, got " + std::to_string(n_ranks));
  for (int r : ranks)
    if (r < 0 || r >= n_ranks)
      throw Error("read_stripes: rank " + std::to_string(r) + " outside [0, " + std::to_string(n_ranks) + ")");
  if (doc.shard < 0 || static_cast<size_t>(doc.shard) >= shards_.size())
    throw Error("read_stripes: document " + in_quotes(doc.id) + " has no shard " + std::to_string(doc.shard));
  const ShardInfo& shard = shards_[static_cast<size_t>(doc.shard)];
  if (doc.offset < 0 || doc.length < 0 || doc.offset + doc.length > shard.n_tokens)
    throw Error(shard.path + ": document " + in_quotes(doc.id) + " lies outside /tokens");

  std::vector<std::vector<int32_t>> out(ranks.size());
  std::vector<int32_t*> next(ranks.size());  // where each stripe's next token goes
  for (size_t k = 0; k < ranks.size(); ++k) {
    out[k].resize(static_cast<size_t>(stripe_length(doc.length, ranks[k], n_ranks)));
    next[k] = out[k].data();
  }
  if (doc.length == 0) return out;

  Reader& rd = *reader_;
  if (rd.shard != doc.shard) {
    rd.tokens.reset();
    rd.file.reset();
    rd.shard = -1;
    rd.file = h5::open_readonly(shard.path);
    h5::Handle dapl = h5::plist(H5_CHECK(H5Pcreate(H5P_DATASET_ACCESS)));
    H5_CHECK(H5Pset_chunk_cache(dapl.get(), kChunkCacheSlots, kChunkCacheBytes, 1.0));
    hid_t d = H5Dopen2(rd.file.get(), "/tokens", dapl.get());
    if (d < 0) {
      H5Eclear2(H5E_DEFAULT);
      throw Error(shard.path + ": cannot open /tokens (file changed since it was opened?)");
    }
    rd.tokens = h5::dataset(d);
    rd.shard = doc.shard;
  }
  h5::Handle fspace = h5::dataspace(H5_CHECK(H5Dget_space(rd.tokens.get())));
  hsize_t dims[1] = {0};
  H5_CHECK(H5Sget_simple_extent_dims(fspace.get(), dims, nullptr));
  if (static_cast<int64_t>(dims[0]) != shard.n_tokens)
    throw Error(shard.path + ": /tokens changed size since the file was opened");

  const int64_t end = doc.offset + doc.length;
  int64_t abs = doc.offset;
  while (abs < end) {
    const int64_t block_end = std::min(end, (abs / kReadBlockElements + 1) * kReadBlockElements);
    const int64_t n = block_end - abs;
    if (rd.block.size() < static_cast<size_t>(n)) rd.block.resize(static_cast<size_t>(n));
    hsize_t start[1] = {static_cast<hsize_t>(abs)}, count[1] = {static_cast<hsize_t>(n)};
    H5_CHECK(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr));
    h5::Handle mspace = h5::dataspace(H5_CHECK(H5Screate_simple(1, count, nullptr)));
    H5_CHECK(H5Dread(rd.tokens.get(), H5T_NATIVE_INT32, mspace.get(), fspace.get(), H5P_DEFAULT, rd.block.data()));

    const int32_t* b = rd.block.data();
    const int64_t pos = abs - doc.offset;  // position of b[0] in the document
    // Range check as a branch-free min/max (vectorizes); find the culprit only on failure.
    int32_t lo = b[0], hi = b[0];
    for (int64_t i = 1; i < n; ++i) {
      lo = std::min(lo, b[i]);
      hi = std::max(hi, b[i]);
    }
    if (lo < 0 || hi >= vocab_size_) {
      int64_t i = 0;
      while (b[i] >= 0 && b[i] < vocab_size_) ++i;
      throw Error(shard.path + ": document " + in_quotes(doc.id) + " has token id " + std::to_string(b[i]) +
                  " at position " + std::to_string(pos + i) + ", outside the vocabulary [0, " +
                  std::to_string(vocab_size_) + ")");
    }
    for (size_t k = 0; k < ranks.size(); ++k) {
      // First position >= pos that belongs to rank ranks[k].
      int64_t first = ((ranks[k] - pos % n_ranks) + n_ranks) % n_ranks;
      if (n_ranks == 1) {
        next[k] = std::copy(b, b + n, next[k]);
        continue;
      }
      int32_t* dst = next[k];
      for (int64_t i = first; i < n; i += n_ranks) *dst++ = b[i];
      next[k] = dst;
    }
    abs = block_end;
  }
  for (size_t k = 0; k < ranks.size(); ++k)
    if (next[k] != out[k].data() + out[k].size())
      throw Error("read_stripes: internal error: stripe of rank " + std::to_string(ranks[k]) + " has the wrong length");
  return out;
}

std::vector<int32_t> DocumentSet::read_stripe(const DocInfo& doc, int rank, int n_ranks) const {
  return std::move(read_stripes(doc, {rank}, n_ranks)[0]);
}

std::vector<int32_t> DocumentSet::read_document(const DocInfo& doc) const {
  return std::move(read_stripes(doc, {0}, 1)[0]);
}

}  // namespace ringinfer
