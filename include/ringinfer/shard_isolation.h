#pragma once
// Validating input shards in a child process before any rank opens them: libhdf5 1.10
// can crash on a corrupt file (tests/fuzz/libhdf5-crashes/), and a crash in a child is
// an error message naming the file instead of a dead MPI job.
//
// The child is this executable run again (posix_spawn of /proc/self/exe: MPI with
// InfiniBand or CUDA is not fork-safe) as `ringinfer __check-shards` (hidden). It runs
// what every rank will run later — open_documents, then a read of every document's
// tokens in bounded blocks — and reports over a pipe which file it is about to touch,
// progress ticks, and the verdict. The parent turns a signal or an abnormal exit into
// "<file>: libhdf5 crashed (SIGFPE) while validating this shard: ...", and kills a child
// that makes no progress for a while (a libhdf5 loop on a corrupt file).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ringinfer/comm.h"

namespace ringinfer {

// The hidden subcommand: `<exe> __check-shards --vocab N --report-fd FD -- FILE...`.
inline constexpr const char* kShardCheckCommand = "__check-shards";

// How the parent runs the child (tests swap the executable and shorten the limits).
struct ShardCheckOptions {
  // Executable that understands kShardCheckCommand as argv[1].
  std::string exe = "/proc/self/exe";
  // Seconds without any report from the child before it is killed as hung; <= 0 means
  // max(comm_timeout(), 600): the child reports at least once per document, and one
  // document's read takes seconds even on a slow shared file system, so 10 minutes of
  // silence is a hang, and a user who raised --comm-timeout for a slow file system
  // gets at least that much.
  double stall_timeout_s = 0;
  // While waiting, on_tick (below) is called at most this often (seconds).
  double tick_interval_s = 2.0;
};

// Runs the validation child for `paths` (against `vocab_size` when >= 0; -1: the shards'
// own attribute) and waits for it. Returns "" when every shard is fine, else the one-line
// error message, naming the file: open_documents' or read_stripes' own message for a bad
// shard, or the crash / hang / start-up failure. on_tick, when set, is called every
// tick_interval_s while the child runs; an exception from it kills the child and
// propagates. A stop signal (signals.h) while it waits, or one that killed the child
// along with this process, throws StopRequested (the child is killed). Not collective.
std::string validate_shards_in_child(const std::vector<std::string>& paths, int64_t vocab_size,
                                     const ShardCheckOptions& options = {},
                                     const std::function<void()>& on_tick = {});

// World rank 0 validates every shard of `paths` with validate_shards_in_child and
// broadcasts the verdict over `world` (host buffers, MpiComm); every rank then throws the
// same Error when a shard is bad or the child crashed. While the child runs, rank 0
// broadcasts a heartbeat every tick_interval_s, so the other ranks wait as long as the
// child makes progress, yet give up after comm_timeout() if rank 0 itself dies. When
// rank 0 is stopped by a signal meanwhile, every rank throws StopRequested.
// Collective over `world`. One child per job, not per rank.
void check_shards_isolated(const std::vector<std::string>& paths, int64_t vocab_size, Comm& world);
void check_shards_isolated(const std::vector<std::string>& paths, int64_t vocab_size, Comm& world,
                           const ShardCheckOptions& options);

// The child's side: argv are the arguments after kShardCheckCommand. Writes its report to
// the --report-fd descriptor and returns the exit code (0 whether the shards are good or
// bad: the verdict is in the report; 2 on bad arguments).
int shard_check_child_main(int argc, char** argv);

}  // namespace ringinfer
