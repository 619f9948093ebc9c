#!/usr/bin/env python3
"""Float64 per-token logprobs of a GGUF model from transformers, as a test fixture.

Usage: tools/gguf-reference.py [--ids IDS.json] MODEL.gguf OUT.json TEXT_FILE[:MAX_CHARS] ...

transformers loads the GGUF itself (the `gguf` PyPI package dequantizes it), tokenizes
each text with the GGUF's own tokenizer (no special tokens added), and scores it in
float64 with RoPE and RMSNorm patched to float64 (tools/hf_float64.py); it also records
plain float32 transformers for scale. tests/e2e/gguf_reference.sh checks `ringinfer
score` against the file. Runs where torch and transformers are (the GPU machine); uses
the GPU when there is one.

--ids: token ids to score instead (a list per text, e.g. from Hugging Face `tokenizers`
with the model's own tokenizer.json). transformers' GGUF tokenizer drops pre-tokenizer
steps some models have (SmolLM2 splits digits one by one first); the record says
whether transformers' own ids agreed.
"""
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_float64  # noqa: E402
import reference_forward as ref  # noqa: E402


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def rope_config(cfg):
    """The config keys reference_forward.inv_freq_f64 reads, from transformers 4 or 5 style."""
    rp = cfg.get("rope_parameters") or {}
    theta = cfg.get("rope_theta") or rp.get("rope_theta") or 10000.0
    scaling = cfg.get("rope_scaling") or ({k: v for k, v in rp.items() if k != "rope_theta"} if rp else None)
    if scaling and scaling.get("rope_type", scaling.get("type")) == "default":
        scaling = None
    return {"head_dim": cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"],
            "hidden_size": cfg["hidden_size"], "num_attention_heads": cfg["num_attention_heads"],
            "max_position_embeddings": cfg.get("max_position_embeddings"),
            "rope_theta": theta, "rope_scaling": scaling}


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = sys.argv[1:]
    given_ids = None
    if args[:1] == ["--ids"]:
        with open(args[1]) as f:
            given_ids = json.load(f)
        args = args[2:]
    path, out_path, texts = args[0], args[1], args[2:]
    if given_ids is not None and len(given_ids) != len(texts):
        sys.exit(f"--ids has {len(given_ids)} lists for {len(texts)} texts")
    folder, name = os.path.split(os.path.abspath(path))
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    docs = []
    for i, spec in enumerate(texts):
        file, _, limit = spec.partition(":")
        with open(file, encoding="utf-8") as f:
            text = f.read()
        if limit:
            text = text[: int(limit)]
        ids = tok(text, add_special_tokens=False)["input_ids"]
        d = {"file": os.path.basename(file), "chars": len(text), "tokens": ids}
        if given_ids is not None:
            d["tokens"] = given_ids[i]
            d["transformers_tokenizer_agrees"] = ids == given_ids[i]
            if ids != given_ids[i]:
                print(f"{file}: transformers' GGUF tokenizer gives {len(ids)} tokens, --ids {len(given_ids[i])}")
        docs.append(d)

    def logprobs(model):
        out = []
        with torch.no_grad():
            for d in docs:
                ids = torch.tensor([d["tokens"]], dtype=torch.long, device=dev)
                lg = model(input_ids=ids).logits[0].to(torch.float64)
                lp = torch.log_softmax(lg, dim=-1)
                out.append(lp[torch.arange(ids.shape[1] - 1, device=dev), ids[0, 1:]].cpu().tolist())
        return out

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    model = model.to(dev).eval()
    lp32 = logprobs(model)
    cfg = model.config.to_dict()
    model = model.to(torch.float64)
    rc = rope_config(cfg)
    hf_float64.patch_float64(model, ref.inv_freq_f64(rc), path, ref.attention_factor_of(rc))
    lp64 = logprobs(model)
    gap32 = max(max(abs(a - b) for a, b in zip(x, y)) for x, y in zip(lp32, lp64) if x)
    allv = [v for x in lp64 for v in x]
    mean = sum(allv) / len(allv)
    std = (sum((v - mean) ** 2 for v in allv) / len(allv)) ** 0.5
    record = {
        "model": name, "sha256": sha256(path),
        "source": f"transformers {transformers.__version__} loading the GGUF (gguf package), torch "
                  f"{torch.__version__} on {dev}, float64, RoPE and RMSNorm patched to float64",
        "float32_transformers_max_abs_diff": gap32, "logprob_mean": mean, "logprob_std": std,
        "documents": [dict(d, logprobs=lp) for d, lp in zip(docs, lp64)],
    }
    with open(out_path, "w") as f:
        json.dump(record, f)
    print(f"{name}: {len(docs)} documents, {[len(d['tokens']) for d in docs]} tokens; logprob mean {mean:.3f} "
          f"std {std:.3f}; float32 transformers vs float64: max |diff| {gap32:.3g}")


if __name__ == "__main__":
    main()
