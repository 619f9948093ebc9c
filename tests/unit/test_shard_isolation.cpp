// Shard validation in a child process (ringinfer/shard_isolation.h), without MPI:
// validate_shards_in_child with the real `ringinfer __check-shards` child on good,
// malformed and libhdf5-crashing shards, and with tests/tools/shard_check_stub for the
// child failures that need no libhdf5 bug (signal, hang, odd exit, garbled report).
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "ringinfer/error.h"
#include "ringinfer/shard.h"
#include "ringinfer/shard_isolation.h"
#include "ringinfer/signals.h"
#include "shard_fixture.h"
#include "test_paths.h"

namespace fs = std::filesystem;
using namespace ringinfer;

namespace {

const char* const kRecreate = "the file is corrupt; re-create it with `ringinfer prep`";

// Helper executables sit next to this test binary (tests/CMakeLists.txt).
std::string tool(const std::string& name) {
  const std::string p = (fs::read_symlink("/proc/self/exe").parent_path() / name).string();
  if (!fs::exists(p)) throw std::runtime_error(p + " not built (ninja " + name + ")");
  return p;
}

ShardCheckOptions real_child() {
  ShardCheckOptions o;
  o.exe = test::ringinfer_binary();
  return o;
}

ShardCheckOptions stub_child(double stall_s = 0) {
  ShardCheckOptions o;
  o.exe = tool("shard_check_stub");
  o.stall_timeout_s = stall_s;
  return o;
}

// The message open_documents gives in this process (for files known not to crash it).
// The error of the readers the isolated check stands for (run and score: variable-length
// strings accepted), or "" when the shards are fine.
std::string in_process_error(const std::vector<std::string>& paths, int64_t vocab) {
  try {
    DocumentSet docs = open_documents(paths, vocab, ShardStrings::variable_checked);
    for (const DocInfo& d : docs.documents()) (void)docs.read_document(d);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

class ShardIsolation : public ::testing::Test {
 protected:
  std::string path(const std::string& name) const { return dir_.file(name); }
  std::string good(const std::string& name, const std::string& id_prefix = "doc", uint64_t seed = 1) const {
    const std::string p = path(name);
    test::write_valid_shard(p, test::random_shard_data({5, 0, 17, 300}, 1000, seed, id_prefix));
    return p;
  }
  test::TempDir dir_{"ri-iso"};
};

// ---------------------------------------------------------------- real child

TEST_F(ShardIsolation, GoodShardsPass) {
  const std::string a = good("a.h5", "a"), b = good("b.h5", "b", 2);
  EXPECT_EQ(validate_shards_in_child({a}, 1000, real_child()), "");
  EXPECT_EQ(validate_shards_in_child({a, b}, -1, real_child()), "");
}

// Every file of tests/fuzz/libhdf5-crashes/ crashes (or trips) libhdf5 1.10 itself; in
// the child it must become one clear message that names the file, never a crash here.
TEST_F(ShardIsolation, LibHdf5CrashInputsGiveAnErrorNamingTheFile) {
  const fs::path crashes = fs::path(test::source_dir()) / "tests/fuzz/libhdf5-crashes";
  int seen = 0;
  for (const auto& entry : fs::directory_iterator(crashes)) {
    const std::string name = entry.path().filename().string();
    if (name == "README.md") continue;
    ++seen;
    // The fuzzer opened them with vocabulary 1000 (their first byte is odd).
    for (int64_t vocab : {int64_t(1000), int64_t(-1)}) {
      const std::string p = entry.path().string();
      const std::string msg = validate_shards_in_child({p}, vocab, real_child());
      SCOPED_TRACE(name + " vocab " + std::to_string(vocab) + ": " + msg);
      EXPECT_TRUE(starts_with(msg, p + ": ")) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line";
      // A good shard given first does not take the blame.
      const std::string g = good("first.h5");
      const std::string msg2 = validate_shards_in_child({g, p}, vocab, real_child());
      EXPECT_TRUE(starts_with(msg2, p + ": ")) << msg2;
    }
  }
  EXPECT_EQ(seen, 5) << "expected the five inputs listed in " << crashes << "/README.md";
}

// Shards that are malformed but do not crash libhdf5: the child reports exactly the
// message the fixture specifies for open_documents (or for reading, for on-read cases).
TEST_F(ShardIsolation, MalformedShardsGiveTheReadersMessage) {
  for (const auto& c : test::malformed_cases()) {
    const std::string sub = path(c.name);
    fs::create_directories(sub);
    const test::MalformedShard bad = test::write_malformed(c.name, sub + "/bad.h5");
    const std::string msg = validate_shards_in_child(bad.paths, bad.vocab_size, real_child());
    SCOPED_TRACE(c.name);
    if (bad.prefix_only) {
      EXPECT_TRUE(starts_with(msg, bad.checked_message)) << msg;
    } else {
      EXPECT_EQ(msg, bad.checked_message);
      EXPECT_EQ(msg, in_process_error(bad.paths, bad.vocab_size));
    }
  }
}

// Problems across shards: the first error in input order, as open_documents reports it,
// even when a later shard is bad on its own.
TEST_F(ShardIsolation, CrossShardErrorsMatchOpenDocuments) {
  const std::string a = good("a.h5", "x"), b = good("b.h5", "x", 2);  // same ids
  const std::string bad_dir = path("bad");
  fs::create_directories(bad_dir);
  const test::MalformedShard bad = test::write_malformed("bad-offsets", bad_dir + "/c.h5");
  ASSERT_EQ(bad.paths.size(), 1u);
  const std::vector<std::vector<std::string>> inputs = {{a, b}, {a, b, bad.paths[0]}, {a, a}, {a, bad.paths[0], a}};
  for (const auto& in : inputs) {
    const std::string expected = in_process_error(in, -1);
    ASSERT_FALSE(expected.empty());
    EXPECT_EQ(validate_shards_in_child(in, -1, real_child()), expected);
  }
  // The model's vocabulary is checked too.
  EXPECT_EQ(validate_shards_in_child({a}, 999, real_child()), in_process_error({a}, 999));
  EXPECT_NE(in_process_error({a}, 999).find("vocab_size"), std::string::npos);
}

TEST_F(ShardIsolation, MissingExecutableIsAClearError) {
  ShardCheckOptions o;
  o.exe = path("no-such-ringinfer");
  const std::string msg = validate_shards_in_child({good("a.h5")}, -1, o);
  EXPECT_TRUE(starts_with(msg, "cannot start the shard validation process " + o.exe + ": ")) << msg;
}

// ---------------------------------------------------------------- stub child

TEST_F(ShardIsolation, ChildKilledBySignalNamesTheFileAndSignal) {
  const std::string a = good("a.h5"), crash = good("crash-sigsegv.h5", "c");
  EXPECT_EQ(validate_shards_in_child({a, crash}, -1, stub_child()),
            crash + ": libhdf5 crashed (SIGSEGV) while validating this shard: " + kRecreate);
  // The stub is otherwise the real child: good files pass through it.
  EXPECT_EQ(validate_shards_in_child({a}, -1, stub_child()), "");
}

TEST_F(ShardIsolation, ChildKilledFromOutsideIsNotBlamedOnTheFile) {
  set_stop_requested_for_testing(false);
  const std::string a = good("a.h5"), term = good("sigterm.h5", "t");
  EXPECT_EQ(validate_shards_in_child({a, term}, -1, stub_child()),
            term + ": the shard validation process was killed by SIGTERM from outside while validating this "
                   "shard (not a fault of the file); rerun the job");
}

// scancel / preemption signal the whole process group: the child dies of SIGTERM and
// this process's stop flag is set. That is a stop (exit 75 in run), not a bad file.
TEST_F(ShardIsolation, ChildKilledAlongWithAStoppedRankIsAStop) {
  const std::string term = good("sigterm.h5");
  set_stop_requested_for_testing(true);
  EXPECT_THROW(validate_shards_in_child({term}, -1, stub_child()), StopRequested);
  set_stop_requested_for_testing(false);
}

TEST_F(ShardIsolation, StopSignalWhileWaitingKillsTheChildAndStops) {
  const std::string hang = good("hang.h5");
  ShardCheckOptions o = stub_child(60.0);
  o.tick_interval_s = 0.05;
  int ticks = 0;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(validate_shards_in_child({hang}, -1, o,
                                        [&] {
                                          if (++ticks == 3) set_stop_requested_for_testing(true);
                                        }),
               StopRequested);
  set_stop_requested_for_testing(false);
  EXPECT_EQ(ticks, 3);  // stopped at the next poll, not at the stall timeout
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
}

TEST_F(ShardIsolation, HungChildIsKilledAfterTheStallTimeout) {
  const std::string a = good("a.h5"), hang = good("hang.h5", "h");
  int ticks = 0;
  ShardCheckOptions o = stub_child(1.0);
  o.tick_interval_s = 0.1;
  const auto t0 = std::chrono::steady_clock::now();
  const std::string msg = validate_shards_in_child({a, hang}, -1, o, [&] { ++ticks; });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(msg, hang + ": validating this shard made no progress for 1 s (libhdf5 hangs on it, or the file "
                        "system stalls) and was stopped; if the file is corrupt, re-create it with `ringinfer prep`");
  EXPECT_LT(s, 10.0);
  EXPECT_GE(ticks, 5);  // ~10 in 1 s at 0.1 s
}

TEST_F(ShardIsolation, ExceptionFromTickKillsTheChildAndPropagates) {
  const std::string hang = good("hang.h5");
  ShardCheckOptions o = stub_child(60.0);
  o.tick_interval_s = 0.05;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(validate_shards_in_child({hang}, -1, o, [] { throw Error("peer died"); }), Error);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
}

TEST_F(ShardIsolation, AbnormalExitsNameTheFile) {
  const std::string a = good("a.h5");
  const std::string e7 = good("exit7.h5"), garbage = good("garbage.h5"), thr = good("throwbad.h5");
  EXPECT_EQ(validate_shards_in_child({a, e7}, -1, stub_child()),
            e7 + ": the shard validation process ended abnormally (exit status 7) while validating this shard: " +
                kRecreate);
  const std::string g = validate_shards_in_child({garbage}, -1, stub_child());
  EXPECT_TRUE(starts_with(g, garbage + ": the shard validation process ended abnormally (garbled report from ")) << g;
  EXPECT_EQ(validate_shards_in_child({thr}, -1, stub_child()),
            thr + ": validating this shard failed (std::bad_array_new_length): " + kRecreate);
}

TEST_F(ShardIsolation, ChildRefusesBadArguments) {
  std::vector<std::string> args = {"--vocab", "x", "--report-fd", "1", "--", "a.h5"};
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  EXPECT_EQ(shard_check_child_main(static_cast<int>(argv.size()), argv.data()), 2);
  argv.pop_back();  // no files
  args[1] = "5";
  EXPECT_EQ(shard_check_child_main(static_cast<int>(argv.size()), argv.data()), 2);
}

}  // namespace
