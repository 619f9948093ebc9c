#pragma once
// HDF5 helpers shared by the shard reader/writer and the output files (private to io/,
// also used by the test fixtures): RAII holders for hid_t, opening files with the
// right properties, and checked reads of datasets and attributes that turn expected
// problems (missing, wrong type or shape) into ringinfer::Error "<file>: <problem>".
//
// Strings come in two families. The variable-length helpers (read_strings, write_strings,
// write_string_attr, read_string_attr) serve our own run/score outputs only. Input shards,
// which users hand us and which may be corrupt, use only the fixed-length helpers: reading
// a variable-length string makes libhdf5 follow global-heap references taken from the file
// unchecked (fuzzing found overlapping memcpy and heap overflows in H5HG_read), so those
// check the datatype first and refuse variable-length strings without reading them.
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ringinfer::h5 {

// ---------------------------------------------------------------- handles

// Owns one hid_t and closes it with the matching H5*close.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer close) : id_(id), close_(close) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      close_ = o.close_;
      o.id_ = -1;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = -1;
  }

 private:
  hid_t id_ = -1;
  Closer close_ = nullptr;
};

// Each runs the call through H5_CHECK and wraps the result.
Handle file(hid_t id);
Handle dataset(hid_t id);
Handle dataspace(hid_t id);
Handle datatype(hid_t id);
Handle attribute(hid_t id);
Handle group(hid_t id);
Handle plist(hid_t id);

// Silences HDF5's automatic error-stack printing (once per process), so a user sees
// our one-line message rather than a stack dump.
void init();

// ---------------------------------------------------------------- files

// Opens an existing file read-only with file locking off (shared file systems). Checks,
// in order: missing, not a regular file, empty, not an HDF5 file.
Handle open_readonly(const std::string& path);
// Creates (truncates) a file; locks when the file system supports it.
Handle create(const std::string& path);

// Writes into "<path>.tmp" and renames it to path on commit(); removes the temporary
// file when destroyed without commit().
class TempFile {
 public:
  explicit TempFile(std::string path);
  ~TempFile();
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& tmp_path() const { return tmp_; }
  void commit();  // rename (atomic on POSIX file systems)

 private:
  std::string path_, tmp_;
  bool committed_ = false;
};

// ---------------------------------------------------------------- reading (validated)

// Element kinds a dataset or attribute is checked against.
enum class Kind { Int32, Int64, AnyInt, Float32, Float64, VlenString, FixedString, String };
const char* kind_name(Kind k);  // e.g. "a 32-bit integer"

// True when loc has an object at name (each path component is checked, so "a/b" works
// when "a" is missing).
bool exists(hid_t loc, const std::string& name);

// Opens dataset `name` (e.g. "/tokens") of a file at `path` (for messages), checking it
// exists, is a dataset, has rank 1 and elements of `kind`. Returns its length in *n.
Handle open_dataset_1d(hid_t file, const std::string& path, const std::string& name, Kind kind,
                       int64_t* n);
// Throws Error unless the dataset's storage can hold exactly n elements of `type` inside
// the file (contiguous/compact), or uses sane chunks (chunked): libhdf5 trusts these on a
// read. open_dataset_1d calls it for every kind but variable-length strings.
void check_storage(hid_t dset, const std::string& path, const std::string& name, hsize_t n, hid_t type);

std::vector<int64_t> read_int64(hid_t dset, int64_t n);  // whole dataset, any integer type
std::vector<int32_t> read_int32(hid_t dset, int64_t n);
std::vector<float> read_float32(hid_t dset, int64_t n);
std::vector<double> read_float64(hid_t dset, int64_t n);
std::vector<std::string> read_strings(hid_t dset, int64_t n);  // vlen strings (null -> "")

// Attributes on an object: missing, non-scalar or wrong type -> Error naming path and attr.
std::string read_string_attr(hid_t obj, const std::string& path, const std::string& name);
int64_t read_int_attr(hid_t obj, const std::string& path, const std::string& name);
// All attributes of obj whose value is a string, in creation (or name) order.
std::vector<std::pair<std::string, std::string>> read_all_string_attrs(hid_t obj);

// ---------------------------------------------------------------- fixed-length strings (inputs)

// True when `type` is a variable-length string (checked from the datatype alone).
bool is_variable_string(hid_t type);

// Attribute `name` of obj: one fixed-length string of at most max_bytes bytes, up to its
// first NUL. Missing, non-scalar, not a string -> Error as read_string_attr; a variable-length
// string is never read: "<path>: attribute <name> uses variable-length strings<vlen_advice>".
std::string read_fixed_string_attr(hid_t obj, const std::string& path, const std::string& name,
                                   size_t max_bytes, const std::string& vlen_advice = "");

// Checks, without reading data, that dataset dset (`name`, rank 1 of n entries, opened with
// open_dataset_1d) holds fixed-length strings of at most max_width bytes each and at most
// file_bytes bytes in all (we store them uncompressed, so a larger claim is corrupt).
// Variable-length -> "<path>: <name> uses variable-length strings<vlen_advice>". Returns the width.
size_t check_fixed_strings(hid_t dset, const std::string& path, const std::string& name, int64_t n,
                           size_t max_width, uint64_t file_bytes, const std::string& vlen_advice = "");
// check_fixed_strings, then all n entries, each up to its first NUL (read in bounded blocks).
std::vector<std::string> read_fixed_strings(hid_t dset, const std::string& path, const std::string& name,
                                            int64_t n, size_t max_width, uint64_t file_bytes,
                                            const std::string& vlen_advice = "");

// Offsets [n+1] into a dataset of `total` entries (total_name, e.g. "/tokens"): must start
// at 0, never decrease, and end at total.
void check_offsets(const std::string& path, const std::string& name, const std::vector<int64_t>& offsets,
                   int64_t total, const std::string& total_name);

// ---------------------------------------------------------------- writing

void write_string_attr(hid_t obj, const std::string& name, const std::string& value);
void write_int_attr(hid_t obj, const std::string& name, int64_t value);

// Contiguous rank-1 datasets (empty ones allowed).
void write_int64(hid_t loc, const std::string& name, const std::vector<int64_t>& v);
void write_int32(hid_t loc, const std::string& name, const std::vector<int32_t>& v);
void write_float32(hid_t loc, const std::string& name, const std::vector<float>& v);
void write_float64(hid_t loc, const std::string& name, const std::vector<double>& v);
void write_strings(hid_t loc, const std::string& name, const std::vector<std::string>& v);  // vlen UTF-8

// Null-padded fixed-length UTF-8 strings (H5T_C_S1): the attribute sized to its value, the
// dataset to its longest entry; both at least 1 byte wide. Values must not contain NUL.
void write_fixed_string_attr(hid_t obj, const std::string& name, const std::string& value);
void write_fixed_strings(hid_t loc, const std::string& name, const std::vector<std::string>& v);

}  // namespace ringinfer::h5
