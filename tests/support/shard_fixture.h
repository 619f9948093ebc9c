#pragma once
// Input-shard fixtures written at test time (no binary fixture is committed): valid
// shards of random tokens, and one malformed variant per failure kind the reader must
// report, each with the exact message it must give.
#include <hdf5.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ringinfer::test {

// Documents of a shard.
struct ShardData {
  std::vector<std::vector<int32_t>> docs;  // [D][length_d] token ids
  std::vector<std::string> ids;            // [D]
  int64_t vocab_size = 1000;
  std::string tokenizer = "test-tokenizer";
};

// Documents of the given lengths, tokens uniform in [0, vocab), ids "<prefix><d>".
ShardData random_shard_data(const std::vector<int64_t>& lengths, int64_t vocab, uint64_t seed,
                            const std::string& id_prefix);
// Writes a valid shard through ringinfer::write_shard.
void write_valid_shard(const std::string& path, const ShardData& data);

// A shard written field by field with raw HDF5 calls, so each field can be wrong.
struct RawShard {
  bool write_tokens = true;
  bool tokens_as_group = false;             // /tokens is a group, not a dataset
  hid_t tokens_type = H5T_STD_I32LE;        // file type of /tokens
  bool tokens_2d = false;                   // shape [1, T] instead of [T]
  std::vector<int64_t> tokens;              // [T]
  bool write_offsets = true;
  hid_t offsets_type = H5T_STD_I64LE;
  std::vector<int64_t> offsets;             // [D+1]
  // Fixed: version 2 (null-padded fixed-length); Vlen: version 1 (variable-length).
  enum class Ids { Fixed, Vlen, Int, None } ids_kind = Ids::Fixed;
  std::vector<std::string> ids;             // [D]
  std::optional<std::string> format = "ringinfer.tokens";
  bool format_as_int = false;               // format attribute written as an integer
  bool vlen_attrs = false;                  // format/tokenizer as variable-length strings (version 1)
  bool vlen_tokenizer = false;              // only tokenizer as a variable-length string
  std::optional<int64_t> version = 2;
  std::optional<int64_t> vocab_size = 1000;
  std::optional<std::string> tokenizer = "test-tokenizer";
};
RawShard raw_from(const ShardData& data);  // the raw form of a valid shard
void write_raw_shard(const std::string& path, const RawShard& raw);

// One malformed variant.
struct MalformedCase {
  std::string name;         // e.g. "bad-offsets"
  std::string description;  // one line, for `make_test_shard list`
};
const std::vector<MalformedCase>& malformed_cases();

// What a written variant needs to be checked.
struct MalformedShard {
  std::vector<std::string> paths;  // pass all of these to open_documents, in order
  int64_t vocab_size = -1;         // and this vocabulary
  bool on_read = false;            // the error comes when reading documents, not opening
  bool prefix_only = false;        // message is a prefix (the rest is HDF5's own text)
  std::string message;             // the full expected ringinfer::Error text
  // What a reader that accepts variable-length strings (ShardStrings::variable_checked: the
  // isolated check, then run and score) reports: the same message, except for the
  // variable-length variants; "" when it accepts the file (h5py's defaults).
  std::string checked_message;
};
// Writes variant `name` at path (and a second file "<path minus .h5>-b.h5" where the
// variant needs two). Throws std::invalid_argument for an unknown name.
MalformedShard write_malformed(const std::string& name, const std::string& path);

// "<path minus .h5>-b.h5"
std::string second_shard_path(const std::string& path);

}  // namespace ringinfer::test
