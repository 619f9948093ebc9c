#include "cli/options.h"

#include <boost/program_options.hpp>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "ringinfer/error.h"
#include "ringinfer/memory_plan.h"

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
        ("attention", po::value(&c.attention)->value_name("auto|native|cudnn"),
         "CUDA prefill attention kernels: ringinfer's own (native), cuDNN SDPA where it takes the block (cudnn: "
         "faster at head_dim 128, bf16 partial outputs), or auto (default): cuDNN for one-rank blocks of 32768+ keys "
         "at head_dim 64/128, native otherwise; see the README")
        ("log-format", po::value(&c.log_format)->value_name("auto|bar|json"),
         "progress on rank 0: a bar (terminal) or JSON lines (default auto: bar on a terminal, else json)")
        ("memory-limit", po::value(&c.memory_limit_gb)->value_name("GB"),
         "memory per rank for the check before work (default: the device's free memory)")
        ("kv-dtype", po::value(&c.kv_dtype)->value_name("auto|f32|bf16|fp8"),
         "KV cache element type: fp8 = e4m3 with a scale per token and KV head (default auto: f32 on the CPU, "
         "bf16 on CUDA; f32 is CPU only)")
        ("offload-residual", po::bool_switch(&c.offload_residual),
         "keep the prefill's fp32 residual stream in (pinned) host memory between layers, streamed through the "
         "GPU in chunks: context x hidden x 4 / ranks bytes less GPU memory, results bitwise the same")
        ("comm-timeout", po::value(&c.comm_timeout_s)->value_name("SECONDS"),
         "fail the job when a rank waits this long for the others: one died or hangs (default 300, at most 1e6)");
    if (cmd == "run") {
      d.add_options()
          ("max-new-tokens", po::value(&c.max_new_tokens)->value_name("N"), "tokens to generate at most (default 256; prompt + generated at most 2^31 - 1)")
          ("max-batch", po::value(&c.max_batch)->value_name("B"),
           "documents of a group decoded together, each joining after its own prefill (default: as many as memory "
           "holds, at most 32; at most 256; the tokens do not depend on it)")
          ("temperature", po::value(&c.temperature)->value_name("T"), "sampling temperature; 0 = greedy (default)")
          ("top-p", po::value(&c.top_p)->value_name("P"), "nucleus sampling mass in (0, 1] (default 1)")
          ("top-k", po::value(&c.top_k)->value_name("K"), "sample among the K most likely tokens; 0 = all (default)")
          ("min-p", po::value(&c.min_p)->value_name("P"), "drop tokens less likely than P x the most likely one (default 0)")
          ("repetition-penalty", po::value(&c.repetition_penalty)->value_name("R"),
           "divide a generated token's positive logit by R, multiply a negative one (default 1 = off; 1.1-1.3 stops loops)")
          ("frequency-penalty", po::value(&c.frequency_penalty)->value_name("F"),
           "subtract F x (times generated so far) from a token's logit (default 0)")
          ("presence-penalty", po::value(&c.presence_penalty)->value_name("P"),
           "subtract P from the logit of every token generated so far (default 0)")
          ("stop", po::value(&c.stop)->value_name("STRING"),
           "end a generation where its text shows STRING (left out of the text; repeatable)")
          ("max-sentences", po::value(&c.max_sentences)->value_name("N"),
           "end a generation after N sentences ('.', '!' or '?' then a space; default 0 = off)")
          ("seed", po::value<std::string>()->value_name("S"), "sampling seed, an integer in [0, 2^64) (default 0)")
          ("on-error", po::value(&c.on_error)->value_name("fail|skip"),
           "skip: a document that cannot run (too long for memory) gets an error record and the job goes on (default fail)")
          ("dry-run", po::bool_switch(&c.dry_run), "read every stripe and write empty generations (I/O check)")
          ("no-decode-graph", po::bool_switch(&c.no_decode_graph),
           "CUDA: launch each decode step kernel by kernel instead of as one CUDA graph (the same tokens; for "
           "profiling, or a driver that misbehaves)");
    }
  } else if (cmd == "prep") {
    d.add_options()
        ("model,m", po::value(&c.model)->value_name("PATH"), "model whose tokenizer to use")
        ("prompt-template", po::value(&c.prompt_template)->value_name("FILE"), "template with a {document} placeholder")
        ("user-template", po::value(&c.user_template)->value_name("FILE"),
         "user message with a {document} placeholder, put in the model's chat template")
        ("chat-template", po::value(&c.chat_template)->value_name("NAME"),
         "chat template for chat lines and --user-template: auto (recognised from the model, default), llama3, chatml or mistral")
        ("input,i", po::value(&c.inputs)->multitoken()->value_name("FILE..."), "text (.txt) or JSONL files")
        ("output,o", po::value(&c.output)->value_name("F.h5"), "output shard");
  } else if (cmd == "dump") {
    d.add_options()
        ("input,i", po::value(&c.inputs)->value_name("OUT.h5"), "output file of run or score")
        ("jsonl", po::bool_switch(&c.jsonl), "one JSON object per document")
        ("format", po::value(&c.dump_format)->value_name("ringinfer|openai"),
         "with --jsonl: ringinfer's fields (default) or OpenAI batch output lines")
        ("logprobs", po::bool_switch(&c.logprobs), "with --jsonl, score outputs list every token's logprob");
  } else if (cmd == "plan") {
    d.add_options()
        ("model,m", po::value(&c.model)->value_name("PATH"), "model folder, config.json or .gguf")
        ("context", po::value(&c.context)->value_name("TOKENS"), "context length in tokens")
        ("ranks", po::value(&c.ranks)->value_name("N"), "number of ranks")
        ("kv-dtype", po::value(&c.kv_dtype)->value_name("bf16|fp8"), "KV cache element type (default bf16)")
        ("offload-residual", po::bool_switch(&c.offload_residual),
         "plan a run with --offload-residual: the residual stream in host memory, two chunks of it on the GPU")
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

// The seed as given: a decimal integer in [0, 2^64). Boost's own conversion would take
// "-1" as 2^64 - 1.
uint64_t parse_seed(const std::string& cmd, const std::string& text) {
  uint64_t v = 0;
  const char* end = text.data() + text.size();
  const auto r = std::from_chars(text.data(), end, v);
  if (text.empty() || r.ec != std::errc() || r.ptr != end)
    throw Error("ringinfer " + cmd + ": --seed must be an integer in [0, 18446744073709551615], not '" + text + "'");
  return v;
}

bool finite_positive(double v) { return std::isfinite(v) && v > 0; }

void check_config(RunConfig& c, const po::variables_map& vm) {
  const std::string& cmd = c.command;
  auto need = [&](bool ok, const std::string& what) { RI_CHECK(ok, "ringinfer " + cmd + ": " + what); };
  const std::string max_context = std::to_string(kMaxContextTokens);
  const std::string max_gb = std::to_string(static_cast<int64_t>(kMaxMemoryGb));
  if (vm.count("device")) {
    const std::string d = vm["device"].as<std::string>();
    if (d == "cpu") c.device = DeviceKind::cpu;
    else if (d == "cuda") c.device = DeviceKind::cuda;
    else throw Error("ringinfer " + cmd + ": --device must be cpu or cuda, not '" + d + "'");
  }
  if (cmd == "run" || cmd == "score") {
    need(c.attention == "auto" || c.attention == "native" || c.attention == "cudnn",
         "--attention must be auto, native or cudnn, not '" + c.attention + "'");
    need(!c.inputs.empty(), "--input is required (one or more shards)");
    need(!c.output.empty(), "--output is required");
    need(!c.model.empty() || c.dry_run, "--model is required");
    need(!vm.count("cp") || c.cp >= 1, "--cp must be at least 1");
    need(!vm.count("memory-limit") || (finite_positive(c.memory_limit_gb) && c.memory_limit_gb <= kMaxMemoryGb),
         "--memory-limit must be a positive number of GB, at most " + max_gb);
    need(c.comm_timeout_s > 0, "--comm-timeout must be a positive number of seconds");  // NaN fails too
    need(c.comm_timeout_s <= kMaxCommTimeoutSeconds,
         "--comm-timeout must be at most 1000000 seconds (about 11.6 days)");
    need(c.tp >= 1, "--tp must be at least 1");
    if (!vm.count("kv-dtype")) c.kv_dtype = "auto";
    need(c.kv_dtype == "auto" || c.kv_dtype == "f32" || c.kv_dtype == "bf16" || c.kv_dtype == "fp8",
         "--kv-dtype must be auto, f32, bf16 or fp8, not '" + c.kv_dtype + "'");
    need(c.log_format == "auto" || c.log_format == "bar" || c.log_format == "json",
         "--log-format must be auto, bar or json, not '" + c.log_format + "'");
    for (auto& in : c.inputs) need(in != c.output, "--output " + c.output + " is also an input");
  }
  if (cmd == "run") {
    need(c.max_new_tokens >= 0 && c.max_new_tokens <= kMaxContextTokens,
         "--max-new-tokens must be between 0 and " + max_context +
             " (prompt plus generated tokens are at most " + max_context + ")");
    check_sampling_params(sampling_params(c), "ringinfer " + cmd);
    // The decode batch runs through the engine's 256-row chunk scratch.
    if (vm.count("max-batch")) need(c.max_batch >= 1 && c.max_batch <= 256, "--max-batch must be between 1 and 256");
    else c.max_batch = 0;  // as many as memory holds (cmd_run)
    need(!(c.temperature == 0.0 && (vm.count("top-k") || vm.count("min-p")) && (c.top_k > 0 || c.min_p > 0.0)),
         "--top-k and --min-p have no effect with greedy decoding (--temperature 0): give a temperature or drop them");
    for (const std::string& st : c.stop) need(!st.empty(), "--stop must not be empty");
    need(c.max_sentences >= 0, "--max-sentences must not be negative");
    need(c.on_error == "fail" || c.on_error == "skip", "--on-error must be fail or skip, not '" + c.on_error + "'");
    need(!(c.temperature == 0.0 && vm.count("top-p") && c.top_p < 1.0),
         "--top-p has no effect with greedy decoding (--temperature 0): give a temperature or drop --top-p");
    if (vm.count("seed")) c.seed = parse_seed(cmd, vm["seed"].as<std::string>());
  }
  if (cmd == "prep") {
    need(!c.model.empty(), "--model is required (its tokenizer is used)");
    need(!c.inputs.empty(), "no input files given");
    need(!c.output.empty(), "--output is required");
    need(c.prompt_template.empty() || c.user_template.empty(),
         "--prompt-template and --user-template exclude each other (a full prompt, or a user message in the chat template)");
    need(c.chat_template == "auto" || c.chat_template == "llama3" || c.chat_template == "chatml" ||
             c.chat_template == "mistral",
         "--chat-template must be auto, llama3, chatml or mistral, not '" + c.chat_template + "'");
  }
  if (cmd == "dump") {
    need(c.dump_format == "ringinfer" || c.dump_format == "openai",
         "--format must be ringinfer or openai, not '" + c.dump_format + "'");
    need(c.dump_format == "ringinfer" || c.jsonl, "--format openai needs --jsonl");
    need(c.inputs.size() == 1, "give exactly one output file to dump");
    need(!c.logprobs || c.jsonl, "--logprobs needs --jsonl (per-token logprobs are printed only as JSONL)");
  }
  if (cmd == "plan") {
    need(!c.model.empty(), "--model is required");
    need(vm.count("context"), "--context TOKENS is required (the document length to plan for)");
    need(c.context > 0, "--context must be a positive token count");
    need(c.context <= kMaxContextTokens,
         "--context must be at most " + max_context + " tokens, the longest context ringinfer supports");
    need(vm.count("ranks"), "--ranks N is required (the number of ranks, GPUs, of the job to plan)");
    need(c.ranks > 0, "--ranks must be positive");
    need(c.kv_dtype == "bf16" || c.kv_dtype == "fp8", "--kv-dtype must be bf16 or fp8");
    need(c.tp >= 1, "--tp must be at least 1");
    need(c.ranks % c.tp == 0, "--ranks must be a multiple of --tp");
    need(finite_positive(c.gpu_memory_gb) && c.gpu_memory_gb <= kMaxMemoryGb,
         "--gpu-memory must be a positive number of GB, at most " + max_gb);
    need(finite_positive(c.link_gbps), "--link-bandwidth must be a positive finite number of GB/s");
    need(finite_positive(c.attention_tflops), "--attention-tflops must be a positive finite number");
    need(finite_positive(c.matmul_tflops), "--matmul-tflops must be a positive finite number");
  }
}

// ---------------------------------------------------------------- config files

// Options that act on the command line itself: a config file that sets them is refused
// rather than silently ignored.
bool command_line_only(const std::string& key) { return key == "help" || key == "config" || key == "print-config"; }

std::string trim(const std::string& s) {
  const char* ws = " \t\r\v\f";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

bool is_blank(char ch) { return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' || ch == '\f'; }

// A line of the file in an error message: control bytes shown as '?', long lines cut.
std::string shown(const std::string& line) {
  std::string out;
  for (unsigned char ch : line.substr(0, 60)) out += (ch < 0x20 || ch == 0x7f) ? '?' : char(ch);
  return line.size() > 60 ? out + "..." : out;
}

void append_utf8(std::string& out, unsigned cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// `v` starts with '"': the quoted string's contents (escapes \" \\ \/ \n \r \t \b \f
// \uXXXX outside the surrogates), followed by nothing or a '#' comment. nullopt when malformed.
std::optional<std::string> unquote(const std::string& v) {
  std::string out;
  size_t i = 1;
  for (; i < v.size() && v[i] != '"'; ++i) {
    if (v[i] != '\\') {
      out += v[i];
      continue;
    }
    if (++i >= v.size()) return std::nullopt;
    switch (v[i]) {
      case '"': case '\\': case '/': out += v[i]; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'u': {
        if (i + 4 >= v.size()) return std::nullopt;
        unsigned cp = 0;
        for (int k = 1; k <= 4; ++k) {
          const char h = v[i + k];
          if (!std::isxdigit(static_cast<unsigned char>(h))) return std::nullopt;
          cp = cp * 16 + unsigned(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
        }
        if (cp >= 0xD800 && cp <= 0xDFFF) return std::nullopt;
        append_utf8(out, cp);
        i += 4;
        break;
      }
      default: return std::nullopt;
    }
  }
  if (i >= v.size()) return std::nullopt;  // no closing quote
  const std::string rest = trim(v.substr(i + 1));
  if (!rest.empty() && rest[0] != '#') return std::nullopt;
  return out;
}

// A value as read_config_file reads it: plain (trimmed, cut at a '#' that starts it or
// follows whitespace) or quoted.
std::optional<std::string> config_value(const std::string& raw) {
  const std::string v = trim(raw);
  if (!v.empty() && v[0] == '"') return unquote(v);
  for (size_t i = 0; i < v.size(); ++i)
    if (v[i] == '#' && (i == 0 || is_blank(v[i - 1]))) return trim(v.substr(0, i));
  return v;
}

// The INI form of `v` that config_value reads back as `v`: as is when it can be, else quoted.
std::string ini_value(const std::string& v) {
  bool quote = !v.empty() && (is_blank(v.front()) || is_blank(v.back()) || v.front() == '"' || v.front() == '#');
  for (size_t i = 0; i < v.size() && !quote; ++i) {
    const unsigned char ch = static_cast<unsigned char>(v[i]);
    quote = ch < 0x20 || ch == 0x7f || (ch == '#' && i > 0 && is_blank(v[i - 1]));
  }
  if (!quote) return v;
  std::string out = "\"";
  for (unsigned char ch : v) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += char(ch);
    } else if (ch == '\n') {
      out += "\\n";
    } else if (ch == '\t') {
      out += "\\t";
    } else if (ch == '\r') {
      out += "\\r";
    } else if (ch < 0x20 || ch == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(ch));
      out += buf;
    } else {
      out += char(ch);
    }
  }
  return out + "\"";
}

// Reads `path` as "name = value" lines (README "Usage"): blank lines and lines starting
// with '#' are skipped. Boost's own reader cuts every value at its first '#', so a path
// such as run#2.h5 could not round-trip through --print-config; here '#' starts a comment
// only at the start of a value or after whitespace, and a value in double quotes may
// hold anything (format_config quotes the values that need it).
po::parsed_options read_config_file(const std::string& path, const po::options_description& desc) {
  std::error_code ec;
  RI_CHECK(!std::filesystem::is_directory(path, ec), path + ": is a directory, not a config file");
  std::ifstream in(path, std::ios::binary);
  RI_CHECK(in, path + ": cannot open config file");
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  RI_CHECK(text.find('\0') == std::string::npos, path + ": not a text config file (it holds a NUL byte)");
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.erase(0, 3);  // UTF-8 BOM (editors on Windows)

  po::parsed_options parsed(&desc);
  std::istringstream lines(text);
  std::string line;
  for (int n = 1; std::getline(lines, line); ++n) {
    const std::string where = " (line " + std::to_string(n) + ")";
    const std::string t = trim(line);
    if (t.empty() || t[0] == '#') continue;
    RI_CHECK(t[0] != '[', path + ": sections such as '" + shown(t) + "' are not supported" + where);
    const size_t eq = t.find('=');
    RI_CHECK(eq != std::string::npos, path + ": expected 'name = value', got '" + shown(t) + "'" + where);
    const std::string key = trim(t.substr(0, eq));
    RI_CHECK(!key.empty() && key.find_first_of(" \t") == std::string::npos,
             path + ": expected 'name = value', got '" + shown(t) + "'" + where);
    RI_CHECK(!command_line_only(key),
             path + ": '" + key + "' is a command-line option, not a config file key" + where);
    RI_CHECK(desc.find_nothrow(key, /*approx=*/false) != nullptr,
             path + ": unrecognised option '" + shown(key) + "'" + where);
    const std::optional<std::string> value = config_value(t.substr(eq + 1));
    RI_CHECK(value.has_value(), path + ": malformed quoted value for '" + key + "'" + where);
    po::option opt(key, {*value});
    opt.original_tokens = {key, *value};
    parsed.options.push_back(opt);
  }
  return parsed;
}

// The shortest decimal form that reads back as exactly `v` ("0.7", not "0.69999999999999996").
std::string number(double v) {
  std::string s;
  for (int precision = 6; precision <= 17; ++precision) {
    std::ostringstream o;
    o.precision(precision);
    o << v;
    s = o.str();
    if (std::strtod(s.c_str(), nullptr) == v) break;
  }
  return s;
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
      const po::parsed_options parsed = read_config_file(path, desc);
      try {
        po::store(parsed, vm);
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

SamplingParams sampling_params(const RunConfig& c) {
  SamplingParams p;
  p.temperature = c.temperature;
  p.top_p = c.top_p;
  p.top_k = c.top_k;
  p.min_p = c.min_p;
  p.repetition_penalty = c.repetition_penalty;
  p.frequency_penalty = c.frequency_penalty;
  p.presence_penalty = c.presence_penalty;
  return p;
}

std::string format_config(const RunConfig& c) {
  std::ostringstream s;
  s << "# ringinfer " << c.command << "\n";
  auto kv = [&](const char* k, const std::string& v) { s << k << " = " << ini_value(v) << "\n"; };
  auto kn = [&](const char* k, auto v) { s << k << " = " << v << "\n"; };  // integers
  auto kd = [&](const char* k, double v) { s << k << " = " << number(v) << "\n"; };
  if (!c.model.empty()) kv("model", c.model);
  for (auto& in : c.inputs) kv("input", in);
  if (!c.output.empty()) kv("output", c.output);
  if (c.command == "run" || c.command == "score") {
    if (c.device != DeviceKind::auto_detect) kv("device", to_string(c.device));
    if (c.cp > 0) kn("cp", c.cp);
    if (c.tp > 1) kn("tp", c.tp);
    if (c.allow_cross_node_tp) kv("allow-cross-node-tp", "true");
    if (c.attention != "auto") kv("attention", c.attention);
    if (c.log_format != "auto") kv("log-format", c.log_format);
    if (c.memory_limit_gb >= 0) kd("memory-limit", c.memory_limit_gb);
    if (c.kv_dtype != "auto") kv("kv-dtype", c.kv_dtype);  // part of the journal fingerprint: it changes results
    if (c.offload_residual) kv("offload-residual", "true");  // job_fingerprint drops it: it changes no result
    kd("comm-timeout", c.comm_timeout_s);
  }
  if (c.command == "run") {
    kn("max-new-tokens", c.max_new_tokens);
    if (c.max_batch != 0) kn("max-batch", c.max_batch);
    kd("temperature", c.temperature);
    kd("top-p", c.top_p);
    // The controls added later only when set, so older configurations keep their fingerprint.
    if (c.top_k != 0) kn("top-k", c.top_k);
    if (c.min_p != 0.0) kd("min-p", c.min_p);
    if (c.repetition_penalty != 1.0) kd("repetition-penalty", c.repetition_penalty);
    if (c.frequency_penalty != 0.0) kd("frequency-penalty", c.frequency_penalty);
    if (c.presence_penalty != 0.0) kd("presence-penalty", c.presence_penalty);
    for (const std::string& st : c.stop) kv("stop", st);
    if (c.max_sentences != 0) kn("max-sentences", c.max_sentences);
    kn("seed", c.seed);
    if (c.on_error != "fail") kv("on-error", c.on_error);
    if (c.dry_run) kv("dry-run", "true");
    if (c.no_decode_graph) kv("no-decode-graph", "true");  // job_fingerprint drops it: it changes no result
  }
  if (c.command == "prep" && !c.prompt_template.empty()) kv("prompt-template", c.prompt_template);
  if (c.command == "prep" && !c.user_template.empty()) kv("user-template", c.user_template);
  if (c.command == "prep" && c.chat_template != "auto") kv("chat-template", c.chat_template);
  if (c.command == "dump" && c.dump_format != "ringinfer") kv("format", c.dump_format);
  if (c.command == "dump" && c.jsonl) kv("jsonl", "true");
  if (c.command == "dump" && c.logprobs) kv("logprobs", "true");
  if (c.command == "plan") {
    kn("context", c.context);
    kn("ranks", c.ranks);
    kv("kv-dtype", c.kv_dtype);
    if (c.offload_residual) kv("offload-residual", "true");
    kn("tp", c.tp);
    kd("gpu-memory", c.gpu_memory_gb);
    kd("link-bandwidth", c.link_gbps);
    kd("attention-tflops", c.attention_tflops);
    kd("matmul-tflops", c.matmul_tflops);
  }
  if (c.quiet) kv("quiet", "true");
  return s.str();
}

}  // namespace cli
}  // namespace ringinfer
