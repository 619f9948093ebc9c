// Shard validation in a child process (see ringinfer/shard_isolation.h): the child's
// side (shard_check_child_main), the parent's (validate_shards_in_child) and the
// collective verdict (check_shards_isolated).
//
// Report protocol, child -> parent over one pipe, in this order:
//   "F <i>\n"          about to touch input i (0-based index into the paths)
//   "A\n"              about to touch all inputs together (cross-shard checks)
//   "P\n"              progress (at most a few per second)
//   "O\n"              every shard is fine (last record)
//   "E <n>\n<n bytes>" a ringinfer::Error: its message (last record)
//   "X <n>\n<n bytes>" another exception, e.g. std::bad_alloc (last record)
#include "ringinfer/shard_isolation.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <new>
#include <optional>
#include <thread>

#include "ringinfer/error.h"
#include "ringinfer/shard.h"
#include "ringinfer/signals.h"
#include "runtime/deadline.h"

extern char** environ;

namespace ringinfer {

namespace {

using Clock = std::chrono::steady_clock;

// The report descriptor's number in the child.
constexpr int kChildReportFd = 3;
// Appended to every crash / hang message.
const char* const kRecreate = "the file is corrupt; re-create it with `ringinfer prep`";

// ================================================================ child

class Reporter {
 public:
  explicit Reporter(int fd) : fd_(fd) {}
  void file(size_t i) { put("F " + std::to_string(i) + "\n"); }
  void all() { put("A\n"); }
  void ok() { put("O\n"); }
  void error(char tag, const std::string& message) {
    put(std::string(1, tag) + " " + std::to_string(message.size()) + "\n" + message);
  }
  // Throttled: a job of many small documents would otherwise write one record each.
  void progress() {
    const auto now = Clock::now();
    if (now - last_ < std::chrono::milliseconds(250)) return;
    last_ = now;
    put("P\n");
  }

 private:
  void put(const std::string& s) {
    size_t done = 0;
    while (done < s.size()) {
      ssize_t n = ::write(fd_, s.data() + done, s.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) std::_Exit(3);  // the parent is gone: nobody to tell
      done += static_cast<size_t>(n);
    }
  }
  int fd_;
  Clock::time_point last_{};
};

// Inherited descriptors (MPI's sockets, the rank's files) are not the child's business.
void close_other_fds(int keep) {
  std::vector<int> fds;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) {
      char* end = nullptr;
      long fd = std::strtol(e->d_name, &end, 10);
      if (end != e->d_name && *end == '\0' && fd > 2 && fd != keep) fds.push_back(static_cast<int>(fd));
    }
    const int own = ::dirfd(d);
    ::closedir(d);
    fds.erase(std::remove(fds.begin(), fds.end(), own), fds.end());
  }
  for (int fd : fds) ::close(fd);
}

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer) || __has_feature(thread_sanitizer)
#define RI_SANITIZER_BUILD 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define RI_SANITIZER_BUILD 1
#endif

// Caps the child's address space. A corrupt superblock or layout message makes libhdf5
// allocate, and touch, whatever size the file claims (4 GiB and 17 s for
// tests/fuzz/libhdf5-crashes/oom-c1b6...); capped, the allocation fails at once and
// libhdf5 reports an error. Our own need is the reader's buffers (~50 MiB) plus the
// per-document metadata (ids, offsets), which the files' sizes bound: at most ~200
// bytes of memory per document, and a document takes at least 9 bytes of file.
// Sanitizer builds reserve terabytes of shadow memory: no cap there.
void limit_address_space(const std::vector<std::string>& files) {
#ifndef RI_SANITIZER_BUILD
  constexpr uint64_t kBase = uint64_t(3) << 30;
  uint64_t total = 0;
  for (const std::string& f : files) {
    struct stat st {};
    if (::stat(f.c_str(), &st) == 0 && st.st_size > 0) total += static_cast<uint64_t>(st.st_size);
  }
  const uint64_t cap = total > (UINT64_MAX - kBase) / 32 ? RLIM_INFINITY : kBase + 32 * total;
  rlimit as{cap, cap};
  ::setrlimit(RLIMIT_AS, &as);
#else
  (void)files;
#endif
}

// The checks themselves; throws what open_documents / read_stripes throw.
void run_checks(const std::vector<std::string>& files, int64_t vocab, Reporter& rep) {
  // 1. Each shard alone, announced before it is touched, so that a crash names it.
  for (size_t i = 0; i < files.size(); ++i) {
    rep.file(i);
    try {
      (void)open_documents({files[i]}, vocab, ShardStrings::variable_checked);
    } catch (const Error&) {
      // The job's open_documents stops at the first problem in input order, which may be
      // a cross-shard one among files[0..i] (a duplicate id, a repeated path): ask it,
      // over inputs known by now not to crash libhdf5, for exactly the job's message.
      open_documents(std::vector<std::string>(files.begin(), files.begin() + static_cast<long>(i) + 1), vocab,
                     ShardStrings::variable_checked);
      throw;  // not reached unless the file changed in between
    }
    rep.progress();
  }
  // 2. All together: the cross-shard checks, exactly as every rank will run them.
  rep.all();
  // Variable-length strings are read here: this process is the isolation.
  const DocumentSet docs = open_documents(files, vocab, ShardStrings::variable_checked);
  // 3. Every token, as the ranks will read them (range-checked). One stripe of a huge
  // rank count keeps memory at the reader's block (16 MiB) however long a document is.
  constexpr int kManyRanks = 1 << 30;
  int shard = -1;
  for (const DocInfo& d : docs.documents()) {
    if (d.shard != shard) rep.file(static_cast<size_t>(shard = d.shard));
    (void)docs.read_stripe(d, 0, kManyRanks);
    rep.progress();
  }
}

// ================================================================ parent

// The signals a crashing or killed child dies of, by name (sigabbrev_np needs glibc 2.32).
std::string signal_name(int sig) {
  switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGABRT: return "SIGABRT";
    case SIGKILL: return "SIGKILL";
    case SIGTERM: return "SIGTERM";
    case SIGXCPU: return "SIGXCPU";
    case SIGXFSZ: return "SIGXFSZ";
    default: return "signal " + std::to_string(sig);
  }
}

// Seconds as a user reads them: "600", "1.5".
std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

// What the child said so far.
struct ChildReport {
  std::optional<size_t> file;  // the input it was on
  bool all = false;            // on the cross-shard pass (after every file alone)
  char verdict = 0;            // 'O', 'E', 'X' or 0 (none yet)
  std::string message;         // for 'E' and 'X'
  bool garbled = false;        // a record we do not understand
};

// Parses complete records from the front of buf, leaving a partial one in place.
void parse_records(std::string& buf, ChildReport& r, size_t n_files) {
  while (!buf.empty() && !r.verdict && !r.garbled) {
    const size_t nl = buf.find('\n');
    if (nl == std::string::npos) return;
    const std::string head = buf.substr(0, nl);
    if (head == "P") {
    } else if (head == "A") {
      r.all = true;
    } else if (head == "O") {
      r.verdict = 'O';
    } else if (head.size() > 2 && head[1] == ' ' && (head[0] == 'F' || head[0] == 'E' || head[0] == 'X')) {
      char* end = nullptr;
      const unsigned long long v = std::strtoull(head.c_str() + 2, &end, 10);
      if (*end != '\0') {
        r.garbled = true;
        return;
      }
      if (head[0] == 'F') {
        if (v >= n_files) {
          r.garbled = true;
          return;
        }
        r.file = static_cast<size_t>(v);
        r.all = false;
      } else {
        if (buf.size() - nl - 1 < v) return;  // message not complete yet
        r.verdict = head[0];
        r.message = buf.substr(nl + 1, static_cast<size_t>(v));
        buf.erase(0, nl + 1 + static_cast<size_t>(v));
        continue;
      }
    } else {
      r.garbled = true;
      return;
    }
    buf.erase(0, nl + 1);
  }
}

// "a.h5" for the file the child was on; every input when it was on the cross-shard pass
// (or had not started on any).
std::string blamed_files(const ChildReport& r, const std::vector<std::string>& paths) {
  if (r.file && !r.all) return paths[*r.file];
  std::string s;
  for (size_t i = 0; i < paths.size() && i < 3; ++i) s += (i ? ", " : "") + paths[i];
  if (paths.size() > 3) s += " and " + std::to_string(paths.size() - 3) + " more";
  return s;
}

std::string this_shard(const ChildReport& r, const std::vector<std::string>& paths) {
  return (r.file && !r.all) || paths.size() == 1 ? "this shard" : "these shards";
}

// Owns the spawned child: kills and reaps it unless it was reaped already. Never waits
// long: a child stuck in uninterruptible I/O (a hung network file system) dies only when
// the I/O returns, and the rank must not hang with it; such a child is left to init.
class Child {
 public:
  explicit Child(pid_t pid) : pid_(pid) {}
  ~Child() {
    if (pid_ > 0) kill_now();
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  // Waits up to `limit` for the child to exit; the wait status, or nullopt on timeout.
  // -1 when it cannot be reaped (SIGCHLD ignored by someone: the status is lost).
  std::optional<int> wait_for(std::chrono::duration<double> limit) {
    const auto until = Clock::now() + limit;
    for (;;) {
      int st = 0;
      const pid_t got = ::waitpid(pid_, &st, WNOHANG);
      if (got == pid_) {
        pid_ = -1;
        return st;
      }
      if (got < 0 && errno != EINTR) {
        pid_ = -1;
        return -1;
      }
      if (Clock::now() >= until) return std::nullopt;
      ::usleep(10000);
    }
  }
  void kill_now() {
    if (pid_ <= 0) return;  // reaped already; kill(-1) would signal every process of the user
    ::kill(pid_, SIGKILL);
    (void)wait_for(std::chrono::seconds(5));
    pid_ = -1;
  }

 private:
  pid_t pid_;
};

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset() { assign(-1); }
  void assign(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

std::string errno_text(int e) { return std::strerror(e); }

}  // namespace

// ---------------------------------------------------------------- the child

int shard_check_child_main(int argc, char** argv) {
  int64_t vocab = -1;
  int fd = -1;
  std::vector<std::string> files;
  bool in_files = false;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (in_files) {
      files.push_back(a);
    } else if (a == "--") {
      in_files = true;
    } else if ((a == "--vocab" || a == "--report-fd") && i + 1 < argc) {
      char* end = nullptr;
      const long long v = std::strtoll(argv[++i], &end, 10);
      if (*end != '\0' || end == argv[i]) fd = -2;
      if (a == "--vocab") vocab = v;
      else if (fd != -2) fd = static_cast<int>(v);
    } else {
      fd = -2;
      break;
    }
  }
  if (fd < 0 || ::fcntl(fd, F_GETFD) < 0 || files.empty()) {
    std::cerr << "usage: ringinfer " << kShardCheckCommand << " --vocab N --report-fd FD -- FILE...\n"
              << "(internal: started by `ringinfer run` to validate input shards in a separate process)\n";
    return 2;
  }
  // Die with the rank that started us; never leave a core file of a crash we expect.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  ::signal(SIGPIPE, SIG_DFL);
  close_other_fds(fd);
  limit_address_space(files);

  Reporter rep(fd);
  try {
    run_checks(files, vocab, rep);
    rep.ok();
  } catch (const Error& e) {
    rep.error('E', e.what());
  } catch (const std::bad_alloc&) {
    rep.error('X', "out of memory");
  } catch (const std::exception& e) {
    rep.error('X', e.what());
  }
  return 0;
}

// ---------------------------------------------------------------- the parent

std::string validate_shards_in_child(const std::vector<std::string>& paths, int64_t vocab_size,
                                     const ShardCheckOptions& options, const std::function<void()>& on_tick) {
  if (paths.empty()) return "no input shards given";
  const double stall_s =
      options.stall_timeout_s > 0 ? options.stall_timeout_s : std::max(comm_timeout(), 600.0);
  const std::string start_failure = "cannot start the shard validation process " + options.exe + ": ";

  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return start_failure + "pipe: " + errno_text(errno);
  Fd rd(p[0]), wr(p[1]);
  // dup2 onto the same number would leave close-on-exec set: move it out of the way.
  if (wr.get() == kChildReportFd) {
    int moved = ::fcntl(wr.get(), F_DUPFD_CLOEXEC, kChildReportFd + 1);
    if (moved < 0) return start_failure + "fcntl: " + errno_text(errno);
    wr.assign(moved);
  }

  std::vector<std::string> args = {options.exe, kShardCheckCommand, "--vocab", std::to_string(vocab_size),
                                   "--report-fd", std::to_string(kChildReportFd), "--"};
  args.insert(args.end(), paths.begin(), paths.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, wr.get(), kChildReportFd);
  // The rank may block or catch signals (MPI, our stop handlers): the child starts clean.
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  // The child works on one thread; a BLAS or OpenMP pool sized to the node would only
  // take address space (see limit_address_space).
  std::vector<std::string> env_strings = {"OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1"};
  for (char** e = environ; e && *e; ++e)
    if (std::strncmp(*e, "OPENBLAS_NUM_THREADS=", 21) != 0 && std::strncmp(*e, "OMP_NUM_THREADS=", 16) != 0)
      env_strings.push_back(*e);
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, options.exe.c_str(), &fa, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return start_failure + errno_text(rc);
  Child child(pid);
  wr.reset();  // EOF on rd once the child is gone

  ChildReport report;
  std::string buf;
  bool eof = false;
  // The communicators' deadline: a huge --comm-timeout saturates instead of overflowing the clock.
  Deadline stall(stall_s);  // restarted by every report from the child
  Deadline tick(options.tick_interval_s);
  const auto tick_if_due = [&] {
    if (!on_tick || !tick.passed()) return;
    on_tick();
    tick = Deadline(options.tick_interval_s);
  };
  while (!eof) {
    // SIGTERM / SIGUSR1 (preemption) reach the rank while it waits here: stop the check.
    if (stop_requested()) throw StopRequested{stop_signal()};
    if (stall.passed()) {
      child.kill_now();
      return blamed_files(report, paths) + ": validating " + this_shard(report, paths) + " made no progress for " +
             seconds_text(stall_s) +
             " s (libhdf5 hangs on it, or the file system stalls) and was stopped; if the file is corrupt, "
             "re-create it with `ringinfer prep`";
    }
    tick_if_due();
    auto until = stall.end();
    if (on_tick) until = std::min(until, tick.end());
    const auto wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count() + 1;
    pollfd pfd{rd.get(), POLLIN, 0};
    const int ready = ::poll(&pfd, 1, static_cast<int>(std::clamp<long long>(wait_ms, 1, 1000)));
    if (ready < 0 && errno != EINTR) return "shard validation: poll: " + errno_text(errno);
    if (ready <= 0) continue;
    char chunk[4096];
    const ssize_t n = ::read(rd.get(), chunk, sizeof chunk);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) {
      eof = true;
      break;
    }
    stall = Deadline(stall_s);
    buf.append(chunk, static_cast<size_t>(n));
    parse_records(buf, report, paths.size());
    if (report.garbled) break;
  }

  // The child closes the pipe by exiting; give it a moment to be reaped.
  // status: the wait status; -1 when it cannot be known (reaped elsewhere); -2 none (killed).
  int status = -2;
  // Waited in short steps so the heartbeat keeps going for ranks with a short --comm-timeout.
  if (!report.garbled) {
    const auto give_up = Clock::now() + std::chrono::seconds(30);
    for (;;) {
      const std::optional<int> st = child.wait_for(std::chrono::milliseconds(200));
      if (st) {
        status = *st;
        break;
      }
      if (Clock::now() >= give_up) break;
      tick_if_due();
    }
  }
  if (status == -2) child.kill_now();
  const bool clean_exit = status == -1 || (status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  if (clean_exit && report.verdict == 'O') return "";
  if (clean_exit && report.verdict == 'E') return report.message;

  const std::string who = blamed_files(report, paths);
  const std::string what = this_shard(report, paths);
  if (clean_exit && report.verdict == 'X')
    return who + ": validating " + what + " failed (" + report.message + "): " + kRecreate;
  if (status >= 0 && WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    if (sig == SIGTERM || sig == SIGUSR1 || sig == SIGINT || sig == SIGHUP) {
      // Sent from outside, usually to the whole process group (scancel, srun, mpirun
      // ending the job): not a crash. This rank's own handler may run a moment later.
      for (int i = 0; i < 20 && !stop_requested(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      if (stop_requested()) throw StopRequested{stop_signal()};
      return who + ": the shard validation process was killed by " + signal_name(sig) +
             " from outside while validating " + what + " (not a fault of the file); rerun the job";
    }
    return who + ": libhdf5 crashed (" + signal_name(sig) + ") while validating " + what + ": " + kRecreate;
  }
  std::string how = status >= 0 && WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                                     : std::string("exit status unknown");
  if (report.garbled) how = "garbled report from " + options.exe;
  return who + ": the shard validation process ended abnormally (" + how + ") while validating " + what + ": " +
         kRecreate;
}

// ---------------------------------------------------------------- the collective

void check_shards_isolated(const std::vector<std::string>& paths, int64_t vocab_size, Comm& world) {
  // The waiting ranks give up after comm_timeout() without a heartbeat: beat well inside it.
  ShardCheckOptions options;
  options.tick_interval_s = std::min(options.tick_interval_s, comm_timeout() / 4);
  check_shards_isolated(paths, vocab_size, world, options);
}

void check_shards_isolated(const std::vector<std::string>& paths, int64_t vocab_size, Comm& world,
                           const ShardCheckOptions& options) {
  // header[0]: 0 = still running (heartbeat), 1 = verdict follows, 2 = rank 0 got a stop
  // signal; header[1]: message bytes (verdict) or the signal (stop).
  enum : int64_t { kRunning = 0, kVerdict = 1, kStopped = 2 };
  int64_t header[2] = {kRunning, 0};
  std::string message;
  if (world.rank() == 0) {
    std::function<void()> heartbeat;
    if (world.size() > 1)
      heartbeat = [&] {
        int64_t h[2] = {kRunning, 0};
        world.broadcast(h, 2, CommDtype::int64, 0, Stream{});
      };
    try {
      message = validate_shards_in_child(paths, vocab_size, options, heartbeat);
    } catch (const StopRequested& stop) {
      int64_t h[2] = {kStopped, stop.signal};
      world.broadcast(h, 2, CommDtype::int64, 0, Stream{});
      throw;
    }
    header[0] = kVerdict;
    header[1] = static_cast<int64_t>(message.size());
    world.broadcast(header, 2, CommDtype::int64, 0, Stream{});
  } else {
    // Same calls as rank 0: one broadcast per heartbeat, then the verdict's.
    do {
      world.broadcast(header, 2, CommDtype::int64, 0, Stream{});
    } while (header[0] == kRunning);
    if (header[0] == kStopped) throw StopRequested{static_cast<int>(header[1])};
    message.resize(static_cast<size_t>(header[1]));
  }
  if (header[1] > 0) world.broadcast(message.data(), message.size(), CommDtype::uint8, 0, Stream{});
  if (!message.empty()) throw Error(message);
}

}  // namespace ringinfer
