#pragma once
// Communication between the ranks of one group: the ring exchange that ring attention
// runs on (DESIGN §3), and the few collectives the engine needs (decode's all-gather of
// (O, LSE), the sampled token's broadcast, the stop flag's reduction).
//
// One interface, three implementations, so the engine never branches on the device:
//   MpiComm    (mpi_comm.cpp)          host buffers, over an MPI communicator
//   NcclComm   (cuda/nccl_comm.cpp)    device buffers, over an ncclComm_t (CUDA builds)
//   StagedComm (cuda/staged_comm.cpp)  device buffers staged through pinned host memory
//                                      over an MpiComm (CUDA builds; ranks may share a GPU)
// Every call takes a Stream. NCCL enqueues on it and returns at once; MPI ignores it and
// completes before returning (collectives) or when the pending handle completes (ring).
//
// Collective rule (DESIGN §3): every rank of the group makes the same calls in the same
// order with the same counts, types and roots, or the job deadlocks.
//
// No hang on rank failure: wherever the host waits for communication (MPI: every call,
// and PendingComm::wait; NCCL: PendingComm::test past the deadline, barrier), it polls
// and gives up after comm_timeout() seconds with an Error that names the operation and
// the group size, e.g. "mpi all_reduce over 3 ranks did not complete within 5 s
// (--comm-timeout): a rank has died or hangs". The CLI turns that Error into a job abort
// (run_guarded), so every surviving rank exits non-zero. A communicator whose operation
// timed out cannot be used again (the operation cannot be withdrawn): later calls throw.
#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace ringinfer {

class Deadline;  // src/runtime/deadline.h

// An ordering handle for device work: a cudaStream_t held as void*, so this header
// needs no CUDA include. nullptr is CUDA's default stream; the CPU ignores it.
struct Stream {
  void* native = nullptr;  // cudaStream_t
};

// Element types the communicators move. Any type can be sent, gathered or broadcast;
// only float32, float64, int32 and int64 can be reduced (MPI has no bfloat16).
enum class CommDtype { uint8, bfloat16, float32, float64, int32, int64 };

enum class ReduceOp { sum, max };

// The process-wide communication timeout in seconds (default 300): how long any wait
// for other ranks may last before it fails. Read when an operation starts. It must
// exceed the longest stretch one rank computes while another waits for it.
// set_comm_timeout rejects values that are not positive and finite (Error).
constexpr double kDefaultCommTimeoutSeconds = 300.0;
void set_comm_timeout(double seconds);
double comm_timeout();

// Bytes per element.
inline size_t dtype_size(CommDtype dtype) {
  switch (dtype) {
    case CommDtype::uint8: return 1;
    case CommDtype::bfloat16: return 2;
    case CommDtype::float32: return 4;
    case CommDtype::int32: return 4;
    case CommDtype::float64: return 8;
    case CommDtype::int64: return 8;
  }
  return 0;
}

// "float32", ... for messages.
inline const char* dtype_name(CommDtype dtype) {
  switch (dtype) {
    case CommDtype::uint8: return "uint8";
    case CommDtype::bfloat16: return "bfloat16";
    case CommDtype::float32: return "float32";
    case CommDtype::int32: return "int32";
    case CommDtype::float64: return "float64";
    case CommDtype::int64: return "int64";
  }
  return "?";
}

// A posted point-to-point exchange (send and receive together). Double-buffered ring
// attention posts the exchange of the next block, computes on the block in hand, then
// waits. Destroying a pending handle that has not completed waits for it (the buffers
// must outlive the transfer), except while an exception unwinds.
class PendingComm {
 public:
  virtual ~PendingComm() = default;
  // True when both the send and the receive have completed. Never blocks. On MPI it
  // also drives the transfer: large MPI_Isends progress only inside MPI calls, so the
  // CPU engine calls test() between blocks of work.
  virtual bool test() = 0;
  // After wait, work ordered on `consumer` sees the received data and may overwrite the
  // send buffer. MPI: blocks the host until done, or throws the timeout Error after
  // comm_timeout() seconds. NCCL: makes `consumer` wait for the transfer
  // (cudaStreamWaitEvent), without blocking the host; throws if NCCL reported an error.
  virtual void wait(Stream consumer) = 0;
};

class Comm {
 public:
  virtual ~Comm() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* name() const = 0;  // "mpi" | "nccl", for messages

  // Posts: send `count` elements of send_buf to rank `dest` and receive `count` elements
  // from rank `source` into recv_buf, as one unit. send_buf and recv_buf must not
  // overlap, and both must stay untouched until the handle completes. A rank that sends
  // to and receives from itself gets a copy. Device code: ordered after earlier work on
  // `stream` (make `stream` wait for whatever produced send_buf).
  virtual std::unique_ptr<PendingComm> send_recv(const void* send_buf, int dest, void* recv_buf, int source,
                                                 size_t count, CommDtype dtype, Stream stream) = 0;

  // The ring step: send to rank+1, receive from rank-1 (mod size).
  std::unique_ptr<PendingComm> ring_exchange(const void* send_buf, void* recv_buf, size_t count,
                                             CommDtype dtype, Stream stream) {
    return send_recv(send_buf, (rank() + 1) % size(), recv_buf, (rank() + size() - 1) % size(), count, dtype,
                     stream);
  }

  // recv_buf[r * count .. (r+1) * count) = send_buf of rank r. In place when
  // send_buf == recv_buf + rank() * count * dtype_size.
  virtual void all_gather(const void* send_buf, void* recv_buf, size_t count, CommDtype dtype, Stream stream) = 0;

  // Elementwise reduction over ranks; every rank receives the result. In place when
  // send_buf == recv_buf. Sums of floating-point values depend on the library's order.
  virtual void all_reduce(const void* send_buf, void* recv_buf, size_t count, CommDtype dtype, ReduceOp op,
                          Stream stream) = 0;

  // buf on every rank = buf on `root`.
  virtual void broadcast(void* buf, size_t count, CommDtype dtype, int root, Stream stream) = 0;

  // Returns when every rank has reached the barrier and all communication this rank
  // issued before it (NCCL: on `stream`) has completed.
  virtual void barrier(Stream stream) = 0;
};

// ---- agreement between ranks (comm/agreement.cpp). Collective; `comm` must take host
// buffers (MpiComm).

// The smallest and largest of one int32 over the ranks of `comm`, in one all_reduce (of
// {v, -v} with max): how ranks check that they agree on a setting before any acts on it.
struct Int32Range {
  int32_t lowest = 0;
  int32_t highest = 0;
  bool uniform() const { return lowest == highest; }
};
Int32Range range_over_ranks(Comm& comm, int32_t value);

// Runs `compute` on rank 0 of `comm` and returns its result on every rank; an Error it
// throws is thrown on every rank with the same message.
std::string agree_on_root(Comm& comm, const std::function<std::string()>& compute);

// Host-buffer communicator over MPI. Duplicates `comm` (collective over its ranks), so
// its messages never match anyone else's; the caller keeps and frees its own `comm`.
// Messages larger than max_message_bytes are split into several MPI calls: MPI counts
// are ints, so without it transfers above 2^31 elements fail. Tests lower it to run the
// split path on small buffers.
class MpiComm final : public Comm {
 public:
  static constexpr size_t kDefaultMaxMessageBytes = size_t(1) << 30;

  explicit MpiComm(MPI_Comm comm, size_t max_message_bytes = kDefaultMaxMessageBytes);
  ~MpiComm() override;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* name() const override { return "mpi"; }
  MPI_Comm mpi_comm() const { return comm_; }  // the private duplicate
  size_t max_message_bytes() const { return max_message_bytes_; }

  std::unique_ptr<PendingComm> send_recv(const void* send_buf, int dest, void* recv_buf, int source, size_t count,
                                         CommDtype dtype, Stream stream) override;
  void all_gather(const void* send_buf, void* recv_buf, size_t count, CommDtype dtype, Stream stream) override;
  void all_reduce(const void* send_buf, void* recv_buf, size_t count, CommDtype dtype, ReduceOp op,
                  Stream stream) override;
  void broadcast(void* buf, size_t count, CommDtype dtype, int root, Stream stream) override;
  void barrier(Stream stream) override;

 private:
  // Polls one collective's request until it completes or `deadline` passes (all chunks of
  // one call share one deadline); on the timeout marks the communicator broken and throws
  // the timeout Error for `call`.
  void wait_collective(const char* call, MPI_Request* request, const Deadline& deadline);
  void check_usable(const char* call) const;

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  size_t max_message_bytes_;
  // Set when an operation timed out: its request can be neither completed nor withdrawn,
  // so the communicator is out of step with its peers for good. Shared with the pending
  // handles of send_recv, whose timeouts break it too.
  std::shared_ptr<bool> broken_ = std::make_shared<bool>(false);
};

// Device-buffer communicator over NCCL for the ranks of `comm`, bootstrapped over MPI:
// rank 0 of `comm` makes the unique id and broadcasts it, every rank joins with
// ncclCommInitRank. Collective over `comm`; each rank must already be bound to its GPU
// (bind_gpu in runtime.h). Throws Error("... built without CUDA ...") in CPU-only builds.
std::unique_ptr<Comm> make_nccl_comm(MPI_Comm comm);

#ifdef RINGINFER_HAVE_CUDA
// Device-buffer communicator that stages through pinned host memory and runs `inner`'s
// MPI operations there (cuda/staged_comm.cpp): device -> host copy on the given stream,
// the MPI operation, host -> device copy. Slower than NCCL (two PCIe copies and a host
// sync per operation), but it lets several ranks share one GPU, which NCCL refuses: the
// multi-rank CUDA engine on a one-GPU machine (tests; RINGINFER_CUDA_COMM=mpi), and a
// fallback where NCCL is unavailable. `inner` must outlive the result, and the result
// every PendingComm it returns. Timeouts are inner's (comm_timeout()). CUDA builds only.
std::unique_ptr<Comm> make_staged_comm(MpiComm& inner);
#endif

}  // namespace ringinfer
