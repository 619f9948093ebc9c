#pragma once
// Input shards: HDF5 files of tokenized documents (DESIGN §6 "Input shard").
//
//   /tokens       int32 [T], chunked (1 Mi elements); documents concatenated
//   /doc_offsets  int64 [D+1]; document d is tokens[doc_offsets[d] : doc_offsets[d+1]]
//   /doc_ids      fixed-length UTF-8 strings [D], null-padded to the longest id (at least
//                 1 byte, at most kMaxDocIdBytes), unique across all shards of a job
//   attributes    format = "ringinfer.tokens", version = 2, vocab_size (int), tokenizer;
//                 string attributes are fixed-length, null-padded, sized to their value
//   optional, per document (written by prep when a JSONL body gives them):
//   /max_new_tokens  int64 [D]: tokens to generate at most; -1 = run's --max-new-tokens
//   /temperature     float64 [D]: sampling temperature; -1 = run's --temperature
//
// prep writes version 2, which has no variable-length strings anywhere: reading one makes
// libhdf5 follow global-heap references from the file unchecked, which a corrupt file
// turns into memory corruption inside the library (found by fuzzing). Shards written with
// h5py's defaults (variable-length UTF-8 attributes and /doc_ids) are accepted as well, but
// only by a reader told that the file has passed the isolated check (shard_isolation.h:
// a crash there is an error message, not a dead job): open_documents(..., variable_checked).
// Any other reader checks every string's datatype first and refuses variable-length ones
// unread. Either way every string is bounded (kMaxDocIdBytes, kMaxShardAttrBytes).
//
// Writing: ShardWriter (streaming, used by `ringinfer prep`) or write_shard (all at once).
// Reading: open_documents validates every shard up front and lists the documents in
// input order; read_stripe / read_stripes / read_document fetch one document's tokens.
// Every problem a user can cause is a one-line ringinfer::Error naming the file.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

namespace ringinfer {

inline constexpr const char* kShardFormat = "ringinfer.tokens";
inline constexpr int64_t kShardVersion = 2;
inline constexpr size_t kMaxDocIdBytes = size_t(64) << 10;       // one /doc_ids entry
inline constexpr size_t kMaxShardAttrBytes = size_t(1) << 20;    // one string attribute
inline constexpr int64_t kTokenChunkElements = int64_t(1) << 20;  // /tokens chunk: 1 Mi int32 = 4 MiB
inline constexpr int64_t kMaxDocNewTokens = int64_t(2147483647);    // /max_new_tokens entry (2^31 - 1)
inline constexpr double kMaxDocTemperature = 1e6;                   // /temperature entry

// What a document asks of `run` beyond its tokens (OpenAI batch bodies: max_tokens,
// temperature); -1 = the job's option.
struct DocOptions {
  int64_t max_new_tokens = -1;  // in [0, kMaxDocNewTokens], or -1
  double temperature = -1.0;    // in [0, kMaxDocTemperature], or -1
  bool any() const { return max_new_tokens >= 0 || temperature >= 0.0; }
};

// ---------------------------------------------------------------- writing

// Writes a shard document by document. The file is built as "<path>.tmp" and renamed
// to path by finish(), so an interrupted prep never leaves a half-written shard.
// Tokens are checked against [0, vocab_size); ids must be non-empty, unique, free of NUL
// bytes and at most kMaxDocIdBytes long; the tokenizer name at most kMaxShardAttrBytes.
class ShardWriter {
 public:
  // chunk_elements: /tokens chunk size (tests pass small values to keep tiny files tiny).
  ShardWriter(const std::string& path, int64_t vocab_size, const std::string& tokenizer,
              int64_t chunk_elements = kTokenChunkElements);
  ~ShardWriter();  // without finish(): closes and deletes the temporary file
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  void add(const std::string& id, const std::vector<int32_t>& tokens, const DocOptions& options = {});
  void finish();  // writes /doc_offsets, /doc_ids and the attributes, then renames

  int64_t documents() const { return static_cast<int64_t>(ids_.size()); }
  int64_t tokens() const { return offsets_.back(); }

 private:
  void flush_tokens(bool all);

  std::string path_;
  std::string tmp_path_;
  int64_t vocab_size_;
  std::string tokenizer_;
  int64_t chunk_;
  struct Handles;
  std::unique_ptr<Handles> h_;     // open file and /tokens dataset
  std::vector<int32_t> pending_;   // tokens not yet written (flushed in whole chunks)
  int64_t written_ = 0;            // tokens already in /tokens
  std::vector<int64_t> offsets_{0};  // [D+1]
  std::vector<std::string> ids_;     // [D]
  std::vector<int64_t> max_new_tokens_;  // [D] DocOptions, written when any document sets one
  std::vector<double> temperature_;      // [D]
  std::unordered_set<std::string> seen_;
  bool finished_ = false;
};

// Writes a whole shard at once: docs[d] is document d's token ids, ids[d] its id.
void write_shard(const std::string& path, const std::vector<std::vector<int32_t>>& docs,
                 const std::vector<std::string>& ids, int64_t vocab_size, const std::string& tokenizer);

// ---------------------------------------------------------------- reading

// Which string datatypes a reader accepts: fixed-length only, or variable-length as well
// (only for files that passed check_shards_isolated, or inside the isolated check itself).
enum class ShardStrings { fixed_only, variable_checked };

// One shard as found on disk.
struct ShardInfo {
  std::string path;
  int64_t vocab_size = 0;   // the vocab_size attribute
  std::string tokenizer;    // the tokenizer attribute
  int64_t n_tokens = 0;     // length of /tokens
  int64_t n_documents = 0;  // D
};

// One document of the job.
struct DocInfo {
  int64_t index = 0;   // global index in input order (shard order, then order in shard)
  std::string id;      // its /doc_ids entry
  int shard = 0;       // index into DocumentSet::shards()
  int64_t offset = 0;  // first token's index in the shard's /tokens
  int64_t length = 0;  // number of tokens (0 allowed)
  DocOptions options;  // /max_new_tokens and /temperature entries (-1 when the shard has none)
};

// The validated documents of one or many shards. Files are opened read-only with HDF5
// file locking off; the last shard read stays open. Not thread-safe (one per rank).
class DocumentSet {
 public:
  DocumentSet();
  ~DocumentSet();
  DocumentSet(DocumentSet&&) noexcept;
  DocumentSet& operator=(DocumentSet&&) noexcept;

  const std::vector<DocInfo>& documents() const { return docs_; }
  const std::vector<ShardInfo>& shards() const { return shards_; }
  size_t size() const { return docs_.size(); }
  const DocInfo& operator[](size_t i) const { return docs_[i]; }
  // The vocabulary tokens are checked against: the one given to open_documents, or the
  // shards' vocab_size attribute when none was given.
  int64_t vocab_size() const { return vocab_size_; }

  // Tokens t of the document with t ≡ rank (mod n_ranks), in order
  // (ceil((length - rank) / n_ranks) of them).
  std::vector<int32_t> read_stripe(const DocInfo& doc, int rank, int n_ranks) const;
  // Several stripes in one pass over the document, e.g. {r, (r+1) % N} for score targets;
  // result[k] is the stripe of ranks[k].
  std::vector<std::vector<int32_t>> read_stripes(const DocInfo& doc, const std::vector<int>& ranks,
                                                 int n_ranks) const;
  // All tokens of the document.
  std::vector<int32_t> read_document(const DocInfo& doc) const;

 private:
  friend DocumentSet open_documents(const std::vector<std::string>& paths, int64_t vocab_size, ShardStrings strings);
  struct Reader;

  std::vector<ShardInfo> shards_;
  std::vector<DocInfo> docs_;
  int64_t vocab_size_ = -1;
  std::unique_ptr<Reader> reader_;  // the open shard and the block buffer
};

// Opens and validates every shard (see the file comment) and lists its documents.
// vocab_size: the model's vocabulary, or -1 when unknown; when given, each shard's
// vocab_size attribute must equal it. Token ids are range-checked while reading.
DocumentSet open_documents(const std::vector<std::string>& paths, int64_t vocab_size = -1,
                           ShardStrings strings = ShardStrings::fixed_only);

}  // namespace ringinfer
