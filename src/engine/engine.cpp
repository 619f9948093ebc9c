// The forward pass over Backend: layer-major prefill of a stripe, score, decode.
#include "ringinfer/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include "engine/engine_weights.h"
#include "engine/residual_stream.h"
#include "ringinfer/attention.h"
#include "ringinfer/error.h"
#include "ringinfer/sampling.h"
#include "ringinfer/signals.h"
#include "ringinfer/striped.h"

namespace ringinfer {

const char* to_string(FinishReason f) {
  switch (f) {
    case FinishReason::eos: return "eos";
    case FinishReason::length: return "length";
    case FinishReason::empty_prompt: return "empty_prompt";
    case FinishReason::stop: return "stop";
  }
  return "?";
}

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Columns [begin, begin + count) of a one-row tensor, as a (1, count) view.
Tensor row_cols(const Tensor& row, int64_t begin, int64_t count) {
  return row.reshaped(row.cols(), 1).rows(begin, count).reshaped(1, count);
}

// This rank's TP slice, after checking the options that name the TP group (every rank of
// the group fails the same way here, before any communication).
TensorParallelSlice checked_slice(const ModelConfig& c, const EngineOptions& o) {
  RI_CHECK(o.tp_size >= 1 && o.tp_rank >= 0 && o.tp_rank < o.tp_size,
           "engine: TP rank " + std::to_string(o.tp_rank) + " outside a group of " + std::to_string(o.tp_size));
  TensorParallelSlice sl = tensor_parallel_slice(c, o.tp_rank, o.tp_size);
  RI_CHECK(o.tp_size == 1 || o.tp_comm != nullptr,
           "engine: --tp " + std::to_string(o.tp_size) + " needs a communicator for the TP group");
  RI_CHECK(o.tp_comm == nullptr || (o.tp_comm->rank() == o.tp_rank && o.tp_comm->size() == o.tp_size),
           "engine: the TP communicator's rank/size do not match tp_rank/tp_size");
  return sl;
}

// Tokens t = r (mod N) of a whole document.
std::vector<int32_t> cut_stripe(const std::vector<int32_t>& doc, int r, int N) {
  std::vector<int32_t> out;
  for (size_t t = static_cast<size_t>(r); t < doc.size(); t += static_cast<size_t>(N)) out.push_back(doc[t]);
  return out;
}
}  // namespace

namespace {
// Global positions of projected rows: start + i * N (a stripe), or each[i] (a decode batch,
// one row per document).
struct RowPositions {
  int64_t start = 0;
  const std::vector<int64_t>* each = nullptr;
};

// A document of the decode batch (DESIGN §4, §5).
struct Sequence {
  uint64_t tag = 0;        // the caller's handle
  GenerateOptions options;
  int64_t S = 0;           // prompt tokens
  KvCache kv;              // this rank's stripe of its K,V
  GenerateResult result;   // tokens so far
  EngineStats stats;       // this rank's share of its work
  std::chrono::steady_clock::time_point decode_start;
  // Penalties only: how often each token was generated in this document, on the backend
  // (so the device sampler reads it in place) and on the host (which knows each token
  // anyway: it writes the one changed count per step).
  Tensor counts;                     // (1, vocab) i32
  std::vector<int32_t> host_counts;  // (vocab)
  // Global position of the last token, the one the next decode step runs.
  int64_t position() const { return S + static_cast<int64_t>(result.tokens.size()) - 1; }
};
}  // namespace

struct Engine::State {
  Backend& be;
  ModelConfig cfg;
  EngineOptions opt;
  TensorParallelSlice sl;  // this rank's heads, FFN channels and vocabulary rows
  engine::BackendWeights w;
  Comm* comm = nullptr;  // the CP group; null when N = 1
  Comm* tp = nullptr;    // the TP group; null when T = 1
  int r = 0, N = 1, tr = 0, T = 1;
  // H, Hkv, inter: this rank's query heads, KV heads and FFN channels (the model's with
  // T = 1); vocab: the model's vocabulary; vl: LM-head rows held here.
  int64_t H = 0, Hkv = 0, D = 0, hidden = 0, inter = 0, vocab = 0, vl = 0, chunk = 0;
  float eps = 0.0f, scale = 0.0f;
  EngineStats stats;

  AttentionHeads heads;                  // this rank's heads and the softmax scale
  std::unique_ptr<RingAttention> ring;   // prefill's pass-KV ring (attention/)
  std::unique_ptr<DecodeAttention> decode_attn;  // decode's split-KV attention and merge

  // One document being prefilled (n = local tokens of its prompt on this rank); the
  // documents in decode, each with its own cache, in the order they joined.
  KvDtype kv_dtype = KvDtype::f32;       // the cache's element type (options, else the backend's default)
  engine::ResidualStream x{be};          // (n, hidden) fp32 residual stream (on the host with offload_residual)
  DType q_dtype = DType::f32;            // Q's storage: what the backend's attention reads (bf16 on CUDA)
  Tensor q, o, lse;                      // (n, H*D) q_dtype, (n, H*D), (n, H): one layer's Q and (O, LSE)
  // Scratch, bounded by chunk_tokens / logits_chunk rows, allocated once.
  Tensor h;           // (chunk, hidden) normed input
  Tensor k_new, v_new;  // (chunk, Hkv*D) fp32 K,V before the cache store
  Tensor q_new;       // (chunk, H*D) fp32 Q before its copy into q_dtype (empty when q_dtype is f32)
  Tensor gate, up;    // (chunk, intermediate)
  Tensor act;         // (chunk, intermediate) in the backend's gemm_input_dtype(): prefill's silu(gate) * up for
                      // the down projection (empty where that is f32: gate holds it)
  Tensor tok;         // (chunk, 1) i32 token ids / targets
  Tensor burst_tok;   // (decode_burst + 1) x max_batch i32: a burst's input ids, then each step's sampled ids
  Tensor hl;          // (logits_chunk, hidden) final-normed rows for the LM head
  Tensor logits;      // (logits_chunk, vl)
  Tensor xb, qb;      // decode: (max_batch, hidden) f32, (max_batch, H*D) q_dtype: one row per document
  Tensor flags;       // (1, 2) i32: the stop flag to reduce, and the reduced flag
  Tensor bad_token;   // (1, 2) f64: (global index, token) of this rank's first bad token
  Tensor bad_tokens;  // (max(N, T), 2) f64: every rank's, gathered
  // Tensor parallel only (T > 1):
  Tensor xp;          // (chunk, hidden) this rank's partial o_proj / down_proj output, all-reduced into x
  Tensor ref, a_ref, a_tgt;  // (logits_chunk, 1) f32: logit of local row 0, logprobs of it and of the target
  Tensor red_max;     // (logits_chunk, 1) f64: local log-sum-exp, max-reduced
  Tensor red_sum;     // (logits_chunk, 2) f64: (sum of exp(lse - max), target logit), sum-reduced
  Tensor lg_pad;      // (1, vocab_part) decode logits of the local rows, padded for the gather
  Tensor lg_all;      // (1, T * vocab_part) every rank's part in rank order: its first vocab are the row
  std::vector<std::unique_ptr<Sequence>> batch;  // documents in decode (at most max_batch)
  std::vector<FinishedDocument> finished;        // finished since the last take_finished()
  // A stop seen inside a decode burst: the burst ended there (its earlier steps' tokens
  // taken), and the next step() or join() throws it, as a stop seen at the start of a step
  // would have been.
  std::optional<StopRequested> pending_stop;

  // load: this rank's weights on the backend, given its slice (checked first: the "cannot
  // split" Error comes before any weight is read).
  State(Backend& backend, const ModelConfig& c, const EngineOptions& o,
        const std::function<engine::BackendWeights(const TensorParallelSlice&)>& load)
      : be(backend), cfg(c), opt(o), sl(checked_slice(c, o)), w(load(sl)) {
    RI_CHECK(o.cp_size >= 1 && o.cp_rank >= 0 && o.cp_rank < o.cp_size,
             "engine: CP rank " + std::to_string(o.cp_rank) + " outside a group of " + std::to_string(o.cp_size));
    RI_CHECK(o.cp_size == 1 || o.cp_comm != nullptr,
             "engine: --cp " + std::to_string(o.cp_size) + " needs a communicator for the CP group");
    RI_CHECK(o.cp_comm == nullptr || (o.cp_comm->rank() == o.cp_rank && o.cp_comm->size() == o.cp_size),
             "engine: the CP communicator's rank/size do not match cp_rank/cp_size");
    RI_CHECK(o.chunk_tokens > 0 && o.logits_chunk > 0, "engine: chunk sizes must be positive");
    r = o.cp_rank;
    N = o.cp_size;
    comm = N > 1 ? o.cp_comm : nullptr;
    tr = o.tp_rank;
    T = o.tp_size;
    tp = T > 1 ? o.tp_comm : nullptr;
    H = sl.q_heads, Hkv = sl.kv_heads, D = c.head_dim, hidden = c.hidden_size;
    inter = sl.inter, vocab = c.vocab_size, vl = sl.vocab_rows, chunk = o.chunk_tokens;
    eps = static_cast<float>(c.rms_norm_eps);
    scale = static_cast<float>(rope_softmax_scale(c.rope, D));
    kv_dtype = o.kv_dtype ? *o.kv_dtype : be.default_kv_dtype();
    RI_CHECK(be.supports_kv_dtype(kv_dtype), std::string("engine: the ") + be.name() + " backend does not store a " +
                                                 kv_dtype_name(kv_dtype) + " KV cache (--kv-dtype)");
    h = be.alloc(std::max(chunk, o.logits_chunk), hidden, DType::f32);
    k_new = be.alloc(chunk, Hkv * D, DType::f32);
    v_new = be.alloc(chunk, Hkv * D, DType::f32);
    q_dtype = be.attention_query_dtype(D);
    if (q_dtype != DType::f32) q_new = be.alloc(chunk, H * D, DType::f32);
    gate = be.alloc(chunk, inter, DType::f32);
    up = be.alloc(chunk, inter, DType::f32);
    if (be.gemm_input_dtype() != DType::f32) act = be.alloc(chunk, inter, be.gemm_input_dtype());
    tok = be.alloc(std::max(chunk, o.logits_chunk), 1, DType::i32);
    hl = be.alloc(o.logits_chunk, hidden, DType::f32);
    logits = be.alloc(o.logits_chunk, vl, DType::f32);
    // The decode batch runs through the chunk-sized scratch (mlp, row_parallel) and the
    // token buffer.
    RI_CHECK(o.max_batch >= 1 && o.max_batch <= chunk,
             "engine: --max-batch must be between 1 and the chunk size (" + std::to_string(chunk) + ")");
    RI_CHECK(o.decode_burst >= 1 && o.decode_burst <= 64, "engine: decode_burst must be between 1 and 64");
    burst_tok = be.alloc((o.decode_burst + 1) * o.max_batch, 1, DType::i32);
    xb = be.alloc(o.max_batch, hidden, DType::f32);
    qb = be.alloc(o.max_batch, H * D, q_dtype);
    heads = AttentionHeads{H, Hkv, D, scale};
    ring = std::make_unique<RingAttention>(be, comm, r, N, heads, chunk);
    decode_attn = std::make_unique<DecodeAttention>(be, comm, r, N, heads, o.max_batch);
    flags = be.alloc(1, 2, DType::i32);
    bad_token = be.alloc(1, 2, DType::f64);
    bad_tokens = be.alloc(std::max(N, T), 2, DType::f64);
    if (tp) {
      xp = be.alloc(chunk, hidden, DType::f32);
      ref = be.alloc(o.logits_chunk, 1, DType::f32);
      a_ref = be.alloc(o.logits_chunk, 1, DType::f32);
      a_tgt = be.alloc(o.logits_chunk, 1, DType::f32);
      red_max = be.alloc(o.logits_chunk, 1, DType::f64);
      red_sum = be.alloc(o.logits_chunk, 2, DType::f64);
      lg_pad = be.alloc(1, sl.vocab_part, DType::f32);
      lg_all = be.alloc(1, T * sl.vocab_part, DType::f32);
      const std::vector<float> zeros(static_cast<size_t>(sl.vocab_part), 0.0f);  // the padding is never read
      be.copy_from_host(lg_pad, zeros.data());
    }
  }

  void report(const EngineProgress& p) {
    if (opt.on_progress) opt.on_progress(p);
  }

  // Between layers and decode steps: stop together when any rank of the group was asked
  // to. Collective: every rank reaches the same checkpoints.
  void stop_point() {
    if (!opt.should_stop) return;
    const int32_t mine = opt.should_stop() ? 1 : 0;
    int32_t flag[2] = {mine, mine};
    if (comm || tp) {
      // Over the CP ring, then over the TP group: the max over the whole CP x TP group.
      be.copy_from_host(flags, flag);
      const Tensor reduced = row_cols(flags, 1, 1);
      if (comm)
        comm->all_reduce(row_cols(flags, 0, 1).data(), reduced.data(), 1, CommDtype::int32, ReduceOp::max,
                         be.stream());
      if (tp) tp->all_reduce(reduced.data(), reduced.data(), 1, CommDtype::int32, ReduceOp::max, be.stream());
      be.copy_to_host(flag, flags);
    }
    if (flag[1]) throw StopRequested{stop_signal()};
  }

  // The stop a decode burst saw (pending_stop), thrown once by the next step() or join():
  // the group stops together and the documents in decode restart on resume.
  void raise_pending_stop() {
    if (!pending_stop) return;
    const StopRequested stop = *pending_stop;
    pending_stop.reset();
    batch.clear();
    throw stop;
  }

  // Checks the stripes' lengths and tokens. With N > 1 the ranks exchange their first bad
  // token, so every rank throws the same Error (none is left waiting in a collective).
  void check_document(const std::vector<int32_t>& stripe, const std::vector<int32_t>* next, int64_t len,
                      int64_t total_positions) {
    RI_CHECK(len >= 0, "document: negative length");
    RI_CHECK(static_cast<int64_t>(stripe.size()) == local_len(len, r, N),
             "document: CP rank " + std::to_string(r) + " got " + std::to_string(stripe.size()) +
                 " tokens of its stripe, expected " + std::to_string(local_len(len, r, N)));
    const int rn = (r + 1) % N;
    RI_CHECK(!next || static_cast<int64_t>(next->size()) == local_len(len, rn, N),
             "document: CP rank " + std::to_string(r) + " got " + std::to_string(next->size()) +
                 " tokens of the next stripe, expected " + std::to_string(local_len(len, rn, N)));
    // (global index, token) as doubles: exact below 2^53, and a type every backend stores.
    double bad[2] = {-1, 0};
    for (size_t i = 0; i < stripe.size() && bad[0] < 0; ++i)
      if (stripe[i] < 0 || stripe[i] >= vocab)
        bad[0] = static_cast<double>(global_pos(static_cast<int64_t>(i), r, N)), bad[1] = stripe[i];
    if (comm) {
      // Through backend buffers: the CP communicator may move device memory only (NCCL).
      std::vector<double> all(2 * static_cast<size_t>(N));
      be.copy_from_host(bad_token, bad);
      comm->all_gather(bad_token.data(), bad_tokens.data(), 2, CommDtype::float64, be.stream());
      be.copy_to_host(all.data(), bad_tokens.rows(0, N));
      stats.bytes_sent += 2 * sizeof(double);
      for (int s = 0; s < N; ++s)
        if (all[2 * s] >= 0 && (bad[0] < 0 || all[2 * s] < bad[0])) bad[0] = all[2 * s], bad[1] = all[2 * s + 1];
    }
    if (tp) {
      // The TP ranks hold the same stripe and should agree already; the exchange makes sure
      // that a rank given other tokens cannot run on while the rest throw.
      std::vector<double> all(2 * static_cast<size_t>(T));
      be.copy_from_host(bad_token, bad);
      tp->all_gather(bad_token.data(), bad_tokens.data(), 2, CommDtype::float64, be.stream());
      be.copy_to_host(all.data(), bad_tokens.rows(0, T));
      stats.tp_bytes_sent += 2 * sizeof(double);
      for (int s = 0; s < T; ++s)
        if (all[2 * s] >= 0 && (bad[0] < 0 || all[2 * s] < bad[0])) bad[0] = all[2 * s], bad[1] = all[2 * s + 1];
    }
    RI_CHECK(bad[0] < 0, "document: token " + std::to_string(static_cast<int64_t>(bad[1])) + " at index " +
                             std::to_string(static_cast<int64_t>(bad[0])) +
                             " is outside the vocabulary (" + std::to_string(vocab) + ")");
    RI_CHECK(cfg.sliding_window <= 0 || total_positions <= cfg.sliding_window,
             "model: sliding-window attention (window " + std::to_string(cfg.sliding_window) +
                 ") is not implemented; this document needs " + std::to_string(total_positions) + " positions");
  }

  // ---------------------------------------------------------------- building blocks
  // x_rows += MLP(rmsnorm(x_rows)), rows <= chunk. Prefill (narrow) hands silu(gate) * up to
  // the down projection in the backend's gemm_input_dtype() (act), which rounds it the same
  // way, so only the conversion pass goes; decode keeps it in gate (the few-row products
  // read f32).
  void mlp(const engine::BackendLayer& L, const Tensor& x_rows, bool narrow = false) {
    const int64_t n = x_rows.rows();
    const Tensor hn = h.rows(0, n), g = gate.rows(0, n), u = up.rows(0, n);
    const Tensor a = narrow && !act.empty() ? act.rows(0, n) : Tensor();
    be.rmsnorm_matmuls(x_rows, L.ffn_norm, eps, hn, {{L.w_gate, Tensor(), g}, {L.w_up, Tensor(), u}}, /*gated=*/true,
                       a);
    row_parallel(a.empty() ? g : a, L.w_down, Tensor(), x_rows);
  }

  // x_rows += in W^T (+ bias): W holds this rank's input columns (o_proj, down_proj), so
  // with T > 1 the ranks' partial products are summed by one all-reduce over the TP group.
  // TP rank 0 folds the residual and the bias into its partial, so both count once.
  void row_parallel(const Tensor& in, const Tensor& weight, const Tensor& bias, const Tensor& x_rows) {
    if (!tp) {
      be.matmul(in, weight, bias, x_rows, true);
      return;
    }
    const Tensor p = xp.rows(0, x_rows.rows());
    if (tr == 0) {
      be.copy(x_rows, p);
      be.matmul(in, weight, bias, p, true);
    } else {
      be.matmul(in, weight, Tensor(), p, false);
    }
    tp->all_reduce(p.data(), x_rows.data(), static_cast<size_t>(p.numel()), CommDtype::float32, ReduceOp::sum,
                   be.stream());
    stats.tp_bytes_sent += static_cast<int64_t>(p.bytes());
  }

  // QK-norm (Qwen3): RMSNorm of each head of x (n, heads * D) over its D values, in place;
  // nothing when the model has none. A (n * heads, D) view makes each head a row.
  void head_norm(const Tensor& x, const Tensor& weight, int64_t heads) {
    if (weight.empty() || x.empty()) return;
    const Tensor per_head = x.reshaped(x.rows() * heads, D);
    be.rmsnorm(per_head, weight, eps, per_head);
  }

  // Projects rows of x at global positions `pos`: Q into q_rows (q_dtype) and, with_kv, K
  // and V into k_new, v_new (rows 0..n), each after QK-norm and RoPE in fp32; Q is then
  // rounded once into q_rows when q_dtype is narrower. Decode rows (pos.each) also store
  // their K, V into `store` (rope_store_rows: one destination per row, an empty block for a
  // row another rank owns); prefill rows into `block` (rope_store: its rows, in order).
  void project_qkv(int l, const Tensor& x_rows, const Tensor& q_rows, const RowPositions& pos, bool with_kv,
                   const std::vector<KvBlock>& store = {}, const KvBlock& block = KvBlock()) {
    const engine::BackendLayer& L = w.layers[l];
    const int64_t n = x_rows.rows();
    const Tensor hn = h.rows(0, n);
    const Tensor qf = q_new.empty() ? q_rows : q_new.rows(0, n);
    const Tensor kn = k_new.rows(0, n), vn = v_new.rows(0, n);
    if (with_kv)
      be.rmsnorm_matmuls(x_rows, L.attn_norm, eps, hn, {{L.wq, L.bq, qf}, {L.wk, L.bk, kn}, {L.wv, L.bv, vn}});
    else
      be.rmsnorm_matmuls(x_rows, L.attn_norm, eps, hn, {{L.wq, L.bq, qf}});
    head_norm(qf, L.q_norm, H);
    if (with_kv) head_norm(kn, L.k_norm, Hkv);
    if (pos.each) {
      be.rope_store_rows(qf, q_rows, with_kv ? kn : Tensor(), with_kv ? vn : Tensor(), H, Hkv, w.inv_freq, *pos.each,
                         store);
      return;
    }
    // RoPE of Q and K, Q rounded into q_rows (f32 -> q_dtype; nothing when they are one tensor),
    // K and V stored into the block.
    be.rope_store(qf, q_rows, with_kv ? kn : Tensor(), with_kv ? vn : Tensor(), H, Hkv, w.inv_freq, pos.start, N,
                  block);
  }

  // ---------------------------------------------------------------- prefill
  // Runs this rank's stripe of an S-token document through every layer (layer-major),
  // alone on the whole ring, leaving the final residual stream in x and K,V in kv (whose
  // capacity the caller chose).
  void prefill(const std::vector<int32_t>& stripe, KvCache& kv) {
    const int64_t n = static_cast<int64_t>(stripe.size());
    kv.length = n;
    stats.kv_bytes = kv.bytes();
    stats.tokens_held = n;
    stats.kv_tokens = n;
    x.allocate(n, hidden, std::max(chunk, opt.logits_chunk), opt.offload_residual);
    q = be.alloc(n, H * D, q_dtype);
    o = be.alloc(n, H * D, DType::f32);
    lse = be.alloc(n, H, DType::f32);
    ring->begin(kv);
    using Access = engine::ResidualStream::Access;
    x.pass(0, n, chunk, Access::write, [&](int64_t c, const Tensor& xr) {
      be.copy_from_host(tok.rows(0, xr.rows()), stripe.data() + c);
      be.embed(w.embed, tok.rows(0, xr.rows()), xr);
    });
    for (int l = 0; l < cfg.n_layers; ++l) {
      x.pass(0, n, chunk, Access::read, [&](int64_t c, const Tensor& xr) {
        const int64_t cn = xr.rows();
        project_qkv(l, xr, q.rows(c, cn), RowPositions{global_pos(c, r, N)}, true, {}, kv.layers[l].rows(c, cn));
      });
      ring->layer(kv, l, q, o, lse, stats.bytes_sent);
      x.pass(0, n, chunk, Access::update, [&](int64_t c, const Tensor& xr) {
        row_parallel(o.rows(c, xr.rows()), w.layers[l].wo, w.layers[l].bo, xr);
        mlp(w.layers[l], xr, /*narrow=*/true);
      });
      EngineProgress p;
      p.kind = EngineProgress::Kind::prefill_layer;
      p.layer = l + 1;
      p.layers = cfg.n_layers;
      report(p);
      stop_point();
    }
    q = o = lse = Tensor();  // not needed by decode
    ring->end();
  }

  // Final norm + LM head of up to logits.rows() residual rows: their whole (n, vocab) logits
  // rows, from one GEMM (a decode batch reads the LM head once, not once per document).
  // With T > 1 (collective over the TP group) one row: every rank computes its vocabulary
  // part and one all-gather assembles the row: the parts are in rank order and only the
  // last is short, so the gathered buffer's first vocab values are the row, exactly as
  // with T = 1.
  Tensor head_logits(const Tensor& x_rows) {
    const int64_t n = x_rows.rows();
    const Tensor hn = h.rows(0, n);
    if (!tp) {
      const Tensor lg = logits.rows(0, n);
      be.rmsnorm_matmuls(x_rows, w.final_norm, eps, hn, {{w.lm_head, Tensor(), lg}});
      return lg;
    }
    RI_CHECK(n == 1, "engine: the tensor-parallel LM head takes one row at a time");
    be.rmsnorm_matmuls(x_rows, w.final_norm, eps, hn, {{w.lm_head, Tensor(), row_cols(lg_pad, 0, vl)}});
    tp->all_gather(lg_pad.data(), lg_all.data(), static_cast<size_t>(sl.vocab_part), CommDtype::float32,
                   be.stream());
    stats.tp_bytes_sent += static_cast<int64_t>(lg_pad.bytes());
    return row_cols(lg_all, 0, vocab);
  }

  // The tokens sampled on CP rank `root` from the hidden rows x_rows (row b: document
  // seqs[b], at its step = tokens generated so far; x_rows is ignored elsewhere), on every
  // rank: root samples, then broadcasts the ids. With T > 1 the TP ranks of root sample
  // from the same gathered rows, and TP rank 0's tokens are broadcast over the TP group so
  // that rounding differences can never make them disagree.
  std::vector<int32_t> sample_on(int root, const Tensor& x_rows, const std::vector<Sequence*>& seqs) {
    const Tensor t = tok.rows(0, static_cast<int64_t>(seqs.size()));
    sample_into(root, x_rows, seqs, 0, t);
    std::vector<int32_t> ids(seqs.size());
    be.copy_to_host(ids.data(), t);
    return ids;
  }

  // sample_on without the host read: the ids land in t (B rows) on every rank. `ahead`:
  // steps the documents have run since their last token the host knows (a burst's step).
  void sample_into(int root, const Tensor& x_rows, const std::vector<Sequence*>& seqs, int64_t ahead,
                   const Tensor& t) {
    const int64_t B = static_cast<int64_t>(seqs.size());
    if (r == root) {
      const int64_t rows_per_head = tp ? 1 : logits.rows();
      for (int64_t b0 = 0; b0 < B; b0 += rows_per_head) {
        const int64_t nb = std::min(rows_per_head, B - b0);
        const Tensor lg = head_logits(x_rows.rows(b0, nb));
        for (int64_t i = 0; i < nb; ++i) {
          const Sequence& sq = *seqs[b0 + i];
          const GenerateOptions& g = sq.options;
          const uint64_t step = sq.result.tokens.size() + static_cast<uint64_t>(ahead);
          be.sample(lg.rows(i, 1), g.sampling, sampling_uniform(g.seed, g.doc_key, step), sq.counts,
                    t.rows(b0 + i, 1));
        }
      }
      if (tp) {
        tp->broadcast(t.data(), static_cast<size_t>(B), CommDtype::int32, 0, be.stream());
        if (tr == 0) stats.tp_bytes_sent += B * static_cast<int64_t>(sizeof(int32_t));
      }
    }
    if (comm) {
      comm->broadcast(t.data(), static_cast<size_t>(B), CommDtype::int32, root, be.stream());
      if (r == root) stats.bytes_sent += B * static_cast<int64_t>(sizeof(int32_t));
    }
  }

  // Penalties: a document starts with no token generated, and counts each one as it comes.
  void reset_counts(Sequence& sq) {
    if (!sq.options.sampling.penalized()) return;
    sq.host_counts.assign(static_cast<size_t>(vocab), 0);
    sq.counts = be.alloc(1, vocab, DType::i32);
    be.copy_from_host(sq.counts, sq.host_counts.data());
  }
  void count_token(Sequence& sq, int32_t id) {
    if (sq.counts.empty()) return;
    ++sq.host_counts[static_cast<size_t>(id)];
    be.copy_from_host(row_cols(sq.counts, id, 1), &sq.host_counts[static_cast<size_t>(id)]);
  }

  // ---------------------------------------------------------------- vocabulary-parallel LM head
  // out (n, 1) = log p(targets[i]) from the logits rows (n, vl) of this rank's vocabulary
  // part, collective over the TP group. logprob = l_t - LSE, LSE = log sum_ranks exp(lse_r)
  // = M + log(sum_ranks exp(lse_r - M)) with M the max of the ranks' local lse_r.
  // The backend gives lse_r through target_logprobs: at local column 0, whose logit `ref`
  // is computed apart, lse_r = ref - logprob_r(0). The rank owning the target contributes
  // l_t = logprob_r(t) + lse_r, the others 0, to a sum all-reduce.
  void vocab_parallel_logprobs(int64_t n, const int32_t* targets, const Tensor& out) {
    const Tensor lg = logits.rows(0, n);
    be.matmul(hl.rows(0, n), w.lm_head.rows(0, 1), Tensor(), ref.rows(0, n), false);
    std::vector<int32_t> local(static_cast<size_t>(n), 0);
    be.copy_from_host(tok.rows(0, n), local.data());
    be.target_logprobs(lg, tok.rows(0, n), a_ref.rows(0, n));
    std::vector<char> owned(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = targets[i] - sl.vocab_begin;
      owned[i] = t >= 0 && t < vl;
      local[i] = owned[i] ? static_cast<int32_t>(t) : 0;
    }
    be.copy_from_host(tok.rows(0, n), local.data());
    be.target_logprobs(lg, tok.rows(0, n), a_tgt.rows(0, n));
    std::vector<float> hr(static_cast<size_t>(n)), har(hr.size()), hat(hr.size());
    be.copy_to_host(hr.data(), ref.rows(0, n));
    be.copy_to_host(har.data(), a_ref.rows(0, n));
    be.copy_to_host(hat.data(), a_tgt.rows(0, n));
    std::vector<double> lse(hr.size()), mx(hr.size()), sums(2 * hr.size());
    for (int64_t i = 0; i < n; ++i) lse[i] = static_cast<double>(hr[i]) - static_cast<double>(har[i]);
    be.copy_from_host(red_max.rows(0, n), lse.data());
    tp->all_reduce(red_max.data(), red_max.data(), static_cast<size_t>(n), CommDtype::float64, ReduceOp::max,
                   be.stream());
    be.copy_to_host(mx.data(), red_max.rows(0, n));
    for (int64_t i = 0; i < n; ++i) {
      sums[2 * i] = std::exp(lse[i] - mx[i]);
      sums[2 * i + 1] = owned[i] ? static_cast<double>(hat[i]) + lse[i] : 0.0;
    }
    const Tensor rs = red_sum.rows(0, n);
    be.copy_from_host(rs, sums.data());
    tp->all_reduce(rs.data(), rs.data(), static_cast<size_t>(2 * n), CommDtype::float64, ReduceOp::sum,
                   be.stream());
    be.copy_to_host(sums.data(), rs);
    stats.tp_bytes_sent += static_cast<int64_t>(n * sizeof(double) + rs.bytes());
    std::vector<float> lp(hr.size());
    for (int64_t i = 0; i < n; ++i) lp[i] = static_cast<float>(sums[2 * i + 1] - mx[i] - std::log(sums[2 * i]));
    be.copy_from_host(out, lp.data());
  }

  // ---------------------------------------------------------------- decode
  // Runs each document's last token at its own global position through every layer on
  // every rank (DESIGN §4, §5): one GEMM per projection for the B rows, the owner rank of
  // each row appends its K,V before attending, each row attends over its own document's
  // stripe, one merge collective carries all B rows. Leaves the hidden states in xb.
  // ids: the B tokens to run (on the backend), `ahead` steps past each document's last
  // known token.
  void decode_step(const std::vector<Sequence*>& seqs, int64_t ahead, const Tensor& ids) {
    const int64_t B = static_cast<int64_t>(seqs.size());
    const Tensor x1 = xb.rows(0, B), q1 = qb.rows(0, B);
    std::vector<int64_t> pos;
    std::vector<const KvCache*> caches;
    bool owns_any = false;
    for (Sequence* sq : seqs) {
      pos.push_back(sq->position() + ahead);
      sq->kv.length = local_len(pos.back() + 1, r, N);  // the owner stores row local_index(pos) below
      caches.push_back(&sq->kv);
      owns_any = owns_any || sq->kv.holds(pos.back());
    }
    be.embed(w.embed, ids, x1);
    std::vector<KvBlock> dst(static_cast<size_t>(B));  // each row's slot in its document's cache
    for (int l = 0; l < cfg.n_layers; ++l) {
      if (owns_any)
        for (int64_t b = 0; b < B; ++b)  // an empty block: another rank owns the row
          dst[b] = seqs[b]->kv.holds(pos[b]) ? seqs[b]->kv.layers[l].rows(local_index(pos[b], N), 1) : KvBlock();
      project_qkv(l, x1, q1, RowPositions{0, &pos}, owns_any, dst);
      const Tensor o1 = decode_attn->layer(caches, l, pos, q1, stats.bytes_sent);
      row_parallel(o1, w.layers[l].wo, w.layers[l].bo, x1);
      mlp(w.layers[l], x1);
    }
  }

  // Step `ahead` of a burst: runs the ids in block `ahead` of burst_tok and samples into
  // block ahead + 1 (CP rank 0 samples), recorded and run as one launch when `record` and
  // the backend records (EngineOptions::decode_graph); else, or when the backend could not
  // run the recording, op by op.
  void run_step(const std::vector<Sequence*>& seqs, int64_t ahead, bool record) {
    const int64_t B = static_cast<int64_t>(seqs.size());
    const auto enqueue = [&] {
      decode_step(seqs, ahead, burst_tok.rows(ahead * B, B));
      sample_into(0, xb.rows(0, B), seqs, ahead, burst_tok.rows((ahead + 1) * B, B));
    };
    if (record && be.begin_recording()) {
      try {
        enqueue();
      } catch (...) {
        be.end_recording(false);
        throw;
      }
      if (be.end_recording(true)) return;
    }
    enqueue();
  }

  // Takes the document's new token: counts it, reports it, and moves the document to
  // `finished` when the token ends it (EOS, a stop string, its length). True when it did.
  bool accept(Sequence& sq, int32_t id) {
    sq.result.tokens.push_back(id);
    count_token(sq, id);
    EngineProgress p;
    p.kind = EngineProgress::Kind::decode_token;
    p.generated = static_cast<int64_t>(sq.result.tokens.size());
    p.tag = sq.tag;
    report(p);
    const GenerateOptions& g = sq.options;
    bool done = true;
    if (std::find(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end(), static_cast<int64_t>(id)) !=
        cfg.eos_token_ids.end())
      sq.result.finish = FinishReason::eos;
    else if (g.stop_here && g.stop_here(sq.result.tokens))
      sq.result.finish = FinishReason::stop;
    else if (static_cast<int64_t>(sq.result.tokens.size()) == g.max_new_tokens)
      sq.result.finish = FinishReason::length;
    else
      done = false;
    if (done) finish(sq);
    return done;
  }

  void finish(Sequence& sq) {
    sq.result.decode_seconds = seconds_since(sq.decode_start);
    finished.push_back(FinishedDocument{sq.tag, std::move(sq.result), sq.stats});
  }
};

Engine::Engine(Backend& backend, const ModelConfig& config, const ModelWeights& weights, const EngineOptions& options)
    : s_(std::make_unique<State>(backend, config, options, [&](const TensorParallelSlice& sl) {
        return engine::upload_weights(backend, config, weights, sl);
      })) {}

Engine::Engine(Backend& backend, const ModelSource& model, const EngineOptions& options)
    : s_(std::make_unique<State>(backend, model.config, options, [&](const TensorParallelSlice& sl) {
        return engine::load_weights(backend, model, sl);
      })) {}

Engine::~Engine() = default;

const ModelConfig& Engine::config() const { return s_->cfg; }
KvDtype Engine::kv_dtype() const { return s_->kv_dtype; }
int64_t Engine::kv_cache_tokens() const { return s_->stats.kv_tokens; }
const EngineStats& Engine::last_stats() const { return s_->stats; }

DocumentScore Engine::score(const std::vector<int32_t>& tokens) {
  const int r = s_->r, N = s_->N;
  return score_stripes(cut_stripe(tokens, r, N), cut_stripe(tokens, (r + 1) % N, N),
                       static_cast<int64_t>(tokens.size()));
}

GenerateResult Engine::generate(const std::vector<int32_t>& prompt, const GenerateOptions& options) {
  return generate_stripe(cut_stripe(prompt, s_->r, s_->N), static_cast<int64_t>(prompt.size()), options);
}

DocumentScore Engine::score_stripes(const std::vector<int32_t>& stripe, const std::vector<int32_t>& next,
                                    int64_t S) {
  State& s = *s_;
  const auto t0 = std::chrono::steady_clock::now();
  s.stats = EngineStats();
  s.check_document(stripe, &next, S, S);
  DocumentScore res;
  if (S < 2) {  // nothing to predict; every rank knows S, so all return here together
    s.stats.tokens_held = s.stats.kv_tokens = static_cast<int64_t>(stripe.size());
    res.perplexity = std::numeric_limits<double>::quiet_NaN();
    res.seconds = seconds_since(t0);
    return res;
  }
  KvCache kv = KvCache::allocate(s.be, s.cfg.n_layers, s.Hkv, s.D, s.kv_dtype, S, 0, s.r, s.N);
  s.prefill(stripe, kv);
  // Local row i (global iN + r) predicts global iN + r + 1: local index i of rank r+1, or
  // i+1 of rank 0 when r = N-1 (with N = 1, next is this stripe). Rows up to global S-2.
  const int64_t m = local_len(S - 1, s.r, s.N), mmax = local_len(S - 1, 0, s.N), lc = s.opt.logits_chunk;
  const int64_t shift = s.r == s.N - 1 ? 1 : 0;
  Tensor lp = s.be.alloc(mmax, 1, DType::f32);
  s.x.pass(0, m, lc, engine::ResidualStream::Access::read, [&](int64_t c, const Tensor& xr) {
    const int64_t cn = xr.rows();
    s.be.rmsnorm(xr, s.w.final_norm, s.eps, s.hl.rows(0, cn));
    s.be.matmul(s.hl.rows(0, cn), s.w.lm_head, Tensor(), s.logits.rows(0, cn), false);
    if (s.tp) {
      s.vocab_parallel_logprobs(cn, next.data() + c + shift, lp.rows(c, cn));
      return;
    }
    s.be.copy_from_host(s.tok.rows(0, cn), next.data() + c + shift);
    s.be.target_logprobs(s.logits.rows(0, cn), s.tok.rows(0, cn), lp.rows(c, cn));
  });
  s.x.release();
  std::vector<float> all(static_cast<size_t>(mmax * s.N));
  if (s.comm) {
    // Every rank's logprobs, padded to rank 0's count (the largest), in rank order.
    Tensor gathered = s.be.alloc(mmax * s.N, 1, DType::f32);
    s.comm->all_gather(lp.data(), gathered.data(), static_cast<size_t>(mmax), CommDtype::float32, s.be.stream());
    s.stats.bytes_sent += static_cast<int64_t>(lp.bytes());
    s.be.copy_to_host(all.data(), gathered);
  } else {
    s.be.copy_to_host(all.data(), lp);
  }
  res.logprobs.resize(static_cast<size_t>(S - 1));
  for (int64_t p = 0; p < S - 1; ++p)
    res.logprobs[p] = all[static_cast<size_t>(stripe_owner(p, s.N) * mmax + local_index(p, s.N))];
  for (int64_t p = 0; p < S - 1; ++p)
    RI_CHECK(std::isfinite(res.logprobs[p]), "score: the log-probability of token " + std::to_string(p + 1) +
                                                 " is NaN or inf: the model's weights hold NaN/inf values, or its "
                                                 "activations overflowed");
  for (float v : res.logprobs) res.sum_logprob += v;  // in position order: the same on every N
  res.perplexity = std::exp(-res.sum_logprob / static_cast<double>(S - 1));
  res.seconds = seconds_since(t0);
  return res;
}

GenerateResult Engine::generate_stripe(const std::vector<int32_t>& stripe, int64_t S, const GenerateOptions& g) {
  RI_CHECK(s_->batch.empty() && s_->finished.empty(), "generate: documents of the decode batch are unfinished");
  join(stripe, S, g, 0);
  while (batch_size() > 0) step();
  FinishedDocument done = std::move(take_finished().front());
  s_->stats = done.stats;
  return std::move(done.result);
}

void Engine::join(const std::vector<int32_t>& stripe, int64_t S, const GenerateOptions& g, uint64_t tag) {
  State& s = *s_;
  RI_CHECK(g.max_new_tokens >= 0, "generate: --max-new-tokens must not be negative");
  RI_CHECK(batch_size() < s.opt.max_batch, "generate: the decode batch is full (" +
                                               std::to_string(s.opt.max_batch) + " documents)");
  check_sampling_params(g.sampling, "generate");
  s.raise_pending_stop();  // seen inside the last burst: the group stops before new work
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t G = g.max_new_tokens;
  s.stats = EngineStats();
  s.check_document(stripe, nullptr, S, S + G);
  auto sq = std::make_unique<Sequence>();
  sq->tag = tag;
  sq->options = g;
  sq->S = S;
  s.stats.tokens_held = s.stats.kv_tokens = static_cast<int64_t>(stripe.size());
  sq->decode_start = t0;
  if (S == 0 || G == 0) {  // nothing to run: finish empty_prompt, or length
    if (S == 0) sq->result.finish = FinishReason::empty_prompt;
    sq->stats = s.stats;
    s.finish(*sq);
    return;
  }
  sq->kv = KvCache::allocate(s.be, s.cfg.n_layers, s.Hkv, s.D, s.kv_dtype, S, G, s.r, s.N);
  try {
    s.prefill(stripe, sq->kv);
  } catch (const StopRequested&) {
    s.batch.clear();  // as step() does: the group stops together and every document restarts
    throw;
  }
  s.reset_counts(*sq);
  // The last prompt position's owner samples the first token and broadcasts it.
  const int64_t last = S - 1;
  const int first_root = stripe_owner(last, s.N);
  const Tensor last_row = s.r == first_root ? s.x.row(local_index(last, s.N)) : Tensor();
  const int32_t first = s.sample_on(first_root, last_row, {sq.get()}).front();
  s.x.release();
  sq->result.prefill_seconds = seconds_since(t0);
  sq->stats = s.stats;
  sq->decode_start = std::chrono::steady_clock::now();
  if (!s.accept(*sq, first)) s.batch.push_back(std::move(sq));
}

void Engine::step() {
  State& s = *s_;
  if (s.batch.empty()) {
    s.pending_stop.reset();  // nothing left to stop
    return;
  }
  std::vector<Sequence*> seqs;
  for (auto& sq : s.batch) seqs.push_back(sq.get());
  const int64_t B = static_cast<int64_t>(seqs.size());
  s.stats = EngineStats();
  s.raise_pending_stop();
  try {
    s.stop_point();  // only while work remains: a finished document is never thrown away
  } catch (const StopRequested&) {
    s.batch.clear();  // the group stops together; documents in decode restart on resume
    throw;
  }
  // A burst of k steps, no longer than any document has tokens left (so none runs past its
  // cache) and 1 where a document counts penalties on the host. Step i runs the ids in
  // block i of burst_tok and samples into block i + 1 (run_step); the host reads the blocks
  // once.
  int64_t k = s.opt.decode_burst;
  for (const Sequence* sq : seqs) {
    if (sq->options.sampling.penalized()) k = 1;
    k = std::min(k, sq->options.max_new_tokens - static_cast<int64_t>(sq->result.tokens.size()));
  }
  k = std::max<int64_t>(k, 1);
  bool record = s.opt.decode_graph && !s.comm && !s.tp;
  for (const Sequence* sq : seqs) record = record && s.be.samples_on_device(sq->options.sampling);
  std::vector<int32_t> ids(static_cast<size_t>((k + 1) * B));
  for (int64_t b = 0; b < B; ++b) ids[b] = seqs[b]->result.tokens.back();
  s.be.copy_from_host(s.burst_tok.rows(0, B), ids.data());
  // The stop check before each step, as one step per call would make it (on one rank a
  // host flag: no wait on the backend); a stop ends the burst after the steps already run.
  int64_t ran = 0;
  for (; ran < k; ++ran) {
    if (ran > 0) {
      try {
        s.stop_point();
      } catch (const StopRequested& stop) {
        s.pending_stop = stop;
        break;
      }
    }
    // The burst's first step launches op by op: the GPU starts on it at once (the host has
    // just read the last burst's tokens), while the host records the next.
    s.run_step(seqs, ran, record && ran > 0);
  }
  s.be.copy_to_host(ids.data() + B, s.burst_tok.rows(B, ran * B));
  // Every row moved the same bytes: each document gets its share.
  for (Sequence* sq : seqs) {
    sq->stats.bytes_sent += s.stats.bytes_sent / B;
    sq->stats.tp_bytes_sent += s.stats.tp_bytes_sent / B;
  }
  // The tokens in step order; a document that ends drops the rest of its burst.
  std::vector<bool> done(static_cast<size_t>(B), false);
  for (int64_t i = 0; i < ran; ++i)
    for (int64_t b = 0; b < B; ++b)
      if (!done[b]) {
        seqs[b]->stats.kv_tokens = local_len(seqs[b]->position() + 1, s.r, s.N);
        done[b] = s.accept(*seqs[b], ids[(i + 1) * B + b]);
      }
  std::vector<std::unique_ptr<Sequence>> still;
  for (int64_t b = 0; b < B; ++b)
    if (!done[b]) still.push_back(std::move(s.batch[b]));
  s.batch = std::move(still);
}

int64_t Engine::batch_size() const { return static_cast<int64_t>(s_->batch.size()); }
int64_t Engine::max_batch() const { return s_->opt.max_batch; }

std::vector<FinishedDocument> Engine::take_finished() {
  std::vector<FinishedDocument> out = std::move(s_->finished);
  s_->finished.clear();
  if (!out.empty()) s_->stats = out.back().stats;
  return out;
}

}  // namespace ringinfer
