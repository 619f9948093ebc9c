// The CUDA backend's host waits are bounded by --comm-timeout (issue #6 item 3).
// A kernel that spins on a flag in mapped host memory stands in for an NCCL kernel whose
// peer died: synchronize() and copy_to_host() must throw the timeout Error, naming the
// operation and the cause, within the timeout (not hang); once the flag is set and the
// kernel ends, the same backend must compute correctly again.
// Bounds: comm timeout kTimeout = 1.5 s; the Error must come after >= 0.99 kTimeout and
// before kTimeout + 3 s. The spinning kernel ends by itself after kKernelBoundNs = 10 s no
// matter what, so a broken watchdog fails the test instead of hanging it (the whole test
// takes about 6 s). Also checked: chunked (> 4 MiB) staging copies round-trip exactly,
// rmsnorm after recovery matches a float64 reference to 1e-5 relative, and the polled wait
// adds < 50 us to a 0.5 ms wait and < 3 ms to a 150 ms wait over cudaStreamSynchronize.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "gpu_skip.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "ringinfer/backend.h"
#include "ringinfer/comm.h"
#include "ringinfer/cuda_backend.h"
#include "ringinfer/error.h"

namespace ringinfer {
namespace {

constexpr double kTimeout = 1.5;                           // seconds, set with set_comm_timeout
constexpr unsigned long long kKernelBoundNs = 10000000000ull;  // the spinner's own limit: 10 s
std::mt19937_64 rng(20261207);

#define CK(call) ASSERT_EQ((call), cudaSuccess) << #call

__device__ unsigned long long globaltimer_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Spins until release[0] != 0 (written by the host), or until limit_ns have passed, in
// which case it sets release[1] (the test then knows the watchdog did not fire in time).
__global__ void spin_until_released(volatile int* release, unsigned long long limit_ns) {
  const unsigned long long start = globaltimer_ns();
  while (release[0] == 0) {
    if (globaltimer_ns() - start > limit_ns) {
      release[1] = 1;
      return;
    }
    __nanosleep(1000);
  }
}

// Busy for `ns` nanoseconds: a stand-in for one GPU step, for the latency comparison.
__global__ void busy_for(unsigned long long ns) {
  const unsigned long long start = globaltimer_ns();
  while (globaltimer_ns() - start < ns) __nanosleep(200);
}

// The flag pair in mapped pinned host memory; the destructor always releases the kernel.
struct Spinner {
  int* host = nullptr;
  int* device = nullptr;
  Spinner() {
    if (cudaHostAlloc(&host, 2 * sizeof(int), cudaHostAllocMapped) != cudaSuccess) return;
    host[0] = host[1] = 0;
    cudaHostGetDevicePointer(reinterpret_cast<void**>(&device), host, 0);
  }
  void launch(Stream s) {
    spin_until_released<<<1, 1, 0, static_cast<cudaStream_t>(s.native)>>>(device, kKernelBoundNs);
  }
  void release() {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    static_cast<volatile int*>(host)[0] = 1;
  }
  bool ended_by_bound() const { return static_cast<volatile int*>(host)[1] != 0; }
  ~Spinner() {
    if (!host) return;
    release();
    cudaDeviceSynchronize();
    cudaFreeHost(host);
  }
};

struct RestoreTimeout {
  double saved = comm_timeout();
  ~RestoreTimeout() { set_comm_timeout(saved); }
};

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Runs f; returns the Error's text ("no error" if none) and how long f took.
template <class F>
std::string error_of(F f, double* took) {
  const auto t0 = Clock::now();
  std::string what = "no error";
  try {
    f();
  } catch (const Error& e) {
    what = e.what();
  }
  *took = seconds_since(t0);
  return what;
}

std::vector<float> randn(size_t n) {
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// rmsnorm on fresh random rows against a float64 reference: the backend computes again.
void expect_backend_works(Backend& be) {
  const int64_t n = 16, d = 512;
  const float eps = 1e-5f;
  const std::vector<float> x = randn(size_t(n * d)), w = randn(size_t(d));
  Tensor tx = be.alloc(n, d, DType::f32), tw = be.alloc(d, 1, DType::f32), to = be.alloc(n, d, DType::f32);
  be.copy_from_host(tx, x.data());
  be.copy_from_host(tw, w.data());
  be.rmsnorm(tx, tw, eps, to);
  std::vector<float> out(size_t(n * d));
  be.copy_to_host(out.data(), to);
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += double(x[i * d + j]) * x[i * d + j];
    const double inv = 1.0 / std::sqrt(ss / d + eps);
    for (int64_t j = 0; j < d; ++j) {
      const double ref = x[i * d + j] * inv * w[j];
      num += (out[i * d + j] - ref) * (out[i * d + j] - ref);
      den += ref * ref;
    }
  }
  EXPECT_LE(std::sqrt(num / den), 1e-5) << "rmsnorm after recovery";
}

void expect_timeout_error(const std::string& what, double took, const std::string& op) {
  const std::string want = op + " did not finish within 1.5 s (--comm-timeout): a peer rank may have died or its GPU hung";
  EXPECT_NE(what.find(want), std::string::npos) << "got: " << what << "\nwanted: " << want;
  EXPECT_GE(took, 0.99 * kTimeout) << "gave up before the timeout";
  EXPECT_LE(took, kTimeout + 3.0) << "the watchdog fired late";
}

TEST(StreamWatchdog, SynchronizeThrowsWhenTheComputeStreamHangs) {
  RestoreTimeout restore;
  auto be = make_cuda_backend();
  expect_backend_works(*be);  // warm: first-use costs (module loading) are not in the timing
  Spinner spin;
  ASSERT_NE(spin.device, nullptr);
  spin.launch(be->stream());
  set_comm_timeout(kTimeout);
  double took = 0;
  const std::string what = error_of([&] { be->synchronize(); }, &took);
  expect_timeout_error(what, took, "cuda backend synchronize: the compute stream");
  std::printf("synchronize threw after %.3f s: %s\n", took, what.c_str());

  spin.release();
  set_comm_timeout(30);
  be->synchronize();  // the kernel ends now: the wait succeeds and clears the stuck state
  EXPECT_FALSE(spin.ended_by_bound()) << "the kernel ran into its own 10 s bound";
  expect_backend_works(*be);
}

TEST(StreamWatchdog, SynchronizeNamesTheCommunicationStream) {
  RestoreTimeout restore;
  auto be = make_cuda_backend();
  Spinner spin;
  ASSERT_NE(spin.device, nullptr);
  spin.launch(be->comm_stream());  // where ring transfers (NCCL) run
  set_comm_timeout(kTimeout);
  double took = 0;
  const std::string what = error_of([&] { be->synchronize(); }, &took);
  expect_timeout_error(what, took, "cuda backend synchronize: the communication stream");
  spin.release();
  set_comm_timeout(30);
  be->synchronize();
  EXPECT_FALSE(spin.ended_by_bound());
  expect_backend_works(*be);
}

TEST(StreamWatchdog, CopyToHostThrowsAndRecovers) {
  RestoreTimeout restore;
  auto be = make_cuda_backend();
  const std::vector<float> x = randn(1000);
  Tensor t = be->alloc(1000, 1, DType::f32);
  be->copy_from_host(t, x.data());
  be->synchronize();
  Spinner spin;
  ASSERT_NE(spin.device, nullptr);
  spin.launch(be->stream());
  set_comm_timeout(kTimeout);
  std::vector<float> back(x.size(), 0.f);
  double took = 0;
  const std::string what = error_of([&] { be->copy_to_host(back.data(), t); }, &took);
  expect_timeout_error(what, took, "cuda backend copy_to_host: the compute stream");

  spin.release();
  set_comm_timeout(30);
  be->copy_to_host(back.data(), t);
  EXPECT_EQ(back, x) << "copy_to_host after recovery";
  be->synchronize();
  EXPECT_FALSE(spin.ended_by_bound());
  expect_backend_works(*be);
}

// Copies larger than the 4 MiB pinned staging buffer go through it in chunks, both ways.
TEST(StreamWatchdog, ChunkedCopiesRoundTrip) {
  auto be = make_cuda_backend();
  const size_t n = (size_t(10) << 20) / 4 + 123;  // 10 MiB + a partial chunk
  const std::vector<float> x = randn(n);
  Tensor t = be->alloc(int64_t(n), 1, DType::f32), u = be->alloc(int64_t(n), 1, DType::f32);
  be->copy_from_host(t, x.data());
  be->copy(t, u);  // device to device, so the read-back is of data the device moved
  std::vector<float> back(n, 0.f);
  be->copy_to_host(back.data(), u);
  EXPECT_EQ(back, x);
}

// The polled wait against cudaStreamSynchronize on the same stream and the same kernel:
// a short wait (a decode step) must stay within 50 us, a long one within 3 ms.
TEST(StreamWatchdog, PollingAddsNoMeasurableLatency) {
  auto be = make_cuda_backend();
  const cudaStream_t s = static_cast<cudaStream_t>(be->stream().native);
  Tensor token = be->alloc(1, 1, DType::i32);
  const int32_t id = 7;
  be->copy_from_host(token, &id);
  be->synchronize();
  struct Case {
    unsigned long long ns;
    int reps;
    double allowed_s;
  };
  for (const Case c : {Case{500000ull, 200, 50e-6}, Case{150000000ull, 5, 3e-3}}) {
    double raw = 0, polled = 0, polled_copy = 0;
    for (int i = 0; i < c.reps; ++i) {
      busy_for<<<1, 1, 0, s>>>(c.ns);
      auto t0 = Clock::now();
      CK(cudaStreamSynchronize(s));
      raw += seconds_since(t0);

      busy_for<<<1, 1, 0, s>>>(c.ns);
      t0 = Clock::now();
      be->synchronize();
      polled += seconds_since(t0);

      busy_for<<<1, 1, 0, s>>>(c.ns);  // the decode step's token read-back
      int32_t got = 0;
      t0 = Clock::now();
      be->copy_to_host(&got, token);
      polled_copy += seconds_since(t0);
      ASSERT_EQ(got, id);
    }
    raw /= c.reps, polled /= c.reps, polled_copy /= c.reps;
    std::printf("kernel %8.3f ms: cudaStreamSynchronize %8.3f ms, synchronize() %8.3f ms (%+.1f us), "
                "copy_to_host(4 B) %8.3f ms (%+.1f us)\n",
                c.ns * 1e-6, raw * 1e3, polled * 1e3, (polled - raw) * 1e6, polled_copy * 1e3,
                (polled_copy - raw) * 1e6);
    EXPECT_LE(polled - raw, c.allowed_s);
    EXPECT_LE(polled_copy - raw, c.allowed_s);
  }
}

}  // namespace
}  // namespace ringinfer
