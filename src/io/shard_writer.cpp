// ShardWriter and write_shard: build an input shard (layout in ringinfer/shard.h).
#include <algorithm>

#include "io/h5_util.h"
#include "ringinfer/error.h"
#include "ringinfer/shard.h"

namespace ringinfer {

struct ShardWriter::Handles {
  h5::TempFile tmp;  // declared first: destroyed (and removed) after the file is closed
  h5::Handle file;
  h5::Handle tokens;
  explicit Handles(const std::string& path) : tmp(path) {}
};

ShardWriter::ShardWriter(const std::string& path, int64_t vocab_size, const std::string& tokenizer,
                         int64_t chunk_elements)
    : path_(path), tmp_path_(path + ".tmp"), vocab_size_(vocab_size), tokenizer_(tokenizer),
      chunk_(chunk_elements) {
  h5::init();
  if (vocab_size <= 0) throw Error(path + ": vocab_size must be positive, got " + std::to_string(vocab_size));
  if (chunk_elements <= 0) throw Error(path + ": chunk size must be positive");
  if (tokenizer.size() > kMaxShardAttrBytes)
    throw Error(path + ": tokenizer name is " + std::to_string(tokenizer.size()) + " bytes long, more than the " +
                std::to_string(kMaxShardAttrBytes) + " a shard may hold");
  if (tokenizer.find('\0') != std::string::npos) throw Error(path + ": tokenizer name contains a NUL byte");
  h_ = std::make_unique<Handles>(path);
  h_->file = h5::create(h_->tmp.tmp_path());

  // /tokens grows as documents arrive: unlimited, chunked.
  hsize_t dims[1] = {0}, maxdims[1] = {H5S_UNLIMITED}, chunk[1] = {static_cast<hsize_t>(chunk_elements)};
  h5::Handle space = h5::dataspace(H5_CHECK(H5Screate_simple(1, dims, maxdims)));
  h5::Handle dcpl = h5::plist(H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)));
  H5_CHECK(H5Pset_chunk(dcpl.get(), 1, chunk));
  h_->tokens = h5::dataset(H5_CHECK(H5Dcreate2(h_->file.get(), "/tokens", H5T_STD_I32LE, space.get(),
                                               H5P_DEFAULT, dcpl.get(), H5P_DEFAULT)));
}

ShardWriter::~ShardWriter() = default;

void ShardWriter::add(const std::string& id, const std::vector<int32_t>& tokens, const DocOptions& options) {
  if (finished_) throw Error(path_ + ": add() after finish()");
  if (id.empty()) throw Error(path_ + ": empty document id (document " + std::to_string(ids_.size()) + ")");
  // Ids are stored as null-padded fixed-length strings: a NUL would cut one short.
  if (id.find('\0') != std::string::npos)
    throw Error(path_ + ": document id contains a NUL byte (document " + std::to_string(ids_.size()) + ")");
  if (id.size() > kMaxDocIdBytes)
    throw Error(path_ + ": document id is " + std::to_string(id.size()) + " bytes long, more than the " +
                std::to_string(kMaxDocIdBytes) + " allowed (document " + std::to_string(ids_.size()) + ")");
  if (!seen_.insert(id).second) throw Error(path_ + ": duplicate doc id \"" + id + "\"");
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab_size_)
      throw Error(path_ + ": document \"" + id + "\" has token id " + std::to_string(tokens[i]) +
                  " at position " + std::to_string(i) + ", outside the vocabulary [0, " +
                  std::to_string(vocab_size_) + ")");
  if (options.max_new_tokens < -1 || options.max_new_tokens > kMaxDocNewTokens)
    throw Error(path_ + ": document \"" + id + "\" asks for " + std::to_string(options.max_new_tokens) +
                " new tokens, outside [0, " + std::to_string(kMaxDocNewTokens) + "]");
  if (!(options.temperature == -1.0 || (options.temperature >= 0.0 && options.temperature <= kMaxDocTemperature)))
    throw Error(path_ + ": document \"" + id + "\" has temperature " + std::to_string(options.temperature) +
                ", outside [0, " + std::to_string(kMaxDocTemperature) + "]");
  ids_.push_back(id);
  max_new_tokens_.push_back(options.max_new_tokens);
  temperature_.push_back(options.temperature);
  offsets_.push_back(offsets_.back() + static_cast<int64_t>(tokens.size()));
  pending_.insert(pending_.end(), tokens.begin(), tokens.end());
  flush_tokens(false);
}

// Appends pending tokens to /tokens: whole chunks only, unless `all`.
void ShardWriter::flush_tokens(bool all) {
  size_t n = all ? pending_.size() : pending_.size() / chunk_ * chunk_;
  if (n == 0) return;
  hsize_t start[1] = {static_cast<hsize_t>(written_)}, count[1] = {n};
  hsize_t new_size[1] = {static_cast<hsize_t>(written_) + n};
  H5_CHECK(H5Dset_extent(h_->tokens.get(), new_size));
  h5::Handle fspace = h5::dataspace(H5_CHECK(H5Dget_space(h_->tokens.get())));
  H5_CHECK(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr));
  h5::Handle mspace = h5::dataspace(H5_CHECK(H5Screate_simple(1, count, nullptr)));
  H5_CHECK(H5Dwrite(h_->tokens.get(), H5T_NATIVE_INT32, mspace.get(), fspace.get(), H5P_DEFAULT, pending_.data()));
  written_ += static_cast<int64_t>(n);
  pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
}

void ShardWriter::finish() {
  if (finished_) return;
  flush_tokens(true);
  hid_t f = h_->file.get();
  // Fixed-length strings only (see ringinfer/shard.h): never h5::write_strings here.
  h5::write_fixed_string_attr(f, "format", kShardFormat);
  h5::write_int_attr(f, "version", kShardVersion);
  h5::write_int_attr(f, "vocab_size", vocab_size_);
  h5::write_fixed_string_attr(f, "tokenizer", tokenizer_);
  h5::write_int64(f, "/doc_offsets", offsets_);
  h5::write_fixed_strings(f, "/doc_ids", ids_);
  // Only when some document asks: shards without them stay as they were.
  bool any = false;
  for (size_t d = 0; d < ids_.size(); ++d) any = any || max_new_tokens_[d] >= 0 || temperature_[d] >= 0.0;
  if (any) {
    h5::write_int64(f, "/max_new_tokens", max_new_tokens_);
    h5::write_float64(f, "/temperature", temperature_);
  }
  h_->tokens.reset();
  H5_CHECK(H5Fflush(f, H5F_SCOPE_GLOBAL));
  h_->file.reset();
  h_->tmp.commit();
  finished_ = true;
}

void write_shard(const std::string& path, const std::vector<std::vector<int32_t>>& docs,
                 const std::vector<std::string>& ids, int64_t vocab_size, const std::string& tokenizer) {
  if (docs.size() != ids.size())
    throw Error(path + ": " + std::to_string(docs.size()) + " documents but " + std::to_string(ids.size()) + " ids");
  int64_t total = 0;
  for (const auto& d : docs) total += static_cast<int64_t>(d.size());
  // Small shards get one small chunk instead of a 4 MiB one.
  int64_t chunk = std::clamp<int64_t>(total, 1, kTokenChunkElements);
  ShardWriter w(path, vocab_size, tokenizer, chunk);
  for (size_t i = 0; i < docs.size(); ++i) w.add(ids[i], docs[i]);
  w.finish();
}

}  // namespace ringinfer
