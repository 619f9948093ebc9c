// Agreement between ranks (ringinfer/comm.h): small host collectives that let every rank
// act on the same value, or fail with the same Error.
#include <cstdint>
#include <string>

#include "ringinfer/comm.h"
#include "ringinfer/error.h"

namespace ringinfer {

Int32Range range_over_ranks(Comm& comm, int32_t value) {
  RI_CHECK(value != INT32_MIN, "range_over_ranks: INT32_MIN cannot be negated");
  const int32_t send[2] = {value, -value};
  int32_t recv[2] = {0, 0};
  comm.all_reduce(send, recv, 2, CommDtype::int32, ReduceOp::max, Stream{});
  return Int32Range{-recv[1], recv[0]};
}

std::string agree_on_root(Comm& comm, const std::function<std::string()>& compute) {
  int64_t head[2] = {0, 0};  // {1 if compute threw an Error, length of the text}
  std::string text;
  if (comm.rank() == 0) {
    try {
      text = compute();
    } catch (const Error& e) {
      text = e.what();
      head[0] = 1;
    }
    head[1] = static_cast<int64_t>(text.size());
  }
  comm.broadcast(head, 2, CommDtype::int64, 0, Stream{});
  text.resize(static_cast<size_t>(head[1]));
  if (head[1] > 0) comm.broadcast(text.data(), text.size(), CommDtype::uint8, 0, Stream{});
  if (head[0] != 0) throw Error(text);
  return text;
}

}  // namespace ringinfer
