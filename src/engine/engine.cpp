// The forward pass over Backend: layer-major prefill of a stripe, score, decode.
#include "ringinfer/engine.h"

#include <chrono>
#include <cmath>
#include <limits>
#include <string>

#include "engine/engine_weights.h"
#include "ringinfer/error.h"
#include "ringinfer/sampling.h"
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
}  // namespace

struct Engine::State {
  Backend& be;
  ModelConfig cfg;
  EngineOptions opt;
  engine::BackendWeights w;
  int r = 0, N = 1;
  int64_t H = 0, Hkv = 0, D = 0, hidden = 0, inter = 0, vocab = 0, chunk = 0;
  float eps = 0.0f, scale = 0.0f;

  // Per document. Shapes: n = local tokens of the prompt on this rank, cap = KV capacity.
  std::vector<Tensor> k_cache, v_cache;  // n_layers x (cap, Hkv*D), backend KV storage
  Tensor x;                              // (n, hidden) residual stream
  Tensor q, o, lse;                      // (n, H*D), (n, H*D), (n, H): one layer's Q and (O, LSE)
  // Scratch, bounded by chunk_tokens / logits_chunk rows, allocated once.
  Tensor h;           // (chunk, hidden) normed input
  Tensor k_new, v_new;  // (chunk, Hkv*D) fp32 K,V before the cache store
  Tensor gate, up;    // (chunk, intermediate)
  Tensor tok;         // (chunk, 1) i32 token ids / targets
  Tensor hl;          // (logits_chunk, hidden) final-normed rows for the LM head
  Tensor logits;      // (logits_chunk, vocab)
  Tensor x1, q1, o1, lse1;  // decode: (1, hidden), (1, H*D), (1, H*D), (1, H)

  State(Backend& backend, const ModelConfig& c, const ModelWeights& weights, const EngineOptions& o)
      : be(backend), cfg(c), opt(o), w(engine::upload_weights(backend, c, weights)) {
    RI_CHECK(o.cp_size == 1, "engine: --cp " + std::to_string(o.cp_size) +
                                 ": context parallelism needs the ring exchange, not built yet (use --cp 1)");
    RI_CHECK(o.cp_rank >= 0 && o.cp_rank < o.cp_size, "engine: CP rank " + std::to_string(o.cp_rank) +
                                                        " outside a group of " + std::to_string(o.cp_size));
    RI_CHECK(o.chunk_tokens > 0 && o.logits_chunk > 0, "engine: chunk sizes must be positive");
    r = o.cp_rank;
    N = o.cp_size;
    H = c.n_heads, Hkv = c.n_kv_heads, D = c.head_dim, hidden = c.hidden_size;
    inter = c.intermediate_size, vocab = c.vocab_size, chunk = o.chunk_tokens;
    eps = static_cast<float>(c.rms_norm_eps);
    scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
    h = be.alloc(chunk, hidden, DType::f32);
    k_new = be.alloc(chunk, Hkv * D, DType::f32);
    v_new = be.alloc(chunk, Hkv * D, DType::f32);
    gate = be.alloc(chunk, inter, DType::f32);
    up = be.alloc(chunk, inter, DType::f32);
    tok = be.alloc(std::max(chunk, o.logits_chunk), 1, DType::i32);
    hl = be.alloc(o.logits_chunk, hidden, DType::f32);
    logits = be.alloc(o.logits_chunk, vocab, DType::f32);
    x1 = be.alloc(1, hidden, DType::f32);
    q1 = be.alloc(1, H * D, DType::f32);
    o1 = be.alloc(1, H * D, DType::f32);
    lse1 = be.alloc(1, H, DType::f32);
  }

  void check_document(const std::vector<int32_t>& tokens, int64_t total_positions) const {
    for (size_t k = 0; k < tokens.size(); ++k)
      RI_CHECK(tokens[k] >= 0 && tokens[k] < vocab, "document: token " + std::to_string(tokens[k]) + " at index " +
                                                        std::to_string(k) + " is outside the vocabulary (" +
                                                        std::to_string(vocab) + ")");
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
    be.matmul(g, L.w_down, Tensor(), x_rows, true);
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

  // Attention of local queries (local indices q_start.., owned by q_rank) against the KV
  // blocks of every rank, merged into (o_rows, lse_rows). The ring schedule: step t holds
  // the block of rank (r - t) mod N. With N = 1 the only block is the local cache; the
  // next issue posts ring_exchange of the block in hand before each attention call here.
  void attend_blocks(int l, const Tensor& q_rows, int64_t q_start, int q_rank, int64_t n_keys, const Tensor& o_rows,
                     const Tensor& lse_rows) {
    be.attention_reset(o_rows, lse_rows);
    for (int step = 0; step < N; ++step) {
      AttentionShape sh;
      sh.n_heads = H;
      sh.n_kv_heads = Hkv;
      sh.head_dim = D;
      sh.q_start = q_start;
      sh.q_rank = q_rank;
      sh.k_rank = (r - step + N) % N;
      sh.n_ranks = N;
      sh.scale = scale;
      be.attention(q_rows, k_cache[l].rows(0, n_keys), v_cache[l].rows(0, n_keys), sh, o_rows, lse_rows);
    }
  }

  // ---------------------------------------------------------------- prefill
  // Runs this rank's stripe of an S-token document through every layer (layer-major),
  // leaving the final residual stream in x and K,V in a cache of `capacity` rows.
  void prefill(const std::vector<int32_t>& doc, int64_t capacity) {
    const int64_t S = static_cast<int64_t>(doc.size()), n = local_len(S, r, N);
    k_cache.assign(cfg.n_layers, Tensor());
    v_cache.assign(cfg.n_layers, Tensor());
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
      k_cache[l] = be.alloc_kv(capacity, Hkv * D);
      v_cache[l] = be.alloc_kv(capacity, Hkv * D);
    }
    x = be.alloc(n, hidden, DType::f32);
    q = be.alloc(n, H * D, DType::f32);
    o = be.alloc(n, H * D, DType::f32);
    lse = be.alloc(n, H, DType::f32);
    std::vector<int32_t> ids;
    for (int64_t c = 0; c < n; c += chunk) {
      const int64_t cn = std::min(chunk, n - c);
      ids.clear();
      for (int64_t i = c; i < c + cn; ++i) ids.push_back(doc[global_pos(i, r, N)]);
      be.copy_from_host(tok.rows(0, cn), ids.data());
      be.embed(w.embed, tok.rows(0, cn), x.rows(c, cn));
    }
    for (int l = 0; l < cfg.n_layers; ++l) {
      for (int64_t c = 0; c < n; c += chunk) {
        const int64_t cn = std::min(chunk, n - c);
        project_qkv(l, x.rows(c, cn), q.rows(c, cn), global_pos(c, r, N), true, c);
      }
      attend_blocks(l, q, 0, r, n, o, lse);
      for (int64_t c = 0; c < n; c += chunk) {
        const int64_t cn = std::min(chunk, n - c);
        be.matmul(o.rows(c, cn), w.layers[l].wo, w.layers[l].bo, x.rows(c, cn), true);
        mlp(w.layers[l], x.rows(c, cn));
      }
    }
  }

  // Final norm + LM head of one residual row into logits row 0.
  Tensor head_logits(const Tensor& x_row) {
    const Tensor hn = h.rows(0, 1), lg = logits.rows(0, 1);
    be.rmsnorm(x_row, w.final_norm, eps, hn);
    be.matmul(hn, w.lm_head, Tensor(), lg, false);
    return lg;
  }

  int32_t sample_row(const Tensor& lg, const GenerateOptions& g, uint64_t step) {
    const Tensor t = tok.rows(0, 1);
    be.sample(lg, g.temperature, g.top_p, sampling_uniform(g.seed, g.doc_key, step), t);
    int32_t id = 0;
    be.copy_to_host(&id, t);
    return id;
  }

  // ---------------------------------------------------------------- decode
  // Runs `token` at global position pos through every layer (all ranks redundantly; the
  // owner rank appends its K,V before attending) and returns the logits row.
  Tensor decode_step(int32_t token, int64_t pos) {
    be.copy_from_host(tok.rows(0, 1), &token);
    be.embed(w.embed, tok.rows(0, 1), x1);
    const int owner = stripe_owner(pos, N);
    const int64_t qi = local_index(pos, N);
    for (int l = 0; l < cfg.n_layers; ++l) {
      project_qkv(l, x1, q1, pos, owner == r, qi);
      // N > 1 (next issue): all-gather (o1, lse1) and merge in rank order.
      attend_blocks(l, q1, qi, owner, local_len(pos + 1, r, N), o1, lse1);
      be.matmul(o1, w.layers[l].wo, w.layers[l].bo, x1, true);
      mlp(w.layers[l], x1);
    }
    return head_logits(x1);
  }
};

Engine::Engine(Backend& backend, const ModelConfig& config, const ModelWeights& weights, const EngineOptions& options)
    : s_(std::make_unique<State>(backend, config, weights, options)) {}

Engine::~Engine() = default;

const ModelConfig& Engine::config() const { return s_->cfg; }

ScoreResult Engine::score(const std::vector<int32_t>& tokens) {
  State& s = *s_;
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t S = static_cast<int64_t>(tokens.size());
  s.check_document(tokens, S);
  ScoreResult res;
  if (S < 2) {
    res.perplexity = std::numeric_limits<double>::quiet_NaN();
    res.seconds = seconds_since(t0);
    return res;
  }
  s.prefill(tokens, local_len(S, s.r, s.N));
  // Local row i (global iN + r) predicts tokens[iN + r + 1]; rows up to global S-2 have one.
  const int64_t m = local_len(S - 1, s.r, s.N), lc = s.opt.logits_chunk;
  Tensor lp = s.be.alloc(m, 1, DType::f32);
  std::vector<int32_t> tg;
  for (int64_t c = 0; c < m; c += lc) {
    const int64_t cn = std::min(lc, m - c);
    s.be.rmsnorm(s.x.rows(c, cn), s.w.final_norm, s.eps, s.hl.rows(0, cn));
    s.be.matmul(s.hl.rows(0, cn), s.w.lm_head, Tensor(), s.logits.rows(0, cn), false);
    tg.clear();
    for (int64_t i = c; i < c + cn; ++i) tg.push_back(tokens[global_pos(i, s.r, s.N) + 1]);
    s.be.copy_from_host(s.tok.rows(0, cn), tg.data());
    s.be.target_logprobs(s.logits.rows(0, cn), s.tok.rows(0, cn), lp.rows(c, cn));
  }
  res.logprobs.resize(static_cast<size_t>(m));
  s.be.copy_to_host(res.logprobs.data(), lp);
  for (float v : res.logprobs) res.sum_logprob += v;
  res.perplexity = std::exp(-res.sum_logprob / static_cast<double>(m));
  res.seconds = seconds_since(t0);
  return res;
}

GenerateResult Engine::generate(const std::vector<int32_t>& prompt, const GenerateOptions& g) {
  State& s = *s_;
  RI_CHECK(g.max_new_tokens >= 0, "generate: --max-new-tokens must not be negative");
  RI_CHECK(g.temperature >= 0.0 && g.top_p > 0.0 && g.top_p <= 1.0,
           "generate: --temperature must be >= 0 and --top-p in (0, 1]");
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t S = static_cast<int64_t>(prompt.size()), G = g.max_new_tokens;
  s.check_document(prompt, S + G);
  GenerateResult res;
  if (S == 0) {
    res.finish = FinishReason::empty_prompt;
    return res;
  }
  if (G == 0) return res;  // finish = length
  // Capacity ceil((S + G - r) / N): the last generated token is never run through the
  // model, but the formula keeps one rule for every rank.
  s.prefill(prompt, local_len(S + G, s.r, s.N));
  // The last prompt position's owner samples the first token (N = 1: this rank).
  const int64_t last = S - 1;
  int32_t next = s.sample_row(s.head_logits(s.x.rows(local_index(last, s.N), 1)), g, 0);
  res.prefill_seconds = seconds_since(t0);
  const auto t1 = std::chrono::steady_clock::now();
  auto is_eos = [&](int32_t t) {
    for (int64_t e : s.cfg.eos_token_ids)
      if (e == t) return true;
    return false;
  };
  for (int64_t step = 0;; ++step) {
    res.tokens.push_back(next);
    if (is_eos(next)) {
      res.finish = FinishReason::eos;
      break;
    }
    if (static_cast<int64_t>(res.tokens.size()) == G) {
      res.finish = FinishReason::length;
      break;
    }
    next = s.sample_row(s.decode_step(next, S + step), g, static_cast<uint64_t>(step + 1));
  }
  res.decode_seconds = seconds_since(t1);
  return res;
}

}  // namespace ringinfer
