// The resume fingerprint identifies files by content (file_digest.h), and --output is
// checked before any work (output_path.h): never a file the job reads, always writable.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "gtest_helpers.h"
#include "cli/file_digest.h"
#include "cli/output_path.h"
#include "cli/result_store.h"
#include "ringinfer/error.h"
#include "test_paths.h"

namespace ringinfer::cli {
namespace {

using test::error_of;

namespace fs = std::filesystem;

std::string random_text(std::mt19937& rng, size_t n) {
  std::string s(n, ' ');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

void write(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

void poke(const std::string& path, uint64_t offset, char value) {
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(value);
}

void age(const std::string& path, int hours) {
  fs::last_write_time(path, fs::last_write_time(path) - std::chrono::hours(hours));
}

TEST(FileDigest, Hash64SeesEveryWordAndTheLength) {
  std::mt19937 rng(1);
  const std::string s = random_text(rng, 1000);
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const uint64_t h = hash64(p, s.size(), 0);
  EXPECT_EQ(h, hash64(p, s.size(), 0));
  EXPECT_NE(h, hash64(p, s.size(), 1));
  EXPECT_NE(h, hash64(p, s.size() - 1, 0));
  for (size_t i = 0; i < s.size(); ++i) {  // every byte, the tail bytes included
    std::string t = s;
    t[i] ^= static_cast<char>(1 << (i % 8));
    ASSERT_NE(h, hash64(reinterpret_cast<const uint8_t*>(t.data()), t.size(), 0)) << "byte " << i;
  }
  const std::string zeros(64, '\0');  // zeros of different lengths differ
  EXPECT_NE(hash64(reinterpret_cast<const uint8_t*>(zeros.data()), 32, 0),
            hash64(reinterpret_cast<const uint8_t*>(zeros.data()), 64, 0));
}

TEST(FileDigest, SmallFileIsReadWhole) {
  test::TempDir dir("digest");
  std::mt19937 rng(2);
  const std::string content = random_text(rng, 3 * (1 << 20) + 123);  // several blocks and a partial one
  write(dir.file("a"), content);
  write(dir.file("b"), content);
  age(dir.file("b"), 5);
  const std::string id = content_identity(dir.file("a"));
  EXPECT_EQ(id.substr(0, id.find(' ')), "size=" + std::to_string(content.size()));
  EXPECT_EQ(id, content_identity(dir.file("b")));  // same bytes, other path and mtime
  std::uniform_int_distribution<uint64_t> at(0, content.size() - 1);
  for (uint64_t o : {uint64_t(0), uint64_t(content.size() - 1), at(rng), at(rng), at(rng)}) {
    write(dir.file("b"), content);
    poke(dir.file("b"), o, static_cast<char>(content[o] ^ 0x10));
    EXPECT_NE(id, content_identity(dir.file("b"))) << "byte " << o;
  }
  EXPECT_NE(content_identity(dir.file("a")).find("digest="), std::string::npos);
  EXPECT_NE(error_of([&] { content_identity(dir.file("missing")); }).find(dir.file("missing")), std::string::npos);
}

// Above 64 MiB, 64 evenly spaced 1 MiB blocks are read, the first and the last included.
TEST(FileDigest, LargeFileIsSampled) {
  test::TempDir dir("digest");
  const std::string path = dir.file("big");
  const uint64_t size = 200 * kDigestBlockBytes + 12345;
  { std::ofstream(path, std::ios::binary); }
  fs::resize_file(path, size);  // sparse: fast to make, read as zeros
  const uint64_t base = file_digest(path);
  const uint64_t span = size - kDigestBlockBytes;
  const uint64_t block7 = span * 7 / 63;
  struct Case {
    uint64_t offset;
    bool sampled;
  };
  for (const Case& c : {Case{0, true}, Case{kDigestBlockBytes - 1, true}, Case{size - 1, true},
                        Case{span, true}, Case{block7 + 77, true},
                        Case{block7 + kDigestBlockBytes + 10, false}}) {  // between blocks 7 and 8
    poke(path, c.offset, 'x');
    EXPECT_EQ(file_digest(path) != base, c.sampled) << "offset " << c.offset;
    poke(path, c.offset, '\0');
    ASSERT_EQ(file_digest(path), base);
  }
  fs::resize_file(path, size + 1);  // the size is part of the digest
  EXPECT_NE(file_digest(path), base);
}

// A model folder: every regular top-level file by name, size and content.
TEST(FileDigest, ModelFolderIdentity) {
  test::TempDir dir("digest");
  const std::string m = dir.file("model");
  fs::create_directories(m + "/sub");
  std::mt19937 rng(3);
  write(m + "/config.json", "{\"rope_scaling\": null}");
  write(m + "/model.safetensors", random_text(rng, 5000));
  write(m + "/tokenizer.json", random_text(rng, 700));
  const std::string id = model_identity(m, dir.file("out.h5"));
  EXPECT_NE(id.find("config.json size=22 digest="), std::string::npos) << id;
  EXPECT_NE(id.find("model.safetensors size=5000"), std::string::npos) << id;
  EXPECT_NE(id.find("tokenizer.json size=700"), std::string::npos) << id;
  EXPECT_EQ(id.find(m), std::string::npos) << "the path is not part of the identity: " << id;
  // Hidden files, sub-folders and the job's own output files in the folder do not count.
  write(m + "/.cache", "x");
  write(m + "/sub/x.bin", "y");
  write(m + "/out.h5.journal.0", "z");
  write(m + "/out.h5.tmp", "z");
  EXPECT_EQ(model_identity(m, m + "/out.h5"), id);
  age(m + "/config.json", 3);
  EXPECT_EQ(model_identity(m, m + "/out.h5"), id);
  write(m + "/config.json", "{\"rope_scaling\": true}");  // same size, other content
  EXPECT_NE(model_identity(m, m + "/out.h5"), id);
  write(m + "/config.json", "{\"rope_scaling\": null}");
  write(m + "/generation_config.json", "{}");  // a new file
  EXPECT_NE(model_identity(m, m + "/out.h5"), id);
}

class Fingerprint : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937 rng(4);
    fs::create_directories(dir.file("model"));
    write(dir.file("model/config.json"), "{\"a\": 1}");
    write(dir.file("model/model.safetensors"), random_text(rng, 3000));
    write(dir.file("in1.h5"), random_text(rng, 2000));
    write(dir.file("in2.h5"), random_text(rng, 1000));
    config.command = "run";
    config.model = dir.file("model");
    config.inputs = {dir.file("in1.h5"), dir.file("in2.h5")};
    config.output = dir.file("out.h5");
  }
  test::TempDir dir{"fingerprint"};
  RunConfig config;
};

TEST_F(Fingerprint, FormatLineAndWhatCounts) {
  const std::string fp = job_fingerprint(config);
  EXPECT_EQ(fp.substr(0, fp.find('\n')), "ringinfer journal v3");
  EXPECT_EQ(fp.find(dir.path()), std::string::npos) << fp;
  RunConfig layout = config;  // rank layout and waiting options change no result
  layout.cp = 2;
  layout.tp = 2;
  layout.comm_timeout_s = 9;
  layout.quiet = true;
  layout.output = dir.file("elsewhere.h5");
  layout.offload_residual = true;  // where x waits between layers: bitwise the same results
  layout.no_decode_graph = true;   // how decode steps are launched: the same tokens
  EXPECT_EQ(job_fingerprint(layout), fp);
  RunConfig hotter = config;
  hotter.temperature = 0.5;
  EXPECT_NE(job_fingerprint(hotter), fp);
  // Every sampling control and stop rule changes the tokens: each is part of the job.
  for (int k = 0; k < 8; ++k) {
    RunConfig c = config;
    if (k == 0) c.top_k = 5;
    if (k == 1) c.min_p = 0.1;
    if (k == 2) c.repetition_penalty = 1.2;
    if (k == 3) c.frequency_penalty = 0.3;
    if (k == 4) c.presence_penalty = 0.3;
    if (k == 5) c.stop = {"\n\n"};
    if (k == 6) c.max_sentences = 2;
    if (k == 7) c.on_error = "skip";
    EXPECT_NE(job_fingerprint(c), fp) << "control " << k;
  }
  RunConfig swapped = config;  // the inputs' order is the documents' order
  std::swap(swapped.inputs[0], swapped.inputs[1]);
  EXPECT_NE(job_fingerprint(swapped), fp);
  RunConfig fp8 = config;  // the KV cache's rounding changes results
  fp8.kv_dtype = "fp8";
  EXPECT_NE(job_fingerprint(fp8), fp);
}

// A byte-identical copy elsewhere, at another mtime, is the same job (a requeue that
// re-staged its inputs); a same-size replacement or a changed config is not.
TEST_F(Fingerprint, ContentNotPathOrMtime) {
  const std::string fp = job_fingerprint(config);
  fs::create_directories(dir.file("staged"));
  fs::copy(dir.file("model"), dir.file("staged/model"));
  fs::copy_file(dir.file("in1.h5"), dir.file("staged/in1.h5"));
  fs::copy_file(dir.file("in2.h5"), dir.file("staged/in2.h5"));
  for (const char* f : {"staged/model/config.json", "staged/in1.h5", "staged/in2.h5"}) age(dir.file(f), 7);
  RunConfig staged = config;
  staged.model = dir.file("staged/model");
  staged.inputs = {dir.file("staged/in1.h5"), dir.file("staged/in2.h5")};
  EXPECT_EQ(job_fingerprint(staged), fp);

  std::mt19937 rng(99);
  write(dir.file("staged/in2.h5"), random_text(rng, 1000));  // same size, other tokens
  EXPECT_NE(job_fingerprint(staged), fp);
  fs::copy_file(dir.file("in2.h5"), dir.file("staged/in2.h5"), fs::copy_options::overwrite_existing);
  write(dir.file("staged/model/config.json"), "{\"a\": 2}");
  EXPECT_NE(job_fingerprint(staged), fp);
}

TEST_F(Fingerprint, GgufModelFile) {
  write(dir.file("m.gguf"), "GGUF and some tensors");
  config.model = dir.file("m.gguf");
  const std::string fp = job_fingerprint(config);
  EXPECT_NE(fp.find("model = size=21 digest="), std::string::npos) << fp;
  write(dir.file("m.gguf"), "GGUF and other tensors");
  EXPECT_NE(job_fingerprint(config), fp);
}

// ---------------------------------------------------------------- --output checks

class OutputPath : public Fingerprint {};

TEST_F(OutputPath, RefusesOverwritingWhatTheJobReads) {
  EXPECT_NO_THROW(check_output_path(config));
  EXPECT_FALSE(fs::exists(config.output)) << "the check creates no output";
  for (const auto& e : fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".probe."), std::string::npos) << "probe file left behind";

  RunConfig c = config;
  c.output = dir.file("model/model.safetensors");
  EXPECT_EQ(error_of([&] { check_output_path(c); }),
            "--output " + c.output + " is the file " + c.output + " of the model folder " + config.model +
                ": choose another output path");
  c.output = dir.path() + "/./model/../in2.h5";  // another spelling of an input
  EXPECT_EQ(error_of([&] { check_output_path(c); }),
            "--output " + c.output + " is the input " + dir.file("in2.h5") + ": choose another output path");
  fs::create_symlink(dir.file("in1.h5"), dir.file("link.h5"));
  c = config;
  c.inputs = {dir.file("link.h5")};  // a symlinked input, written over through its target
  c.output = dir.file("in1.h5");
  EXPECT_NE(error_of([&] { check_output_path(c); }).find("is the input " + dir.file("link.h5")), std::string::npos);
  fs::create_hard_link(dir.file("in2.h5"), dir.file("hard.h5"));
  c = config;
  c.output = dir.file("hard.h5");
  EXPECT_NE(error_of([&] { check_output_path(c); }).find("is the input " + dir.file("in2.h5")), std::string::npos);
  // A companion: OUT.tmp is written first, then renamed.
  c = config;
  c.output = dir.file("in1");
  write(dir.file("in1.tmp"), "precious");
  c.inputs = {dir.file("in1.tmp")};
  EXPECT_EQ(error_of([&] { check_output_path(c); }),
            "--output " + c.output + ": the job would write " + c.output + ".tmp, which is the input " +
                dir.file("in1.tmp") + ": choose another output path");
}

TEST_F(OutputPath, RefusesTheModelFileAndThePromptTemplate) {
  write(dir.file("smol.gguf"), "GGUF");
  RunConfig c = config;
  c.command = "prep";
  c.model = dir.file("smol.gguf");
  c.inputs = {dir.file("in1.h5")};
  c.output = dir.file("smol.gguf");
  EXPECT_EQ(error_of([&] { check_output_path(c); }),
            "--output " + c.output + " is the model file " + c.model + ": choose another output path");
  write(dir.file("tmpl.txt"), "{document}");
  c.output = c.prompt_template = dir.file("tmpl.txt");
  EXPECT_EQ(error_of([&] { check_output_path(c); }),
            "--output " + c.output + " is the prompt template " + c.output + ": choose another output path");
  c.model = config.model;
  c.prompt_template.clear();
  c.output = dir.file("model/new.h5");  // a new file in the model folder overwrites nothing
  EXPECT_NO_THROW(check_output_path(c));
  write(dir.file("model/new.h5.journal.0"), "x");  // nor on resume, beside its own journal and .tmp
  write(dir.file("model/new.h5.tmp"), "x");
  EXPECT_NO_THROW(check_output_path(c));
  write(dir.file("model/new.h5"), "x");  // but an existing file of that name is the model's
  EXPECT_NE(error_of([&] { check_output_path(c); }).find("of the model folder"), std::string::npos);
}

TEST_F(OutputPath, RefusesAnUnwritableLocation) {
  RunConfig c = config;
  c.output = dir.file("model");
  EXPECT_EQ(error_of([&] { check_output_path(c); }),
            "--output " + c.output + " is a directory: give a file path, such as " + c.output + "/out.h5");
  c.output = dir.file("no/such/out.h5");
  EXPECT_EQ(error_of([&] { check_output_path(c); }),
            "--output " + c.output + ": the folder " + dir.file("no/such") + " does not exist");
  c.output = dir.file("in1.h5/out.h5");
  EXPECT_EQ(error_of([&] { check_output_path(c); }),
            "--output " + c.output + ": " + dir.file("in1.h5") + " is not a folder");
  // A folder where nobody can create files, not even root.
  c.output = "/proc/ringinfer-out.h5";
  EXPECT_EQ(error_of([&] { check_output_path(c); }).substr(0, 72),
            "--output /proc/ringinfer-out.h5: cannot create files in the folder /proc");
  if (::geteuid() == 0) GTEST_SKIP() << "root writes into read-only folders";
  fs::create_directories(dir.file("ro"));
  fs::permissions(dir.file("ro"), fs::perms::owner_read | fs::perms::owner_exec);
  c.output = dir.file("ro/out.h5");
  EXPECT_EQ(error_of([&] { check_output_path(c); }),
            "--output " + c.output + ": cannot create files in the folder " + dir.file("ro") + " (Permission denied)");
  fs::permissions(dir.file("ro"), fs::perms::owner_all);
}

}  // namespace
}  // namespace ringinfer::cli
