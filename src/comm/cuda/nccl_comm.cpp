// NcclComm: the Comm interface over NCCL on device buffers (see comm.h). Every call
// enqueues on the given stream and returns; a ring exchange's pending handle is a CUDA
// event recorded after the send/receive group.
#include <cuda_runtime.h>
#include <nccl.h>

#include <exception>
#include <string>

#include "comm/comm_checks.h"
#include "ringinfer/comm.h"
#include "ringinfer/cuda_check.h"
#include "ringinfer/error.h"

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

class NcclPending final : public PendingComm {
 public:
  explicit NcclPending(cudaEvent_t done) : event_(done) {}
  NcclPending(const NcclPending&) = delete;
  NcclPending& operator=(const NcclPending&) = delete;

  ~NcclPending() override {
    // A handle dropped without wait or a completed test: the caller's buffers may be
    // freed next, so let the transfer finish first (never while an exception unwinds:
    // the peer may be gone).
    if (!settled_ && std::uncaught_exceptions() == 0) cudaEventSynchronize(event_);
    cudaEventDestroy(event_);
  }

  bool test() override {
    if (settled_) return true;
    const cudaError_t rc = cudaEventQuery(event_);
    if (rc == cudaErrorNotReady) return false;
    CUDA_CHECK(rc);
    settled_ = true;
    return true;
  }

  void wait(Stream consumer) override {
    CUDA_CHECK(cudaStreamWaitEvent(cuda_stream(consumer), event_, 0));
    settled_ = true;
  }

 private:
  cudaEvent_t event_;
  bool settled_ = false;  // waited on, or seen complete
};

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
      MPI_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, comm));
      NCCL_CHECK(ncclCommInitRank(&comm_, size_, id, rank_));
    } catch (...) {
      cudaFree(scratch_);
      throw;
    }
  }

  ~NcclComm() override {
    cudaFree(scratch_);
    ncclCommDestroy(comm_);
  }

  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* name() const override { return "nccl"; }

  std::unique_ptr<PendingComm> send_recv(const void* send_buf, int dest, void* recv_buf, int source, size_t count,
                                         CommDtype dtype, Stream stream) override {
    comm_detail::check_rank(*this, "send_recv", "dest", dest);
    comm_detail::check_rank(*this, "send_recv", "source", source);
    comm_detail::check_buffer(*this, "send_recv", send_buf, count);
    comm_detail::check_buffer(*this, "send_recv", recv_buf, count);
    const size_t bytes = count * dtype_size(dtype);
    comm_detail::check_disjoint(*this, "send_recv", send_buf, bytes, recv_buf, bytes);
    const cudaStream_t s = cuda_stream(stream);

    cudaEvent_t done = nullptr;
    CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    auto pending = std::make_unique<NcclPending>(done);
    if (dest == rank_ && source == rank_) {
      if (bytes) CUDA_CHECK(cudaMemcpyAsync(recv_buf, send_buf, bytes, cudaMemcpyDeviceToDevice, s));
    } else if (bytes) {
      // One group, so NCCL runs the send and the receive together (no ordering deadlock
      // around the ring).
      NCCL_CHECK(ncclGroupStart());
      NCCL_CHECK(ncclSend(send_buf, bytes, ncclUint8, dest, comm_, s));
      NCCL_CHECK(ncclRecv(recv_buf, bytes, ncclUint8, source, comm_, s));
      NCCL_CHECK(ncclGroupEnd());
    }
    CUDA_CHECK(cudaEventRecord(done, s));
    return pending;
  }

  void all_gather(const void* send_buf, void* recv_buf, size_t count, CommDtype dtype, Stream stream) override {
    comm_detail::check_buffer(*this, "all_gather", send_buf, count);
    comm_detail::check_buffer(*this, "all_gather", recv_buf, count);
    const size_t bytes = count * dtype_size(dtype);
    const bool in_place = send_buf == static_cast<char*>(recv_buf) + rank_ * bytes;
    if (!in_place) comm_detail::check_disjoint(*this, "all_gather", send_buf, bytes, recv_buf, bytes * size_);
    if (bytes == 0) return;
    NCCL_CHECK(ncclAllGather(send_buf, recv_buf, bytes, ncclUint8, comm_, cuda_stream(stream)));
  }

  void all_reduce(const void* send_buf, void* recv_buf, size_t count, CommDtype dtype, ReduceOp op,
                  Stream stream) override {
    comm_detail::check_reducible(*this, dtype);
    comm_detail::check_buffer(*this, "all_reduce", send_buf, count);
    comm_detail::check_buffer(*this, "all_reduce", recv_buf, count);
    const size_t es = dtype_size(dtype);
    if (send_buf != recv_buf) comm_detail::check_disjoint(*this, "all_reduce", send_buf, count * es, recv_buf, count * es);
    if (count == 0) return;
    NCCL_CHECK(ncclAllReduce(send_buf, recv_buf, count, nccl_type(dtype), op == ReduceOp::sum ? ncclSum : ncclMax,
                             comm_, cuda_stream(stream)));
  }

  void broadcast(void* buf, size_t count, CommDtype dtype, int root, Stream stream) override {
    comm_detail::check_rank(*this, "broadcast", "root", root);
    comm_detail::check_buffer(*this, "broadcast", buf, count);
    const size_t bytes = count * dtype_size(dtype);
    if (bytes == 0) return;
    NCCL_CHECK(ncclBroadcast(buf, buf, bytes, ncclUint8, root, comm_, cuda_stream(stream)));
  }

  // NCCL has no barrier: a one-element all-reduce every rank must join, then a host
  // wait, so every rank has reached it and this rank's earlier work on `stream` is done.
  void barrier(Stream stream) override {
    const cudaStream_t s = cuda_stream(stream);
    NCCL_CHECK(ncclAllReduce(scratch_, scratch_, 1, ncclInt32, ncclSum, comm_, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
  }

 private:
  ncclComm_t comm_ = nullptr;
  int rank_ = 0;
  int size_ = 1;
  int* scratch_ = nullptr;  // one int on the device, for barrier
};

}  // namespace

std::unique_ptr<Comm> make_nccl_comm(MPI_Comm comm) { return std::make_unique<NcclComm>(comm); }

}  // namespace ringinfer
