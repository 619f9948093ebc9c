#pragma once
// RunConfig: everything a subcommand was asked to do, after the command line and any
// --config file have been merged and checked. Printed by --print-config (as INI, so it
// can be fed back with --config) and stored in output attributes.
#include <cstdint>
#include <string>
#include <vector>

namespace ringinfer {

enum class DeviceKind { auto_detect, cpu, cuda };

// Upper bounds of options whose larger values would overflow a conversion downstream
// (chrono durations, int64 byte counts); the option parser refuses values beyond them.
// --max-new-tokens and plan's --context are bounded by kMaxContextTokens (memory_plan.h).
inline constexpr double kMaxCommTimeoutSeconds = 1e6;  // --comm-timeout: about 11.6 days
inline constexpr double kMaxMemoryGb = 1e9;            // --memory-limit, --gpu-memory: 1 EB

struct RunConfig {
  std::string command;               // run | score | prep | dump | plan
  std::string model;                 // HF folder or .gguf file
  std::vector<std::string> inputs;   // input shards (run, score) or text/JSONL files (prep)
  std::string output;                // output HDF5 (run, score, prep)
  DeviceKind device = DeviceKind::auto_detect;
  int cp = 0;                        // context-parallel group size; 0 = world size
  int64_t max_new_tokens = 256;      // run
  int64_t max_batch = 0;             // run: documents of a DP group decoded together (1..256); 0 = as many as the
                                     // memory plan holds, at most kAutoMaxBatch (memory_plan.h); outputs do not depend on it
  double temperature = 0.0;          // run: 0 = greedy
  double top_p = 1.0;                // run
  int64_t top_k = 0;                 // run: 0 = off (sampling.h SamplingParams for these five)
  double min_p = 0.0;                // run: 0 = off
  double repetition_penalty = 1.0;   // run: 1 = off
  double frequency_penalty = 0.0;    // run: 0 = off
  double presence_penalty = 0.0;     // run: 0 = off
  std::vector<std::string> stop;     // run: generation ends where the decoded text shows one of these
  int64_t max_sentences = 0;         // run: generation ends after this many sentences; 0 = off
  uint64_t seed = 0;                 // run: sampling RNG key (a non-negative integer below 2^64)
  double memory_limit_gb = -1;       // run, score: memory per rank for the up-front check; -1 = what the device has
  double comm_timeout_s = 300;       // run, score: seconds a rank waits for the others before the job fails
  bool dry_run = false;              // run: read every stripe, write empty generations
  bool no_decode_graph = false;      // run: every decode step op by op, not as a CUDA graph (same outputs)
  std::string prompt_template;       // prep: file with a {document} placeholder
  std::string user_template;         // prep: user message with a {document} placeholder, in the chat template
  std::string chat_template = "auto";  // prep: auto (from the model) | llama3 | chatml | mistral
  std::string on_error = "fail";     // run: fail | skip (a document that cannot run gets an error record)
  bool jsonl = false;                // dump
  std::string dump_format = "ringinfer";  // dump --jsonl: ringinfer | openai (OpenAI batch output lines)
  bool logprobs = false;             // dump --jsonl of a score output: per-token logprobs
  int64_t context = 0;               // plan: tokens
  int ranks = 0;                     // plan
  std::string kv_dtype = "bf16";     // plan: bf16 | fp8; run, score: auto (the device's default: f32 on the
                                     // CPU, bf16 on CUDA) | f32 (CPU only) | bf16 | fp8
  bool offload_residual = false;     // run, score: the prefill's residual stream in host memory between layers
  int tp = 1;                        // run, score, plan: tensor-parallel size
  bool allow_cross_node_tp = false;  // run, score: let a TP group span nodes (slow: TP all-reduces every layer)
  std::string log_format = "auto";   // run, score: progress as auto | bar | json
  std::string attention = "auto";    // run, score: attention kernels on CUDA, auto | native | cudnn (cuda_backend.h)
  double gpu_memory_gb = 141.0;      // plan: usable memory per GPU (H200: 141 GB)
  double link_gbps = 358.0;          // plan: ring link bandwidth, GB/s (NVLink send/recv measured on H200)
  double attention_tflops = 300.0;   // plan: attention kernel rate for the prefill estimate
  double matmul_tflops = 700.0;      // plan: GEMM rate for the projections and MLP
  bool quiet = false;                // no progress output
};

const char* to_string(DeviceKind d);

}  // namespace ringinfer
