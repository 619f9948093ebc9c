// `run` and `score`: the SPMD job. Every rank opens the inputs, computes the same
// document schedule, runs its group's documents, and rank 0 assembles the output in
// input order from the group leaders' results.
#include <mpi.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/result_store.h"
#include "comm/cuda_comm_choice.h"
#include "ringinfer/comm.h"
#include "ringinfer/engine.h"
#include "ringinfer/error.h"
#include "ringinfer/log.h"
#include "ringinfer/memory_check.h"
#include "ringinfer/model_loader.h"
#include "ringinfer/model_tokenizer.h"
#include "ringinfer/output.h"
#include "ringinfer/parallel_layout.h"
#include "ringinfer/progress.h"
#include "ringinfer/result_codec.h"
#include "ringinfer/runtime.h"
#include "ringinfer/sampling.h"
#include "ringinfer/schedule.h"
#include "ringinfer/shard.h"
#include "ringinfer/shard_isolation.h"
#include "ringinfer/signals.h"
#include "ringinfer/striped.h"
#include "ringinfer/version.h"
#ifdef RINGINFER_HAVE_CUDA
#include "ringinfer/cuda_backend.h"
#endif

namespace ringinfer::cli {
namespace {

OutputAttributes output_attributes(const RunConfig& config, const ParallelLayout& layout) {
  return {{"model", config.model},
          {"configuration", format_config(config)},
          {"program_version", RINGINFER_VERSION},
          {"ranks", std::to_string(layout.world_size)},
          {"cp", std::to_string(layout.cp)},
          {"tp", std::to_string(layout.tp)}};
}

// --dry-run: every rank reads its stripes; the ring checks that the stripes add up to the
// document; generations are empty.
// Where the stop rules cut a generation's text: the earliest --stop string (left out) or
// the end of the --max-sentences-th sentence; npos when neither applies yet.
size_t stop_position(const std::string& text, const RunConfig& config) {
  const size_t s = find_stop(text, config.stop);
  return config.max_sentences > 0 ? std::min(s, find_sentence_end(text, config.max_sentences)) : s;
}

// Tokens document `doc` may generate: its own max_tokens from the JSONL body, else the job's.
int64_t doc_budget(const RunConfig& config, const DocInfo& doc) {
  return doc.options.max_new_tokens >= 0 ? doc.options.max_new_tokens : config.max_new_tokens;
}

RunResult dry_run_document(const DocumentSet& docs, const DocInfo& doc, const ParallelLayout& layout,
                           ParallelGroups& groups) {
  const int N = layout.cp, r = layout.cp_rank;
  const auto stripes = docs.read_stripes(doc, {r, (r + 1) % N}, N);
  const int64_t expected = local_len(doc.length, r, N);
  RI_CHECK(static_cast<int64_t>(stripes[0].size()) == expected,
           "document " + doc.id + ": rank read " + std::to_string(stripes[0].size()) + " tokens of its stripe, expected " +
               std::to_string(expected));
  int64_t held = static_cast<int64_t>(stripes[0].size()), total = 0;
  groups.cp->all_reduce(&held, &total, 1, CommDtype::int64, ReduceOp::sum, Stream{});
  RI_CHECK(total == doc.length, "document " + doc.id + ": stripes hold " + std::to_string(total) + " of " +
                                    std::to_string(doc.length) + " tokens");
  RunResult res;
  res.id = doc.id;
  res.prompt_tokens = doc.length;
  res.tokens_per_rank = local_len(doc.length, 0, N);  // rank 0 holds the most
  res.finish_reason = "length";
  return res;
}

// RINGINFER_CUDA_COMM (comm/cuda_comm_choice.h) picks how a CUDA CP or TP group (--cp > 1,
// --tp > 1) communicates:
//   nccl   NCCL over device buffers, one rank per GPU (bind_gpu refuses ranks sharing a
//          GPU, which NCCL cannot serve). Not yet checked on two GPUs (no 2-GPU machine has
//          been lent), so it must be asked for by name.
//   mpi    host-staged MPI (make_staged_comm): every transfer goes through pinned host
//          memory, so it is slower, but several ranks may share one GPU; checked against
//          the CPU backend on one GPU.
//   unset  --cp 1 --tp 1 only: groups of more ranks are refused with a message naming both.
// --device auto: cuda when every rank sees a GPU, cpu when none does. A mix is refused:
// ranks on different backends would enter different collectives. Collective over `world`.
bool auto_device_is_cuda(Comm& world) {
  const int32_t sees = visible_gpu_count() > 0 ? 1 : 0;
  RI_CHECK(range_over_ranks(world, sees).uniform(),
           "--device auto: some ranks see a GPU and others do not (check CUDA_VISIBLE_DEVICES and the nodes "
           "of the allocation); pass --device cuda or --device cpu");
  return sees == 1;
}

// The backend --device asks for. Collective over `world` (auto_device_is_cuda,
// agreed_cuda_comm): for cuda, `comm` is set to the RINGINFER_CUDA_COMM every rank agrees on.
std::unique_ptr<Backend> make_backend(DeviceKind device, const std::string& attention, const RankInfo& me,
                                      const ParallelLayout& layout, Comm& world, CudaCommChoice& comm) {
  const bool cuda = device == DeviceKind::cuda || (device == DeviceKind::auto_detect && auto_device_is_cuda(world));
  if (!cuda) return make_cpu_backend();
#ifdef RINGINFER_HAVE_CUDA
  const CudaCommChoice kind = agreed_cuda_comm(world);
  RI_CHECK(kind != CudaCommChoice::unset || (layout.cp == 1 && layout.tp == 1),
           "--device cuda with --cp " + std::to_string(layout.cp) + " --tp " + std::to_string(layout.tp) +
               ": choose the GPU communicator with RINGINFER_CUDA_COMM=nccl (NCCL, one GPU per rank; not yet "
               "checked on two GPUs) or RINGINFER_CUDA_COMM=mpi (host-staged MPI, checked, slower; ranks may share "
               "a GPU), and pass it to the ranks (mpirun -x RINGINFER_CUDA_COMM)");
  CudaBackendOptions options;
  // NCCL needs a GPU per rank; staged MPI lets ranks share one.
  options.device = bind_gpu(me, kind == CudaCommChoice::staged_mpi);
  options.attention = parse_attention_path(attention);
  comm = kind;
  return make_cuda_backend(options);
#else
  (void)attention;
  (void)me;
  (void)layout;
  (void)world;
  (void)comm;
  throw Error("--device cuda: this build has no CUDA backend (use --device cpu)");
#endif
}

// How many ranks of this node share the memory this rank plans against.
int ranks_sharing(MemoryKind kind, const RankInfo& me) {
  const int local = std::max(1, me.local_size);
  if (kind == MemoryKind::host) return local;
  const int gpus = std::max(1, visible_gpu_count());
  const int device = me.local_rank % gpus;  // as bind_gpu
  return std::max(1, (local - device + gpus - 1) / gpus);
}

// The device-buffer communicator of a CUDA CP or TP group (null when the group is one
// rank or the backend is the CPU's, which uses the MpiComm itself). Collective over `group`.
// `comm` is make_backend's agreed RINGINFER_CUDA_COMM.
std::unique_ptr<Comm> make_device_comm(const Backend& backend, MpiComm& group, CudaCommChoice comm) {
  if (std::string(backend.name()) != "cuda" || group.size() == 1) return nullptr;
#ifdef RINGINFER_HAVE_CUDA
  // make_backend refused an unset RINGINFER_CUDA_COMM for groups of more than one rank.
  if (comm == CudaCommChoice::staged_mpi) return make_staged_comm(group);
  return make_nccl_comm(group.mpi_comm());
#else
  (void)comm;
  return nullptr;
#endif
}

// Per-rank totals over the documents, for the log and the output attributes.
struct RankTotals {
  int64_t tokens_held = 0, kv_bytes_max = 0, bytes_sent = 0;
  // Counted by group leaders only, so the world sums count each document once.
  int64_t documents = 0, prompt_tokens = 0, generated_tokens = 0;
};

// Statistics, not problems: printed by every rank (log::info would show rank 0's only),
// silenced by --quiet.
void log_document(const DocInfo& doc, const EngineStats& st, RankTotals& totals, bool quiet) {
  totals.tokens_held += st.tokens_held;
  totals.kv_bytes_max = std::max(totals.kv_bytes_max, st.kv_bytes);
  totals.bytes_sent += st.bytes_sent + st.tp_bytes_sent;
  if (quiet) return;
  log::note("document " + doc.id + ": " + std::to_string(st.tokens_held) + " tokens held, KV " +
            std::to_string(st.kv_bytes) + " B, sent " + std::to_string(st.bytes_sent) + " B (CP) + " +
            std::to_string(st.tp_bytes_sent) + " B (TP)");
}

// One document of `score` on this CP rank; the result is the same on every rank.
ScoreResult score_document(Engine& engine, const DocumentSet& docs, const DocInfo& doc, const ParallelLayout& layout,
                           RankTotals& totals, bool quiet) {
  const int N = layout.cp, r = layout.cp_rank;
  const auto stripes = docs.read_stripes(doc, {r, (r + 1) % N}, N);
  const DocumentScore sc = engine.score_stripes(stripes[0], stripes[1], doc.length);
  log_document(doc, engine.last_stats(), totals, quiet);
  ScoreResult res;
  res.id = doc.id;
  res.seconds = sc.seconds;
  res.tokens_per_rank = local_len(doc.length, 0, N);
  res.token_logprobs = sc.logprobs;
  res.perplexity = sc.perplexity;  // NaN for a document of 0 or 1 tokens: nothing was predicted
  return res;
}

// The record of a document that could not run (--on-error skip): no tokens, finish
// "error", the reason in place of the text.
RunResult error_result(const DocInfo& doc, const std::string& why) {
  RunResult res;
  res.id = doc.id;
  res.prompt_tokens = doc.length;
  res.text = why;
  res.finish_reason = "error";
  return res;
}

// How document `doc` generates: the job's options, the JSONL body's overrides, its RNG key
// and the stop rules (which read the decoded text; the tokenizer and config outlive it).
GenerateOptions generate_options(const DocInfo& doc, const RunConfig& config, const Tokenizer* tokenizer) {
  GenerateOptions g;
  g.max_new_tokens = doc_budget(config, doc);
  g.sampling = sampling_params(config);
  if (doc.options.temperature >= 0.0) g.sampling.temperature = doc.options.temperature;  // the JSONL body's
  g.seed = config.seed;
  g.doc_key = doc_key(doc.id);
  if (tokenizer && (!config.stop.empty() || config.max_sentences > 0))  // the same tokens and tokenizer on every rank
    g.stop_here = [tokenizer, &config](const std::vector<int32_t>& t) {
      return stop_position(tokenizer->decode(t), config) != std::string::npos;
    };
  return g;
}

// The record of a generated document.
RunResult run_result(const DocInfo& doc, const GenerateResult& gen, const ParallelLayout& layout,
                     const RunConfig& config, const Tokenizer* tokenizer) {
  const int N = layout.cp;
  RunResult res;
  res.id = doc.id;
  res.prompt_tokens = doc.length;
  res.tokens_per_rank = local_len(doc.length, 0, N);
  res.generated = gen.tokens;
  if (tokenizer) {
    // /gen_tokens keeps the EOS id that ended the generation; the text leaves it out.
    std::vector<int32_t> shown = gen.tokens;
    if (gen.finish == FinishReason::eos && !shown.empty()) shown.pop_back();
    res.text = tokenizer->decode(shown);
    const size_t cut = stop_position(res.text, config);  // the stop string is left out
    if (gen.finish == FinishReason::stop && cut != std::string::npos) res.text.resize(cut);
  }
  // An empty prompt generated nothing: length.
  res.finish_reason = gen.finish == FinishReason::eos ? "eos" : gen.finish == FinishReason::stop ? "stop" : "length";
  res.prefill_seconds = gen.prefill_seconds;
  const size_t after_first = gen.tokens.empty() ? 0 : gen.tokens.size() - 1;
  res.decode_tokens_per_second = gen.decode_seconds > 0 ? after_first / gen.decode_seconds : 0.0;
  return res;
}

// Peak resident host memory of this process in bytes (getrusage's maximum RSS).
int64_t peak_host_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;  // Linux reports KiB
}

// The run summary: sums of every rank's totals and per-rank memory peaks (collective over
// the world), as output attributes; world rank 0 also prints it unless quiet.
OutputAttributes job_summary(Comm& world, const RankTotals& mine, const Backend* backend, double seconds,
                             bool quiet) {
  int64_t v[5] = {mine.tokens_held, mine.bytes_sent, mine.documents, mine.prompt_tokens, mine.generated_tokens};
  int64_t sum[5] = {0, 0, 0, 0, 0};
  world.all_reduce(v, sum, 5, CommDtype::int64, ReduceOp::sum, Stream{});
  int64_t peaks[3] = {mine.kv_bytes_max, backend ? backend->peak_allocated_bytes() : -1, peak_host_rss_bytes()};
  int64_t max_peaks[3] = {0, 0, 0};
  world.all_reduce(peaks, max_peaks, 3, CommDtype::int64, ReduceOp::max, Stream{});
  const double tokens = static_cast<double>(sum[3] + sum[4]);
  const double rate = seconds > 0 ? tokens / seconds : 0.0;
  if (!quiet) {
    char line[512];
    std::snprintf(line, sizeof line,
                  "summary: %lld documents run, %lld prompt + %lld generated tokens in %.1f s (%.1f tokens/s); "
                  "peak per rank: %.3f GB %s buffers, %.3f GB host RSS, %.3f GB KV cache",
                  static_cast<long long>(sum[2]), static_cast<long long>(sum[3]), static_cast<long long>(sum[4]),
                  seconds, rate, max_peaks[1] / 1e9, backend ? backend->name() : "backend", max_peaks[2] / 1e9,
                  max_peaks[0] / 1e9);
    log::info(line);
  }
  return {{"total_tokens_held", std::to_string(sum[0])},
          {"total_bytes_sent", std::to_string(sum[1])},
          {"max_kv_bytes_per_rank", std::to_string(max_peaks[0])},
          {"documents_run", std::to_string(sum[2])},
          {"wall_seconds", std::to_string(seconds)},
          {"tokens_per_second", std::to_string(rate)},
          {"peak_backend_bytes_per_rank", std::to_string(max_peaks[1])},
          {"peak_host_rss_bytes_per_rank", std::to_string(max_peaks[2])}};
}

template <class Result>
std::vector<Result> assemble(const std::vector<Bytes>& all, const DocumentSet& docs) {
  std::vector<std::optional<Result>> by_index(docs.size());
  for (const Bytes& b : all) {
    Result r;
    const int64_t i = decode_result(b.data(), b.size(), r, "gathered result");
    RI_CHECK(i >= 0 && i < static_cast<int64_t>(docs.size()) && !by_index[i], "duplicate or bad result index");
    by_index[i] = std::move(r);
  }
  std::vector<Result> results;
  for (size_t i = 0; i < by_index.size(); ++i) {
    RI_CHECK(by_index[i].has_value(), "no result for document " + docs[i].id);
    results.push_back(std::move(*by_index[i]));
  }
  return results;
}

}  // namespace

int run_command(const RunConfig& config) {
  MpiRuntime mpi(nullptr, nullptr);
  install_stop_handlers();
  return run_guarded(
      [&]() -> int {
        set_comm_timeout(config.comm_timeout_s);  // before the first collective
        const int cpu_threads = configure_cpu_threads();  // before any OpenMP region or BLAS call
        const auto job_start = std::chrono::steady_clock::now();
        const RankInfo& me = mpi.info();
        // Rank 0 reports progress (a bar on a terminal, JSON lines otherwise, none with -q).
        // Every rank finds the same format (same flags, same launcher); all log lines then
        // clear a half-drawn bar first.
        const ProgressFormat format = progress_format(config.log_format, config.quiet);
        log::set_bar_on_terminal(format == ProgressFormat::bar);
        const std::unique_ptr<Progress> progress = me.world_rank == 0 ? Progress::to_stderr(format) : nullptr;
        const ParallelLayout layout =
            make_parallel_layout(me.world_size, me.world_rank,
                                 config.cp > 0 ? std::optional<int>(config.cp) : std::nullopt, config.tp);
        ParallelGroups groups = make_parallel_groups(layout, MPI_COMM_WORLD);
        check_tp_on_one_node(groups, config.allow_cross_node_tp);
        check_output_path(config, *groups.world);  // before the model loads: not a file we read, writable
        const bool scoring = config.command == "score";
        const bool dry = config.dry_run && !scoring;

        std::optional<ModelSource> model;
        std::unique_ptr<Backend> backend;
        std::unique_ptr<Comm> cp_device, tp_device;  // CP / TP groups over device buffers (CUDA); outlive engine
        CudaCommChoice cuda_comm = CudaCommChoice::unset;  // set by make_backend for the CUDA backend
        std::unique_ptr<Engine> engine;
        std::optional<Tokenizer> tokenizer;
        if (!dry) model.emplace(open_model(config.model));
        const int64_t vocab = model ? model->config.vocab_size : -1;
        try {
          check_shards_isolated(config.inputs, vocab, *groups.world);
        } catch (const StopRequested&) {  // every rank: rank 0 broadcast the stop
          log::warn("stop signal received while the input shards were checked: nothing ran; rerun the same "
                    "command");
          return kExitPreempted;
        }
        DocumentSet docs = open_documents(config.inputs, vocab, ShardStrings::variable_checked);  // checked above
        // --on-error skip: documents that cannot run, by index, with the reason (the same on every rank).
        const bool skip_errors = config.on_error == "skip" && !scoring;
        std::map<int64_t, std::string> failed;
        std::vector<int64_t> lengths;
        for (const DocInfo& d : docs.documents()) lengths.push_back(d.length);
        if (!dry) {
          backend = make_backend(config.device, config.attention, me, layout, *groups.world, cuda_comm);
          if (std::string(backend->name()) == "cpu") log::info("cpu: " + std::to_string(cpu_threads) + " thread(s) per rank");
          const KvDtype kv_dtype =
              config.kv_dtype == "auto" ? backend->default_kv_dtype() : parse_kv_dtype(config.kv_dtype);
          RI_CHECK(backend->supports_kv_dtype(kv_dtype), "ringinfer " + config.command + ": --kv-dtype " +
                                                             config.kv_dtype + " is not supported on the " +
                                                             backend->name() + " backend (CUDA: bf16 or fp8)");
          // Before any weight or cache is allocated: does the longest document fit? Every
          // rank sees the same documents and fails the same way.
          const bool on_gpu = std::string(backend->name()) == "cuda";
          PlanInput need = plan_input(kv_dtype, on_gpu, model->config.head_dim);
          // A GGUF the backend keeps quantized (the CPU's, one TP rank: engine_weights.cpp)
          // holds its stored bytes, not 4 a weight.
          if (backend->takes_quantized_weights() && layout.tp == 1)
            need.stored_weight_bytes = std::max<int64_t>(0, model->tensors->kept_weight_bytes());
          // On the CPU backend host memory is the device's: x counts there either way.
          need.offload_residual = config.offload_residual && on_gpu;
          need.context = 0;
          for (const DocInfo& d : docs.documents())
            need.context = std::max(need.context, d.length + (scoring ? 0 : doc_budget(config, d)));
          need.ranks = layout.cp * layout.tp;
          need.tp = layout.tp;
          const int64_t limit = config.memory_limit_gb > 0 ? static_cast<int64_t>(config.memory_limit_gb * 1e9) : -1;
          const MemoryKind kind = on_gpu ? MemoryKind::gpu : MemoryKind::host;
          int64_t available = available_bytes(kind, limit);
          // Host memory is shared by the ranks of a node; a GPU by the ranks bound to it
          // (one, except with RINGINFER_CUDA_COMM=mpi, where bind_gpu deals the node's ranks
          // round-robin over its GPUs).
          if (limit < 0) available /= ranks_sharing(kind, me);
          if (skip_errors) {
            // Every rank must skip the same documents: plan against the least memory any rank has.
            int64_t neg = -available, most_neg = 0;  // min as the max of negatives
            groups.world->all_reduce(&neg, &most_neg, 1, CommDtype::int64, ReduceOp::max, Stream{});
            available = -most_neg;
            need.context = 0;
            for (const DocInfo& d : docs.documents()) {
              PlanInput one = need;
              one.context = d.length + doc_budget(config, d);
              try {
                (void)check_memory(model->config, one, kind, available);
                need.context = std::max(need.context, one.context);
              } catch (const Error& e) {
                failed[d.index] = e.what();
              }
            }
            if (!failed.empty())
              log::warn(std::to_string(failed.size()) + " document(s) cannot run and get an error record (--on-error skip)");
          }
          const MemoryPlan fits = check_memory(model->config, need, kind, available);
          // --offload-residual moves the residual stream to pinned host memory: does it fit there?
          if (need.offload_residual)
            check_host_memory(fits, available_bytes(MemoryKind::host) / ranks_sharing(MemoryKind::host, me));
          // The decode batch (DESIGN §5): --max-batch, or as many documents of the longest
          // length as memory holds (at most kAutoMaxBatch); the least any rank gets, since
          // every rank of a group makes the same join/step calls.
          int64_t batch = 1;
          if (!scoring) {
            batch = config.max_batch > 0
                        ? config.max_batch
                        : std::max<int64_t>(1, largest_fitting_batch(model->config, need, available, kAutoMaxBatch));
            int64_t neg = -batch, most_neg = 0;  // min as the max of negatives
            groups.world->all_reduce(&neg, &most_neg, 1, CommDtype::int64, ReduceOp::max, Stream{});
            batch = -most_neg;
            need.batch = batch;
            check_memory(model->config, need, kind, available);  // an explicit --max-batch may not fit
            log::info("decode batch: up to " + std::to_string(batch) + " document(s) per group" +
                      (config.max_batch > 0 ? " (--max-batch)" : " (as many as memory holds; --max-batch sets it)"));
          }

          // The same "cannot split" Error on every rank when the model does not divide over
          // --tp, before any communicator is made.
          (void)tensor_parallel_slice(model->config, layout.tp_rank, layout.tp);
          EngineOptions eo;
          eo.kv_dtype = kv_dtype;
          eo.offload_residual = config.offload_residual;
          eo.decode_graph = !config.no_decode_graph;
          eo.cp_rank = layout.cp_rank;
          eo.cp_size = layout.cp;
          cp_device = make_device_comm(*backend, *groups.cp, cuda_comm);
          tp_device = make_device_comm(*backend, *groups.tp, cuda_comm);
          eo.cp_comm = cp_device ? cp_device.get() : groups.cp.get();
          eo.tp_rank = layout.tp_rank;
          eo.tp_size = layout.tp;
          eo.tp_comm = tp_device ? tp_device.get() : groups.tp.get();
          eo.should_stop = [] { return stop_requested(); };
          eo.max_batch = batch;
          if (progress) {
            eo.on_progress = [p = progress.get()](const EngineProgress& e) {
              if (e.kind == EngineProgress::Kind::prefill_layer) p->prefill_layer(e.layer, e.layers);
              else p->decode_token(static_cast<int64_t>(e.tag), e.generated);
            };
          }
          // Streams this rank's slice (only its rows/columns with --tp) to the backend one
          // tensor at a time: peak host memory stays near the backend's share, not twice it.
          engine = std::make_unique<Engine>(*backend, *model, eo);
          if (!scoring) tokenizer = find_tokenizer(*model);
          // Stop rules read the decoded text: without a tokenizer they could never fire.
          RI_CHECK(scoring || tokenizer || (config.stop.empty() && config.max_sentences == 0),
                   config.model + ": --stop and --max-sentences need the model's tokenizer, and it has none");
        }
        for (const auto& f : failed) lengths[static_cast<size_t>(f.first)] = 0;  // nothing to run: no cost
        const auto schedule = assign_documents(lengths, layout.dp, scoring ? 0 : config.max_new_tokens);
        log::info(std::to_string(docs.size()) + " documents, " + std::to_string(layout.dp) + " group(s) of " +
                  std::to_string(layout.cp) + " rank(s)" +
                  (layout.tp > 1 ? " x " + std::to_string(layout.tp) + " tensor-parallel ranks" : ""));

        const bool leader = layout.cp_rank == 0 && layout.tp_rank == 0;
        // Finished documents are journaled (fsynced) as they complete; a re-run of the
        // same command skips them (DESIGN §6).
        ResultStore store(config.output, job_fingerprint(config, *groups.world), layout.dp_rank, leader);
        if (store.done_count() > 0)
          log::info("resuming: " + std::to_string(store.done_count()) + " of " + std::to_string(docs.size()) +
                    " documents are already journaled and will be skipped");
        const auto& mine = schedule[layout.dp_rank];
        auto budget = [&](int64_t d) { return scoring || failed.count(d) ? 0 : doc_budget(config, docs[d]); };
        if (progress) {  // world rank 0 shows its own group's documents
          int64_t work = 0;
          for (int64_t d : mine)
            if (!store.done(d)) work += docs[d].length + budget(d);
          progress->job_start(static_cast<int64_t>(mine.size()), work);
        }
        RankTotals totals;
        bool stopped = false;
        try {
          std::vector<int64_t> todo;  // not journaled yet, in schedule order
          for (int64_t d : mine) {
            if (store.done(d)) {
              if (progress) progress->document_skipped(d, docs[d].id);
              continue;
            }
            todo.push_back(d);
          }
          // Journaled as it finishes, whatever else is still decoding.
          auto document_done = [&](int64_t d, const Bytes& encoded, int64_t generated, const std::string& finish) {
            if (leader) {
              store.add(encoded);
              totals.documents += 1;
              totals.prompt_tokens += docs[d].length;
              totals.generated_tokens += generated;
            }
            if (progress) progress->document_done(d, generated, finish);
          };
          // Continuous batching (DESIGN §5): a document's prefill runs alone on the ring,
          // then it joins the decode batch; the batch steps while it is full or no document
          // is left to join.
          const Tokenizer* tok = tokenizer ? &*tokenizer : nullptr;
          for (size_t next = 0; next < todo.size() || (engine && engine->batch_size() > 0);) {
            if (next < todo.size() && (!engine || engine->batch_size() < engine->max_batch())) {
              const int64_t d = todo[next++];
              // Stop signals reach ranks at different moments: the group agrees at each
              // document boundary (and, inside the engine, at each layer and decode step).
              int stop = stop_requested() ? 1 : 0, any_stop = 0;
              groups.cp->all_reduce(&stop, &any_stop, 1, CommDtype::int32, ReduceOp::max, Stream{});
              groups.tp->all_reduce(&any_stop, &any_stop, 1, CommDtype::int32, ReduceOp::max, Stream{});
              if (any_stop) throw StopRequested{stop_signal()};
              if (progress) progress->document_start(d, docs[d].id, docs[d].length, budget(d));
              if (failed.count(d)) {
                const RunResult r = error_result(docs[d], failed.at(d));
                document_done(d, encode_result(d, r), 0, r.finish_reason);
              } else if (dry) {
                document_done(d, encode_result(d, dry_run_document(docs, docs[d], layout, groups)), 0, "length");
              } else if (scoring) {
                document_done(d, encode_result(d, score_document(*engine, docs, docs[d], layout, totals, config.quiet)),
                              0, "length");
              } else {
                const auto stripes = docs.read_stripes(docs[d], {layout.cp_rank}, layout.cp);
                engine->join(stripes[0], docs[d].length, generate_options(docs[d], config, tok),
                             static_cast<uint64_t>(d));
              }
            } else {
              engine->step();
            }
            if (!engine) continue;
            for (FinishedDocument& f : engine->take_finished()) {
              const int64_t d = static_cast<int64_t>(f.tag);
              log_document(docs[d], f.stats, totals, config.quiet);
              const RunResult r = run_result(docs[d], f.result, layout, config, tok);
              document_done(d, encode_result(d, r), static_cast<int64_t>(r.generated.size()), r.finish_reason);
            }
          }
        } catch (const StopRequested&) {
          stopped = true;  // the group stopped together; the document in hand is dropped
        }
        if (progress) progress->job_done(stopped);

        // Every rank meets here, stopped or not, so no rank waits for one that left.
        int any_stopped = 0, me_stopped = stopped ? 1 : 0;
        groups.world->all_reduce(&me_stopped, &any_stopped, 1, CommDtype::int32, ReduceOp::max, Stream{});
        if (any_stopped) {
          log::warn("stop signal received: finished documents are journaled; rerun the same command to resume");
          return kExitPreempted;
        }
        OutputAttributes attrs = output_attributes(config, layout);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - job_start).count();
        for (auto& kv : job_summary(*groups.world, totals, backend.get(), seconds, config.quiet)) attrs.push_back(kv);
        if (engine) attrs.push_back({"kv_dtype", kv_dtype_name(engine->kv_dtype())});  // what auto resolved to
        if (me.world_rank == 0) {
          std::vector<Bytes> all;
          for (auto& [index, record] : store.collect()) all.push_back(std::move(record));
          if (scoring) write_score_output(config.output, assemble<ScoreResult>(all, docs), attrs);
          else write_run_output(config.output, assemble<RunResult>(all, docs), attrs);
          store.remove_journals();
          log::info("wrote " + config.output);
        }
        groups.world->barrier(Stream{});
        return kExitOk;
      },
      kExitUsage);
}

}  // namespace ringinfer::cli
