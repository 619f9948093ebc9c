// Option parsing: values that would overflow downstream are refused with a message naming
// the option; config files refuse what they cannot mean; --print-config round-trips.
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cli/options.h"
#include "ringinfer/error.h"
#include "ringinfer/memory_plan.h"
#include "test_paths.h"

namespace ringinfer {
namespace {

const std::vector<std::string> kRunBase = {"-m", "model", "-i", "in.h5", "-o", "out.h5"};

std::vector<std::string> with(std::vector<std::string> base, const std::vector<std::string>& extra) {
  base.insert(base.end(), extra.begin(), extra.end());
  return base;
}

std::string error_of(const std::string& cmd, const std::vector<std::string>& args) {
  std::ostringstream out;
  try {
    cli::parse_options(cmd, args, out);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

RunConfig parsed(const std::string& cmd, const std::vector<std::string>& args) {
  std::ostringstream out;
  auto c = cli::parse_options(cmd, args, out);
  EXPECT_TRUE(c.has_value());
  return c.value_or(RunConfig{});
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

TEST(Options, MaxNewTokensIsBoundedByTheLongestContext) {
  const std::string msg =
      "ringinfer run: --max-new-tokens must be between 0 and 2147483647 (prompt plus generated tokens are at most "
      "2147483647)";
  for (const char* v : {"1152921504606846976", "2305843009213693952", "4611686018427387904", "10000000000000000",
                        "9223372036854775807", "2147483648", "-1"})
    EXPECT_EQ(error_of("run", with(kRunBase, {"--max-new-tokens", v})), msg) << v;
  EXPECT_EQ(parsed("run", with(kRunBase, {"--max-new-tokens", "2147483647"})).max_new_tokens, kMaxContextTokens);
  EXPECT_EQ(parsed("run", with(kRunBase, {"--max-new-tokens", "0"})).max_new_tokens, 0);
}

TEST(Options, AttentionIsAutoNativeOrCudnn) {
  EXPECT_EQ(parsed("run", kRunBase).attention, "auto");
  for (const char* v : {"auto", "native", "cudnn"}) {
    EXPECT_EQ(parsed("score", with(kRunBase, {"--attention", v})).attention, v);
    std::ostringstream out;
    cli::parse_options("run", with(kRunBase, {"--attention", v, "--print-config"}), out);
    EXPECT_EQ(out.str().find("attention = "), std::string(v) == "auto" ? std::string::npos : out.str().find("attention = " + std::string(v)))
        << out.str();
  }
  EXPECT_EQ(error_of("run", with(kRunBase, {"--attention", "flash"})),
            "ringinfer run: --attention must be auto, native or cudnn, not 'flash'");
}

// --no-decode-graph (run only): off by default, echoed by --print-config when set.
TEST(Options, NoDecodeGraphIsARunSwitch) {
  EXPECT_FALSE(parsed("run", kRunBase).no_decode_graph);
  EXPECT_TRUE(parsed("run", with(kRunBase, {"--no-decode-graph"})).no_decode_graph);
  std::ostringstream out;
  cli::parse_options("run", with(kRunBase, {"--no-decode-graph", "--print-config"}), out);
  EXPECT_NE(out.str().find("no-decode-graph = true"), std::string::npos) << out.str();
  EXPECT_NE(error_of("score", with(kRunBase, {"--no-decode-graph"})), "no error");
}

TEST(Options, TemperatureMustBeFinite) {
  for (const char* v : {"inf", "-inf", "nan", "-1"})
    EXPECT_EQ(error_of("run", with(kRunBase, {"--temperature", v})),
              "ringinfer run: --temperature must be >= 0 and finite")
        << v;
  EXPECT_EQ(parsed("run", with(kRunBase, {"--temperature", "1e300"})).temperature, 1e300);
}

TEST(Options, SeedIsANonNegative64BitInteger) {
  for (const char* v : {"-1", "18446744073709551616", "1.5", "", " 3", "0x10", "+4"})
    EXPECT_EQ(error_of("run", with(kRunBase, {"--seed", v})),
              std::string("ringinfer run: --seed must be an integer in [0, 18446744073709551615], not '") + v + "'")
        << v;
  EXPECT_EQ(parsed("run", with(kRunBase, {"--seed", "18446744073709551615"})).seed, UINT64_MAX);
  std::mt19937_64 rng(11);
  for (int i = 0; i < 20; ++i) {
    const uint64_t s = rng();
    EXPECT_EQ(parsed("run", with(kRunBase, {"--seed", std::to_string(s)})).seed, s);
  }
}

TEST(Options, CommTimeoutAndMemoryLimitAreBounded) {
  for (const char* v : {"1e10", "inf", "1000000.5"})
    EXPECT_EQ(error_of("score", with(kRunBase, {"--comm-timeout", v})),
              "ringinfer score: --comm-timeout must be at most 1000000 seconds (about 11.6 days)")
        << v;
  EXPECT_EQ(parsed("score", with(kRunBase, {"--comm-timeout", "1e6"})).comm_timeout_s, 1e6);
  for (const char* v : {"inf", "nan", "0", "-2", "1e300", "1000000001"})
    EXPECT_EQ(error_of("run", with(kRunBase, {"--memory-limit", v})),
              "ringinfer run: --memory-limit must be a positive number of GB, at most 1000000000")
        << v;
  EXPECT_EQ(parsed("run", with(kRunBase, {"--memory-limit", "0.25"})).memory_limit_gb, 0.25);
}

TEST(Options, DumpLogprobsNeedsJsonl) {
  EXPECT_EQ(error_of("dump", {"out.h5", "--logprobs"}),
            "ringinfer dump: --logprobs needs --jsonl (per-token logprobs are printed only as JSONL)");
  const RunConfig c = parsed("dump", {"out.h5", "--logprobs", "--jsonl"});
  EXPECT_TRUE(c.logprobs && c.jsonl);
}

TEST(Options, PlanNamesAMissingContextOrRankCount) {
  EXPECT_EQ(error_of("plan", {"--model", "m.json", "--context", "1000"}),
            "ringinfer plan: --ranks N is required (the number of ranks, GPUs, of the job to plan)");
  EXPECT_EQ(error_of("plan", {"--model", "m.json", "--ranks", "2"}),
            "ringinfer plan: --context TOKENS is required (the document length to plan for)");
  EXPECT_EQ(error_of("plan", {"--model", "m.json", "--context", "1000", "--ranks", "0"}),
            "ringinfer plan: --ranks must be positive");
}

TEST(Options, PlanFloatOptionsMustBeFinitePositive) {
  const std::vector<std::string> base = {"--model", "m.json", "--context", "1000", "--ranks", "2"};
  for (const char* v : {"inf", "nan", "0", "-1", "1e10"})
    EXPECT_EQ(error_of("plan", with(base, {"--gpu-memory", v})),
              "ringinfer plan: --gpu-memory must be a positive number of GB, at most 1000000000")
        << v;
  EXPECT_EQ(error_of("plan", with(base, {"--link-bandwidth", "inf"})),
            "ringinfer plan: --link-bandwidth must be a positive finite number of GB/s");
  EXPECT_EQ(error_of("plan", with(base, {"--attention-tflops", "nan"})),
            "ringinfer plan: --attention-tflops must be a positive finite number");
  EXPECT_EQ(error_of("plan", with(base, {"--matmul-tflops", "-3"})),
            "ringinfer plan: --matmul-tflops must be a positive finite number");
  EXPECT_EQ(error_of("plan", with(base, {"--tp", "0"})), "ringinfer plan: --tp must be at least 1");
  EXPECT_EQ(error_of("plan", {"--model", "m.json", "--context", "200000000000000", "--ranks", "1"}),
            "ringinfer plan: --context must be at most 2147483647 tokens, the longest context ringinfer supports");
  EXPECT_EQ(parsed("plan", with(base, {"--gpu-memory", "80"})).gpu_memory_gb, 80.0);
}

class ConfigFile : public ::testing::Test {
 protected:
  test::TempDir dir_{"ringinfer-options"};
  std::string config_error(const std::string& text) {
    const std::string path = dir_.file("c.ini");
    write_file(path, text);
    return error_of("run", {"--config", path});
  }
};

TEST_F(ConfigFile, RefusesWhatItCannotMean) {
  EXPECT_EQ(error_of("run", {"--config", dir_.path()}), dir_.path() + ": is a directory, not a config file");
  const std::string p = dir_.file("c.ini");
  EXPECT_EQ(config_error("model = m\nhelp = 1\n"), p + ": 'help' is a command-line option, not a config file key (line 2)");
  EXPECT_EQ(config_error("config = other.ini\n"), p + ": 'config' is a command-line option, not a config file key (line 1)");
  EXPECT_EQ(config_error("# c\nprint-config = 1\n"),
            p + ": 'print-config' is a command-line option, not a config file key (line 2)");
  EXPECT_EQ(config_error("[run]\nmodel = m\n"), p + ": sections such as '[run]' are not supported (line 1)");
  EXPECT_EQ(config_error("model m\n"), p + ": expected 'name = value', got 'model m' (line 1)");
  EXPECT_EQ(config_error("= m\n"), p + ": expected 'name = value', got '= m' (line 1)");
  EXPECT_EQ(config_error("model = m\nfrobs = 3\n"), p + ": unrecognised option 'frobs' (line 2)");
  EXPECT_EQ(config_error(std::string("model = a\0b\n", 12)), p + ": not a text config file (it holds a NUL byte)");
  EXPECT_EQ(config_error("model = \"m\n"), p + ": malformed quoted value for 'model' (line 1)");
  EXPECT_EQ(config_error("model = \"m\" x\n"), p + ": malformed quoted value for 'model' (line 1)");
  EXPECT_EQ(config_error("cp = 2\ncp = 3\n"), p + ": option 'cp' cannot be specified more than once");
}

TEST_F(ConfigFile, CommentsBomAndHashInsideValues) {
  const std::string path = dir_.file("c.ini");
  write_file(path, "\xEF\xBB\xBF# whole-line comment\r\nmodel = m  # trailing comment\r\n  input = /d/run#2.h5\r\n"
                   "input = \"q # not a comment\"  # comment\noutput = o.h5\ntemperature = 0.5#\n");
  // "0.5#" is not cut: a '#' after a non-blank is part of the value, so it is not a number.
  EXPECT_NE(error_of("run", {"--config", path}).find("the argument ('0.5#') for option 'temperature' is invalid"),
            std::string::npos);
  write_file(path, "\xEF\xBB\xBFmodel = m  # trailing comment\r\n  input = /d/run#2.h5\r\n"
                   "input = \"q # not a comment\"  # comment\noutput = o.h5\n");
  const RunConfig c = parsed("run", {"--config", path});
  EXPECT_EQ(c.model, "m");
  EXPECT_EQ(c.inputs, (std::vector<std::string>{"/d/run#2.h5", "q # not a comment"}));
  EXPECT_EQ(c.output, "o.h5");
}

// Any value that can reach a RunConfig survives --print-config and --config unchanged.
TEST_F(ConfigFile, PrintConfigRoundTripsRandomValues) {
  std::mt19937_64 rng(20240611);
  const std::vector<std::string> pieces = {"a", "Z", "9", "/", ".", "#", " ", "\t", "\"", "\\", "\n", "\r", "=",
                                           "[", "é", "\xF0\x9F\x98\x80", "\x01", "\x7f", "u0041", "\\n"};
  auto random_string = [&](bool allow_empty) {
    std::string s;
    const int n = int(rng() % 12) + (allow_empty ? 0 : 1);
    for (int i = 0; i < n; ++i) s += pieces[rng() % pieces.size()];
    return s;
  };
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const std::string path = dir_.file("round.ini");
  for (int iter = 0; iter < 300; ++iter) {
    RunConfig want;
    want.command = "run";
    want.model = random_string(false);
    want.inputs = {"in-" + random_string(true), random_string(false) + ".h5"};
    want.output = "out-" + random_string(true);
    want.temperature = unit(rng) * 3.0 + 1e-9;
    want.top_p = 1.0 - unit(rng) * 0.999;
    want.seed = rng();
    want.max_new_tokens = int64_t(rng() % uint64_t(kMaxContextTokens + 1));
    want.comm_timeout_s = 1.0 + unit(rng) * 1000.0;
    want.memory_limit_gb = unit(rng) * 100.0 + 0.001;
    want.cp = int(rng() % 8) + 1;
    want.quiet = rng() % 2;
    const std::string text = cli::format_config(want);
    write_file(path, text);
    std::ostringstream out;
    std::optional<RunConfig> got;
    try {
      got = cli::parse_options("run", {"--config", path}, out);
    } catch (const Error& e) {
      FAIL() << e.what() << "\n" << text;
    }
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got->model, want.model) << text;
    EXPECT_EQ(got->inputs, want.inputs) << text;
    EXPECT_EQ(got->output, want.output) << text;
    EXPECT_EQ(got->temperature, want.temperature) << text;
    EXPECT_EQ(got->top_p, want.top_p) << text;
    EXPECT_EQ(got->seed, want.seed) << text;
    EXPECT_EQ(got->max_new_tokens, want.max_new_tokens) << text;
    EXPECT_EQ(got->comm_timeout_s, want.comm_timeout_s) << text;
    EXPECT_EQ(got->memory_limit_gb, want.memory_limit_gb) << text;
    EXPECT_EQ(got->cp, want.cp) << text;
    EXPECT_EQ(got->quiet, want.quiet) << text;
    EXPECT_EQ(cli::format_config(*got), text);
    if (HasFailure()) break;
  }
}

// The sampling controls of issue 19: ranges, greedy contradictions, repeatable --stop,
// and the configuration text (output attributes, journal fingerprint) that records them
// only when set, so older jobs keep their fingerprint.
TEST(Options, SamplingControls) {
  const RunConfig c = parsed("run", with(kRunBase, {"--temperature", "0.8", "--top-k", "40", "--min-p", "0.05",
                                                    "--repetition-penalty", "1.2", "--frequency-penalty", "0.5",
                                                    "--presence-penalty", "-0.25", "--stop", "\n\n", "--stop", "END"}));
  EXPECT_EQ(c.top_k, 40);
  EXPECT_EQ(c.stop, (std::vector<std::string>{"\n\n", "END"}));
  const SamplingParams p = cli::sampling_params(c);
  EXPECT_EQ(p.min_p, 0.05);
  EXPECT_EQ(p.repetition_penalty, 1.2);
  EXPECT_EQ(p.presence_penalty, -0.25);
  const std::string text = cli::format_config(c);
  for (const char* line : {"\ntop-k = 40\n", "\nmin-p = 0.05\n", "\nrepetition-penalty = 1.2\n", "\nfrequency-penalty = 0.5\n",
                           "\npresence-penalty = -0.25\n", "\nstop = \"\\n\\n\"\n", "\nstop = END\n"})
    EXPECT_NE(text.find(line), std::string::npos) << line << " in\n" << text;
  const std::string plain = cli::format_config(parsed("run", kRunBase));
  for (const char* key : {"top-k", "min-p", "penalty", "stop", "on-error"})
    EXPECT_EQ(plain.find(key), std::string::npos) << key << " in\n" << plain;
  EXPECT_EQ(error_of("run", with(kRunBase, {"--repetition-penalty", "0"})),
            "ringinfer run: --repetition-penalty must be > 0 and finite");
  EXPECT_EQ(error_of("run", with(kRunBase, {"--min-p", "2", "--temperature", "1"})), "ringinfer run: --min-p must be in [0, 1]");
  EXPECT_EQ(error_of("run", with(kRunBase, {"--top-k", "5"})),
            "ringinfer run: --top-k and --min-p have no effect with greedy decoding (--temperature 0): give a "
            "temperature or drop them");
  EXPECT_EQ(error_of("run", with(kRunBase, {"--stop", ""})), "ringinfer run: --stop must not be empty");
  EXPECT_EQ(error_of("run", with(kRunBase, {"--on-error", "ignore"})),
            "ringinfer run: --on-error must be fail or skip, not 'ignore'");
  EXPECT_EQ(error_of("dump", {"o.h5", "--format", "openai"}), "ringinfer dump: --format openai needs --jsonl");
  EXPECT_EQ(error_of("prep", {"-m", "m", "-o", "o.h5", "a.txt", "--chat-template", "gemma"}),
            "ringinfer prep: --chat-template must be auto, llama3, chatml or mistral, not 'gemma'");
}

TEST(Options, PrintConfigKeepsPlainValuesPlain) {
  RunConfig c = parsed("run", with(kRunBase, {"--temperature", "0.7", "-i", "/tmp/g/run#2.h5"}));
  const std::string text = cli::format_config(c);
  EXPECT_NE(text.find("\ninput = /tmp/g/run#2.h5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\ntemperature = 0.7\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\ncomm-timeout = 300\n"), std::string::npos) << text;
  c.model = "m #1";
  EXPECT_NE(cli::format_config(c).find("\nmodel = \"m #1\"\n"), std::string::npos);
}

}  // namespace
}  // namespace ringinfer
