// NcclComm: the Comm interface over NCCL on device buffers (see comm.h). Every call
// enqueues on the given stream and returns; a ring exchange's pending handle is a CUDA
// event recorded after the send/receive group. Host waits poll with comm_timeout().
#include <cuda_runtime.h>
#include <nccl.h>

#include <exception>
#include <string>

#include "comm/comm_checks.h"
#include "ringinfer/comm.h"
#include "ringinfer/cuda_check.h"
#include "ringinfer/error.h"
#include "ringinfer/log.h"
#include "runtime/cuda/device_wait_cuda.h"

namespace ringinfer {
namespace {

cudaStream_t cuda_stream(Stream s) { return static_cast<cudaStream_t>(s.native); }

ncclDataType_t nccl_type(CommDtype dtype) {
  switch (dtype) {
    case CommDtype::float32: return ncclFloat32;
    case CommDtype::float64: return ncclFloat64;
    case CommDtype::int32: return ncclInt32;
    case CommDtype::int64: return ncclInt64;
    case CommDtype::uint8: return ncclUint8;
    case CommDtype::bfloat16: return ncclBfloat16;
  }
  return ncclUint8;
}

class NcclComm;

// A ring exchange in flight: a CUDA event recorded after the send/receive group.
class NcclPending final : public PendingComm {
 public:
  NcclPending(NcclComm& comm, cudaEvent_t done) : comm_(comm), event_(done) {}
  NcclPending(const NcclPending&) = delete;
  NcclPending& operator=(const NcclPending&) = delete;
  ~NcclPending() override;
  bool test() override;
  void wait(Stream consumer) override;

 private:
  NcclComm& comm_;
  cudaEvent_t event_;
  comm_detail::Deadline deadline_;  // from the post: test() polled past it means a hang
  bool settled_ = false;            // waited on, or seen complete
};

// Non-blocking NCCL (ncclConfig_t::blocking = 0): no call blocks the host, so every
// host wait here can poll cudaStreamQuery / cudaEventQuery together with
// ncclCommGetAsyncError, and give up at comm_timeout() with ncclCommAbort, which also
// releases kernels stuck waiting for a dead peer.
class NcclComm final : public Comm {
 public:
  explicit NcclComm(MPI_Comm comm) {
    RI_CHECK(comm != MPI_COMM_NULL, "NcclComm: MPI_COMM_NULL given (this rank is not in the group)");
    MPI_CHECK(MPI_Comm_rank(comm, &rank_));
    MPI_CHECK(MPI_Comm_size(comm, &size_));
    CUDA_CHECK(cudaMalloc(&scratch_, sizeof(int)));
    try {
      ncclUniqueId id{};
      if (rank_ == 0) NCCL_CHECK(ncclGetUniqueId(&id));
      bcast_id(&id, comm);
      ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
      config.blocking = 0;
      NCCL_CHECK(ncclCommInitRankConfig(&comm_, size_, id, rank_, &config));
      settle("init");  // ncclInProgress until every rank has joined
    } catch (...) {
      if (comm_ && !aborted_) ncclCommAbort(comm_);
      cudaFree(scratch_);
      throw;
    }
  }

  ~NcclComm() override {
    // Before cudaFree, which synchronizes the device: a kernel waiting for a dead peer
    // must be released first. Finalize waits for in-flight work (non-blocking: its state
    // reads ncclInProgress until done); while an exception unwinds, or past the
    // timeout, abort instead.
    if (!aborted_) {
      bool clean = std::uncaught_exceptions() == 0;
      if (clean) {
        const ncclResult_t rc = ncclCommFinalize(comm_);
        clean = rc == ncclSuccess || rc == ncclInProgress;
      }
      const comm_detail::Deadline deadline;
      comm_detail::Backoff backoff;
      while (clean) {
        ncclResult_t state = ncclSuccess;
        if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess || (state != ncclSuccess && state != ncclInProgress))
          clean = false;
        else if (state == ncclSuccess) break;
        else if (deadline.passed()) clean = false;
        else backoff.pause();
      }
      if (clean) ncclCommDestroy(comm_);
      else ncclCommAbort(comm_);
    }
    cudaFree(scratch_);
  }

  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* name() const override { return "nccl"; }

  // Throws if NCCL has reported an asynchronous error (aborting the communicator), or
  // if it was aborted before. Never blocks.
  void check_health(const char* call) {
    RI_CHECK(!aborted_, std::string("nccl ") + call +
                            ": the communicator was aborted after an earlier error or timeout; it cannot be used "
                            "again");
    ncclResult_t state = ncclSuccess;
    const ncclResult_t rc = ncclCommGetAsyncError(comm_, &state);
    if (rc != ncclSuccess) state = rc;
    if (state != ncclSuccess && state != ncclInProgress) fail(async_message(call, state));
  }

  // Aborts the communicator (kernels waiting on peers exit) and throws `message`.
  [[noreturn]] void fail(const std::string& message) {
    if (!aborted_) {
      aborted_ = true;
      ncclCommAbort(comm_);
    }
    throw Error(message);
  }

  // Blocks the host until `query` (cudaStreamQuery / cudaEventQuery) says the work is
  // done, polling NCCL's error state with it; aborts and throws on an NCCL error or the
  // timeout. Not device_wait::wait: NCCL's own error state must be polled too, and a
  // timeout aborts the communicator and names it.
  template <class Query>
  void host_wait(const char* call, const comm_detail::Deadline& deadline, Query query) {
    comm_detail::Backoff backoff;
    for (;;) {
      if (device_wait::finished(query())) return;
      check_health(call);
      if (deadline.passed()) fail(comm_detail::timeout_message(*this, call, deadline.seconds()));
      backoff.pause();
    }
  }

  std::unique_ptr<PendingComm> send_recv(const void* send_buf, int dest, void* recv_buf, int source, size_t count,
                                         CommDtype dtype, Stream stream) override {
    comm_detail::check_send_recv(*this, send_buf, dest, recv_buf, source, count, dtype);
    const size_t bytes = count * dtype_size(dtype);
    const cudaStream_t s = cuda_stream(stream);

    cudaEvent_t done = nullptr;
    check_health("send_recv");
    CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    auto pending = std::make_unique<NcclPending>(*this, done);
    if (dest == rank_ && source == rank_) {
      if (bytes) CUDA_CHECK(cudaMemcpyAsync(recv_buf, send_buf, bytes, cudaMemcpyDeviceToDevice, s));
    } else if (bytes) {
      // One group, so NCCL runs the send and the receive together (no ordering deadlock
      // around the ring).
      NCCL_CHECK(ncclGroupStart());
      NCCL_CHECK(ncclSend(send_buf, bytes, ncclUint8, dest, comm_, s));
      NCCL_CHECK(ncclRecv(recv_buf, bytes, ncclUint8, source, comm_, s));
      NCCL_CHECK(ncclGroupEnd());
      settle("send_recv");
    }
    CUDA_CHECK(cudaEventRecord(done, s));
    return pending;
  }

  void all_gather(const void* send_buf, void* recv_buf, size_t count, CommDtype dtype, Stream stream) override {
    comm_detail::check_all_gather(*this, send_buf, recv_buf, count, dtype);
    const size_t bytes = count * dtype_size(dtype);
    if (bytes == 0) return;
    check_health("all_gather");
    NCCL_CHECK(ncclAllGather(send_buf, recv_buf, bytes, ncclUint8, comm_, cuda_stream(stream)));
    settle("all_gather");
  }

  void all_reduce(const void* send_buf, void* recv_buf, size_t count, CommDtype dtype, ReduceOp op,
                  Stream stream) override {
    comm_detail::check_all_reduce(*this, send_buf, recv_buf, count, dtype);
    if (count == 0) return;
    check_health("all_reduce");
    NCCL_CHECK(ncclAllReduce(send_buf, recv_buf, count, nccl_type(dtype), op == ReduceOp::sum ? ncclSum : ncclMax,
                             comm_, cuda_stream(stream)));
    settle("all_reduce");
  }

  void broadcast(void* buf, size_t count, CommDtype dtype, int root, Stream stream) override {
    comm_detail::check_broadcast(*this, buf, count, root);
    const size_t bytes = count * dtype_size(dtype);
    if (bytes == 0) return;
    check_health("broadcast");
    NCCL_CHECK(ncclBroadcast(buf, buf, bytes, ncclUint8, root, comm_, cuda_stream(stream)));
    settle("broadcast");
  }

  // NCCL has no barrier: a one-element all-reduce every rank must join, then a host
  // wait, so every rank has reached it and this rank's earlier work on `stream` is done.
  void barrier(Stream stream) override {
    check_health("barrier");
    const comm_detail::Deadline deadline;
    const cudaStream_t s = cuda_stream(stream);
    NCCL_CHECK(ncclAllReduce(scratch_, scratch_, 1, ncclInt32, ncclSum, comm_, s));
    settle("barrier");
    host_wait("barrier", deadline, [s] { return cudaStreamQuery(s); });
  }

 private:
  std::string async_message(const char* call, ncclResult_t state) const {
    return std::string("nccl ") + call + " over " + std::to_string(size_) + " ranks failed: " +
           ncclGetErrorString(state) + " (a rank has died or the network failed)";
  }

  // A non-blocking communicator answers ncclInProgress while a call (init, a group's
  // end) is still being set up; nothing else may be issued on it until that settles.
  void settle(const char* call) {
    const comm_detail::Deadline deadline;
    comm_detail::Backoff backoff;
    for (;;) {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t rc = ncclCommGetAsyncError(comm_, &state);
      if (rc != ncclSuccess) state = rc;
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) fail(async_message(call, state));
      if (deadline.passed()) fail(comm_detail::timeout_message(*this, call, deadline.seconds()));
      backoff.pause();
    }
  }

  // The unique id from rank 0 of `comm`, by a polled MPI_Ibcast: a rank that never
  // arrives must not hang the others here either.
  void bcast_id(ncclUniqueId* id, MPI_Comm comm) {
    const comm_detail::Deadline deadline;
    comm_detail::Backoff backoff;
    MPI_Request request = MPI_REQUEST_NULL;
    MPI_CHECK(MPI_Ibcast(id, sizeof(*id), MPI_BYTE, 0, comm, &request));
    for (;;) {
      int flag = 0;
      MPI_CHECK(MPI_Test(&request, &flag, MPI_STATUS_IGNORE));
      if (flag) return;
      RI_CHECK(!deadline.passed(), comm_detail::timeout_message(*this, "init", deadline.seconds()));
      backoff.pause();
    }
  }


  ncclComm_t comm_ = nullptr;
  int rank_ = 0;
  int size_ = 1;
  int* scratch_ = nullptr;  // one int on the device, for barrier
  bool aborted_ = false;    // ncclCommAbort was called: comm_ is gone
};

NcclPending::~NcclPending() {
  // A handle dropped without wait or a completed test: the caller's buffers may be
  // freed next, so let the transfer finish first (never while an exception unwinds:
  // the peer may be gone). A destructor cannot throw: on an error or the timeout the
  // communicator is aborted (which ends the transfer) and the next call on it throws.
  if (!settled_ && std::uncaught_exceptions() == 0) {
    try {
      comm_.host_wait("send_recv", comm_detail::Deadline(), [this] { return cudaEventQuery(event_); });
    } catch (const Error& e) {
      log::error(e.what());
    }
  }
  cudaEventDestroy(event_);
}

bool NcclPending::test() {
  if (settled_) return true;
  if (!device_wait::finished(cudaEventQuery(event_))) {
    comm_.check_health("send_recv");
    if (deadline_.passed()) comm_.fail(comm_detail::timeout_message(comm_, "send_recv", deadline_.seconds()));
    return false;
  }
  settled_ = true;
  return true;
}

void NcclPending::wait(Stream consumer) {
  if (!settled_) comm_.check_health("send_recv");
  CUDA_CHECK(cudaStreamWaitEvent(cuda_stream(consumer), event_, 0));
  settled_ = true;
}

}  // namespace

std::unique_ptr<Comm> make_nccl_comm(MPI_Comm comm) { return std::make_unique<NcclComm>(comm); }

}  // namespace ringinfer
