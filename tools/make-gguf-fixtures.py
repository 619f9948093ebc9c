#!/usr/bin/env python3
"""Writes the GGUF form of reference fixtures, with the same float32 weights.

Usage: tools/make-gguf-fixtures.py [--models-dir tests/fixtures/models] [NAME ...]

For each fixture folder NAME (config.json + model.safetensors, made by
tools/make-reference-models.py) it writes NAME/model.gguf, F32, as llama.cpp's
convert_hf_to_gguf.py lays it out for the family:
  llama3-gqa         general.architecture llama: Q/K rows permuted per head, llama3 RoPE
                     scaling as rope_freqs.weight (one divisor per frequency) for an
                     original context of 64 and no original_context_length key (a file
                     llama.cpp runs and ringinfer once refused)
  qwen2-bias-tied    qwen2: q/k/v biases, tied embeddings (no output.weight), linear RoPE
  qwen3-qknorm-yarn  qwen3: attn_q_norm/attn_k_norm, attention.key_length 24, YaRN keys
The weights are those of model.safetensors, so the fixture's reference.json (float64
logprobs) is the reference of the GGUF too. No tokenizer metadata: tests score token ids.
Needs: numpy, safetensors, gguf.
"""
import argparse
import json
import math
import os

import numpy as np

FAMILY = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias", "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
}
GLOBAL_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                "lm_head.weight": "output.weight"}


def llama_permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute: HF halves -> interleaved pairs per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_freqs(cfg, head_dim):
    sc = cfg["rope_scaling"]
    base = float(cfg["rope_theta"])
    factor, lo, hi = float(sc["factor"]), float(sc["low_freq_factor"]), float(sc["high_freq_factor"])
    old = float(sc["original_max_position_embeddings"])
    out = []
    for freq in 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim):
        wl = 2 * math.pi / freq
        if wl < old / hi:
            out.append(1.0)
        elif wl > old / lo:
            out.append(factor)
        else:
            s = (old / wl - lo) / (hi - lo)
            out.append(1 / ((1 - s) / factor + s))
    return np.asarray(out, dtype=np.float32)


def convert(folder):
    import gguf
    from safetensors.numpy import load_file

    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    arch = FAMILY[cfg["architectures"][0]]
    W = load_file(os.path.join(folder, "model.safetensors"))
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim") or cfg["hidden_size"] // H
    path = os.path.join(folder, "model.gguf")
    w = gguf.GGUFWriter(path, arch)
    w.add_name(os.path.basename(folder))
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(H)
    w.add_head_count_kv(Hkv)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    if cfg.get("head_dim"):
        w.add_key_length(D)
        w.add_value_length(D)
    w.add_bos_token_id(cfg["bos_token_id"])
    eos = cfg["eos_token_id"]
    w.add_eos_token_id(eos[0] if isinstance(eos, list) else eos)
    sc = cfg.get("rope_scaling") or {}
    kind = sc.get("rope_type", sc.get("type"))
    if kind == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(sc["factor"])
    elif kind == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(sc["factor"])
        w.add_rope_scaling_orig_ctx_len(sc["original_max_position_embeddings"])
    elif kind == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_freqs(cfg, D))
    for name, t in W.items():
        t = t.astype(np.float32)
        if name in GLOBAL_NAMES:
            w.add_tensor(GLOBAL_NAMES[name], t)
            continue
        parts = name.split(".")  # model.layers.<l>.<suffix>
        suffix = ".".join(parts[3:])
        if arch == "llama" and suffix.startswith(("self_attn.q_proj", "self_attn.k_proj")):
            t = llama_permute(t, H if "q_proj" in suffix else Hkv)
        w.add_tensor(f"blk.{parts[2]}.{LAYER_NAMES[suffix]}", np.ascontiguousarray(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {path} ({arch}, {os.path.getsize(path)} bytes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models-dir", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "models"))
    ap.add_argument("names", nargs="*", default=["llama3-gqa", "qwen2-bias-tied", "qwen3-qknorm-yarn"])
    args = ap.parse_args()
    for n in args.names:
        convert(os.path.join(args.models_dir, n))


if __name__ == "__main__":
    main()
