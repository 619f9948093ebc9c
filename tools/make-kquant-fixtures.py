#!/usr/bin/env python3
"""Writes the fixtures of the GGUF block formats Q5_0, Q5_1, Q2_K..Q6_K, IQ4_NL and IQ4_XS.

Usage: tools/make-kquant-fixtures.py [--fixtures tests/fixtures]

1. FIXTURES/gguf/kquant-blocks.json: for each type, six blocks of random bytes (every bit
   of the quants, scales and masks random; the fp16 d / dmin / m fields random finite
   values) and their values as the `gguf` PyPI package dequantizes them (its numpy code,
   written independently of ours), for tests/unit/test_gguf.cpp.
2. FIXTURES/models/llama-kquants/: model.gguf, a 2-layer llama (hidden 256, 4 heads of 64,
   2 KV heads, no RoPE scaling) whose matrices are random blocks of those types, mixed per
   tensor as llama.cpp's *_K_M files mix them (Q6_K for attn_v, ffn_down and output, Q4_K
   and the others elsewhere, Q5_0 / Q5_1 / IQ4_NL / IQ4_XS in some), norms F32; and
   reference.json: float64 logprobs of random documents and a greedy continuation, by
   tools/reference_forward.py on the weights `gguf` dequantizes (Q/K rows un-permuted to
   the HF layout), in the layout of tools/make-reference-models.py's reference.json.
Needs: numpy, gguf.
"""
import argparse
import importlib.util
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference_forward as ref  # noqa: E402


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), os.path.join(HERE, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# Byte offsets of the fp16 fields of each block, and the mean of its unsigned quants (a
# field "dmin" = mean_q * d, or "m" = -mean_q * d, centres the values near zero).
FIELDS = {
    "Q5_0": dict(d=0, mean_q=None), "Q5_1": dict(d=0, m=2, mean_q=15.5),
    "Q2_K": dict(d=80, dmin=82, mean_q=1.5), "Q3_K": dict(d=108, mean_q=None),
    "Q4_K": dict(d=0, dmin=2, mean_q=7.5), "Q5_K": dict(d=0, dmin=2, mean_q=15.5),
    "Q6_K": dict(d=208, mean_q=None), "IQ4_NL": dict(d=0, mean_q=None), "IQ4_XS": dict(d=0, mean_q=None),
}
TYPES = list(FIELDS)

CONFIG = dict(
    architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=256, intermediate_size=256,
    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=64, vocab_size=300,
    rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2,
    tie_word_embeddings=False, attention_bias=False, mlp_bias=False, hidden_act="silu")
# GGUF tensor -> type, per layer (a *_K_M-like mix; every type appears).
LAYER_TYPES = [
    {"attn_q": "Q4_K", "attn_k": "Q5_K", "attn_v": "Q6_K", "attn_output": "Q3_K", "ffn_gate": "Q2_K",
     "ffn_up": "Q5_1", "ffn_down": "Q6_K"},
    {"attn_q": "IQ4_XS", "attn_k": "Q4_K", "attn_v": "Q6_K", "attn_output": "Q5_K", "ffn_gate": "Q5_0",
     "ffn_up": "IQ4_NL", "ffn_down": "Q2_K"},
]
GLOBAL_TYPES = {"token_embd": "Q4_K", "output": "Q6_K"}


def qtype(name):
    import gguf
    return getattr(gguf.GGMLQuantizationType, name)


def random_blocks(rng, name, n_blocks, scale):
    """n_blocks random blocks of type `name`; d ~ scale * U(0.5, 1.5), random sign where
    the format's values are signed around zero anyway."""
    import gguf
    block, size = gguf.GGML_QUANT_SIZES[qtype(name)]
    b = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    f = FIELDS[name]
    d = scale * rng.uniform(0.5, 1.5, size=n_blocks)
    if f["mean_q"] is None:
        d *= rng.choice([-1.0, 1.0], size=n_blocks)
    put = {"d": d}
    if "dmin" in f:
        put["dmin"] = f["mean_q"] * d * rng.uniform(0.8, 1.2, size=n_blocks)
    if "m" in f:
        put["m"] = -f["mean_q"] * d * rng.uniform(0.8, 1.2, size=n_blocks)
    for key, vals in put.items():
        off = f[key]
        b[:, off:off + 2] = vals.astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    return b, block


def dequantize(blocks, name):
    import gguf
    return gguf.quants.dequantize(blocks.reshape(-1), qtype(name)).astype(np.float32)


def random_matrix(rng, name, rows, cols, std):
    """Random blocks of `name` for a (rows, cols) matrix whose values have about `std`."""
    import gguf
    block, _ = gguf.GGML_QUANT_SIZES[qtype(name)]
    n = rows * cols // block
    b, _ = random_blocks(rng, name, n, 1.0)
    got = float(dequantize(b, name).std())
    seed = int(rng.integers(1 << 31))
    b, _ = random_blocks(np.random.default_rng(seed), name, n, std / got)
    return b.reshape(rows, -1), dequantize(b, name).reshape(rows, cols)


def write_block_fixture(path, rng):
    out = {"source": "gguf %s (gguf.quants.dequantize)" % _gguf_version(), "types": {}}
    for name in TYPES:
        b, block = random_blocks(rng, name, 6, 0.05)
        vals = dequantize(b, name)
        assert np.all(np.isfinite(vals)), name
        out["types"][name] = {"block": block, "blocks_hex": b.tobytes().hex(),
                              "values": [float(v) for v in vals]}
    with open(path, "w") as f:
        json.dump(out, f)
    print(f"wrote {path}")


def _gguf_version():
    from importlib.metadata import version
    return version("gguf")


def write_model(folder, rng):
    import gguf
    mg = load_tool("make-gguf-fixtures")
    mr = load_tool("make-reference-models")
    cfg = CONFIG
    Hd, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    H, Hkv, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("llama-kquants")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(Hd)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(I)
    w.add_head_count(H)
    w.add_head_count_kv(Hkv)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    W = {}  # HF names -> float64, the values the GGUF holds

    def matrix(gguf_name, hf_name, type_name, rows, cols, std, permute_heads=0):
        blocks, vals = random_matrix(rng, type_name, rows, cols, std)
        w.add_tensor(gguf_name, blocks, raw_dtype=qtype(type_name))
        v = vals.astype(np.float64)
        if permute_heads:  # the GGUF holds llama_permute(HF); invert it for the reference
            v = v.reshape(permute_heads, v.shape[0] // permute_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)
            assert np.array_equal(mg.llama_permute(v, permute_heads), vals.astype(np.float64))
        W[hf_name] = v

    def vector(gguf_name, hf_name, n):
        v = (1.0 + 0.2 * rng.normal(size=n)).astype(np.float32)
        w.add_tensor(gguf_name, v)
        W[hf_name] = v.astype(np.float64)

    matrix("token_embd.weight", "model.embed_tokens.weight", GLOBAL_TYPES["token_embd"], V, Hd, 0.45)
    for l, types in enumerate(LAYER_TYPES):
        p, b = f"model.layers.{l}.", f"blk.{l}."
        vector(b + "attn_norm.weight", p + "input_layernorm.weight", Hd)
        matrix(b + "attn_q.weight", p + "self_attn.q_proj.weight", types["attn_q"], H * D, Hd, 1.4 / np.sqrt(Hd), H)
        matrix(b + "attn_k.weight", p + "self_attn.k_proj.weight", types["attn_k"], Hkv * D, Hd, 1.4 / np.sqrt(Hd), Hkv)
        matrix(b + "attn_v.weight", p + "self_attn.v_proj.weight", types["attn_v"], Hkv * D, Hd, 1.0 / np.sqrt(Hd))
        matrix(b + "attn_output.weight", p + "self_attn.o_proj.weight", types["attn_output"], Hd, H * D,
               1.0 / np.sqrt(H * D))
        vector(b + "ffn_norm.weight", p + "post_attention_layernorm.weight", Hd)
        matrix(b + "ffn_gate.weight", p + "mlp.gate_proj.weight", types["ffn_gate"], I, Hd, 1.5 / np.sqrt(Hd))
        matrix(b + "ffn_up.weight", p + "mlp.up_proj.weight", types["ffn_up"], I, Hd, 1.0 / np.sqrt(Hd))
        matrix(b + "ffn_down.weight", p + "mlp.down_proj.weight", types["ffn_down"], Hd, I, 1.0 / np.sqrt(I))
    vector("output_norm.weight", "model.norm.weight", Hd)
    matrix("output.weight", "lm_head.weight", GLOBAL_TYPES["output"], V, Hd, 0.2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")

    docs = [rng.integers(0, V, size=n).tolist() for n in mr.DOC_LENGTHS]
    lps = [ref.token_logprobs(cfg, W, t) for t in docs]
    allv = np.concatenate([x for x in lps if len(x)])
    record = {"model": "llama-kquants", "source": "tools/reference_forward.py (numpy float64) on the weights "
              "gguf %s dequantizes" % _gguf_version(), "types": {"global": GLOBAL_TYPES, "layers": LAYER_TYPES},
              "logprob_mean": float(allv.mean()), "logprob_std": float(allv.std()), "documents": []}
    for toks, lp in zip(docs, lps):
        record["documents"].append({"tokens": toks, "logprobs": [float(v) for v in lp]})
    g_prompt = docs[-1][:mr.GREEDY_PROMPT_LEN]
    g_out, g_margin = ref.greedy(cfg, W, g_prompt, mr.GREEDY_STEPS)
    record["greedy"] = {"prompt": g_prompt, "tokens": g_out, "margins": g_margin}
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump(record, f, indent=1)
    print(f"llama-kquants: logprob mean {allv.mean():.3f} std {allv.std():.3f}, min greedy margin {min(g_margin):.3g}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixtures", default=os.path.join(HERE, "..", "tests", "fixtures"))
    args = ap.parse_args()
    rng = np.random.default_rng(2026_12_08)
    write_block_fixture(os.path.join(args.fixtures, "gguf", "kquant-blocks.json"), rng)
    write_model(os.path.join(args.fixtures, "models", "llama-kquants"), rng)


if __name__ == "__main__":
    main()
