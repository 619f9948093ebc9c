#pragma once
// Content identities of the files a job reads, for the resume fingerprint (DESIGN §6):
// size and a 64-bit digest of the bytes, never the path or the mtime. A requeued HPC job
// often re-stages its inputs to node-local disk, which changes both but not the content,
// and must still resume; a file replaced by one of the same size must not.
#include <cstddef>
#include <cstdint>
#include <string>

namespace ringinfer::cli {

constexpr uint64_t kDigestBlockBytes = uint64_t(1) << 20;       // one sampled block
constexpr int kDigestBlocks = 64;                               // blocks sampled from a large file
constexpr uint64_t kWholeDigestMaxBytes = kDigestBlocks * kDigestBlockBytes;  // read whole up to 64 MiB

// A fast 64-bit hash of `size` bytes (not cryptographic: it tells changed files apart,
// it does not stand up to an adversary). Any change to one aligned 8-byte word changes it.
uint64_t hash64(const uint8_t* data, size_t size, uint64_t seed);

// Digest of a file's content and size: every byte when the file holds at most 64 MiB,
// else 64 evenly spaced 1 MiB blocks, the first and the last among them (a large file is
// read in about 64 MiB whatever its size). Error naming the file when it cannot be read.
uint64_t file_digest(const std::string& path);

// "size=<bytes> digest=<16 hex digits>" of a regular file.
std::string content_identity(const std::string& path);

// The model's identity, one line per file: for a .gguf (any regular file) its content
// identity; for a folder, "<name> <content identity>" of every regular file at its top
// level (config.json, tokenizer*.json, *.safetensors, ...), sorted by name. Skipped:
// hidden files, sub-folders, and `output` and its companions (OUT.tmp, OUT.journal.<g>)
// when the job writes them into the model folder, since they change as the job runs.
std::string model_identity(const std::string& model, const std::string& output);

}  // namespace ringinfer::cli
