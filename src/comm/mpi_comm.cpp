// MpiComm: the Comm interface over MPI on host buffers (see comm.h).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comm/comm_checks.h"
#include "ringinfer/comm.h"
#include "ringinfer/error.h"
#include "ringinfer/log.h"

namespace ringinfer {
namespace {

using comm_detail::chunk_elements;
using comm_detail::kMpiTag;

MPI_Datatype mpi_type(CommDtype dtype) {
  switch (dtype) {
    case CommDtype::float32: return MPI_FLOAT;
    case CommDtype::float64: return MPI_DOUBLE;
    case CommDtype::int32: return MPI_INT32_T;
    case CommDtype::int64: return MPI_INT64_T;
    case CommDtype::uint8: return MPI_UINT8_T;
    case CommDtype::bfloat16: break;
  }
  return MPI_DATATYPE_NULL;  // unreachable after check_reducible
}

// Frees a derived datatype on every path out of the scope that made it.
struct TypeGuard {
  MPI_Datatype type = MPI_DATATYPE_NULL;
  ~TypeGuard() {
    if (type != MPI_DATATYPE_NULL) MPI_Type_free(&type);
  }
};

// Polls until every request completes (true) or the deadline passes (false). MPI
// progresses nonblocking operations only inside MPI calls, hence the Testall loop.
bool poll_all(int n, MPI_Request* requests, MPI_Status* statuses, const comm_detail::Deadline& deadline) {
  comm_detail::Backoff backoff;
  for (;;) {
    int flag = 0;
    MPI_CHECK(MPI_Testall(n, requests, &flag, statuses));
    if (flag) return true;
    if (deadline.passed()) return false;
    backoff.pause();
  }
}

// The requests of one send_recv. Receives are checked for their full size on
// completion: a peer that sent less would otherwise leave stale bytes unnoticed.
class MpiPending final : public PendingComm {
 public:
  MpiPending() = default;
  MpiPending(std::vector<MPI_Request> requests, std::vector<int> expected_bytes, int group_size,
             std::shared_ptr<bool> broken)
      : requests_(std::move(requests)),
        statuses_(requests_.size()),
        expected_bytes_(std::move(expected_bytes)),
        group_size_(group_size),
        broken_(std::move(broken)) {
    done_ = requests_.empty();
  }

  ~MpiPending() override {
    // While an exception unwinds the peer may be gone: waiting could hang, and the
    // error path aborts the job anyway (run_guarded).
    if (done_ || std::uncaught_exceptions() > 0) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    const comm_detail::Deadline deadline;
    std::string problem;
    try {
      if (poll_all(int(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE, deadline)) return;
      problem = message(deadline.seconds());
    } catch (const Error& e) {
      problem = e.what();
    }
    // A destructor cannot throw, and returning would let the caller free buffers MPI may
    // still write: end the job, as run_guarded would.
    log::error(problem);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }

  bool test() override {
    if (done_) return true;
    int flag = 0;
    MPI_CHECK(MPI_Testall(int(requests_.size()), requests_.data(), &flag, statuses_.data()));
    if (flag) finish();
    return done_;
  }

  void wait(Stream) override {
    if (done_) return;
    RI_CHECK(!*broken_, "mpi send_recv: an earlier operation of this communicator timed out (--comm-timeout); it "
                        "cannot be used again");
    const comm_detail::Deadline deadline;
    if (!poll_all(int(requests_.size()), requests_.data(), statuses_.data(), deadline)) {
      // Withdraw what can be withdrawn, so a peer that wakes up later cannot write into
      // buffers the caller frees while the error unwinds.
      for (auto& r : requests_)
        if (r != MPI_REQUEST_NULL) {
          MPI_Cancel(&r);
          MPI_Request_free(&r);
        }
      done_ = true;
      *broken_ = true;
      throw Error(message(deadline.seconds()));
    }
    finish();
  }

 private:
  std::string message(double seconds) const {
    return "mpi send_recv over " + std::to_string(group_size_) + " ranks did not complete within " +
           comm_detail::format_seconds(seconds) + " s (--comm-timeout): a rank has died or hangs";
  }

  // Receives come first in requests_ (one per entry of expected_bytes_).
  void finish() {
    done_ = true;
    for (size_t i = 0; i < expected_bytes_.size(); ++i) {
      int got = 0;
      MPI_CHECK(MPI_Get_count(&statuses_[i], MPI_BYTE, &got));
      RI_CHECK(got == expected_bytes_[i], "mpi send_recv: received " + std::to_string(got) + " bytes of chunk " +
                                              std::to_string(i) + " where " + std::to_string(expected_bytes_[i]) +
                                              " were expected (ranks disagree on the count)");
    }
  }

  std::vector<MPI_Request> requests_;
  std::vector<MPI_Status> statuses_;  // one per request, filled on completion
  std::vector<int> expected_bytes_;
  int group_size_ = 1;
  std::shared_ptr<bool> broken_ = std::make_shared<bool>(false);  // the communicator's
  bool done_ = true;
};

// The process-wide timeout; atomic because tests set it while no operation runs, but a
// reader on another thread must never see a torn value.
std::atomic<double> g_comm_timeout{kDefaultCommTimeoutSeconds};

}  // namespace

void set_comm_timeout(double seconds) {
  RI_CHECK(std::isfinite(seconds) && seconds > 0,
           "--comm-timeout must be a positive number of seconds, not " + comm_detail::format_seconds(seconds));
  g_comm_timeout.store(seconds);
}

double comm_timeout() { return g_comm_timeout.load(); }

MpiComm::MpiComm(MPI_Comm comm, size_t max_message_bytes) : max_message_bytes_(max_message_bytes) {
  RI_CHECK(comm != MPI_COMM_NULL, "MpiComm: MPI_COMM_NULL given (this rank is not in the group)");
  RI_CHECK(max_message_bytes >= 8, "MpiComm: max_message_bytes must be at least 8 (got " +
                                       std::to_string(max_message_bytes) + ")");
  MPI_CHECK(MPI_Comm_dup(comm, &comm_));
  MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  MPI_CHECK(MPI_Comm_size(comm_, &size_));
}

MpiComm::~MpiComm() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiComm::check_usable(const char* call) const {
  RI_CHECK(!*broken_, std::string("mpi ") + call +
                          ": an earlier operation of this communicator timed out (--comm-timeout); it cannot be "
                          "used again");
}

void MpiComm::wait_collective(const char* call, MPI_Request* request, const comm_detail::Deadline& deadline) {
  if (poll_all(1, request, MPI_STATUSES_IGNORE, deadline)) return;
  // MPI cannot cancel or free a pending collective: the request is left behind, and
  // with it this communicator.
  *broken_ = true;
  throw Error(comm_detail::timeout_message(*this, call, deadline.seconds()));
}

std::unique_ptr<PendingComm> MpiComm::send_recv(const void* send_buf, int dest, void* recv_buf, int source,
                                                size_t count, CommDtype dtype, Stream) {
  check_usable("send_recv");
  comm_detail::check_send_recv(*this, send_buf, dest, recv_buf, source, count, dtype);
  const size_t bytes = count * dtype_size(dtype);

  if (dest == rank_ && source == rank_) {
    if (bytes) std::memcpy(recv_buf, send_buf, bytes);
    return std::make_unique<MpiPending>();
  }
  const size_t per = chunk_elements(1, max_message_bytes_);
  const size_t chunks = (bytes + per - 1) / per;
  std::vector<MPI_Request> requests(2 * chunks, MPI_REQUEST_NULL);
  std::vector<int> expected(chunks);
  // Receives first, so a peer's send finds its receive posted (no unexpected-message copy).
  auto* in = static_cast<char*>(recv_buf);
  auto* out = static_cast<const char*>(send_buf);
  try {
    for (size_t c = 0; c < chunks; ++c) {
      const size_t off = c * per;
      expected[c] = int(std::min(per, bytes - off));
      MPI_CHECK(MPI_Irecv(in + off, expected[c], MPI_BYTE, source, kMpiTag, comm_, &requests[c]));
    }
    for (size_t c = 0; c < chunks; ++c) {
      const size_t off = c * per;
      MPI_CHECK(MPI_Isend(out + off, expected[c], MPI_BYTE, dest, kMpiTag, comm_, &requests[chunks + c]));
    }
  } catch (...) {
    for (auto& r : requests)
      if (r != MPI_REQUEST_NULL) MPI_Request_free(&r);
    throw;
  }
  return std::make_unique<MpiPending>(std::move(requests), std::move(expected), size_, broken_);
}

void MpiComm::all_gather(const void* send_buf, void* recv_buf, size_t count, CommDtype dtype, Stream) {
  check_usable("all_gather");
  const bool in_place = comm_detail::check_all_gather(*this, send_buf, recv_buf, count, dtype);
  const size_t bytes = count * dtype_size(dtype);
  auto* recv = static_cast<char*>(recv_buf);

  const comm_detail::Deadline deadline;
  const size_t per = chunk_elements(1, max_message_bytes_);
  for (size_t off = 0; off < bytes; off += per) {
    const int n = int(std::min(per, bytes - off));
    const void* send = in_place ? MPI_IN_PLACE : static_cast<const char*>(send_buf) + off;
    MPI_Request request = MPI_REQUEST_NULL;
    if (size_t(n) == bytes) {
      MPI_CHECK(MPI_Iallgather(send, n, MPI_BYTE, recv, n, MPI_BYTE, comm_, &request));
      wait_collective("all_gather", &request, deadline);
      continue;
    }
    // One piece of every rank's block: n bytes, the blocks `bytes` apart in recv_buf.
    TypeGuard piece, strided;
    MPI_CHECK(MPI_Type_contiguous(n, MPI_BYTE, &piece.type));
    MPI_CHECK(MPI_Type_create_resized(piece.type, 0, MPI_Aint(bytes), &strided.type));
    MPI_CHECK(MPI_Type_commit(&strided.type));
    MPI_CHECK(MPI_Iallgather(send, n, MPI_BYTE, recv + off, 1, strided.type, comm_, &request));
    wait_collective("all_gather", &request, deadline);
  }
}

void MpiComm::all_reduce(const void* send_buf, void* recv_buf, size_t count, CommDtype dtype, ReduceOp op,
                         Stream) {
  check_usable("all_reduce");
  const bool in_place = comm_detail::check_all_reduce(*this, send_buf, recv_buf, count, dtype);
  const size_t es = dtype_size(dtype);

  const size_t per = chunk_elements(es, max_message_bytes_);
  const MPI_Op mop = op == ReduceOp::sum ? MPI_SUM : MPI_MAX;
  const comm_detail::Deadline deadline;
  for (size_t off = 0; off < count; off += per) {
    const int n = int(std::min(per, count - off));
    const void* send = in_place ? MPI_IN_PLACE : static_cast<const char*>(send_buf) + off * es;
    MPI_Request request = MPI_REQUEST_NULL;
    MPI_CHECK(
        MPI_Iallreduce(send, static_cast<char*>(recv_buf) + off * es, n, mpi_type(dtype), mop, comm_, &request));
    wait_collective("all_reduce", &request, deadline);
  }
}

void MpiComm::broadcast(void* buf, size_t count, CommDtype dtype, int root, Stream) {
  check_usable("broadcast");
  comm_detail::check_broadcast(*this, buf, count, root);
  const size_t bytes = count * dtype_size(dtype);
  const comm_detail::Deadline deadline;
  const size_t per = chunk_elements(1, max_message_bytes_);
  for (size_t off = 0; off < bytes; off += per) {
    const int n = int(std::min(per, bytes - off));
    MPI_Request request = MPI_REQUEST_NULL;
    MPI_CHECK(MPI_Ibcast(static_cast<char*>(buf) + off, n, MPI_BYTE, root, comm_, &request));
    wait_collective("broadcast", &request, deadline);
  }
}

void MpiComm::barrier(Stream) {
  check_usable("barrier");
  const comm_detail::Deadline deadline;
  MPI_Request request = MPI_REQUEST_NULL;
  MPI_CHECK(MPI_Ibarrier(comm_, &request));
  wait_collective("barrier", &request, deadline);
}

// ---------------------------------------------------------------- NCCL stub
// The real factory is in cuda/nccl_comm.cpp, which compiles only in CUDA builds.
#ifndef RINGINFER_HAVE_CUDA
std::unique_ptr<Comm> make_nccl_comm(MPI_Comm) {
  throw Error("NCCL communicator requested but this ringinfer was built without CUDA; use --device cpu");
}
#endif

}  // namespace ringinfer
