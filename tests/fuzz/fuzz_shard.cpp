// libFuzzer harness: input-shard validation, structure-aware. The input is decoded into
// the CONTENTS of one to three shards (attributes, datasets, their types, shapes, layouts
// and values), which are written with libhdf5 itself, so the container is always valid
// HDF5 and only our checks are under test: open_documents, then every document read
// whole and as stripes. Corrupt containers, which crash libhdf5 1.10 itself, are kept
// away from the ranks by a validation child process (ringinfer/shard_isolation.h) and are
// not fuzzed here (tests/fuzz/libhdf5-crashes/README.md).
//
// Input format: bytes read in order; once the input is exhausted every read gives 0, and
// 0 always picks the valid choice, so the empty input is one valid, empty shard.
//   u8 shards-1 (mod 3)   u8 vocab-mode: 0 -1, 1 the shards' vocab, 2 vocab+1, 3 u16 value
//   u8 libver: odd = latest file format (v2 superblock, new object headers)
//   per shard:
//     u8 format: 0 "ringinfer.tokens", 1 bytes(u8 len), 2 int, 3 vlen string, 4 missing,
//                5 array of 2 strings, 6 empty string
//     u8 version: 0 2, 1 u32 value, 2 missing, 3 string "2", 4 float 2.0, 5 int8, 6 array [2]
//     u8 vocab_size: 0 1000, 1 i64 value, 2 missing, 3 string, 4 float, 5 uint64 2^63+1, 6 u16 value
//     u8 tokenizer: 0 "tok", 1 bytes(u16 len, at most 4096), 2 vlen, 3 missing, 4 int
//     u8 docs (mod 17); per doc: u16 length (mod 4096)
//     u8 tokens-mode: 0 random in [0,vocab) from u32 seed, 1 as 0 plus up to 4 edits
//                     (u16 index, i32 value), 2 each token an i32 of the input
//     u8 tokens dataset: 0 int32 LE, 1 int32 BE, 2 int64, 3 int16, 4 uint32, 5 float32,
//                        6 missing, 7 a group, 8 rank 2 [1,T], 9 scalar, 10 string type
//     u8 tokens layout: 0 chunked (u16 chunk, at least T/256), 1 contiguous, 2 compact, 3 chunked+deflate,
//                       4 chunked+shuffle+fletcher32, 5 chunked extendible; bit 7: no data written
//     u8 ids-mode: 0 "s<shard>d<i>", 1 each u8 len + bytes (NULs, empty, dups possible),
//                  2 all equal, 3 one id of u16*4 bytes ('x'), others default
//     u8 ids dataset: 0 fixed (longest), 1 vlen, 2 int, 3 missing, 4 a group, 5 fixed of
//                     width u16, 6 rank 2 [D,1], 7 one entry too many, 8 one too few
//     u8 ids pad/cset: bits 0-1 nullterm/nullpad/spacepad, bit 2 UTF-8
//     u8 offsets-mode: 0 computed, 1 computed + up to 4 edits (u16 index, i64 value),
//                      2 missing, 3 int32, 4 float64, 5 uint64, 6 rank 2, 7 last one dropped
//     u8 offsets layout: as tokens layout
//     u8 extras: bit 0 extra dataset, 1 group with a dataset, 2 extra root attribute,
//                3 attribute on /tokens, 4 a soft link /tokens2 -> /tokens
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "io/h5_util.h"
#include "ringinfer/error.h"
#include "ringinfer/shard.h"

using namespace ringinfer;
using h5::Handle;

namespace {

// Sequential reader; 0 past the end.
struct Input {
  const uint8_t* p;
  size_t n, i = 0;
  uint8_t u8() { return i < n ? p[i++] : 0; }
  uint16_t u16() { return static_cast<uint16_t>(u8() | (u8() << 8)); }
  uint32_t u32() { return u16() | (static_cast<uint32_t>(u16()) << 16); }
  uint64_t u64() { return u32() | (static_cast<uint64_t>(u32()) << 32); }
  std::string bytes(size_t len) {
    len = std::min(len, n - i);
    std::string s(reinterpret_cast<const char*>(p + i), len);
    i += len;
    return s;
  }
};

struct Layout {
  int kind = 0;          // see the file comment
  uint32_t chunk = 0;    // chunk length (kinds 0, 3, 4, 5)
  bool no_data = false;  // create the dataset, write nothing
};

Layout read_layout(Input& in) {
  Layout l;
  const uint8_t b = in.u8();
  l.kind = (b & 0x7f) % 6;
  l.no_data = b & 0x80;
  if (l.kind != 1 && l.kind != 2) l.chunk = in.u16();
  return l;
}

// Creates dataset `name` of file type `ftype` and shape dims (rank 0..2), writes data
// (mem type `mtype`) unless told not to. False when libhdf5 refuses the combination.
bool write_dataset(hid_t loc, const char* name, hid_t ftype, hid_t mtype, const std::vector<hsize_t>& dims,
                   const void* data, const Layout& lay) {
  const int rank = static_cast<int>(dims.size());
  hsize_t total = 1;
  for (hsize_t d : dims) total *= d;
  std::vector<hsize_t> maxdims(dims);
  const bool chunked = rank > 0 && lay.kind != 1 && lay.kind != 2;
  if (chunked && lay.kind == 5) std::fill(maxdims.begin(), maxdims.end(), H5S_UNLIMITED);
  Handle space(rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, dims.data(), maxdims.data()), H5Sclose);
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  if (!space.valid() || !dcpl.valid()) return false;
  if (chunked) {
    std::vector<hsize_t> chunk(dims.size());
    // At most ~256 chunks: thousands of one-element chunks teach nothing new and cost a
    // B-tree node each, which made an execution take a second.
    const hsize_t floor = std::max<hsize_t>(1, (total + 255) / 256);
    for (size_t k = 0; k < dims.size(); ++k) {
      hsize_t c = std::max<hsize_t>(floor, lay.chunk);
      if (maxdims[k] != H5S_UNLIMITED) c = std::min(c, std::max<hsize_t>(1, dims[k]));
      chunk[k] = k + 1 == dims.size() ? c : 1;
    }
    if (H5Pset_chunk(dcpl.get(), rank, chunk.data()) < 0) return false;
    if (lay.kind == 3 && H5Pset_deflate(dcpl.get(), 1) < 0) return false;
    if (lay.kind == 4 && (H5Pset_shuffle(dcpl.get()) < 0 || H5Pset_fletcher32(dcpl.get()) < 0)) return false;
  } else if (lay.kind == 2) {
    if (H5Pset_layout(dcpl.get(), H5D_COMPACT) < 0) return false;
  }
  Handle ds(H5Dcreate2(loc, name, ftype, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), H5Dclose);
  if (!ds.valid()) return false;
  if (lay.no_data || total == 0) return true;
  return H5Dwrite(ds.get(), mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0;
}

bool write_attr(hid_t obj, const char* name, hid_t ftype, hid_t mtype, const void* data, hsize_t n = 0) {
  Handle space(n ? H5Screate_simple(1, &n, nullptr) : H5Screate(H5S_SCALAR), H5Sclose);
  Handle a(H5Acreate2(obj, name, ftype, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  return a.valid() && H5Awrite(a.get(), mtype, data) >= 0;
}

Handle fixed_string_type(size_t width) {
  Handle t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t.get(), std::max<size_t>(1, width));
  return t;
}

bool string_attr(hid_t obj, const char* name, const std::string& v) {
  Handle t = fixed_string_type(v.size());
  std::string buf = v;
  buf.resize(std::max<size_t>(1, v.size()), '\0');
  return write_attr(obj, name, t.get(), t.get(), buf.data());
}

bool vlen_string_attr(hid_t obj, const char* name, const std::string& v) {
  Handle t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t.get(), H5T_VARIABLE);
  const char* p = v.c_str();
  return write_attr(obj, name, t.get(), t.get(), &p);
}

bool int_attr(hid_t obj, const char* name, hid_t ftype, int64_t v) {
  return write_attr(obj, name, ftype, H5T_NATIVE_INT64, &v);
}

// One shard's attributes and datasets from the input. False: libhdf5 refused what the
// input asked for (not a finding; the input is skipped).
bool write_shard_from(Input& in, hid_t f, int shard, int64_t* vocab_out) {
  bool ok = true;
  // ---- attributes
  switch (in.u8() % 7) {
    case 0: ok &= string_attr(f, "format", kShardFormat); break;
    case 1: ok &= string_attr(f, "format", in.bytes(in.u8())); break;
    case 2: ok &= int_attr(f, "format", H5T_STD_I64LE, 7); break;
    case 3: ok &= vlen_string_attr(f, "format", kShardFormat); break;
    case 4: break;
    case 5: {
      Handle t = fixed_string_type(16);
      char two[32] = "ringinfer.tokens";
      std::memcpy(two + 16, "ringinfer.tokens", 16);
      ok &= write_attr(f, "format", t.get(), t.get(), two, 2);
      break;
    }
    case 6: ok &= string_attr(f, "format", ""); break;
  }
  switch (in.u8() % 7) {
    case 0: ok &= int_attr(f, "version", H5T_STD_I64LE, kShardVersion); break;
    case 1: ok &= int_attr(f, "version", H5T_STD_I64LE, static_cast<int32_t>(in.u32())); break;
    case 2: break;
    case 3: ok &= string_attr(f, "version", "2"); break;
    case 4: { double v = 2.0; ok &= write_attr(f, "version", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v); break; }
    case 5: ok &= int_attr(f, "version", H5T_STD_I8LE, kShardVersion); break;
    case 6: { int64_t v[2] = {2, 2}; ok &= write_attr(f, "version", H5T_STD_I64LE, H5T_NATIVE_INT64, v, 2); break; }
  }
  int64_t vocab = 1000;
  switch (in.u8() % 7) {
    case 0: ok &= int_attr(f, "vocab_size", H5T_STD_I64LE, vocab); break;
    case 1: vocab = static_cast<int64_t>(in.u64()); ok &= int_attr(f, "vocab_size", H5T_STD_I64LE, vocab); break;
    case 2: break;
    case 3: ok &= string_attr(f, "vocab_size", "1000"); break;
    case 4: { double v = 1000.5; ok &= write_attr(f, "vocab_size", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v); break; }
    case 5: {
      uint64_t v = (uint64_t(1) << 63) + 1;
      ok &= write_attr(f, "vocab_size", H5T_STD_U64LE, H5T_NATIVE_UINT64, &v);
      break;
    }
    case 6: vocab = in.u16(); ok &= int_attr(f, "vocab_size", H5T_STD_I32BE, vocab); break;
  }
  *vocab_out = vocab;
  switch (in.u8() % 5) {
    case 0: ok &= string_attr(f, "tokenizer", "tok"); break;
    case 1: ok &= string_attr(f, "tokenizer", in.bytes(std::min<size_t>(in.u16(), 4096))); break;
    case 2: ok &= vlen_string_attr(f, "tokenizer", "tok"); break;
    case 3: break;
    case 4: ok &= int_attr(f, "tokenizer", H5T_STD_I32LE, 3); break;
  }
  if (!ok) return false;

  // ---- documents
  const int n_docs = in.u8() % 17;
  std::vector<int64_t> offsets{0};
  for (int d = 0; d < n_docs; ++d) offsets.push_back(offsets.back() + in.u16() % 4096);
  const int64_t T = offsets.back();
  std::vector<int64_t> tokens(static_cast<size_t>(T));
  const uint8_t tokens_mode = in.u8() % 3;
  if (tokens_mode == 2) {
    for (auto& t : tokens) t = static_cast<int32_t>(in.u32());
  } else {
    uint64_t x = in.u32() * 0x9E3779B97F4A7C15ull + 1;
    const uint64_t range = vocab > 0 ? static_cast<uint64_t>(vocab) : 1;
    for (auto& t : tokens) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      t = static_cast<int64_t>(x % range);
    }
    if (tokens_mode == 1 && T > 0)
      for (int k = in.u8() % 5; k > 0; --k) {
        const size_t at = in.u16() % static_cast<size_t>(T);
        tokens[at] = static_cast<int32_t>(in.u32());
      }
  }
  const uint8_t tokens_kind = in.u8() % 11;
  const Layout tokens_layout = read_layout(in);
  const hid_t token_types[] = {H5T_STD_I32LE, H5T_STD_I32BE, H5T_STD_I64LE, H5T_STD_I16LE, H5T_STD_U32LE,
                               H5T_IEEE_F32LE};
  const hsize_t uT = static_cast<hsize_t>(T);
  if (tokens_kind <= 5) {
    ok &= write_dataset(f, "tokens", token_types[tokens_kind], H5T_NATIVE_INT64, {uT}, tokens.data(), tokens_layout);
  } else if (tokens_kind == 7) {
    ok &= Handle(H5Gcreate2(f, "tokens", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose).valid();
  } else if (tokens_kind == 8) {
    ok &= write_dataset(f, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT64, {1, uT}, tokens.data(), tokens_layout);
  } else if (tokens_kind == 9) {
    int64_t one = T ? tokens[0] : 0;
    ok &= write_dataset(f, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT64, {}, &one, tokens_layout);
  } else if (tokens_kind == 10) {
    Handle t = fixed_string_type(4);
    Layout no_data = tokens_layout;
    no_data.no_data = true;
    ok &= write_dataset(f, "tokens", t.get(), t.get(), {uT}, nullptr, no_data);
  }

  // ---- ids
  std::vector<std::string> ids(static_cast<size_t>(n_docs));
  const uint8_t ids_mode = in.u8() % 4;
  for (int d = 0; d < n_docs; ++d) ids[d] = "s" + std::to_string(shard) + "d" + std::to_string(d);
  if (ids_mode == 1) {
    for (auto& id : ids) id = in.bytes(in.u8());
  } else if (ids_mode == 2) {
    for (auto& id : ids) id = "same";
  } else if (ids_mode == 3 && n_docs > 0) {
    ids[0] = std::string(static_cast<size_t>(in.u16()) * 4, 'x');
  }
  const uint8_t ids_kind = in.u8() % 9;
  const uint8_t pad = in.u8();
  if (ids_kind == 7) ids.push_back("extra");
  if (ids_kind == 8 && !ids.empty()) ids.pop_back();
  size_t width = 1;
  for (const auto& id : ids) width = std::max(width, id.size());
  if (ids_kind == 5) width = std::max<size_t>(1, in.u16());
  const hsize_t nD = ids.size();
  if (ids_kind == 0 || ids_kind == 5 || ids_kind == 6 || ids_kind == 7 || ids_kind == 8) {
    Handle t = fixed_string_type(width);
    H5Tset_strpad(t.get(), (pad & 3) == 0 ? H5T_STR_NULLTERM : (pad & 3) == 1 ? H5T_STR_NULLPAD : H5T_STR_SPACEPAD);
    if (pad & 4) H5Tset_cset(t.get(), H5T_CSET_UTF8);
    std::string buf(width * ids.size(), (pad & 3) == 2 ? ' ' : '\0');
    for (size_t d = 0; d < ids.size(); ++d) std::memcpy(&buf[d * width], ids[d].data(), std::min(width, ids[d].size()));
    const std::vector<hsize_t> dims = ids_kind == 6 ? std::vector<hsize_t>{nD, 1} : std::vector<hsize_t>{nD};
    ok &= write_dataset(f, "doc_ids", t.get(), t.get(), dims, buf.data(), Layout{1, 0, false});
  } else if (ids_kind == 1) {
    Handle t(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(t.get(), H5T_VARIABLE);
    std::vector<const char*> ptrs;
    for (const auto& id : ids) ptrs.push_back(id.c_str());
    ok &= write_dataset(f, "doc_ids", t.get(), t.get(), {nD}, ptrs.data(), Layout{1, 0, false});
  } else if (ids_kind == 2) {
    std::vector<int64_t> v(ids.size(), 1);
    ok &= write_dataset(f, "doc_ids", H5T_STD_I64LE, H5T_NATIVE_INT64, {nD}, v.data(), Layout{1, 0, false});
  } else if (ids_kind == 4) {
    ok &= Handle(H5Gcreate2(f, "doc_ids", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose).valid();
  }

  // ---- offsets
  const uint8_t offsets_mode = in.u8() % 8;
  const Layout offsets_layout = read_layout(in);
  if (offsets_mode == 1)
    for (int k = in.u8() % 5; k > 0; --k) {
      const size_t at = in.u16() % offsets.size();
      offsets[at] = static_cast<int64_t>(in.u64());
    }
  if (offsets_mode == 7) offsets.pop_back();
  const hsize_t nO = offsets.size();
  if (offsets_mode != 2) {
    const hid_t offsets_types[] = {H5T_STD_I64LE, H5T_STD_I64LE, 0, H5T_STD_I32LE, H5T_IEEE_F64LE, H5T_STD_U64LE,
                                   H5T_STD_I64LE, H5T_STD_I64LE};
    const std::vector<hsize_t> dims = offsets_mode == 6 ? std::vector<hsize_t>{nO, 1} : std::vector<hsize_t>{nO};
    ok &= write_dataset(f, "doc_offsets", offsets_types[offsets_mode], H5T_NATIVE_INT64, dims, offsets.data(),
                        offsets_layout);
  }

  // ---- extras
  const uint8_t extras = in.u8();
  if (extras & 1) {
    int64_t v[3] = {1, 2, 3};
    ok &= write_dataset(f, "extra", H5T_STD_I64LE, H5T_NATIVE_INT64, {3}, v, Layout{1, 0, false});
  }
  if (extras & 2) {
    Handle g(H5Gcreate2(f, "group", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
    int64_t v = 4;
    ok &= g.valid() && write_dataset(g.get(), "inner", H5T_STD_I64LE, H5T_NATIVE_INT64, {1}, &v, Layout{1, 0, false});
  }
  if (extras & 4) ok &= string_attr(f, "comment", "extra attribute");
  if ((extras & 8) && tokens_kind <= 5) {
    Handle d(H5Dopen2(f, "tokens", H5P_DEFAULT), H5Dclose);
    ok &= d.valid() && string_attr(d.get(), "units", "ids");
  }
  if ((extras & 16)) ok &= H5Lcreate_soft("/tokens", f, "tokens2", H5P_DEFAULT, H5P_DEFAULT) >= 0;
  return ok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool init = [] {
    h5::init();  // silences libhdf5's error printing (the writer fails on purpose sometimes)
    // Every file open allocates a metadata cache of ~1 MB; past libhdf5's default free-list
    // limits it goes back to the allocator, and under ASan (quarantine) every execution
    // then faults in fresh pages. Unlimited lists keep reusing the same blocks.
    H5set_free_list_limits(-1, -1, -1, -1, -1, -1);
    return true;
  }();
  (void)init;
  Input in{data, size};
  const int n_shards = 1 + in.u8() % 3;
  const uint8_t vocab_mode = in.u8() % 4;
  const bool latest = in.u8() & 1;

  std::vector<std::string> paths;
  int64_t vocab0 = 1000;
  bool written = true;
  for (int s = 0; s < n_shards && written; ++s) {
    const std::string path = fuzz::write_temp(("shard" + std::to_string(s)).c_str(), ".h5", nullptr, 0);
    paths.push_back(path);
    // The core driver builds the file in memory and writes it out once on close.
    Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    H5Pset_fapl_core(fapl.get(), 1 << 16, 1);
    if (latest) H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    Handle f(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose);
    int64_t vocab = 0;
    written = f.valid() && write_shard_from(in, f.get(), s, &vocab);
    if (s == 0) vocab0 = vocab;
  }
  H5Eclear2(H5E_DEFAULT);
  if (!written) return 0;

  const int64_t vocab = vocab_mode == 0   ? -1
                       : vocab_mode == 1 ? vocab0
                       : vocab_mode == 2 ? vocab0 + (vocab0 < INT64_MAX)
                                         : in.u16();
  try {
    DocumentSet docs = open_documents(paths, vocab);
    for (const DocInfo& d : docs.documents()) {
      if (d.length > fuzz::kMaxElements) continue;
      try {
        (void)docs.read_document(d);
        (void)docs.read_stripe(d, 1, 3);
        (void)docs.read_stripes(d, {0, 1}, 2);
      } catch (const Error&) {
      }
    }
  } catch (const Error&) {
  }
  // libhdf5's free lists only grow; give them back now and then (RSS stays flat).
  static unsigned runs = 0;
  if (++runs % 256 == 0) H5garbage_collect();
  return 0;
}
