#include "cli/options.h"

#include <boost/program_options.hpp>
#include <cmath>
#include <fstream>
#include <sstream>

#include "ringinfer/error.h"

namespace po = boost::program_options;

namespace ringinfer {

const char* to_string(DeviceKind d) {
  switch (d) {
    case DeviceKind::cpu: return "cpu";
    case DeviceKind::cuda: return "cuda";
    default: return "auto";
  }
}

namespace cli {
namespace {

const char* kSummaries[][2] = {
    {"run", "generate a completion for every document (prefill by ring attention, then decode)"},
    {"score", "per-token log-probabilities and perplexity of every document"},
    {"prep", "tokenize text or JSONL files into an input shard"},
    {"dump", "print an output file as text or JSONL"},
    {"plan", "memory and time estimate for a model, context length and rank count"},
};

bool known_command(const std::string& c) {
  for (auto& s : kSummaries)
    if (c == s[0]) return true;
  return false;
}

// Options for one subcommand; `config_keys` are the ones an INI file may set.
po::options_description describe(const std::string& cmd, RunConfig& c) {
  po::options_description d("Options for 'ringinfer " + cmd + "'");
  d.add_options()("help,h", "show this help");
  if (cmd == "run" || cmd == "score") {
    d.add_options()
        ("model,m", po::value(&c.model)->value_name("PATH"), "Hugging Face model folder or .gguf file")
        ("input,i", po::value(&c.inputs)->multitoken()->value_name("F.h5..."), "input shards (ringinfer prep)")
        ("output,o", po::value(&c.output)->value_name("OUT.h5"), "output HDF5 file")
        ("device", po::value<std::string>()->value_name("cpu|cuda"), "compute device (default: cuda when a GPU is visible)")
        ("cp", po::value(&c.cp)->value_name("N"), "context-parallel group size (default: all ranks / tp)")
        ("tp", po::value(&c.tp)->value_name("T"), "tensor-parallel group size, inside a node (default 1)")
        ("allow-cross-node-tp", po::bool_switch(&c.allow_cross_node_tp),
         "let a tensor-parallel group span nodes (refused by default: it all-reduces twice per layer)")
        ("log-format", po::value(&c.log_format)->value_name("auto|bar|json"),
         "progress on rank 0: a bar (terminal) or JSON lines (default auto: bar on a terminal, else json)")
        ("memory-limit", po::value(&c.memory_limit_gb)->value_name("GB"),
         "memory per rank for the check before work (default: the device's free memory)")
        ("comm-timeout", po::value(&c.comm_timeout_s)->value_name("SECONDS"),
         "fail the job when a rank waits this long for the others: one died or hangs (default 300)");
    if (cmd == "run") {
      d.add_options()
          ("max-new-tokens", po::value(&c.max_new_tokens)->value_name("N"), "tokens to generate at most (default 256)")
          ("temperature", po::value(&c.temperature)->value_name("T"), "sampling temperature; 0 = greedy (default)")
          ("top-p", po::value(&c.top_p)->value_name("P"), "nucleus sampling mass in (0, 1] (default 1)")
          ("seed", po::value(&c.seed)->value_name("S"), "sampling seed (default 0)")
          ("dry-run", po::bool_switch(&c.dry_run), "read every stripe and write empty generations (I/O check)");
    }
  } else if (cmd == "prep") {
    d.add_options()
        ("model,m", po::value(&c.model)->value_name("PATH"), "model whose tokenizer to use")
        ("prompt-template", po::value(&c.prompt_template)->value_name("FILE"), "template with a {document} placeholder")
        ("input,i", po::value(&c.inputs)->multitoken()->value_name("FILE..."), "text (.txt) or JSONL files")
        ("output,o", po::value(&c.output)->value_name("F.h5"), "output shard");
  } else if (cmd == "dump") {
    d.add_options()
        ("input,i", po::value(&c.inputs)->value_name("OUT.h5"), "output file of run or score")
        ("jsonl", po::bool_switch(&c.jsonl), "one JSON object per document")
        ("logprobs", po::bool_switch(&c.logprobs), "with --jsonl, score outputs list every token's logprob");
  } else if (cmd == "plan") {
    d.add_options()
        ("model,m", po::value(&c.model)->value_name("PATH"), "model folder, config.json or .gguf")
        ("context", po::value(&c.context)->value_name("TOKENS"), "context length in tokens")
        ("ranks", po::value(&c.ranks)->value_name("N"), "number of ranks")
        ("kv-dtype", po::value(&c.kv_dtype)->value_name("bf16|fp8"), "KV cache element type (default bf16)")
        ("tp", po::value(&c.tp)->value_name("T"), "tensor-parallel size (default 1)")
        ("gpu-memory", po::value(&c.gpu_memory_gb)->value_name("GB"), "memory per GPU in GB (default 141, H200)")
        ("link-bandwidth", po::value(&c.link_gbps)->value_name("GB/s"), "ring link bandwidth (default 358, NVLink)")
        ("attention-tflops", po::value(&c.attention_tflops)->value_name("R"), "attention rate for estimates (default 300)")
        ("matmul-tflops", po::value(&c.matmul_tflops)->value_name("R"), "GEMM rate for estimates (default 700)");
  }
  d.add_options()
      ("config", po::value<std::string>()->value_name("FILE"), "read options from an INI file (command line wins)")
      ("print-config", "print the merged configuration as INI and exit")
      ("quiet,q", po::bool_switch(&c.quiet), "no progress output");
  return d;
}

void check_config(RunConfig& c, const po::variables_map& vm) {
  const std::string& cmd = c.command;
  auto need = [&](bool ok, const char* what) { RI_CHECK(ok, "ringinfer " + cmd + ": " + what); };
  if (vm.count("device")) {
    const std::string d = vm["device"].as<std::string>();
    if (d == "cpu") c.device = DeviceKind::cpu;
    else if (d == "cuda") c.device = DeviceKind::cuda;
    else throw Error("ringinfer " + cmd + ": --device must be cpu or cuda, not '" + d + "'");
  }
  if (cmd == "run" || cmd == "score") {
    need(!c.inputs.empty(), "--input is required (one or more shards)");
    need(!c.output.empty(), "--output is required");
    need(!c.model.empty() || c.dry_run, "--model is required");
    need(!vm.count("cp") || c.cp >= 1, "--cp must be at least 1");
    need(!vm.count("memory-limit") || c.memory_limit_gb > 0, "--memory-limit must be a positive number of GB");
    need(std::isfinite(c.comm_timeout_s) && c.comm_timeout_s > 0, "--comm-timeout must be a positive number of seconds");
    need(c.tp >= 1, "--tp must be at least 1");
    need(c.log_format == "auto" || c.log_format == "bar" || c.log_format == "json",
         ("--log-format must be auto, bar or json, not '" + c.log_format + "'").c_str());
    for (auto& in : c.inputs) need(in != c.output, ("--output " + c.output + " is also an input").c_str());
  }
  if (cmd == "run") {
    need(c.max_new_tokens >= 0, "--max-new-tokens must be >= 0");
    need(c.temperature >= 0.0, "--temperature must be >= 0");
    need(c.top_p > 0.0 && c.top_p <= 1.0, "--top-p must be in (0, 1]");
    need(!(c.temperature == 0.0 && vm.count("top-p") && c.top_p < 1.0),
         "--top-p has no effect with greedy decoding (--temperature 0): give a temperature or drop --top-p");
  }
  if (cmd == "prep") {
    need(!c.model.empty(), "--model is required (its tokenizer is used)");
    need(!c.inputs.empty(), "no input files given");
    need(!c.output.empty(), "--output is required");
  }
  if (cmd == "dump") need(c.inputs.size() == 1, "give exactly one output file to dump");
  if (cmd == "plan") {
    need(!c.model.empty(), "--model is required");
    need(c.context > 0, "--context must be a positive token count");
    need(c.ranks > 0, "--ranks must be positive");
    need(c.kv_dtype == "bf16" || c.kv_dtype == "fp8", "--kv-dtype must be bf16 or fp8");
    need(c.tp >= 1 && c.ranks % c.tp == 0, "--ranks must be a multiple of --tp");
    need(c.gpu_memory_gb > 0 && c.link_gbps > 0 && c.attention_tflops > 0 && c.matmul_tflops > 0,
         "--gpu-memory, --link-bandwidth and the rates must be positive");
  }
}

}  // namespace

std::string usage() {
  std::ostringstream s;
  s << "usage: ringinfer COMMAND [options]    (ringinfer COMMAND --help for its options)\n\ncommands:\n";
  for (auto& c : kSummaries) s << "  " << c[0] << std::string(8 - std::string(c[0]).size(), ' ') << c[1] << "\n";
  s << "\nringinfer --version prints the version.\n";
  return s.str();
}

std::optional<RunConfig> parse_options(const std::string& command, const std::vector<std::string>& args,
                                       std::ostream& out) {
  RI_CHECK(known_command(command), "ringinfer: unknown command '" + command + "'\n" + usage());
  RunConfig c;
  c.command = command;
  po::options_description desc = describe(command, c);
  po::positional_options_description positional;
  positional.add("input", -1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(desc).positional(positional).run(), vm);
    if (vm.count("help")) {
      out << desc << "\n";
      return std::nullopt;
    }
    if (vm.count("config")) {
      const std::string path = vm["config"].as<std::string>();
      std::ifstream in(path);
      RI_CHECK(in, path + ": cannot open config file");
      try {
        po::store(po::parse_config_file(in, desc, /*allow_unregistered=*/false), vm);
      } catch (const po::error& e) {
        throw Error(path + ": " + e.what());
      }
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw Error("ringinfer " + command + ": " + e.what() + " (see ringinfer " + command + " --help)");
  }
  check_config(c, vm);
  if (vm.count("print-config")) {
    out << format_config(c);
    return std::nullopt;
  }
  return c;
}

std::string format_config(const RunConfig& c) {
  std::ostringstream s;
  s << "# ringinfer " << c.command << "\n";
  auto kv = [&](const char* k, const auto& v) { s << k << " = " << v << "\n"; };
  if (!c.model.empty()) kv("model", c.model);
  for (auto& in : c.inputs) kv("input", in);
  if (!c.output.empty()) kv("output", c.output);
  if (c.command == "run" || c.command == "score") {
    if (c.device != DeviceKind::auto_detect) kv("device", to_string(c.device));
    if (c.cp > 0) kv("cp", c.cp);
    if (c.tp > 1) kv("tp", c.tp);
    if (c.allow_cross_node_tp) kv("allow-cross-node-tp", "true");
    if (c.log_format != "auto") kv("log-format", c.log_format);
    if (c.memory_limit_gb >= 0) kv("memory-limit", c.memory_limit_gb);
    kv("comm-timeout", c.comm_timeout_s);
  }
  if (c.command == "run") {
    kv("max-new-tokens", c.max_new_tokens);
    kv("temperature", c.temperature);
    kv("top-p", c.top_p);
    kv("seed", c.seed);
    if (c.dry_run) kv("dry-run", "true");
  }
  if (c.command == "prep" && !c.prompt_template.empty()) kv("prompt-template", c.prompt_template);
  if (c.command == "dump" && c.jsonl) kv("jsonl", "true");
  if (c.command == "plan") {
    kv("context", c.context);
    kv("ranks", c.ranks);
    kv("kv-dtype", c.kv_dtype);
    kv("tp", c.tp);
    kv("gpu-memory", c.gpu_memory_gb);
    kv("link-bandwidth", c.link_gbps);
    kv("attention-tflops", c.attention_tflops);
    kv("matmul-tflops", c.matmul_tflops);
  }
  return s.str();
}

}  // namespace cli
}  // namespace ringinfer
