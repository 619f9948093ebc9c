// libFuzzer harness: input-shard validation (open_documents over a temporary HDF5 file),
// then reading every document whole and as stripes. HDF5 itself parses the container;
// crashes inside libhdf5 are reported separately from crashes in our reader.
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "ringinfer/error.h"
#include "ringinfer/shard.h"

using namespace ringinfer;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_temp("shard", ".h5", data, size);
  try {
    DocumentSet docs = open_documents({path}, size > 0 && (data[0] & 1) ? 1000 : -1);
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
  return 0;
}
