#!/usr/bin/env python3
"""Builds tiny random-weight reference models and their float64 logprobs.

Usage: tools/make-reference-models.py [--out-dir tests/fixtures/models] [--tar FILE.tar.gz]
                                      [--numpy-only] [--only NAME ...]

For each model (llama3-scaled GQA Llama, Qwen2 with QKV bias and tied embeddings,
Mistral with one KV head and an explicit head_dim, Qwen3 with QK-norm, YaRN, tied
embeddings and a head_dim that is not hidden / heads) it writes under OUT_DIR/<name>/:
  config.json          Hugging Face config (classic rope_theta / rope_scaling keys)
  model.safetensors    float32 weights
  reference.json       documents: tokens, float64 logprobs of tokens[k+1] given tokens[..k],
                       a greedy continuation (with top1-top2 logit margins), and provenance

The logprobs come from Hugging Face transformers run in float64 with its float32 islands
patched away (DESIGN §9: RoPE inv_freq/angles/cos/sin and RMSNorm are float32 there even
for float64 models): RotaryEmbedding.forward and RMSNorm.forward are replaced by float64
versions, and attention runs through SDPA (eager softmax is float32). The independent
numpy forward of tools/reference_forward.py is run on the same inputs; reference.json
records the gap (and both sets of logprobs when it exceeds 1e-9), and the gap of
unpatched transformers.
With --numpy-only the numpy forward is the source, recorded as such.
Needs: numpy, safetensors (+ torch, transformers for the transformers source).
"""
import argparse
import json
import os
import sys
import tarfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_float64  # noqa: E402
import reference_forward as ref  # noqa: E402

MODELS = {
    "llama3-gqa": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=64,
        intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, vocab_size=300, rms_norm_eps=1e-5, rope_theta=10000.0,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=64),
        max_position_embeddings=4096, bos_token_id=1, eos_token_id=[2, 3], tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False, hidden_act="silu"),
    "qwen2-bias-tied": dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=64,
        intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        vocab_size=320, rms_norm_eps=1e-6, rope_theta=1000000.0,
        rope_scaling=dict(rope_type="linear", factor=2.0),
        max_position_embeddings=4096, bos_token_id=5, eos_token_id=6, tie_word_embeddings=True,
        use_sliding_window=False, sliding_window=None, hidden_act="silu"),
    "mistral-mqa": dict(
        architectures=["MistralForCausalLM"], model_type="mistral", hidden_size=96,
        intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
        head_dim=32, vocab_size=300, rms_norm_eps=1e-5, rope_theta=10000.0,
        max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
        sliding_window=None, hidden_act="silu"),
    # head_dim 24 != 64 / 4; YaRN over an original context of 64 tokens (documents reach
    # 300), max_position_embeddings = factor x original so that every transformers version
    # reads the same factor (some 4.x took max_position_embeddings / original over it).
    "qwen3-qknorm-yarn": dict(
        architectures=["Qwen3ForCausalLM"], model_type="qwen3", hidden_size=64,
        intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=24, vocab_size=300, rms_norm_eps=1e-6, rope_theta=10000.0,
        rope_scaling=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=64),
        max_position_embeddings=256, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
        attention_bias=False, use_sliding_window=False, sliding_window=None, hidden_act="silu"),
}
DOC_LENGTHS = [1, 2, 7, 90, 300]
GREEDY_PROMPT_LEN, GREEDY_STEPS = 20, 12


def make_weights(cfg, seed):
    """Random float32 weights scaled so attention is neither flat nor one-hot and
    per-token logprobs vary (std > 1)."""
    rng = np.random.default_rng(seed)
    Hd, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    D = ref.head_dim_of(cfg)
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    qkv_bias = cfg["model_type"] == "qwen2"

    def mat(out_f, in_f, gain):
        return rng.normal(0.0, gain / np.sqrt(in_f), size=(out_f, in_f))

    W = {"model.embed_tokens.weight": rng.normal(0.0, 0.45, size=(V, Hd))}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        W[p + "input_layernorm.weight"] = 1.0 + 0.2 * rng.normal(size=Hd)
        W[p + "self_attn.q_proj.weight"] = mat(H * D, Hd, 1.4)
        W[p + "self_attn.k_proj.weight"] = mat(Hkv * D, Hd, 1.4)
        W[p + "self_attn.v_proj.weight"] = mat(Hkv * D, Hd, 1.0)
        if qkv_bias:
            W[p + "self_attn.q_proj.bias"] = 0.5 * rng.normal(size=H * D)
            W[p + "self_attn.k_proj.bias"] = 0.5 * rng.normal(size=Hkv * D)
            W[p + "self_attn.v_proj.bias"] = 0.5 * rng.normal(size=Hkv * D)
        if cfg["model_type"] == "qwen3":  # QK-norm weights; gain > 1 keeps attention peaked
            W[p + "self_attn.q_norm.weight"] = 1.3 + 0.3 * rng.normal(size=D)
            W[p + "self_attn.k_norm.weight"] = 1.3 + 0.3 * rng.normal(size=D)
        W[p + "self_attn.o_proj.weight"] = mat(Hd, H * D, 1.0)
        W[p + "post_attention_layernorm.weight"] = 1.0 + 0.2 * rng.normal(size=Hd)
        W[p + "mlp.gate_proj.weight"] = mat(I, Hd, 1.5)
        W[p + "mlp.up_proj.weight"] = mat(I, Hd, 1.0)
        W[p + "mlp.down_proj.weight"] = mat(Hd, I, 1.0)
    W["model.norm.weight"] = 1.0 + 0.2 * rng.normal(size=Hd)
    if not cfg["tie_word_embeddings"]:
        W["lm_head.weight"] = rng.normal(0.0, 0.45, size=(V, Hd))
    # The stored weights are float32; the reference uses exactly those values.
    return {k: v.astype(np.float32) for k, v in W.items()}


def make_documents(cfg, seed):
    rng = np.random.default_rng(seed + 1000)
    return [rng.integers(0, cfg["vocab_size"], size=n).tolist() for n in DOC_LENGTHS]


# ------------------------------------------------------------------ transformers, patched
def transformers_logprobs(model_dir, cfg, W, docs, patched):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa")
    model = model.to(torch.float64).eval()
    # Every parameter must be the one we wrote (no silently re-initialised tensor).
    sd = model.state_dict()
    for name, w in W.items():
        got = sd[name].detach().cpu().numpy()
        if not np.array_equal(got, w.astype(np.float64)):
            raise SystemExit(f"{model_dir}: transformers loaded {name} differently")
    if patched:
        hf_float64.patch_float64(model, ref.inv_freq_f64(cfg), model_dir, ref.attention_factor_of(cfg))
    else:
        hf_float64.check_inv_freq(model, ref.inv_freq_f64(cfg), model_dir, ref.attention_factor_of(cfg))
    out = []
    with torch.no_grad():
        for toks in docs:
            if len(toks) < 2:
                out.append(np.zeros(0))
                continue
            ids = torch.tensor([toks], dtype=torch.long)
            logits = model(input_ids=ids).logits[0].to(torch.float64)
            lp = torch.log_softmax(logits, dim=-1)
            out.append(lp[torch.arange(len(toks) - 1), ids[0, 1:]].cpu().numpy())
    return out, f"transformers {transformers.__version__}, torch {torch.__version__}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "models"))
    ap.add_argument("--tar", default=None, help="also pack OUT_DIR into this .tar.gz")
    ap.add_argument("--numpy-only", action="store_true")
    ap.add_argument("--only", nargs="+", default=None, help="make only these models (the others stay as they are)")
    args = ap.parse_args()
    from safetensors.numpy import save_file

    have_torch = False
    if not args.numpy_only:
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
            have_torch = True
        except ImportError:
            sys.exit("torch/transformers are not importable here: run this where they are (the GPU "
                     "machine), or pass --numpy-only to use the numpy float64 forward alone")

    for seed, (name, cfg) in enumerate(MODELS.items()):
        if args.only and name not in args.only:
            continue
        d = os.path.join(args.out_dir, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(dict(cfg, torch_dtype="float32"), f, indent=2)
        W32 = make_weights(cfg, seed)
        save_file(W32, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        W = {k: v.astype(np.float64) for k, v in W32.items()}
        docs = make_documents(cfg, seed)
        np_lp = [ref.token_logprobs(cfg, W, t) for t in docs]
        record = {"model": name, "documents": []}
        hf_ok = False
        if have_torch:
            try:
                hf_lp, version = transformers_logprobs(d, cfg, W32, docs, patched=True)
                raw_lp, _ = transformers_logprobs(d, cfg, W32, docs, patched=False)
                hf_ok = True
            except (Exception, SystemExit) as e:  # keep the numpy fixtures, say why
                import traceback
                traceback.print_exc()
                print(f"{name}: transformers failed ({e}); using the numpy forward", flush=True)
        if hf_ok:
            gap = max((np.abs(a - b).max() for a, b in zip(hf_lp, np_lp) if len(a)), default=0.0)
            raw_gap = max((np.abs(a - b).max() for a, b in zip(raw_lp, np_lp) if len(a)), default=0.0)
            print(f"{name}: patched transformers vs numpy float64: max |diff| {gap:.3g}; "
                  f"unpatched transformers vs numpy: {raw_gap:.3g}", flush=True)
            if gap > 1e-9:
                print(f"{name}: DISAGREE: patched transformers and numpy float64 ({gap:.3g})", flush=True)
                record["numpy_logprobs"] = [[float(v) for v in x] for x in np_lp]
            record["source"] = f"{version}, float64, RoPE and RMSNorm patched to float64, SDPA"
            record["numpy_max_abs_diff"] = float(gap)
            record["unpatched_transformers_max_abs_diff"] = float(raw_gap)
            lps = hf_lp
        else:
            record["source"] = "tools/reference_forward.py (numpy float64)"
            lps = np_lp
        allv = np.concatenate([x for x in lps if len(x)])
        record["logprob_mean"], record["logprob_std"] = float(allv.mean()), float(allv.std())
        for toks, lp in zip(docs, lps):
            record["documents"].append({"tokens": toks, "logprobs": [float(v) for v in lp]})
        g_prompt = docs[-1][:GREEDY_PROMPT_LEN]
        g_out, g_margin = ref.greedy(cfg, W, g_prompt, GREEDY_STEPS)
        record["greedy"] = {"prompt": g_prompt, "tokens": g_out, "margins": g_margin}
        with open(os.path.join(d, "reference.json"), "w") as f:
            json.dump(record, f, indent=1)
        print(f"{name}: logprob mean {allv.mean():.3f} std {allv.std():.3f}, "
              f"min greedy margin {min(g_margin):.3g}", flush=True)

    if args.tar:
        with tarfile.open(args.tar, "w:gz") as tf:
            tf.add(args.out_dir, arcname="models")
        print(f"wrote {args.tar}", flush=True)


if __name__ == "__main__":
    main()
