// `ringinfer prep` on a tiny model with a real BPE tokenizer: problems name the input file
// and line (or the model), never the output shard; ids are kept exactly; a BOM is not text.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "model_files.h"
#include "ringinfer/error.h"
#include "ringinfer/shard.h"
#include "test_paths.h"

namespace ringinfer {
namespace {

namespace fs = std::filesystem;

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

// A one-layer model whose vocabulary is `vocab` rows, with the 600-token test BPE tokenizer.
void write_model(const std::string& dir, int64_t vocab) {
  std::mt19937_64 rng(5);
  test::TinyModel m = test::make_tiny_model(rng, 1, /*qkv_bias=*/false, /*tied=*/false);
  m.config["vocab_size"] = vocab;
  std::normal_distribution<float> dist(0.0f, 0.5f);
  for (const char* name : {"model.embed_tokens.weight", "lm_head.weight"}) {
    m.shapes[name] = {vocab, 64};
    m.values[name].resize(static_cast<size_t>(vocab * 64));
    for (float& x : m.values[name]) x = dist(rng);
  }
  fs::create_directories(dir);
  test::write_tiny_hf(dir, m);
  fs::copy_file(test::source_dir() + "/tests/fixtures/tokenizer/small_bpe.json", dir + "/tokenizer.json");
}

class Prep : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = dir_.file("model");
    write_model(model_, 600);
  }
  RunConfig config(const std::vector<std::string>& inputs) const {
    RunConfig c;
    c.command = "prep";
    c.model = model_;
    c.inputs = inputs;
    c.output = out_;
    c.quiet = true;
    return c;
  }
  std::string error_of(const RunConfig& c) const {
    try {
      cli::prep_command(c);
    } catch (const Error& e) {
      EXPECT_FALSE(fs::exists(out_)) << "a failed prep left " << out_;
      return e.what();
    }
    return "no error";
  }
  std::string inputs_error(const std::vector<std::string>& inputs) const { return error_of(config(inputs)); }
  // Ids and tokens of the shard prep wrote.
  std::vector<DocInfo> docs() const { return open_documents({out_}).documents(); }
  std::vector<std::vector<int32_t>> tokens() const {
    const DocumentSet set = open_documents({out_});
    std::vector<std::vector<int32_t>> t;
    for (const DocInfo& d : set.documents()) t.push_back(set.read_document(d));
    return t;
  }

  test::TempDir dir_{"ringinfer-prep"};
  std::string model_;
  std::string out_ = dir_.file("out.h5");
};

TEST_F(Prep, DirectoryInputsAreErrors) {
  const std::string sub = dir_.file("docs.jsonl");
  fs::create_directories(sub);
  EXPECT_EQ(inputs_error({sub}), sub + ": is a directory, not a file");
  EXPECT_EQ(inputs_error({dir_.path()}), dir_.path() + ": is a directory, not a file");
  write_file(dir_.file("a.txt"), "hello");
  RunConfig c = config({dir_.file("a.txt")});
  c.prompt_template = dir_.path();
  EXPECT_EQ(error_of(c), dir_.path() + ": is a directory, not a file");
}

TEST_F(Prep, IntegerIdsAreKeptExactly) {
  const std::string f = dir_.file("ids.jsonl");
  write_file(f, "{\"id\": 18446744073709551615, \"text\": \"hi\"}\n{\"id\": -5, \"text\": \"x\"}\n"
                "{\"id\": 9223372036854775807, \"text\": \"y\"}\n{\"id\": \"-1\", \"text\": \"z\"}\n");
  ASSERT_EQ(cli::prep_command(config({f})), 0);
  std::vector<std::string> ids;
  for (const DocInfo& d : docs()) ids.push_back(d.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"18446744073709551615", "-5", "9223372036854775807", "-1"}));
  fs::remove(out_);
  for (const char* id : {"18446744073709551616", "-9223372036854775809", "1.5", "1e3", "true", "null", "[1]"}) {
    write_file(f, "{\"id\": \"ok\", \"text\": \"x\"}\n{\"id\": " + std::string(id) + ", \"text\": \"hi\"}\n");
    EXPECT_EQ(inputs_error({f}), f + ":2: \"id\" must be a string or an integer of at most 64 bits (quote other ids)")
        << id;
  }
}

TEST_F(Prep, BadIdsNameTheInputFileAndLine) {
  const std::string f = dir_.file("a.jsonl");
  write_file(f, "{\"id\": \"a\", \"text\": \"x\"}\n\n{\"id\": \"a\", \"text\": \"y\"}\n");
  EXPECT_EQ(inputs_error({f}), f + ":3: duplicate document id \"a\" (first at " + f + ":1)");
  write_file(f, "{\"id\": \"\", \"text\": \"x\"}\n");
  EXPECT_EQ(inputs_error({f}), f + ":1: empty document id");
  write_file(f, "{\"id\": \"b\", \"text\": \"x\"}\n{\"id\": \"a\\u0000b\", \"text\": \"x\"}\n");
  EXPECT_EQ(inputs_error({f}), f + ":2: document id \"a\\x00b\" contains a NUL byte");
  write_file(f, "{\"id\": \"" + std::string(kMaxDocIdBytes + 1, 'x') + "\", \"text\": \"x\"}\n");
  EXPECT_EQ(inputs_error({f}), f + ":1: document id is 65537 bytes long, more than the 65536 allowed");
  // A .jsonl id and a .txt file name collide: the .txt is named, with where the id came from.
  write_file(f, "{\"id\": \"b\", \"text\": \"x\"}\n");
  fs::create_directories(dir_.file("d1"));
  fs::create_directories(dir_.file("d2"));
  write_file(dir_.file("d1/b.txt"), "one");
  write_file(dir_.file("d2/c.txt"), "two");
  write_file(dir_.file("c.txt"), "three");
  EXPECT_EQ(inputs_error({f, dir_.file("d1/b.txt")}), dir_.file("d1/b.txt") + ": duplicate document id \"b\" (first at " +
                                                      f + ":1)");
  EXPECT_EQ(inputs_error({dir_.file("d2/c.txt"), dir_.file("c.txt")}),
            dir_.file("c.txt") + ": duplicate document id \"c\" (first at " + dir_.file("d2/c.txt") + ")");
}

TEST_F(Prep, ByteOrderMarkIsNotText) {
  const std::string text = "hello bom\r\nline two, for the fern\n";
  const std::string bom = "\xEF\xBB\xBF";
  fs::create_directories(dir_.file("plain"));
  fs::create_directories(dir_.file("bom"));
  write_file(dir_.file("plain/doc.txt"), text);
  write_file(dir_.file("bom/doc.txt"), bom + text);
  write_file(dir_.file("plain/j.jsonl"), "{\"id\": \"j\", \"text\": \"caf\\u00e9 for\"}\n");
  write_file(dir_.file("bom/j.jsonl"), bom + "{\"id\": \"j\", \"text\": \"caf\\u00e9 for\"}\n");
  ASSERT_EQ(cli::prep_command(config({dir_.file("plain/doc.txt"), dir_.file("plain/j.jsonl")})), 0);
  const auto want = tokens();
  ASSERT_EQ(want.size(), 2u);
  ASSERT_GT(want[0].size(), 5u);
  fs::remove(out_);
  ASSERT_EQ(cli::prep_command(config({dir_.file("bom/doc.txt"), dir_.file("bom/j.jsonl")})), 0);
  EXPECT_EQ(tokens(), want);
}

TEST_F(Prep, TokensBeyondTheModelVocabularyBlameTheModel) {
  const std::string small = dir_.file("small-model");
  write_model(small, 300);  // the tokenizer's ids reach 599
  const std::string f = dir_.file("t.jsonl");
  // Its tokens include an id >= 300 (checked below on the large model's output).
  write_file(f, "{\"id\": \"d\", \"text\": \"for four fern eyes\"}\n");
  ASSERT_EQ(cli::prep_command(config({f})), 0);  // the 600-row model takes it
  const auto got = tokens();
  ASSERT_EQ(got.size(), 1u);
  int32_t high = -1;
  for (int32_t t : got[0]) high = std::max(high, t);
  ASSERT_GE(high, 300) << "the test text must reach past the small model's vocabulary";
  fs::remove(out_);
  RunConfig c = config({f});
  c.model = small;
  const std::string msg = error_of(c);
  EXPECT_EQ(msg.rfind(small + ": its tokenizer gives token id ", 0), 0u) << msg;
  EXPECT_NE(msg.find("(document \"d\" of " + f + ":1), outside the model's vocabulary [0, 300) of its config: the "
                     "tokenizer does not match the model"),
            std::string::npos)
      << msg;
}

// OpenAI batch lines: ids from custom_id, chat lines rendered with the chat template (the
// same tokens as the rendered prompt written as a prompt template), prompt lines as text,
// max_tokens / temperature stored per document; a user template goes through the chat
// template too; the model's own template is recognised; bad lines name file and line.
TEST_F(Prep, OpenAiBatchLines) {
  const std::string f = dir_.file("batch.jsonl");
  write_file(f,
             "{\"custom_id\": \"c1\", \"body\": {\"messages\": [{\"role\": \"user\", \"content\": \"for fern\"}], "
             "\"max_tokens\": 7}}\n"
             "{\"custom_id\": \"p2\", \"body\": {\"prompt\": \"four eyes\", \"temperature\": 0.5}}\n"
             "{\"id\": \"t3\", \"text\": \"fern\"}\n");
  RunConfig c = config({f});
  c.chat_template = "chatml";
  ASSERT_EQ(cli::prep_command(c), 0);
  const auto d = docs();
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d[0].id, "c1");
  EXPECT_EQ(d[1].id, "p2");
  EXPECT_EQ(d[2].id, "t3");
  EXPECT_EQ(d[0].options.max_new_tokens, 7);
  EXPECT_EQ(d[0].options.temperature, -1.0);
  EXPECT_EQ(d[1].options.max_new_tokens, -1);
  EXPECT_EQ(d[1].options.temperature, 0.5);
  EXPECT_EQ(d[2].options.max_new_tokens, -1);
  const auto got = tokens();
  fs::remove(out_);

  // The chat line equals the ChatML prompt written out as a prompt template.
  write_file(dir_.file("chatml.txt"), "<|im_start|>user\n{document}<|im_end|>\n<|im_start|>assistant\n");
  write_file(dir_.file("plain.jsonl"), "{\"id\": \"x\", \"text\": \"for fern\"}\n");
  RunConfig t = config({dir_.file("plain.jsonl")});
  t.prompt_template = dir_.file("chatml.txt");
  ASSERT_EQ(cli::prep_command(t), 0);
  EXPECT_EQ(tokens()[0], got[0]);
  fs::remove(out_);
  // So does a text document with a user template, the model's template recognised.
  write_file(model_ + "/tokenizer_config.json",
             "{\"chat_template\": \"{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\\\n'}}{% endfor %}\"}");
  write_file(dir_.file("user.txt"), "for {document}");
  write_file(dir_.file("fern.jsonl"), "{\"id\": \"y\", \"text\": \"fern\"}\n");
  RunConfig u = config({dir_.file("fern.jsonl")});
  u.user_template = dir_.file("user.txt");
  ASSERT_EQ(cli::prep_command(u), 0);
  EXPECT_EQ(tokens()[0], got[0]);
  fs::remove(out_);

  auto line_error = [&](const std::string& line) {
    write_file(f, line + "\n");
    RunConfig b = config({f});
    b.chat_template = "chatml";
    return error_of(b);
  };
  EXPECT_EQ(line_error("{\"custom_id\": \"a\", \"body\": {}}"),
            f + ":1: the body needs \"messages\" (chat) or a string \"prompt\"");
  EXPECT_EQ(line_error("{\"custom_id\": \"a\"}"), f + ":1: expected a \"body\" object beside \"custom_id\"");
  EXPECT_EQ(line_error("{\"custom_id\": \"a\", \"body\": {\"prompt\": \"x\", \"max_tokens\": -1}}"),
            f + ":1: \"max_tokens\" must be an integer in [0, 2147483647]");
  EXPECT_EQ(line_error("{\"custom_id\": \"a\", \"body\": {\"prompt\": \"x\", \"temperature\": \"hot\"}}"),
            f + ":1: \"temperature\" must be a number in [0, 1000000]");
  EXPECT_EQ(line_error("{\"custom_id\": \"a\", \"body\": {\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}}"),
            f + ":1: document \"a\": message 0 has role \"tool\" (expected system, user or assistant)");
  EXPECT_EQ(line_error("{\"custom_id\": 1.5, \"body\": {\"prompt\": \"x\"}}"),
            f + ":1: \"custom_id\" must be a string or an integer of at most 64 bits (quote other ids)");
  // No template the model names, none given: say what to do.
  fs::remove(model_ + "/tokenizer_config.json");
  write_file(f, "{\"custom_id\": \"a\", \"body\": {\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}}\n");
  EXPECT_EQ(inputs_error({f}), f + ":1: document \"a\": " + model_ +
                                   ": the model has no chat template: pass --chat-template NAME, or a whole prompt with "
                                   "--prompt-template FILE");
  // A format whose special tokens the tokenizer lacks is refused.
  RunConfig l = config({f});
  l.chat_template = "llama3";
  EXPECT_EQ(error_of(l), f + ":1: document \"a\": " + model_ +
                             ": chat template llama3 needs the token <|begin_of_text|>, which the model's tokenizer "
                             "lacks: pass --chat-template NAME");
}

}  // namespace
}  // namespace ringinfer
