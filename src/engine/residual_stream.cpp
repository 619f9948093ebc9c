#include "engine/residual_stream.h"

#include <algorithm>

#include "ringinfer/error.h"

namespace ringinfer::engine {

void ResidualStream::allocate(int64_t n, int64_t hidden, int64_t max_chunk, bool offload) {
  release();
  offload_ = offload;
  n_ = n;
  if (!offload) {
    x_ = be_.alloc(n, hidden, DType::f32);
    return;
  }
  host_ = be_.alloc_host(n, hidden, DType::f32);
  for (Tensor& b : buf_) b = be_.alloc(std::min(max_chunk, n), hidden, DType::f32);
}

void ResidualStream::release() {
  // Freeing pinned memory (cudaFreeHost) waits for the device, so no copy still reads it.
  x_ = host_ = buf_[0] = buf_[1] = Tensor();
  n_ = 0;
}

void ResidualStream::pass(int64_t first, int64_t last, int64_t chunk, Access access,
                          const std::function<void(int64_t, const Tensor&)>& fn) {
  RI_CHECK(first >= 0 && first <= last && last <= n_ && chunk > 0, "residual stream: bad pass");
  if (!offload_) {
    for (int64_t c = first; c < last; c += chunk) fn(c, x_.rows(c, std::min(chunk, last - c)));
    return;
  }
  RI_CHECK(std::min(chunk, last - first) <= buf_[0].rows(), "residual stream: a chunk larger than its buffers");
  const Stream compute = be_.stream(), copies = be_.copy_stream();
  // done[b]: the compute that last used buf_[b] has run. At the start, everything queued
  // on the compute stream so far (earlier passes, users of a row() view).
  std::unique_ptr<Event> done[2], loaded[2];
  done[0] = be_.record(compute);
  done[1] = be_.record(compute);
  // Chunk k lives in buf_[k % 2]. Its load waits for done[b]; the write-back of the chunk
  // before it in that buffer was queued earlier on the copy stream, so it runs first.
  auto load = [&](int64_t c, int b) {
    be_.wait(copies, *done[b]);
    const int64_t cn = std::min(chunk, last - c);
    if (access != Access::write) be_.copy_async(host_.rows(c, cn), buf_[b].rows(0, cn), copies);
    loaded[b] = be_.record(copies);
  };
  int b = 0;
  if (first < last) load(first, b);
  for (int64_t c = first; c < last; c += chunk, b ^= 1) {
    const int64_t cn = std::min(chunk, last - c);
    if (c + chunk < last) load(c + chunk, b ^ 1);  // overlaps fn on this chunk
    be_.wait(compute, *loaded[b]);
    const Tensor rows = buf_[b].rows(0, cn);
    fn(c, rows);
    done[b] = be_.record(compute);
    if (access != Access::read) {  // overlaps fn on the next chunk
      be_.wait(copies, *done[b]);
      be_.copy_async(rows, host_.rows(c, cn), copies);
    }
  }
}

Tensor ResidualStream::row(int64_t i) {
  Tensor out;
  pass(i, i + 1, 1, Access::read, [&](int64_t, const Tensor& r) { out = r; });
  return out;
}

}  // namespace ringinfer::engine
