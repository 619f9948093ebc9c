// The forward pass over Backend: layer-major prefill of a stripe, score, decode.
#include "ringinfer/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <utility>

#include "engine/engine_weights.h"
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
  }
  return "?";
}

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

CommDtype comm_dtype(DType t) {
  switch (t) {
    case DType::f32: return CommDtype::float32;
    case DType::bf16: return CommDtype::bfloat16;
    case DType::i32: return CommDtype::int32;
    case DType::f64: return CommDtype::float64;
    default: return CommDtype::uint8;  // weight storage types: never communicated
  }
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
  int64_t S = 0;  // length of the current document

  // Per document. Shapes: n = local tokens of the prompt on this rank, cap = KV capacity.
  std::vector<Tensor> k_cache, v_cache;  // n_layers x (cap, Hkv*D), backend KV storage (local heads)
  Tensor x;                              // (n, hidden) residual stream
  Tensor q, o, lse;                      // (n, H*D), (n, H*D), (n, H): one layer's Q and (O, LSE)
  Tensor ring[2];                        // 2 x (2 nmax, Hkv*D) KV storage, nmax = ceil(S/N): a
                                         // block in flight, K in rows [0, nmax), V in [nmax, 2 nmax)
  // Scratch, bounded by chunk_tokens / logits_chunk rows, allocated once.
  Tensor h;           // (chunk, hidden) normed input
  Tensor k_new, v_new;  // (chunk, Hkv*D) fp32 K,V before the cache store
  Tensor gate, up;    // (chunk, intermediate)
  Tensor tok;         // (chunk, 1) i32 token ids / targets
  Tensor hl;          // (logits_chunk, hidden) final-normed rows for the LM head
  Tensor logits;      // (logits_chunk, vl)
  Tensor x1, q1;      // decode: (1, hidden), (1, H*D)
  Tensor part;        // decode: (1, H*D + H) this rank's partial (O, LSE), o1 and lse1 are views
  Tensor o1, lse1;    // (1, H*D), (1, H): views of part
  Tensor parts;       // decode: (N, H*D + H) every rank's part, gathered
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
    scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
    h = be.alloc(std::max(chunk, o.logits_chunk), hidden, DType::f32);
    k_new = be.alloc(chunk, Hkv * D, DType::f32);
    v_new = be.alloc(chunk, Hkv * D, DType::f32);
    gate = be.alloc(chunk, inter, DType::f32);
    up = be.alloc(chunk, inter, DType::f32);
    tok = be.alloc(std::max(chunk, o.logits_chunk), 1, DType::i32);
    hl = be.alloc(o.logits_chunk, hidden, DType::f32);
    logits = be.alloc(o.logits_chunk, vl, DType::f32);
    x1 = be.alloc(1, hidden, DType::f32);
    q1 = be.alloc(1, H * D, DType::f32);
    part = be.alloc(1, H * D + H, DType::f32);
    o1 = row_cols(part, 0, H * D);
    lse1 = row_cols(part, H * D, H);
    parts = be.alloc(N, H * D + H, DType::f32);
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
  // x_rows += MLP(rmsnorm(x_rows)), rows <= chunk.
  void mlp(const engine::BackendLayer& L, const Tensor& x_rows) {
    const int64_t n = x_rows.rows();
    const Tensor hn = h.rows(0, n), g = gate.rows(0, n), u = up.rows(0, n);
    be.rmsnorm(x_rows, L.ffn_norm, eps, hn);
    be.matmul(hn, L.w_gate, Tensor(), g, false);
    be.matmul(hn, L.w_up, Tensor(), u, false);
    be.swiglu(g, u);
    row_parallel(g, L.w_down, Tensor(), x_rows);
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

  // Projects rows of x at global positions pos_start + i * N: Q into q_rows, K and V
  // (after RoPE in fp32) stored into the layer's cache at local rows cache_row...
  void project_qkv(int l, const Tensor& x_rows, const Tensor& q_rows, int64_t pos_start, bool store_kv,
                   int64_t cache_row) {
    const engine::BackendLayer& L = w.layers[l];
    const int64_t n = x_rows.rows();
    const Tensor hn = h.rows(0, n);
    be.rmsnorm(x_rows, L.attn_norm, eps, hn);
    be.matmul(hn, L.wq, L.bq, q_rows, false);
    be.rope(q_rows, H, w.inv_freq, pos_start, N);
    if (!store_kv) return;
    const Tensor kn = k_new.rows(0, n), vn = v_new.rows(0, n);
    be.matmul(hn, L.wk, L.bk, kn, false);
    be.matmul(hn, L.wv, L.bv, vn, false);
    be.rope(kn, Hkv, w.inv_freq, pos_start, N);
    be.copy(kn, k_cache[l].rows(cache_row, n));
    be.copy(vn, v_cache[l].rows(cache_row, n));
  }

  AttentionShape attention_shape(int64_t q_start, int q_rank, int k_rank) const {
    AttentionShape sh;
    sh.n_heads = H;
    sh.n_kv_heads = Hkv;
    sh.head_dim = D;
    sh.q_start = q_start;
    sh.q_rank = q_rank;
    sh.k_rank = k_rank;
    sh.n_ranks = N;
    sh.scale = scale;
    return sh;
  }

  // ---------------------------------------------------------------- ring attention
  // Attention of this rank's n local queries (q) against the whole document's keys of
  // layer l, into (o, lse). Step t holds the KV block of rank s = (r - t) mod N: while
  // local queries attend to it (in chunks, testing the transfer between chunks so MPI
  // progresses), the block goes to rank r+1 and the next arrives from rank r-1.
  void ring_attention(int l, int64_t n) {
    be.attention_reset(o, lse);
    const int64_t nmax = local_len(S, 0, N);
    const size_t count = static_cast<size_t>(ring[0].numel());
    Tensor cur = ring[0], nxt = ring[1];
    if (N > 1) {  // the local block, packed for sending
      be.copy(k_cache[l].rows(0, n), cur.rows(0, n));
      be.copy(v_cache[l].rows(0, n), cur.rows(nmax, n));
    }
    for (int step = 0; step < N; ++step) {
      const int s = (r - step + N) % N;
      const int64_t ns = local_len(S, s, N);
      std::unique_ptr<PendingComm> pending;
      if (step + 1 < N) {
        // The transfer may overwrite nxt only after earlier work read it (CUDA streams).
        const auto ready = be.record(be.stream());
        be.wait(be.comm_stream(), *ready);
        pending = comm->ring_exchange(cur.data(), nxt.data(), count, comm_dtype(cur.dtype()), be.comm_stream());
        stats.bytes_sent += static_cast<int64_t>(cur.bytes());
      }
      const Tensor kb = step == 0 ? k_cache[l].rows(0, n) : cur.rows(0, ns);
      const Tensor vb = step == 0 ? v_cache[l].rows(0, n) : cur.rows(nmax, ns);
      for (int64_t c = 0; c < n; c += chunk) {
        const int64_t cn = std::min(chunk, n - c);
        be.attention(q.rows(c, cn), kb, vb, attention_shape(c, r, s), o.rows(c, cn), lse.rows(c, cn));
        if (pending) pending->test();
      }
      if (pending) {
        pending->wait(be.stream());
        std::swap(cur, nxt);
      }
    }
  }

  // ---------------------------------------------------------------- prefill
  // Runs this rank's stripe of an S-token document through every layer (layer-major),
  // leaving the final residual stream in x and K,V in a cache of `capacity` rows.
  void prefill(const std::vector<int32_t>& stripe, int64_t capacity) {
    const int64_t n = static_cast<int64_t>(stripe.size());
    k_cache.assign(cfg.n_layers, Tensor());
    v_cache.assign(cfg.n_layers, Tensor());
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
      k_cache[l] = be.alloc_kv(capacity, Hkv * D);
      v_cache[l] = be.alloc_kv(capacity, Hkv * D);
      stats.kv_bytes += static_cast<int64_t>(k_cache[l].bytes() + v_cache[l].bytes());
    }
    stats.tokens_held = n;
    stats.kv_tokens = n;
    x = be.alloc(n, hidden, DType::f32);
    q = be.alloc(n, H * D, DType::f32);
    o = be.alloc(n, H * D, DType::f32);
    lse = be.alloc(n, H, DType::f32);
    if (N > 1) {
      for (Tensor& b : ring) b = be.alloc_kv(2 * local_len(S, 0, N), Hkv * D);
    }
    for (int64_t c = 0; c < n; c += chunk) {
      const int64_t cn = std::min(chunk, n - c);
      be.copy_from_host(tok.rows(0, cn), stripe.data() + c);
      be.embed(w.embed, tok.rows(0, cn), x.rows(c, cn));
    }
    for (int l = 0; l < cfg.n_layers; ++l) {
      for (int64_t c = 0; c < n; c += chunk) {
        const int64_t cn = std::min(chunk, n - c);
        project_qkv(l, x.rows(c, cn), q.rows(c, cn), global_pos(c, r, N), true, c);
      }
      ring_attention(l, n);
      for (int64_t c = 0; c < n; c += chunk) {
        const int64_t cn = std::min(chunk, n - c);
        row_parallel(o.rows(c, cn), w.layers[l].wo, w.layers[l].bo, x.rows(c, cn));
        mlp(w.layers[l], x.rows(c, cn));
      }
      EngineProgress p;
      p.kind = EngineProgress::Kind::prefill_layer;
      p.layer = l + 1;
      p.layers = cfg.n_layers;
      report(p);
      stop_point();
    }
    q = o = lse = Tensor();  // not needed by decode
    ring[0] = ring[1] = Tensor();
  }

  // Final norm + LM head of one residual row: the whole (1, vocab) logits row. With T > 1
  // (collective over the TP group) every rank computes its vocabulary part and one
  // all-gather assembles the row: the parts are in rank order and only the last is short,
  // so the gathered buffer's first vocab values are the row, exactly as with T = 1.
  Tensor head_logits(const Tensor& x_row) {
    const Tensor hn = h.rows(0, 1);
    be.rmsnorm(x_row, w.final_norm, eps, hn);
    if (!tp) {
      const Tensor lg = logits.rows(0, 1);
      be.matmul(hn, w.lm_head, Tensor(), lg, false);
      return lg;
    }
    be.matmul(hn, w.lm_head, Tensor(), row_cols(lg_pad, 0, vl), false);
    tp->all_gather(lg_pad.data(), lg_all.data(), static_cast<size_t>(sl.vocab_part), CommDtype::float32,
                   be.stream());
    stats.tp_bytes_sent += static_cast<int64_t>(lg_pad.bytes());
    return row_cols(lg_all, 0, vocab);
  }

  // The token sampled on CP rank `root` from the hidden row x_row (ignored elsewhere), on
  // every rank: root samples, then broadcasts the id. With T > 1 the TP ranks of root
  // sample from the same gathered row, and TP rank 0's token is broadcast over the TP group
  // so that rounding differences can never make them disagree.
  int32_t sample_on(int root, const Tensor& x_row, const GenerateOptions& g, uint64_t step) {
    const Tensor t = tok.rows(0, 1);
    if (r == root) {
      be.sample(head_logits(x_row), g.temperature, g.top_p, sampling_uniform(g.seed, g.doc_key, step), t);
      if (tp) {
        tp->broadcast(t.data(), 1, CommDtype::int32, 0, be.stream());
        if (tr == 0) stats.tp_bytes_sent += sizeof(int32_t);
      }
    }
    if (comm) {
      comm->broadcast(t.data(), 1, CommDtype::int32, root, be.stream());
      if (r == root) stats.bytes_sent += sizeof(int32_t);
    }
    int32_t id = 0;
    be.copy_to_host(&id, t);
    return id;
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
  // Runs `token` at global position pos through every layer on every rank (the owner
  // rank appends its K,V before attending), leaving the hidden state in x1.
  void decode_step(int32_t token, int64_t pos) {
    be.copy_from_host(tok.rows(0, 1), &token);
    be.embed(w.embed, tok.rows(0, 1), x1);
    const int owner = stripe_owner(pos, N);
    const int64_t qi = local_index(pos, N), nk = local_len(pos + 1, r, N);
    for (int l = 0; l < cfg.n_layers; ++l) {
      project_qkv(l, x1, q1, pos, owner == r, qi);
      be.attention_reset(o1, lse1);
      be.attention(q1, k_cache[l].rows(0, nk), v_cache[l].rows(0, nk), attention_shape(qi, owner, r), o1, lse1);
      if (comm) {
        // One all-gather of every rank's (O, LSE), then the same merge in rank order on
        // every rank, so all ranks keep bitwise the same hidden state.
        comm->all_gather(part.data(), parts.data(), static_cast<size_t>(part.numel()), CommDtype::float32,
                         be.stream());
        stats.bytes_sent += static_cast<int64_t>(part.bytes());
        be.attention_reset(o1, lse1);
        for (int s = 0; s < N; ++s) {
          const Tensor ps = parts.rows(s, 1);
          be.merge_attention(o1, lse1, row_cols(ps, 0, H * D), row_cols(ps, H * D, H));
        }
      }
      row_parallel(o1, w.layers[l].wo, w.layers[l].bo, x1);
      mlp(w.layers[l], x1);
    }
    stats.kv_tokens = nk;
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
  s.S = S;
  s.check_document(stripe, &next, S, S);
  DocumentScore res;
  if (S < 2) {  // nothing to predict; every rank knows S, so all return here together
    s.stats.tokens_held = s.stats.kv_tokens = static_cast<int64_t>(stripe.size());
    res.perplexity = std::numeric_limits<double>::quiet_NaN();
    res.seconds = seconds_since(t0);
    return res;
  }
  s.prefill(stripe, local_len(S, s.r, s.N));
  // Local row i (global iN + r) predicts global iN + r + 1: local index i of rank r+1, or
  // i+1 of rank 0 when r = N-1 (with N = 1, next is this stripe). Rows up to global S-2.
  const int64_t m = local_len(S - 1, s.r, s.N), mmax = local_len(S - 1, 0, s.N), lc = s.opt.logits_chunk;
  const int64_t shift = s.r == s.N - 1 ? 1 : 0;
  Tensor lp = s.be.alloc(mmax, 1, DType::f32);
  for (int64_t c = 0; c < m; c += lc) {
    const int64_t cn = std::min(lc, m - c);
    s.be.rmsnorm(s.x.rows(c, cn), s.w.final_norm, s.eps, s.hl.rows(0, cn));
    s.be.matmul(s.hl.rows(0, cn), s.w.lm_head, Tensor(), s.logits.rows(0, cn), false);
    if (s.tp) {
      s.vocab_parallel_logprobs(cn, next.data() + c + shift, lp.rows(c, cn));
      continue;
    }
    s.be.copy_from_host(s.tok.rows(0, cn), next.data() + c + shift);
    s.be.target_logprobs(s.logits.rows(0, cn), s.tok.rows(0, cn), lp.rows(c, cn));
  }
  s.x = Tensor();
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
  State& s = *s_;
  RI_CHECK(g.max_new_tokens >= 0, "generate: --max-new-tokens must not be negative");
  RI_CHECK(g.temperature >= 0.0 && g.top_p > 0.0 && g.top_p <= 1.0,
           "generate: --temperature must be >= 0 and --top-p in (0, 1]");
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t G = g.max_new_tokens;
  s.stats = EngineStats();
  s.S = S;
  s.check_document(stripe, nullptr, S, S + G);
  GenerateResult res;
  s.stats.tokens_held = s.stats.kv_tokens = static_cast<int64_t>(stripe.size());
  if (S == 0) {
    res.finish = FinishReason::empty_prompt;
    return res;
  }
  if (G == 0) return res;  // finish = length
  // Capacity ceil((S + G - r) / N): the last generated token is never run through the
  // model, but the formula keeps one rule for every rank.
  s.prefill(stripe, local_len(S + G, s.r, s.N));
  // The last prompt position's owner samples the first token and broadcasts it.
  const int64_t last = S - 1;
  const int first_root = stripe_owner(last, s.N);
  const Tensor last_row = s.r == first_root ? s.x.rows(local_index(last, s.N), 1) : Tensor();
  int32_t next = s.sample_on(first_root, last_row, g, 0);
  s.x = Tensor();
  res.prefill_seconds = seconds_since(t0);
  const auto t1 = std::chrono::steady_clock::now();
  auto is_eos = [&](int32_t t) {
    for (int64_t e : s.cfg.eos_token_ids)
      if (e == t) return true;
    return false;
  };
  for (int64_t step = 0;; ++step) {
    res.tokens.push_back(next);
    EngineProgress p;
    p.kind = EngineProgress::Kind::decode_token;
    p.generated = static_cast<int64_t>(res.tokens.size());
    s.report(p);
    if (is_eos(next)) {
      res.finish = FinishReason::eos;
      break;
    }
    if (static_cast<int64_t>(res.tokens.size()) == G) {
      res.finish = FinishReason::length;
      break;
    }
    s.stop_point();  // only while work remains: a finished document is never thrown away
    s.decode_step(next, S + step);
    next = s.sample_on(0, s.x1, g, static_cast<uint64_t>(step + 1));  // CP rank 0 samples from here on
  }
  res.decode_seconds = seconds_since(t1);
  return res;
}

}  // namespace ringinfer
