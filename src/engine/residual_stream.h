#pragma once
// The residual stream x (n, hidden) fp32 of the document being prefilled (DESIGN §3).
// Private to engine/.
//   on the backend  x is one backend buffer; a pass hands out views of its rows.
//   offloaded       (--offload-residual) x lives in host memory between layers (pinned on
//                   CUDA) and a pass streams it through two chunk buffers on the backend:
//                   while the compute stream works on one chunk, the copy stream brings the
//                   next one in and takes the previous one back (double buffering, ordered
//                   by events, no host wait). At 1M+ tokens a layer's attention takes
//                   seconds and the copies tens of ms, so x's S/N x hidden x 4 bytes leave
//                   the device for nothing but two chunks of it.
// Both give bitwise the same results: the same ops run on the same values, only the
// memory holding the rows differs.
#include <cstdint>
#include <functional>

#include "ringinfer/backend.h"

namespace ringinfer::engine {

class ResidualStream {
 public:
  // How a pass uses the rows it is handed: write (every row is overwritten: not loaded),
  // read (not changed: not written back) or update (loaded and written back).
  enum class Access { write, read, update };

  explicit ResidualStream(Backend& be) : be_(be) {}
  // Room for n rows of `hidden`, uninitialised; passes visit at most max_chunk rows at once.
  void allocate(int64_t n, int64_t hidden, int64_t max_chunk, bool offload);
  void release();  // frees x (and the chunk buffers)
  int64_t rows() const { return n_; }
  bool offloaded() const { return offload_; }

  // Calls fn(begin, x_rows) for the chunks [begin, begin + count) of rows [first, last), in
  // order, count <= chunk <= max_chunk; x_rows is a backend view of those rows, valid
  // during the call.
  void pass(int64_t first, int64_t last, int64_t chunk, Access access,
            const std::function<void(int64_t begin, const Tensor& x_rows)>& fn);
  // A backend view of row i, valid until the next pass or row() (the row sampled after prefill).
  Tensor row(int64_t i);

 private:
  Backend& be_;
  bool offload_ = false;
  int64_t n_ = 0;
  Tensor x_;                          // (n, hidden) on the backend, when not offloaded
  Tensor host_;                       // (n, hidden) in host memory (alloc_host), when offloaded
  Tensor buf_[2];                     // (min(max_chunk, n), hidden) on the backend, when offloaded
};

}  // namespace ringinfer::engine
