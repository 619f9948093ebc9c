// StagedComm: the Comm interface on device buffers, carried by an MpiComm through pinned
// host memory (see make_staged_comm in comm.h).
//
// Why it exists: NCCL refuses two ranks of one communicator on the same GPU, so the
// multi-rank CUDA engine (striped ring, decode merge) cannot run on a one-GPU machine
// over NcclComm. Staging every transfer through the host lets any number of ranks share
// a GPU, which is how the CP > 1 CUDA path is tested on one GPU, and it is a fallback
// where NCCL is unavailable. It is slower: each operation is a device -> host copy, a
// host sync, the MPI operation and a host -> device copy.
//
// Every operation: device -> pinned host copy on the caller's stream and a bounded wait
// for it (the data is on the host before MPI reads it), the inner MpiComm
// operation on host buffers (it polls with comm_timeout() and throws its timeout Error),
// then a host -> device copy enqueued on the stream. A ring exchange is split the same
// way: staged and posted at send_recv, driven by test(), and wait(consumer) completes it
// and enqueues the copy into the receive buffer on `consumer`.
//
// Staging memory: a pool of slots (a send and a receive host buffer each), taken by an
// operation and given back when it is done, grown in powers of two and kept, so a warm
// communicator allocates nothing. A slot's host -> device copy may still be queued when
// it is given back: an event recorded after it is waited for before the host writes the
// slot again.
//
// No host wait blocks in the CUDA runtime: the device -> host copy is queued behind
// whatever the stream already holds (NCCL work of another communicator, a kernel), which
// never finishes if a peer died, so every wait polls the stream or event and throws after
// comm_timeout() seconds (runtime/cuda/device_wait_cuda.h).
#include <cuda_runtime.h>

#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comm/comm_checks.h"
#include "ringinfer/comm.h"
#include "ringinfer/cuda_check.h"
#include "ringinfer/error.h"
#include "ringinfer/log.h"
#include "runtime/cuda/device_wait_cuda.h"

namespace ringinfer {
namespace {

cudaStream_t cuda_stream(Stream s) { return static_cast<cudaStream_t>(s.native); }

// Pinned host bytes, grown (never shrunk) to a power of two at least as large as asked.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() {
    // cudaFreeHost waits for the whole device: after a device wait timed out it could hang.
    if (ptr_ && !device_wait::stuck().load()) cudaFreeHost(ptr_);
  }
  // Only while no copy or MPI operation uses the buffer.
  void reserve(size_t bytes) {
    if (bytes <= capacity_) return;
    size_t want = 4096;
    while (want < bytes) want *= 2;
    if (ptr_) CUDA_CHECK(cudaFreeHost(ptr_));
    ptr_ = nullptr;
    capacity_ = 0;
    CUDA_CHECK(cudaMallocHost(&ptr_, want));
    capacity_ = want;
  }
  char* data() const { return static_cast<char*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  size_t capacity_ = 0;
};

// Staging for one operation in flight.
struct Slot {
  PinnedBuffer send;  // what this rank sends (device -> host before the MPI operation)
  PinnedBuffer recv;  // what MPI delivers (host -> device after it)
  // Recorded after the last queued copy that reads `recv`; the host may overwrite the
  // slot once it has completed. Created on first use, in the current device's context.
  cudaEvent_t copied = nullptr;
  bool copy_queued = false;

  Slot() = default;
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;
  ~Slot() {
    if (!copied) return;
    if (copy_queued) {
      try {
        device_wait::wait_event(copied, "staged mpi slot release: the host -> device copy",
                                device_wait::Deadline(device_wait::destructor_seconds()));
      } catch (const std::exception& e) {
        log::error(e.what());  // device_wait::stuck() is set: the buffers are leaked, not freed
      }
    }
    cudaEventDestroy(copied);
  }
  // The host may write the buffers now, and they hold at least the given sizes.
  void prepare(size_t send_bytes, size_t recv_bytes) {
    if (copy_queued) {
      device_wait::wait_event(copied, "staged mpi staging: the previous host -> device copy");
      copy_queued = false;
    }
    send.reserve(send_bytes);
    recv.reserve(recv_bytes);
  }
  // Host -> device copy of `bytes` of recv[offset..] into dst, queued on s.
  void copy_out(void* dst, size_t offset, size_t bytes, cudaStream_t s) {
    if (bytes == 0) return;
    if (!copied) CUDA_CHECK(cudaEventCreateWithFlags(&copied, cudaEventDisableTiming));
    CUDA_CHECK(cudaMemcpyAsync(dst, recv.data() + offset, bytes, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaEventRecord(copied, s));
    copy_queued = true;
  }
};

// Device -> host copy of `bytes` on s, complete when this returns (host is pinned, so
// the copy is asynchronous and the wait is ours, bounded). `what` names the copy in the
// timeout Error: "staged mpi <operation>: the device -> host copy".
void copy_in(void* host, const void* device, size_t bytes, cudaStream_t s, const char* what) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, s));
  device_wait::wait_stream(s, what);
}

class StagedComm;

// A posted exchange: the inner MPI exchange on the slot's host buffers, and where the
// received bytes go on the device.
class StagedPending final : public PendingComm {
 public:
  StagedPending(StagedComm& comm, std::unique_ptr<Slot> slot, std::unique_ptr<PendingComm> inner, void* recv_buf,
                size_t bytes, cudaStream_t post_stream)
      : comm_(comm),
        slot_(std::move(slot)),
        inner_(std::move(inner)),
        recv_buf_(recv_buf),
        bytes_(bytes),
        post_stream_(post_stream) {}
  // A self-exchange: already copied device to device on the stream; `done` follows it.
  StagedPending(StagedComm& comm, cudaEvent_t done) : comm_(comm), self_done_(done) {}
  StagedPending(const StagedPending&) = delete;
  StagedPending& operator=(const StagedPending&) = delete;
  ~StagedPending() override;

  bool test() override { return settled_ || self_done_ || inner_->test(); }
  void wait(Stream consumer) override;

 private:
  void give_back_slot();

  StagedComm& comm_;
  std::unique_ptr<Slot> slot_;
  std::unique_ptr<PendingComm> inner_;  // the MPI exchange on slot_ (null for a self-exchange)
  void* recv_buf_ = nullptr;            // device destination of the received bytes
  size_t bytes_ = 0;
  cudaStream_t post_stream_ = nullptr;  // for the copy of a handle dropped without wait
  cudaEvent_t self_done_ = nullptr;     // self-exchange only
  bool settled_ = false;                // waited on
};

class StagedComm final : public Comm {
 public:
  explicit StagedComm(MpiComm& inner) : inner_(inner) {}
  StagedComm(const StagedComm&) = delete;
  StagedComm& operator=(const StagedComm&) = delete;

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  const char* name() const override { return "staged mpi"; }

  std::unique_ptr<PendingComm> send_recv(const void* send_buf, int dest, void* recv_buf, int source, size_t count,
                                         CommDtype dtype, Stream stream) override {
    comm_detail::check_send_recv(*this, send_buf, dest, recv_buf, source, count, dtype);
    const size_t bytes = count * dtype_size(dtype);
    const cudaStream_t s = cuda_stream(stream);
    if (dest == rank() && source == rank()) {
      cudaEvent_t done = nullptr;
      CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
      auto pending = std::make_unique<StagedPending>(*this, done);
      if (bytes) CUDA_CHECK(cudaMemcpyAsync(recv_buf, send_buf, bytes, cudaMemcpyDeviceToDevice, s));
      CUDA_CHECK(cudaEventRecord(done, s));
      return pending;
    }
    std::unique_ptr<Slot> slot = take_slot(bytes, bytes);
    try {
      copy_in(slot->send.data(), send_buf, bytes, s, "staged mpi send_recv: the device -> host copy");
      auto inner = inner_.send_recv(slot->send.data(), dest, slot->recv.data(), source, bytes, CommDtype::uint8,
                                    Stream{});
      return std::make_unique<StagedPending>(*this, std::move(slot), std::move(inner), recv_buf, bytes, s);
    } catch (...) {
      give_back(std::move(slot));  // nothing was posted on it
      throw;
    }
  }

  void all_gather(const void* send_buf, void* recv_buf, size_t count, CommDtype dtype, Stream stream) override {
    comm_detail::check_all_gather(*this, send_buf, recv_buf, count, dtype);
    const size_t bytes = count * dtype_size(dtype), total = bytes * size_t(size());
    const cudaStream_t s = cuda_stream(stream);
    Operation op(*this, 0, total);
    char* host = op.slot->recv.data();
    // This rank's block goes straight to its place: the host gather runs in place.
    copy_in(host + size_t(rank()) * bytes, send_buf, bytes, s, "staged mpi all_gather: the device -> host copy");
    inner_.all_gather(host + size_t(rank()) * bytes, host, bytes, CommDtype::uint8, Stream{});
    op.finished = true;
    op.slot->copy_out(recv_buf, 0, total, s);
  }

  void all_reduce(const void* send_buf, void* recv_buf, size_t count, CommDtype dtype, ReduceOp reduce,
                  Stream stream) override {
    comm_detail::check_all_reduce(*this, send_buf, recv_buf, count, dtype);
    const size_t bytes = count * dtype_size(dtype);
    const cudaStream_t s = cuda_stream(stream);
    Operation op(*this, 0, bytes);
    char* host = op.slot->recv.data();
    copy_in(host, send_buf, bytes, s, "staged mpi all_reduce: the device -> host copy");
    inner_.all_reduce(host, host, count, dtype, reduce, Stream{});
    op.finished = true;
    op.slot->copy_out(recv_buf, 0, bytes, s);
  }

  void broadcast(void* buf, size_t count, CommDtype dtype, int root, Stream stream) override {
    comm_detail::check_broadcast(*this, buf, count, root);
    const size_t bytes = count * dtype_size(dtype);
    const cudaStream_t s = cuda_stream(stream);
    Operation op(*this, 0, bytes);
    char* host = op.slot->recv.data();
    if (rank() == root) copy_in(host, buf, bytes, s, "staged mpi broadcast: the device -> host copy");
    inner_.broadcast(host, bytes, CommDtype::uint8, root, Stream{});
    op.finished = true;
    // The root's buffer already holds the value; the copy back would only repeat it.
    if (rank() != root) op.slot->copy_out(buf, 0, bytes, s);
  }

  // Every staged operation has finished its MPI part before returning (or at wait); what
  // may still be queued on `stream` are host -> device copies: finish them, then meet.
  void barrier(Stream stream) override {
    device_wait::wait_stream(cuda_stream(stream), "staged mpi barrier: the host -> device copies");
    inner_.barrier(Stream{});
  }

  // A slot whose buffers the host may write, holding at least the given sizes.
  std::unique_ptr<Slot> take_slot(size_t send_bytes, size_t recv_bytes) {
    std::unique_ptr<Slot> slot;
    if (free_.empty()) {
      slot = std::make_unique<Slot>();
    } else {
      slot = std::move(free_.back());
      free_.pop_back();
    }
    try {
      slot->prepare(send_bytes, recv_bytes);
    } catch (...) {
      free_.push_back(std::move(slot));
      throw;
    }
    return slot;
  }
  void give_back(std::unique_ptr<Slot> slot) {
    if (slot) free_.push_back(std::move(slot));
  }

 private:
  // A slot held for the duration of one collective, given back when it finished.
  struct Operation {
    StagedComm& comm;
    std::unique_ptr<Slot> slot;
    bool finished = false;  // the MPI part completed
    Operation(StagedComm& c, size_t send_bytes, size_t recv_bytes)
        : comm(c), slot(c.take_slot(send_bytes, recv_bytes)) {}
    Operation(const Operation&) = delete;
    Operation& operator=(const Operation&) = delete;
    ~Operation() {
      // A collective that threw (the inner timeout) may still be running in MPI on this
      // slot: it cannot be reused, and freeing it would let MPI write freed memory.
      if (finished) comm.give_back(std::move(slot));
      else (void)slot.release();
    }
  };

  MpiComm& inner_;
  std::vector<std::unique_ptr<Slot>> free_;  // idle slots; a warm communicator takes from here
};

void StagedPending::give_back_slot() { comm_.give_back(std::move(slot_)); }

void StagedPending::wait(Stream consumer) {
  if (settled_) return;
  const cudaStream_t c = cuda_stream(consumer);
  if (self_done_) {
    CUDA_CHECK(cudaStreamWaitEvent(c, self_done_, 0));
    settled_ = true;
    return;
  }
  inner_->wait(Stream{});  // blocks the host; throws the timeout Error after comm_timeout()
  inner_.reset();
  settled_ = true;
  slot_->copy_out(recv_buf_, 0, bytes_, c);
  give_back_slot();
}

StagedPending::~StagedPending() {
  if (self_done_) {
    // The copy was queued on the posting stream; the event may be destroyed at once
    // (CUDA releases it when the recorded work completes).
    cudaEventDestroy(self_done_);
    return;
  }
  if (settled_) return;
  if (std::uncaught_exceptions() > 0) {
    // The inner handle returns without waiting while an exception unwinds (the job ends):
    // MPI may still write the slot, so it is neither reused nor freed.
    inner_.reset();
    (void)slot_.release();
    return;
  }
  // Dropped without wait: finish the transfer (the inner handle's destructor waits, or
  // ends the job past the timeout) and deliver the bytes, as a completed NCCL transfer
  // would have; a destructor cannot throw, so errors are logged.
  try {
    inner_->wait(Stream{});
    inner_.reset();
    slot_->copy_out(recv_buf_, 0, bytes_, post_stream_);
    device_wait::wait_stream(post_stream_, "staged mpi send_recv (dropped handle): the host -> device copy",
                             device_wait::Deadline(device_wait::destructor_seconds()));
    give_back_slot();
  } catch (const std::exception& e) {
    log::error(e.what());
    inner_.reset();
    (void)slot_.release();
  }
}

}  // namespace

std::unique_ptr<Comm> make_staged_comm(MpiComm& inner) { return std::make_unique<StagedComm>(inner); }

}  // namespace ringinfer
