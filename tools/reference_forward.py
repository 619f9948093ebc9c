#!/usr/bin/env python3
"""Independent float64 forward pass of Llama/Mistral/Qwen2/Qwen3 models in numpy.

Usage: tools/reference_forward.py MODEL_DIR TOKEN [TOKEN ...]
  prints the per-token logprobs log p(tokens[k+1] | tokens[..k]) as JSON.

Used by tools/make-reference-models.py to cross-check patched transformers (and as the
fixture source where torch is missing). Everything is float64: RoPE inverse frequencies,
llama3/linear/yarn scaling (and YaRN's attention factor on cos/sin), angles, cos/sin,
RMSNorm (and Qwen3's per-head QK-norm), softmax, LM head (DESIGN §9). head_dim may
differ from hidden_size / num_attention_heads.
Needs: numpy, safetensors.
"""
import json
import math
import os
import sys

import numpy as np


def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)


def load_weights(model_dir):
    from safetensors.numpy import load_file
    return {k: v.astype(np.float64) for k, v in load_file(os.path.join(model_dir, "model.safetensors")).items()}


def head_dim_of(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def yarn_f64(cfg, inv):
    """YaRN (transformers' _compute_yarn_parameters) in float64: (inv_freq, attention_factor)."""
    sc = cfg["rope_scaling"]
    d = head_dim_of(cfg)
    base = float(cfg.get("rope_theta", 10000.0))
    # transformers 5: the original context from rope_scaling, else max_position_embeddings;
    # the factor as written, else max_position_embeddings / original.
    orig = float(sc.get("original_max_position_embeddings") or cfg["max_position_embeddings"])
    factor = float(sc["factor"]) if sc.get("factor") is not None else float(cfg["max_position_embeddings"]) / orig

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    att = sc.get("attention_factor")
    if att is None:
        if sc.get("mscale") and sc.get("mscale_all_dim"):
            att = mscale(factor, sc["mscale"]) / mscale(factor, sc["mscale_all_dim"])
        else:
            att = mscale(factor)

    def corr_dim(rot):
        return d * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))

    low, high = corr_dim(sc.get("beta_fast") or 32), corr_dim(sc.get("beta_slow") or 1)
    if sc.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, d - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(d // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    extrap = 1.0 - ramp
    return inv / factor * (1.0 - extrap) + inv * extrap, float(att)


def attention_factor_of(cfg):
    sc = cfg.get("rope_scaling") or {}
    if sc.get("rope_type", sc.get("type")) != "yarn":
        return 1.0
    return yarn_f64(cfg, inv_freq_f64(dict(cfg, rope_scaling=None)))[1]


def inv_freq_f64(cfg, rope_freqs=None):
    """RoPE inverse frequencies with llama3/linear/yarn scaling, all in float64; rope_freqs:
    a GGUF's per-frequency divisors, applied verbatim instead."""
    d = head_dim_of(cfg)
    base = float(cfg.get("rope_theta", 10000.0))
    inv = 1.0 / base ** (np.arange(0, d, 2, dtype=np.float64) / d)
    sc = cfg.get("rope_scaling") or {}
    kind = sc.get("rope_type", sc.get("type", "default"))
    if rope_freqs is not None:
        return inv / np.asarray(rope_freqs, dtype=np.float64)
    if kind == "yarn":
        return yarn_f64(cfg, inv)[0]
    if kind == "linear":
        inv = inv / float(sc["factor"])
    elif kind == "llama3":
        factor = float(sc["factor"])
        lo, hi = float(sc["low_freq_factor"]), float(sc["high_freq_factor"])
        old = float(sc["original_max_position_embeddings"])
        lo_wl, hi_wl = old / lo, old / hi
        wl = 2.0 * math.pi / inv
        out = np.where(wl > lo_wl, inv / factor, inv)
        smooth = (old / wl - lo) / (hi - lo)
        smoothed = (1.0 - smooth) * out / factor + smooth * out
        medium = (wl >= hi_wl) & (wl <= lo_wl)
        inv = np.where(medium, smoothed, out)
    elif kind != "default":
        raise ValueError(f"unsupported rope scaling {kind}")
    return inv


def rmsnorm(x, w, eps):
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def rope(x, cos, sin):
    # x: (S, heads, D); HF convention: pairs (i, i + D/2)
    half = x.shape[-1] // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, None, :] + rot * sin[:, None, :]


def forward_logits(cfg, W, tokens, rope_freqs=None):
    """Returns float64 logits (S, vocab) for the token list."""
    S = len(tokens)
    H, Hkv, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim_of(cfg)
    eps = float(cfg["rms_norm_eps"])
    x = W["model.embed_tokens.weight"][np.asarray(tokens, dtype=np.int64)]
    ang = np.arange(S, dtype=np.float64)[:, None] * inv_freq_f64(cfg, rope_freqs)[None, :]
    ang = np.concatenate([ang, ang], axis=-1)
    att = attention_factor_of(cfg)  # YaRN scales cos and sin (transformers' attention_scaling)
    cos, sin = np.cos(ang) * att, np.sin(ang) * att
    causal = np.tril(np.ones((S, S), dtype=bool))
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rmsnorm(x, W[p + "input_layernorm.weight"], eps)
        proj = {}
        for n in "qkv":
            y = h @ W[p + f"self_attn.{n}_proj.weight"].T
            b = W.get(p + f"self_attn.{n}_proj.bias")
            proj[n] = y if b is None else y + b
        q, k = proj["q"].reshape(S, H, D), proj["k"].reshape(S, Hkv, D)
        if p + "self_attn.q_norm.weight" in W:  # Qwen3: RMSNorm of each head before RoPE
            q = rmsnorm(q, W[p + "self_attn.q_norm.weight"], eps)
            k = rmsnorm(k, W[p + "self_attn.k_norm.weight"], eps)
        q = rope(q, cos, sin)
        k = rope(k, cos, sin)
        v = proj["v"].reshape(S, Hkv, D)
        g = H // Hkv
        o = np.empty((S, H, D))
        for hh in range(H):
            sc = (q[:, hh, :] @ k[:, hh // g, :].T) / math.sqrt(D)
            sc = np.where(causal, sc, -np.inf)
            sc = sc - sc.max(axis=-1, keepdims=True)
            pr = np.exp(sc)
            pr /= pr.sum(axis=-1, keepdims=True)
            o[:, hh, :] = pr @ v[:, hh // g, :]
        x = x + o.reshape(S, H * D) @ W[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps)
        gate = h @ W[p + "mlp.gate_proj.weight"].T
        up = h @ W[p + "mlp.up_proj.weight"].T
        x = x + ((gate / (1.0 + np.exp(-gate))) * up) @ W[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, W["model.norm.weight"], eps)
    lm = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    return x @ lm.T


def log_softmax(logits):
    m = logits.max(axis=-1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=-1, keepdims=True))


def token_logprobs(cfg, W, tokens, rope_freqs=None):
    """log p(tokens[k+1] | tokens[..k]) for k = 0..S-2 (float64)."""
    if len(tokens) < 2:
        return np.zeros(0)
    lp = log_softmax(forward_logits(cfg, W, tokens, rope_freqs))
    return lp[np.arange(len(tokens) - 1), np.asarray(tokens[1:])]


def greedy(cfg, W, prompt, steps):
    """Greedy continuation; returns (tokens, margins) where margin = top1 - top2 logit."""
    toks, out, margins = list(prompt), [], []
    for _ in range(steps):
        last = forward_logits(cfg, W, toks)[-1]
        order = np.argsort(-last, kind="stable")
        out.append(int(order[0]))
        margins.append(float(last[order[0]] - last[order[1]]))
        toks.append(int(order[0]))
    return out, margins


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cfg = load_config(sys.argv[1])
    W = load_weights(sys.argv[1])
    print(json.dumps(token_logprobs(cfg, W, [int(t) for t in sys.argv[2:]]).tolist()))
