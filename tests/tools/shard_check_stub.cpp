// shard_check_stub: stands in for `ringinfer __check-shards` in the shard-isolation tests
// (tests/unit/test_shard_isolation.cpp, tests/mpi/mpi_shard_isolation.cpp), so that every
// way a validation child can fail is reproducible without a libhdf5 bug at hand.
//
//   shard_check_stub __check-shards --vocab N --report-fd FD -- FILE...
//
// Runs the real child (shard_check_child_main), except that the first file whose name
// contains one of these words makes it, after announcing that file ("F <i>"):
//   sigsegv   die of SIGSEGV            hang      sleep forever (reporting nothing)
//   exit7     exit with status 7        garbage   write a record the parent cannot parse
//   throwbad  report a non-Error exception ("X" record)
//   sigterm   die of SIGTERM (as when a job's processes are signalled from outside)
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <csignal>
#include <cstring>
#include <string>

#include "ringinfer/shard_isolation.h"

namespace {

void say(int fd, const std::string& s) {
  if (::write(fd, s.data(), s.size()) != static_cast<ssize_t>(s.size())) std::_Exit(4);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], ringinfer::kShardCheckCommand) != 0) return 2;
  rlimit no_core{0, 0};  // the SIGSEGV below is on purpose
  ::setrlimit(RLIMIT_CORE, &no_core);
  int fd = -1, first_file = argc;
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--report-fd") == 0 && i + 1 < argc) fd = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--") == 0) {
      first_file = i + 1;
      break;
    }
  }
  for (int i = first_file; i < argc && fd >= 0; ++i) {
    const std::string name = argv[i];
    const std::string announce = "F " + std::to_string(i - first_file) + "\n";
    if (name.find("sigsegv") != std::string::npos) {
      say(fd, announce);
      // The default action, not a sanitizer's handler (which would abort: SIGABRT instead).
      std::signal(SIGSEGV, SIG_DFL);
      ::raise(SIGSEGV);
    } else if (name.find("sigterm") != std::string::npos) {
      say(fd, announce);
      std::signal(SIGTERM, SIG_DFL);
      ::raise(SIGTERM);
    } else if (name.find("hang") != std::string::npos) {
      say(fd, announce);
      for (;;) ::pause();
    } else if (name.find("exit7") != std::string::npos) {
      say(fd, announce);
      std::_Exit(7);
    } else if (name.find("garbage") != std::string::npos) {
      say(fd, announce + "what is this\n");
      return 0;
    } else if (name.find("throwbad") != std::string::npos) {
      const std::string what = "std::bad_array_new_length";
      say(fd, announce + "X " + std::to_string(what.size()) + "\n" + what);
      return 0;
    }
  }
  return ringinfer::shard_check_child_main(argc - 2, argv + 2);
}
