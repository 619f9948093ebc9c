#!/usr/bin/env python3
"""Float64 per-token logprobs of a llama-architecture GGUF in numpy, without torch.

Usage: tools/gguf-numpy-reference.py MODEL.gguf IDS.json OUT.json

IDS.json: {"documents": [{"id": ..., "tokens": [...]}, ...]} (e.g. a reference JSON of
tools/gguf-reference.py, or ids dumped from `ringinfer prep`). The `gguf` package
dequantizes every tensor (its numpy code, independent of ringinfer's), Q/K rows are
un-permuted to the Hugging Face layout (convert_hf_to_gguf.py permutes them), and
tools/reference_forward.py runs the float64 forward: RoPE angles, norms, softmax and LM
head in float64 (DESIGN §9). A second reference beside tools/gguf-reference.py
(transformers), for machines without torch and for files of any block type.
Needs: numpy, gguf.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_forward as ref  # noqa: E402

LAYER = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
         "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
         "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def field(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    v = f.parts[f.data[0]]
    return v.tobytes().decode() if v.dtype == np.uint8 else v.tolist()[0]


def unpermute(w, n_head):
    """The inverse of convert_hf_to_gguf.py's LlamaModel.permute."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load(path):
    import gguf
    r = gguf.GGUFReader(path)
    arch = field(r, "general.architecture")
    if arch != "llama":
        sys.exit(f"{path}: architecture {arch}: this reference handles llama only")
    H, Hkv = field(r, "llama.attention.head_count"), field(r, "llama.attention.head_count_kv")
    hidden = field(r, "llama.embedding_length")
    cfg = {"hidden_size": hidden, "num_attention_heads": H, "num_key_value_heads": Hkv,
           "head_dim": field(r, "llama.attention.key_length", hidden // H),
           "num_hidden_layers": field(r, "llama.block_count"),
           "rms_norm_eps": field(r, "llama.attention.layer_norm_rms_epsilon"),
           "rope_theta": field(r, "llama.rope.freq_base", 10000.0)}
    if field(r, "llama.rope.scaling.type") not in (None, "none"):
        sys.exit(f"{path}: RoPE scaling {field(r, 'llama.rope.scaling.type')} is not handled here")
    W, rope_freqs = {}, None
    for t in r.tensors:
        v = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        v = v.reshape([int(d) for d in reversed(t.shape)]) if len(t.shape) > 1 else v.reshape(-1)
        name = t.name
        if name == "rope_freqs.weight":
            rope_freqs = v
            continue
        if name == "token_embd.weight":
            W["model.embed_tokens.weight"] = v
        elif name == "output_norm.weight":
            W["model.norm.weight"] = v
        elif name == "output.weight":
            W["lm_head.weight"] = v
        else:
            _, layer, kind, suffix = name.split(".")
            if suffix != "weight" or kind not in LAYER:
                sys.exit(f"{path}: tensor {name} is not handled here (llama without biases only)")
            if kind in ("attn_q", "attn_k"):
                v = unpermute(v, H if kind == "attn_q" else Hkv)
            W[f"model.layers.{layer}.{LAYER[kind]}.weight"] = v
    return cfg, W, rope_freqs


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    path, ids_path, out_path = sys.argv[1:]
    cfg, W, rope_freqs = load(path)
    with open(ids_path) as f:
        docs = json.load(f)["documents"]
    out = []
    for d in docs:
        lp = ref.token_logprobs(cfg, W, d["tokens"], rope_freqs)
        out.append({"id": d.get("id", d.get("file")), "tokens": d["tokens"], "logprobs": [float(v) for v in lp]})
        print(f"{out[-1]['id']}: {len(d['tokens'])} tokens, mean logprob {np.mean(lp):.4f}", flush=True)
    with open(out_path, "w") as f:
        json.dump({"model": os.path.basename(path), "source": "tools/gguf-numpy-reference.py (gguf package "
                   "dequantization, numpy float64 forward)", "documents": out}, f)


if __name__ == "__main__":
    main()
