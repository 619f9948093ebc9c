#include "shard_fixture.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>

#include "io/h5_util.h"
#include "ringinfer/error.h"
#include "ringinfer/shard.h"

namespace ringinfer::test {

namespace fs = std::filesystem;

ShardData random_shard_data(const std::vector<int64_t>& lengths, int64_t vocab, uint64_t seed,
                            const std::string& id_prefix) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(vocab - 1));
  ShardData data;
  data.vocab_size = vocab;
  for (size_t d = 0; d < lengths.size(); ++d) {
    std::vector<int32_t> doc(static_cast<size_t>(lengths[d]));
    for (auto& t : doc) t = tok(rng);
    data.docs.push_back(std::move(doc));
    data.ids.push_back(id_prefix + std::to_string(d));
  }
  return data;
}

void write_valid_shard(const std::string& path, const ShardData& data) {
  write_shard(path, data.docs, data.ids, data.vocab_size, data.tokenizer);
}

RawShard raw_from(const ShardData& data) {
  RawShard raw;
  raw.offsets.push_back(0);
  for (const auto& doc : data.docs) {
    raw.tokens.insert(raw.tokens.end(), doc.begin(), doc.end());
    raw.offsets.push_back(static_cast<int64_t>(raw.tokens.size()));
  }
  raw.ids = data.ids;
  raw.vocab_size = data.vocab_size;
  raw.tokenizer = data.tokenizer;
  return raw;
}

// ---------------------------------------------------------------- raw writer

namespace {

void write_numbers(hid_t f, const char* name, hid_t file_type, const std::vector<int64_t>& v, bool two_d, bool chunked) {
  hsize_t n = v.size();
  hsize_t dims1[1] = {n}, dims2[2] = {1, n};
  hsize_t maxdims1[1] = {H5S_UNLIMITED}, maxdims2[2] = {1, H5S_UNLIMITED};
  h5::Handle space = h5::dataspace(H5_CHECK(two_d ? H5Screate_simple(2, dims2, chunked ? maxdims2 : nullptr)
                                                  : H5Screate_simple(1, dims1, chunked ? maxdims1 : nullptr)));
  h5::Handle dcpl = h5::plist(H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)));
  if (chunked) {
    hsize_t c1[1] = {std::max<hsize_t>(n, 1)}, c2[2] = {1, std::max<hsize_t>(n, 1)};
    H5_CHECK(H5Pset_chunk(dcpl.get(), two_d ? 2 : 1, two_d ? c2 : c1));
  }
  h5::Handle d = h5::dataset(H5_CHECK(H5Dcreate2(f, name, file_type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT)));
  if (n > 0) H5_CHECK(H5Dwrite(d.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()));
}

}  // namespace

void write_raw_shard(const std::string& path, const RawShard& raw) {
  h5::init();
  h5::Handle f = h5::create(path);
  hid_t fid = f.get();
  if (raw.format) {
    if (raw.format_as_int) h5::write_int_attr(fid, "format", 7);
    else if (raw.vlen_attrs) h5::write_string_attr(fid, "format", *raw.format);
    else h5::write_fixed_string_attr(fid, "format", *raw.format);
  }
  if (raw.version) h5::write_int_attr(fid, "version", *raw.version);
  if (raw.vocab_size) h5::write_int_attr(fid, "vocab_size", *raw.vocab_size);
  if (raw.tokenizer) {
    if (raw.vlen_attrs || raw.vlen_tokenizer) h5::write_string_attr(fid, "tokenizer", *raw.tokenizer);
    else h5::write_fixed_string_attr(fid, "tokenizer", *raw.tokenizer);
  }
  if (raw.tokens_as_group) {
    h5::group(H5_CHECK(H5Gcreate2(fid, "/tokens", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)));
  } else if (raw.write_tokens) {
    write_numbers(fid, "/tokens", raw.tokens_type, raw.tokens, raw.tokens_2d, true);
  }
  if (raw.write_offsets) write_numbers(fid, "/doc_offsets", raw.offsets_type, raw.offsets, false, false);
  switch (raw.ids_kind) {
    case RawShard::Ids::Vlen: h5::write_strings(fid, "/doc_ids", raw.ids); break;
    case RawShard::Ids::Fixed: h5::write_fixed_strings(fid, "/doc_ids", raw.ids); break;
    case RawShard::Ids::Int: {
      std::vector<int64_t> n(raw.ids.size());
      for (size_t i = 0; i < n.size(); ++i) n[i] = static_cast<int64_t>(i);
      write_numbers(fid, "/doc_ids", H5T_STD_I64LE, n, false, false);
      break;
    }
    case RawShard::Ids::None: break;
  }
}

// ---------------------------------------------------------------- variants

const std::vector<MalformedCase>& malformed_cases() {
  static const std::vector<MalformedCase> cases = {
      {"missing-file", "no file at the path"},
      {"directory", "the path is a directory"},
      {"empty-file", "a file of 0 bytes"},
      {"not-hdf5", "a text file"},
      {"truncated", "a valid shard cut to half its size"},
      {"no-format", "no format attribute"},
      {"bad-format", "format attribute \"something.else\""},
      {"format-not-string", "format attribute is an integer"},
      {"no-version", "no version attribute"},
      {"bad-version", "version attribute 3"},
      {"old-version", "version attribute 1 (strings otherwise fixed-length)"},
      {"version-1", "the version-1 layout: variable-length string attributes and /doc_ids"},
      {"vlen-ids", "/doc_ids as variable-length strings, the rest version 2"},
      {"vlen-tokenizer", "tokenizer attribute as a variable-length string"},
      {"tokenizer-too-long", "tokenizer attribute of 1 MiB + 1 bytes"},
      {"no-vocab", "no vocab_size attribute"},
      {"bad-vocab", "vocab_size attribute 0"},
      {"no-tokenizer", "no tokenizer attribute"},
      {"no-tokens", "no /tokens dataset"},
      {"no-offsets", "no /doc_offsets dataset"},
      {"no-ids", "no /doc_ids dataset"},
      {"tokens-group", "/tokens is a group"},
      {"tokens-int64", "/tokens stored as int64"},
      {"tokens-float", "/tokens stored as float32"},
      {"tokens-2d", "/tokens has shape [1, T]"},
      {"offsets-int32", "/doc_offsets stored as int32"},
      {"ids-int", "/doc_ids as integers"},
      {"id-too-wide", "/doc_ids entries 65537 bytes wide"},
      {"ids-count-huge", "/doc_ids declares 2^40 entries the file cannot hold (never written)"},
      {"offsets-nonzero-start", "/doc_offsets starts at 2"},
      {"bad-offsets", "/doc_offsets decreases"},
      {"offsets-short", "/doc_offsets ends before the last token"},
      {"offsets-past-end", "/doc_offsets ends past the last token"},
      {"count-mismatch", "/doc_offsets has D+2 entries"},
      {"empty-id", "an empty document id"},
      {"dup-id", "the same doc id twice in one shard"},
      {"dup-id-across", "OUT.h5 and OUT-b.h5 share a doc id (open both)"},
      {"same-file-twice", "the same shard given twice (open OUT.h5 OUT.h5)"},
      {"vocab-differs", "OUT.h5 has vocab 1000, OUT-b.h5 1200 (open both, no vocab)"},
      {"vocab-mismatch", "vocab_size 1000, opened with vocab 2000"},
      {"token-too-large", "a token id equal to vocab_size (found on read)"},
      {"token-negative", "a negative token id (found on read)"},
  };
  return cases;
}

std::string second_shard_path(const std::string& path) {
  std::string base = path;
  if (base.size() > 3 && base.compare(base.size() - 3, 3, ".h5") == 0) base.resize(base.size() - 3);
  return base + "-b.h5";
}

MalformedShard write_malformed(const std::string& name, const std::string& path) {
  bool known = false;
  for (const auto& c : malformed_cases()) known = known || c.name == name;
  if (!known) throw std::invalid_argument("unknown malformed shard variant: " + name);

  // Base content: documents a0 (5 tokens), a1 (empty), a2 (17 tokens); offsets 0 5 5 22.
  const ShardData data = random_shard_data({5, 0, 17}, 1000, 7, "a");
  RawShard raw = raw_from(data);
  MalformedShard m;
  m.paths = {path};
  auto expect = [&](const std::string& msg) { m.message = path + ": " + msg; };
  std::optional<std::string> checked;  // set where the variable-length reader differs
  bool write = true;

  if (name == "missing-file") {
    std::remove(path.c_str());
    write = false;
    expect("no such file");
  } else if (name == "directory") {
    fs::create_directories(path);
    write = false;
    expect("is a directory, not an HDF5 file");
  } else if (name == "empty-file") {
    std::ofstream(path, std::ios::trunc).close();
    write = false;
    expect("empty file");
  } else if (name == "not-hdf5") {
    std::ofstream(path, std::ios::trunc) << "this is not an HDF5 file, just text\n";
    write = false;
    expect("not an HDF5 file");
  } else if (name == "truncated") {
    write_valid_shard(path, data);
    fs::resize_file(path, fs::file_size(path) / 2);
    write = false;
    m.prefix_only = true;
    expect("cannot open HDF5 file");
  } else if (name == "no-format") {
    raw.format.reset();
    expect("missing attribute format");
  } else if (name == "bad-format") {
    raw.format = "something.else";
    expect("format attribute is \"something.else\", expected \"ringinfer.tokens\"");
  } else if (name == "format-not-string") {
    raw.format_as_int = true;
    expect("attribute format is not a string (found 64-bit integer)");
  } else if (name == "no-version") {
    raw.version.reset();
    expect("missing attribute version");
  } else if (name == "bad-version") {
    raw.version = 3;
    expect("unsupported version 3 (this build reads version 2)");
  } else if (name == "old-version") {
    raw.version = 1;
    expect("unsupported version 1 (this build reads version 2): re-run ringinfer prep");
  } else if (name == "version-1") {
    raw.version = 1;
    raw.vlen_attrs = true;
    raw.ids_kind = RawShard::Ids::Vlen;
    expect("attribute format uses variable-length strings (shard version 1, or not written by ringinfer prep): "
           "re-run ringinfer prep");
    checked = path + ": unsupported version 1 (this build reads version 2): re-run ringinfer prep";
  } else if (name == "vlen-ids") {
    raw.ids_kind = RawShard::Ids::Vlen;
    expect("/doc_ids uses variable-length strings (shard version 1, or not written by ringinfer prep): "
           "re-run ringinfer prep");
    checked = "";  // h5py's default: accepted once checked in isolation
  } else if (name == "vlen-tokenizer") {
    raw.vlen_tokenizer = true;
    expect("attribute tokenizer uses variable-length strings (shard version 1, or not written by ringinfer prep): "
           "re-run ringinfer prep");
    checked = "";
  } else if (name == "tokenizer-too-long") {
    raw.tokenizer = std::string((size_t(1) << 20) + 1, 't');
    expect("attribute tokenizer is 1048577 bytes long, more than the 1048576 allowed");
  } else if (name == "no-vocab") {
    raw.vocab_size.reset();
    expect("missing attribute vocab_size");
  } else if (name == "bad-vocab") {
    raw.vocab_size = 0;
    expect("vocab_size attribute is 0, expected a positive count");
  } else if (name == "no-tokenizer") {
    raw.tokenizer.reset();
    expect("missing attribute tokenizer");
  } else if (name == "no-tokens") {
    raw.write_tokens = false;
    expect("missing dataset /tokens");
  } else if (name == "no-offsets") {
    raw.write_offsets = false;
    expect("missing dataset /doc_offsets");
  } else if (name == "no-ids") {
    raw.ids_kind = RawShard::Ids::None;
    expect("missing dataset /doc_ids");
  } else if (name == "tokens-group") {
    raw.tokens_as_group = true;
    expect("/tokens is not a dataset");
  } else if (name == "tokens-int64") {
    raw.tokens_type = H5T_STD_I64LE;
    expect("/tokens is not a 32-bit signed integer dataset (found 64-bit integer)");
  } else if (name == "tokens-float") {
    raw.tokens_type = H5T_IEEE_F32LE;
    expect("/tokens is not a 32-bit signed integer dataset (found 32-bit float)");
  } else if (name == "tokens-2d") {
    raw.tokens_2d = true;
    expect("/tokens has rank 2, expected 1");
  } else if (name == "offsets-int32") {
    raw.offsets_type = H5T_STD_I32LE;
    expect("/doc_offsets is not a 64-bit signed integer dataset (found 32-bit integer)");
  } else if (name == "ids-int") {
    raw.ids_kind = RawShard::Ids::Int;
    expect("/doc_ids is not a string dataset (found 64-bit integer)");
  } else if (name == "id-too-wide") {
    raw.ids[0] = std::string(65537, 'x');
    expect("/doc_ids entries are 65537 bytes wide, more than the 65536 allowed");
  } else if (name == "ids-count-huge") {
    raw.ids_kind = RawShard::Ids::None;
    write_raw_shard(path, raw);
    write = false;
    // Declared but never written: contiguous storage is allocated on first write, so the
    // file stays small while its /doc_ids claims 2 TiB.
    h5::Handle f = h5::file(H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)));
    h5::Handle type = h5::datatype(H5_CHECK(H5Tcopy(H5T_C_S1)));
    H5_CHECK(H5Tset_size(type.get(), 2));
    hsize_t dims[1] = {hsize_t(1) << 40};
    h5::Handle space = h5::dataspace(H5_CHECK(H5Screate_simple(1, dims, nullptr)));
    h5::dataset(H5_CHECK(H5Dcreate2(f.get(), "/doc_ids", type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT,
                                    H5P_DEFAULT)));
    m.prefix_only = true;
    expect("/doc_ids claims 1099511627776 entries of 2 bytes, more than the file's ");
  } else if (name == "offsets-nonzero-start") {
    raw.offsets = {2, 5, 5, 22};
    expect("/doc_offsets[0] is 2, expected 0");
  } else if (name == "bad-offsets") {
    raw.offsets = {0, 5, 3, 22};
    expect("/doc_offsets decreases at index 2 (3 after 5)");
  } else if (name == "offsets-short") {
    raw.offsets = {0, 5, 5, 20};
    expect("/doc_offsets ends at 20, but /tokens has 22 entries");
  } else if (name == "offsets-past-end") {
    raw.offsets = {0, 5, 5, 25};
    expect("/doc_offsets ends at 25, but /tokens has 22 entries");
  } else if (name == "count-mismatch") {
    raw.offsets = {0, 5, 5, 10, 22};
    expect("/doc_offsets has 5 entries but /doc_ids has 3 (expected 4)");
  } else if (name == "empty-id") {
    raw.ids[1] = "";
    expect("/doc_ids[1] is empty");
  } else if (name == "dup-id") {
    raw.ids[2] = "a0";
    expect("duplicate doc id \"a0\" at /doc_ids[0] and [2]");
  } else if (name == "dup-id-across") {
    const std::string b = second_shard_path(path);
    ShardData other = random_shard_data({3, 4}, 1000, 8, "b");
    other.ids[1] = "a2";
    write_valid_shard(b, other);
    m.paths.push_back(b);
    m.message = b + ": doc id \"a2\" is also in " + path;
  } else if (name == "same-file-twice") {
    m.paths.push_back(path);
    expect("given twice as input (also as " + path + ")");
  } else if (name == "vocab-differs") {
    const std::string b = second_shard_path(path);
    write_valid_shard(b, random_shard_data({3, 4}, 1200, 8, "b"));
    m.paths.push_back(b);
    m.message = b + ": vocab_size attribute is 1200 but " + path + " has 1000";
  } else if (name == "vocab-mismatch") {
    m.vocab_size = 2000;
    expect("vocab_size attribute is 1000 but the model's vocabulary has 2000 tokens");
  } else if (name == "token-too-large") {
    raw.tokens[5 + 3] = 1000;  // document a2, position 3
    m.on_read = true;
    expect("document \"a2\" has token id 1000 at position 3, outside the vocabulary [0, 1000)");
  } else if (name == "token-negative") {
    raw.tokens[4] = -5;  // document a0, position 4
    m.on_read = true;
    expect("document \"a0\" has token id -5 at position 4, outside the vocabulary [0, 1000)");
  }
  if (write) write_raw_shard(path, raw);
  m.checked_message = checked ? *checked : m.message;
  return m;
}

}  // namespace ringinfer::test
