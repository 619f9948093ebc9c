#!/usr/bin/env python3
"""Independent float64 forward pass of Llama/Mistral/Qwen2 models in numpy.

Usage: tools/reference_forward.py MODEL_DIR TOKEN [TOKEN ...]
  prints the per-token logprobs log p(tokens[k+1] | tokens[..k]) as JSON.

Used by tools/make-reference-models.py to cross-check patched transformers (and as the
fixture source where torch is missing). Everything is float64: RoPE inverse frequencies,
llama3/linear scaling, angles, cos/sin, RMSNorm, softmax, LM head (DESIGN §9).
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


def inv_freq_f64(cfg):
    """RoPE inverse frequencies with llama3/linear scaling, all in float64."""
    d = head_dim_of(cfg)
    base = float(cfg.get("rope_theta", 10000.0))
    inv = 1.0 / base ** (np.arange(0, d, 2, dtype=np.float64) / d)
    sc = cfg.get("rope_scaling") or {}
    kind = sc.get("rope_type", sc.get("type", "default"))
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


def forward_logits(cfg, W, tokens):
    """Returns float64 logits (S, vocab) for the token list."""
    S = len(tokens)
    H, Hkv, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim_of(cfg)
    eps = float(cfg["rms_norm_eps"])
    x = W["model.embed_tokens.weight"][np.asarray(tokens, dtype=np.int64)]
    ang = np.arange(S, dtype=np.float64)[:, None] * inv_freq_f64(cfg)[None, :]
    ang = np.concatenate([ang, ang], axis=-1)
    cos, sin = np.cos(ang), np.sin(ang)
    causal = np.tril(np.ones((S, S), dtype=bool))
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rmsnorm(x, W[p + "input_layernorm.weight"], eps)
        proj = {}
        for n in "qkv":
            y = h @ W[p + f"self_attn.{n}_proj.weight"].T
            b = W.get(p + f"self_attn.{n}_proj.bias")
            proj[n] = y if b is None else y + b
        q = rope(proj["q"].reshape(S, H, D), cos, sin)
        k = rope(proj["k"].reshape(S, Hkv, D), cos, sin)
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


def token_logprobs(cfg, W, tokens):
    """log p(tokens[k+1] | tokens[..k]) for k = 0..S-2 (float64)."""
    if len(tokens) < 2:
        return np.zeros(0)
    lp = log_softmax(forward_logits(cfg, W, tokens))
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
