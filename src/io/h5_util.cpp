#include "io/h5_util.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "ringinfer/error.h"

// H5Pset_file_locking appeared in 1.10.7 and 1.12.1; older libraries only read the
// HDF5_USE_FILE_LOCKING environment variable.
#if H5_VERSION_GE(1, 12, 1) || (H5_VERS_MAJOR == 1 && H5_VERS_MINOR == 10 && H5_VERS_RELEASE >= 7)
#define RI_H5_HAVE_FILE_LOCKING 1
#else
#define RI_H5_HAVE_FILE_LOCKING 0
#endif

namespace ringinfer::h5 {

namespace fs = std::filesystem;

Handle file(hid_t id) { return Handle(id, H5Fclose); }
Handle dataset(hid_t id) { return Handle(id, H5Dclose); }
Handle dataspace(hid_t id) { return Handle(id, H5Sclose); }
Handle datatype(hid_t id) { return Handle(id, H5Tclose); }
Handle attribute(hid_t id) { return Handle(id, H5Aclose); }
Handle group(hid_t id) { return Handle(id, H5Gclose); }
Handle plist(hid_t id) { return Handle(id, H5Pclose); }

void init() {
  static std::once_flag once;
  std::call_once(once, [] {
#if !RI_H5_HAVE_FILE_LOCKING
    // Must be set before the library opens its first file; keeps a user's explicit choice.
    setenv("HDF5_USE_FILE_LOCKING", "FALSE", 0);
#endif
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  });
}

namespace {

herr_t innermost(unsigned, const H5E_error2_t* e, void* out) {
  auto* s = static_cast<std::string*>(out);
  if (e && e->desc && s->empty()) *s = e->desc;
  return 0;
}

// The innermost message of the current HDF5 error stack (then cleared).
std::string stack_message() {
  std::string desc;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, innermost, &desc);
  H5Eclear2(H5E_DEFAULT);
  return desc;
}

std::string describe_type(hid_t type) {
  H5T_class_t cls = H5Tget_class(type);
  size_t bits = H5Tget_size(type) * 8;
  switch (cls) {
    case H5T_INTEGER:
      return std::to_string(bits) + "-bit " + (H5Tget_sign(type) == H5T_SGN_NONE ? "unsigned " : "") + "integer";
    case H5T_FLOAT: return std::to_string(bits) + "-bit float";
    case H5T_STRING: return H5Tis_variable_str(type) > 0 ? "variable-length string" : "fixed-length string";
    case H5T_COMPOUND: return "compound";
    case H5T_ARRAY: return "array";
    case H5T_VLEN: return "variable-length sequence";
    case H5T_ENUM: return "enum";
    case H5T_OPAQUE: return "opaque";
    case H5T_REFERENCE: return "reference";
    default: return "unknown type";
  }
}

bool kind_matches(hid_t type, Kind kind) {
  H5T_class_t cls = H5Tget_class(type);
  size_t size = H5Tget_size(type);
  bool is_signed = cls == H5T_INTEGER && H5Tget_sign(type) == H5T_SGN_2;
  switch (kind) {
    case Kind::Int32: return is_signed && size == 4;
    case Kind::Int64: return is_signed && size == 8;
    case Kind::AnyInt: return cls == H5T_INTEGER;
    case Kind::Float32: return cls == H5T_FLOAT && size == 4;
    case Kind::Float64: return cls == H5T_FLOAT && size == 8;
    case Kind::VlenString: return cls == H5T_STRING && H5Tis_variable_str(type) > 0;
    case Kind::FixedString: return cls == H5T_STRING && H5Tis_variable_str(type) == 0;
    case Kind::String: return cls == H5T_STRING;
  }
  return false;
}

// A variable-length string memory type with the character set of `like`.
Handle vlen_string_type(H5T_cset_t cset) {
  Handle t = datatype(H5_CHECK(H5Tcopy(H5T_C_S1)));
  H5_CHECK(H5Tset_size(t.get(), H5T_VARIABLE));
  H5_CHECK(H5Tset_cset(t.get(), cset));
  return t;
}

// A null-padded fixed-length string memory type `width` bytes wide.
Handle fixed_string_type(size_t width, H5T_cset_t cset) {
  Handle t = datatype(H5_CHECK(H5Tcopy(H5T_C_S1)));
  H5_CHECK(H5Tset_size(t.get(), width));
  H5_CHECK(H5Tset_strpad(t.get(), H5T_STR_NULLPAD));
  H5_CHECK(H5Tset_cset(t.get(), cset));
  return t;
}

// The character set to read a file string type with: its own when it is one HDF5 knows
// (string conversion refuses to change character sets), else ASCII.
H5T_cset_t cset_of(hid_t type) {
  H5T_cset_t c = H5Tget_cset(type);
  if (c == H5T_CSET_UTF8) return c;
  H5Eclear2(H5E_DEFAULT);
  return H5T_CSET_ASCII;
}

// Fixed-length entries are read and written this many bytes at a time.
constexpr size_t kStringBlockBytes = size_t(16) << 20;

}  // namespace

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Int32: return "a 32-bit signed integer";
    case Kind::Int64: return "a 64-bit signed integer";
    case Kind::AnyInt: return "an integer";
    case Kind::Float32: return "a 32-bit float";
    case Kind::Float64: return "a 64-bit float";
    case Kind::VlenString: return "a variable-length string";
    case Kind::FixedString: return "a fixed-length string";
    case Kind::String: return "a string";
  }
  return "?";
}

// ---------------------------------------------------------------- files

Handle open_readonly(const std::string& path) {
  init();
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) throw Error(path + ": no such file");
  if (fs::is_directory(st)) throw Error(path + ": is a directory, not an HDF5 file");
  if (access(path.c_str(), R_OK) != 0) throw Error(path + ": cannot read (" + std::strerror(errno) + ")");
  if (fs::is_regular_file(st) && fs::file_size(path, ec) == 0 && !ec) throw Error(path + ": empty file");
  htri_t is_h5 = H5Fis_hdf5(path.c_str());
  if (is_h5 <= 0) {
    H5Eclear2(H5E_DEFAULT);
    throw Error(path + ": not an HDF5 file");
  }
  Handle fapl = plist(H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)));
#if RI_H5_HAVE_FILE_LOCKING
  H5_CHECK(H5Pset_file_locking(fapl.get(), false, true));
#endif
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (f < 0) {
    std::string why = stack_message();
    throw Error(path + ": cannot open HDF5 file" + (why.empty() ? "" : " (" + why + ")"));
  }
  return file(f);
}

Handle create(const std::string& path) {
  init();
  Handle fcpl = plist(H5_CHECK(H5Pcreate(H5P_FILE_CREATE)));
  // Lets readers list the root attributes in the order they were written.
  H5_CHECK(H5Pset_attr_creation_order(fcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED));
  Handle fapl = plist(H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)));
#if RI_H5_HAVE_FILE_LOCKING
  H5_CHECK(H5Pset_file_locking(fapl.get(), true, true));
#endif
  hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get());
  if (f < 0) {
    std::string why = stack_message();
    fs::path parent = fs::path(path).parent_path();
    std::error_code ec;
    if (!parent.empty() && !fs::is_directory(parent, ec)) why = "no such directory " + parent.string();
    throw Error(path + ": cannot create file" + (why.empty() ? "" : " (" + why + ")"));
  }
  return file(f);
}

TempFile::TempFile(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {}

TempFile::~TempFile() {
  if (!committed_) std::remove(tmp_.c_str());
}

void TempFile::commit() {
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
    throw Error(path_ + ": cannot rename " + tmp_ + " to it (" + std::strerror(errno) + ")");
  committed_ = true;
}

// ---------------------------------------------------------------- reading

bool exists(hid_t loc, const std::string& name) {
  std::string prefix = name[0] == '/' ? "/" : "";
  size_t start = prefix.size();
  while (start < name.size()) {
    size_t slash = name.find('/', start);
    std::string part = name.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    prefix += part;
    htri_t e = H5Lexists(loc, prefix.c_str(), H5P_DEFAULT);
    if (e <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
    if (slash == std::string::npos) break;
    prefix += "/";
    start = slash + 1;
  }
  return true;
}

Handle open_dataset_1d(hid_t file_id, const std::string& path, const std::string& name, Kind kind,
                       int64_t* n) {
  if (!exists(file_id, name)) throw Error(path + ": missing dataset " + name);
  hid_t obj = H5Oopen(file_id, name.c_str(), H5P_DEFAULT);
  if (obj < 0) {
    std::string why = stack_message();
    throw Error(path + ": cannot open " + name + (why.empty() ? "" : " (" + why + ")"));
  }
  if (H5Iget_type(obj) != H5I_DATASET) {
    H5Oclose(obj);
    throw Error(path + ": " + name + " is not a dataset");
  }
  Handle d = dataset(obj);
  Handle space = dataspace(H5_CHECK(H5Dget_space(d.get())));
  int rank = H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  if (rank != 1)
    throw Error(path + ": " + name + " has rank " + std::to_string(rank) + ", expected 1");
  hsize_t dims[1] = {0};
  H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims, nullptr));
  Handle type = datatype(H5_CHECK(H5Dget_type(d.get())));
  if (!kind_matches(type.get(), kind))
    throw Error(path + ": " + name + " is not " + kind_name(kind) + " dataset (found " +
                describe_type(type.get()) + ")");
  // Strings are checked by their readers (check_fixed_strings first names a vlen or an
  // oversized string dataset, then checks its storage).
  if (H5Tget_class(type.get()) != H5T_STRING) check_storage(d.get(), path, name, dims[0], type.get());
  if (n) *n = static_cast<int64_t>(dims[0]);
  return d;
}

// libhdf5 1.10 trusts a dataset's storage description when it reads: a corrupt file whose
// contiguous storage is smaller than its dataspace, or lies past the end of the file, makes
// H5Dread copy out of bounds or allocate gigabytes (found by fuzzing). So before any read,
// contiguous and compact storage must hold exactly n elements of the stored type, inside
// the file; chunked storage must use chunks of a sane size.
void check_storage(hid_t d, const std::string& path, const std::string& name, hsize_t n, hid_t type) {
  const size_t elem = H5Tget_size(type);
  if (elem == 0) throw Error(path + ": " + name + " has an element size of 0");
  hid_t plist = H5_CHECK(H5Dget_create_plist(d));
  const H5D_layout_t layout = H5Pget_layout(plist);
  hsize_t chunk[1] = {0};
  const int chunk_rank = layout == H5D_CHUNKED ? H5Pget_chunk(plist, 1, chunk) : 0;
  const int filters = layout == H5D_CHUNKED ? H5Pget_nfilters(plist) : 0;
  H5Pclose(plist);
  Handle file = Handle(H5_CHECK(H5Iget_file_id(d)), H5Fclose);
  hsize_t file_bytes = 0;
  H5_CHECK(H5Fget_filesize(file.get(), &file_bytes));
  const hsize_t want = n * elem;
  if (n != 0 && want / n != elem) throw Error(path + ": " + name + " is impossibly large");
  if (layout == H5D_CONTIGUOUS || layout == H5D_COMPACT) {
    const hsize_t stored = H5Dget_storage_size(d);
    if ((stored != 0 || layout == H5D_COMPACT) && stored != want)
      throw Error(path + ": " + name + " stores " + std::to_string(stored) + " bytes for " + std::to_string(n) +
                  " elements of " + std::to_string(elem) + " bytes (" + std::to_string(want) + "): corrupt file");
    const haddr_t addr = layout == H5D_CONTIGUOUS ? H5Dget_offset(d) : HADDR_UNDEF;
    if (addr != HADDR_UNDEF && (addr > file_bytes || stored > file_bytes - addr))
      throw Error(path + ": " + name + " data lies past the end of the file: corrupt file");
    if (stored == 0 && want > 0 && layout == H5D_CONTIGUOUS)
      throw Error(path + ": " + name + " has " + std::to_string(n) + " elements but no data written");
  } else if (layout == H5D_CHUNKED) {
    if (chunk_rank != 1 || chunk[0] == 0 || chunk[0] * elem > (hsize_t(1) << 30))
      throw Error(path + ": " + name + " has an invalid chunk layout: corrupt file");
    // Without compression the data cannot exceed the file, and no chunk is larger than
    // its elements or lies outside the file.
    if (filters == 0) {
      const hsize_t chunk_bytes = chunk[0] * elem;
      if (want > file_bytes || H5Dget_storage_size(d) > file_bytes)
        throw Error(path + ": " + name + " claims more bytes than its file of " + std::to_string(file_bytes) +
                    ": corrupt file");
      Handle space = dataspace(H5_CHECK(H5Dget_space(d)));
      hsize_t n_chunks = 0;
      H5_CHECK(H5Dget_num_chunks(d, space.get(), &n_chunks));
      if (n_chunks > n / chunk[0] + 1) throw Error(path + ": " + name + " has too many chunks: corrupt file");
      for (hsize_t i = 0; i < n_chunks; ++i) {
        hsize_t offset[1] = {0}, size = 0;
        haddr_t addr = HADDR_UNDEF;
        unsigned mask = 0;
        H5_CHECK(H5Dget_chunk_info(d, space.get(), i, offset, &mask, &addr, &size));
        if (size > chunk_bytes || (addr != HADDR_UNDEF && (addr > file_bytes || size > file_bytes - addr)))
          throw Error(path + ": " + name + " chunk " + std::to_string(i) + " claims " + std::to_string(size) +
                      " bytes at " + std::to_string(addr) + ": corrupt file");
      }
    }
  } else {
    throw Error(path + ": " + name + " has an unsupported storage layout");
  }
}

namespace {
template <typename T>
std::vector<T> read_numbers(hid_t dset, int64_t n, hid_t memtype) {
  std::vector<T> v(static_cast<size_t>(n));
  if (n > 0) H5_CHECK(H5Dread(dset, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()));
  return v;
}
}  // namespace

std::vector<int64_t> read_int64(hid_t d, int64_t n) { return read_numbers<int64_t>(d, n, H5T_NATIVE_INT64); }
std::vector<int32_t> read_int32(hid_t d, int64_t n) { return read_numbers<int32_t>(d, n, H5T_NATIVE_INT32); }
std::vector<float> read_float32(hid_t d, int64_t n) { return read_numbers<float>(d, n, H5T_NATIVE_FLOAT); }
std::vector<double> read_float64(hid_t d, int64_t n) { return read_numbers<double>(d, n, H5T_NATIVE_DOUBLE); }

std::vector<std::string> read_strings(hid_t dset, int64_t n) {
  std::vector<std::string> out(static_cast<size_t>(n));
  if (n == 0) return out;
  Handle ftype = datatype(H5_CHECK(H5Dget_type(dset)));
  Handle mtype = vlen_string_type(H5Tget_cset(ftype.get()));
  std::vector<char*> raw(static_cast<size_t>(n), nullptr);
  H5_CHECK(H5Dread(dset, mtype.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, raw.data()));
  for (size_t i = 0; i < raw.size(); ++i) out[i] = raw[i] ? raw[i] : "";
  Handle space = dataspace(H5_CHECK(H5Dget_space(dset)));
  H5_CHECK(H5Dvlen_reclaim(mtype.get(), space.get(), H5P_DEFAULT, raw.data()));
  return out;
}

namespace {
// Opens attribute `name` of obj, checks it holds one value of `kind`.
Handle open_attr(hid_t obj, const std::string& path, const std::string& name, Kind kind) {
  htri_t e = H5Aexists(obj, name.c_str());
  if (e <= 0) {
    H5Eclear2(H5E_DEFAULT);
    throw Error(path + ": missing attribute " + name);
  }
  Handle a = attribute(H5_CHECK(H5Aopen(obj, name.c_str(), H5P_DEFAULT)));
  Handle space = dataspace(H5_CHECK(H5Aget_space(a.get())));
  if (H5_CHECK(H5Sget_simple_extent_npoints(space.get())) != 1)
    throw Error(path + ": attribute " + name + " is not a single value");
  Handle type = datatype(H5_CHECK(H5Aget_type(a.get())));
  if (!kind_matches(type.get(), kind))
    throw Error(path + ": attribute " + name + " is not " + kind_name(kind) + " (found " +
                describe_type(type.get()) + ")");
  return a;
}

std::string read_string_value(hid_t a) {
  Handle ftype = datatype(H5_CHECK(H5Aget_type(a)));
  if (H5Tis_variable_str(ftype.get()) > 0) {
    Handle mtype = vlen_string_type(H5Tget_cset(ftype.get()));
    char* raw = nullptr;
    H5_CHECK(H5Aread(a, mtype.get(), &raw));
    std::string s = raw ? raw : "";
    Handle space = dataspace(H5_CHECK(H5Aget_space(a)));
    H5_CHECK(H5Dvlen_reclaim(mtype.get(), space.get(), H5P_DEFAULT, &raw));
    return s;
  }
  size_t size = H5Tget_size(ftype.get());
  std::string s(size, '\0');
  H5_CHECK(H5Aread(a, ftype.get(), s.data()));
  s.resize(std::strlen(s.c_str()));
  if (H5Tget_strpad(ftype.get()) == H5T_STR_SPACEPAD)
    while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}
}  // namespace

std::string read_string_attr(hid_t obj, const std::string& path, const std::string& name) {
  Handle a = open_attr(obj, path, name, Kind::String);
  return read_string_value(a.get());
}

int64_t read_int_attr(hid_t obj, const std::string& path, const std::string& name) {
  Handle a = open_attr(obj, path, name, Kind::AnyInt);
  int64_t v = 0;
  H5_CHECK(H5Aread(a.get(), H5T_NATIVE_INT64, &v));
  return v;
}

std::vector<std::pair<std::string, std::string>> read_all_string_attrs(hid_t obj) {
  struct Ctx {
    std::vector<std::pair<std::string, std::string>> out;
  } ctx;
  auto visit = [](hid_t loc, const char* name, const H5A_info_t*, void* data) -> herr_t {
    auto* c = static_cast<Ctx*>(data);
    try {  // no exception may cross HDF5's C frames
      hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
      if (a < 0) return -1;
      Handle ah = attribute(a);
      Handle type = datatype(H5Aget_type(a));
      Handle space = dataspace(H5Aget_space(a));
      if (type.valid() && space.valid() && H5Tget_class(type.get()) == H5T_STRING &&
          H5Sget_simple_extent_npoints(space.get()) == 1)
        c->out.emplace_back(name, read_string_value(a));
      return 0;
    } catch (...) {
      return -1;
    }
  };
  hsize_t idx = 0;
  if (H5Aiterate2(obj, H5_INDEX_CRT_ORDER, H5_ITER_INC, &idx, visit, &ctx) < 0) {
    // Files written without creation-order tracking: fall back to name order.
    H5Eclear2(H5E_DEFAULT);
    ctx.out.clear();
    idx = 0;
    H5_CHECK(H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_INC, &idx, visit, &ctx));
  }
  return ctx.out;
}

// ---------------------------------------------------------------- fixed-length strings

bool is_variable_string(hid_t type) { return H5Tget_class(type) == H5T_STRING && H5Tis_variable_str(type) > 0; }

std::string read_fixed_string_attr(hid_t obj, const std::string& path, const std::string& name, size_t max_bytes,
                                   const std::string& vlen_advice) {
  Handle a = open_attr(obj, path, name, Kind::String);
  Handle ftype = datatype(H5_CHECK(H5Aget_type(a.get())));
  if (H5Tis_variable_str(ftype.get()) != 0)
    throw Error(path + ": attribute " + name + " uses variable-length strings" + vlen_advice);
  const size_t width = H5Tget_size(ftype.get());
  if (width == 0) throw Error(path + ": attribute " + name + " has an unreadable string type");
  if (width > max_bytes)
    throw Error(path + ": attribute " + name + " is " + std::to_string(width) + " bytes long, more than the " +
                std::to_string(max_bytes) + " allowed");
  Handle mtype = fixed_string_type(width, cset_of(ftype.get()));
  std::string s(width, '\0');
  H5_CHECK(H5Aread(a.get(), mtype.get(), s.data()));
  s.resize(strnlen(s.data(), width));
  return s;
}

size_t check_fixed_strings(hid_t dset, const std::string& path, const std::string& name, int64_t n,
                           size_t max_width, uint64_t file_bytes, const std::string& vlen_advice) {
  Handle ftype = datatype(H5_CHECK(H5Dget_type(dset)));
  if (H5Tget_class(ftype.get()) != H5T_STRING)
    throw Error(path + ": " + name + " is not a string dataset (found " + describe_type(ftype.get()) + ")");
  if (H5Tis_variable_str(ftype.get()) != 0) throw Error(path + ": " + name + " uses variable-length strings" + vlen_advice);
  const size_t width = H5Tget_size(ftype.get());
  if (width == 0) throw Error(path + ": " + name + " has an unreadable string type");
  if (width > max_width)
    throw Error(path + ": " + name + " entries are " + std::to_string(width) + " bytes wide, more than the " +
                std::to_string(max_width) + " allowed");
  if (n < 0 || static_cast<uint64_t>(n) > file_bytes / width)
    throw Error(path + ": " + name + " claims " + std::to_string(n) + " entries of " + std::to_string(width) +
                " bytes, more than the file's " + std::to_string(file_bytes) + " bytes can hold");
  check_storage(dset, path, name, static_cast<hsize_t>(n), ftype.get());
  return width;
}

std::vector<std::string> read_fixed_strings(hid_t dset, const std::string& path, const std::string& name, int64_t n,
                                            size_t max_width, uint64_t file_bytes, const std::string& vlen_advice) {
  const size_t width = check_fixed_strings(dset, path, name, n, max_width, file_bytes, vlen_advice);
  std::vector<std::string> out(static_cast<size_t>(n));
  if (n == 0) return out;
  Handle ftype = datatype(H5_CHECK(H5Dget_type(dset)));
  Handle mtype = fixed_string_type(width, cset_of(ftype.get()));
  Handle fspace = dataspace(H5_CHECK(H5Dget_space(dset)));
  const size_t rows_per_block = std::max<size_t>(1, kStringBlockBytes / width);
  std::vector<char> buf;
  for (size_t first = 0; first < out.size(); first += rows_per_block) {
    const size_t rows = std::min(rows_per_block, out.size() - first);
    buf.assign(rows * width, '\0');
    hsize_t start[1] = {first}, count[1] = {rows};
    H5_CHECK(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr));
    Handle mspace = dataspace(H5_CHECK(H5Screate_simple(1, count, nullptr)));
    H5_CHECK(H5Dread(dset, mtype.get(), mspace.get(), fspace.get(), H5P_DEFAULT, buf.data()));
    for (size_t i = 0; i < rows; ++i) {
      const char* p = buf.data() + i * width;
      out[first + i].assign(p, strnlen(p, width));
    }
  }
  return out;
}

void check_offsets(const std::string& path, const std::string& name, const std::vector<int64_t>& offsets,
                   int64_t total, const std::string& total_name) {
  if (offsets.empty()) throw Error(path + ": " + name + " is empty");
  if (offsets[0] != 0)
    throw Error(path + ": " + name + "[0] is " + std::to_string(offsets[0]) + ", expected 0");
  for (size_t i = 1; i < offsets.size(); ++i)
    if (offsets[i] < offsets[i - 1])
      throw Error(path + ": " + name + " decreases at index " + std::to_string(i) + " (" +
                  std::to_string(offsets[i]) + " after " + std::to_string(offsets[i - 1]) + ")");
  if (offsets.back() != total)
    throw Error(path + ": " + name + " ends at " + std::to_string(offsets.back()) + ", but " + total_name +
                " has " + std::to_string(total) + " entries");
}

// ---------------------------------------------------------------- writing

void write_string_attr(hid_t obj, const std::string& name, const std::string& value) {
  Handle type = vlen_string_type(H5T_CSET_UTF8);
  Handle space = dataspace(H5_CHECK(H5Screate(H5S_SCALAR)));
  Handle a = attribute(H5_CHECK(H5Acreate2(obj, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT)));
  const char* p = value.c_str();
  H5_CHECK(H5Awrite(a.get(), type.get(), &p));
}

void write_int_attr(hid_t obj, const std::string& name, int64_t value) {
  Handle space = dataspace(H5_CHECK(H5Screate(H5S_SCALAR)));
  Handle a = attribute(H5_CHECK(H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT)));
  H5_CHECK(H5Awrite(a.get(), H5T_NATIVE_INT64, &value));
}

namespace {
void write_1d(hid_t loc, const std::string& name, hid_t file_type, hid_t mem_type, size_t n, const void* data) {
  hsize_t dims[1] = {n};
  Handle space = dataspace(H5_CHECK(H5Screate_simple(1, dims, nullptr)));
  Handle d = dataset(H5_CHECK(H5Dcreate2(loc, name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)));
  if (n > 0) H5_CHECK(H5Dwrite(d.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
}
}  // namespace

void write_int64(hid_t loc, const std::string& name, const std::vector<int64_t>& v) {
  write_1d(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, v.size(), v.data());
}
void write_int32(hid_t loc, const std::string& name, const std::vector<int32_t>& v) {
  write_1d(loc, name, H5T_STD_I32LE, H5T_NATIVE_INT32, v.size(), v.data());
}
void write_float32(hid_t loc, const std::string& name, const std::vector<float>& v) {
  write_1d(loc, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, v.size(), v.data());
}
void write_float64(hid_t loc, const std::string& name, const std::vector<double>& v) {
  write_1d(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, v.size(), v.data());
}
void write_strings(hid_t loc, const std::string& name, const std::vector<std::string>& v) {
  Handle type = vlen_string_type(H5T_CSET_UTF8);
  std::vector<const char*> ptrs(v.size());
  for (size_t i = 0; i < v.size(); ++i) ptrs[i] = v[i].c_str();
  write_1d(loc, name, type.get(), type.get(), v.size(), ptrs.data());
}


void write_fixed_string_attr(hid_t obj, const std::string& name, const std::string& value) {
  const size_t width = std::max<size_t>(value.size(), 1);
  Handle type = fixed_string_type(width, H5T_CSET_UTF8);
  Handle space = dataspace(H5_CHECK(H5Screate(H5S_SCALAR)));
  Handle a = attribute(H5_CHECK(H5Acreate2(obj, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT)));
  std::string buf = value;
  buf.resize(width, '\0');
  H5_CHECK(H5Awrite(a.get(), type.get(), buf.data()));
}

void write_fixed_strings(hid_t loc, const std::string& name, const std::vector<std::string>& v) {
  size_t width = 1;
  for (const auto& s : v) width = std::max(width, s.size());
  Handle type = fixed_string_type(width, H5T_CSET_UTF8);
  hsize_t dims[1] = {v.size()};
  Handle fspace = dataspace(H5_CHECK(H5Screate_simple(1, dims, nullptr)));
  Handle d = dataset(H5_CHECK(H5Dcreate2(loc, name.c_str(), type.get(), fspace.get(), H5P_DEFAULT, H5P_DEFAULT,
                                         H5P_DEFAULT)));
  // In blocks: one long id would otherwise make the buffer D times its width.
  const size_t rows_per_block = std::max<size_t>(1, kStringBlockBytes / width);
  std::vector<char> buf;
  for (size_t first = 0; first < v.size(); first += rows_per_block) {
    const size_t rows = std::min(rows_per_block, v.size() - first);
    buf.assign(rows * width, '\0');
    for (size_t i = 0; i < rows; ++i) std::copy(v[first + i].begin(), v[first + i].end(), buf.begin() + i * width);
    hsize_t start[1] = {first}, count[1] = {rows};
    H5_CHECK(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr));
    Handle mspace = dataspace(H5_CHECK(H5Screate_simple(1, count, nullptr)));
    H5_CHECK(H5Dwrite(d.get(), type.get(), mspace.get(), fspace.get(), H5P_DEFAULT, buf.data()));
  }
}

}  // namespace ringinfer::h5
