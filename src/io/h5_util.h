#pragma once
// HDF5 helpers shared by the shard reader/writer and the output files (private to io/,
// also used by the test fixtures): RAII holders for hid_t, opening files with the
// right properties, and checked reads of datasets and attributes that turn expected
// problems (missing, wrong type or shape) into ringinfer::Error "<file>: <problem>".
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
enum class Kind { Int32, Int64, AnyInt, Float32, Float64, VlenString, String };
const char* kind_name(Kind k);  // e.g. "a 32-bit integer"

// True when loc has an object at name (each path component is checked, so "a/b" works
// when "a" is missing).
bool exists(hid_t loc, const std::string& name);

// Opens dataset `name` (e.g. "/tokens") of a file at `path` (for messages), checking it
// exists, is a dataset, has rank 1 and elements of `kind`. Returns its length in *n.
Handle open_dataset_1d(hid_t file, const std::string& path, const std::string& name, Kind kind,
                       int64_t* n);

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
void write_strings(hid_t loc, const std::string& name, const std::vector<std::string>& v);

}  // namespace ringinfer::h5
