#!/usr/bin/env python3
"""Usage: tools/plot.py [--out DIR] [--tag TAG] [--title TEXT] RUN_DIR|FILE.json ...

Turns benchmark JSON lines into PNG figures (matplotlib):
  attention-prefill[-TAG].png   causal prefill TFLOP/s vs context length: ours (best variant
                                per length, the others faint) vs PyTorch SDPA flash and cuDNN
  attention-decode[-TAG].png    decode GB/s vs keys: ours (best of the variants and the split
                                sweep) vs flash and cuDNN, against the device copy bandwidth
  ring-scaling[-TAG].png        1 -> N GPU ring prefill: speedup and parallel efficiency per
                                context length (only when "scaling" rows exist)

Inputs are the files tools/bench-attention.sh writes to $OUT (ours.json from bench_attention,
peer.json from tools/bench_attention_peer.py; a RUN_DIR means every *.json in it, and its
device.txt when present, for the date). One JSON object per line, by "kind":
  device   {"name": ...}                      copy    {"gbps": ...} (read + written)
  prefill  {"n", "tflops", "ms", "variant"} (ours) or {"n", "tflops", "ms", "peer": "flash"|"cudnn"}
  decode   {"n_k", "gbps", "ms", "variant"|"peer"}   decode_sweep  {"n_k", "gbps", "splits"} (ours)
  scaling  {"gpus", "n", "ms"} (one ring prefill of n tokens on `gpus` GPUs; "layers" optional)
Figures whose rows are absent are skipped with a message. Example:
  tools/plot.py --out docs/figures --tag h100 docs/bench/2026-11-23-h100
"""
import argparse
import json
import os
import sys
from collections import defaultdict


def load_rows(paths):
    rows, dates = [], []
    for p in paths:
        files = sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith(".json")) if os.path.isdir(p) else [p]
        if os.path.isdir(p) and os.path.exists(os.path.join(p, "device.txt")):
            with open(os.path.join(p, "device.txt")) as f:
                first = f.readline().strip()
                if first[:4].isdigit():
                    dates.append(first[:10])
        for path in files:
            with open(path) as f:
                for k, line in enumerate(f, 1):
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        sys.exit(f"{path}:{k}: not a JSON line ({e.msg})")
                    if not isinstance(row, dict) or "kind" not in row:
                        sys.exit(f'{path}:{k}: expected an object with a "kind" field')
                    rows.append(row)
    if not rows:
        sys.exit("no benchmark rows found in " + " ".join(paths))
    return rows, sorted(set(dates))


def tokens_label(n):
    return f"{n >> 20}M" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n >> 10}K" if n % 1024 == 0 else str(n)


def title_of(rows, dates, what, override):
    if override:
        return f"{what}: {override}"
    dev = next((r["name"] for r in rows if r["kind"] == "device" and "name" in r), "unknown device")
    return f"{what}\n{dev}" + (f", {', '.join(dates)}" if dates else "")


PEER_STYLE = {"flash": ("PyTorch SDPA flash", "tab:orange", "s"), "cudnn": ("PyTorch SDPA cuDNN", "tab:green", "^")}


def best_per_x(rows, x, y):
    """The distinct r[x], sorted, and for each the first row with the largest r[y]."""
    by_x = defaultdict(list)
    for r in rows:
        by_x[r[x]].append(r)
    xs = sorted(by_x)
    return xs, [max(by_x[n], key=lambda r: r[y]) for n in xs]


def plot_peers(ax, peers, x, y):
    """One line per peer ("flash", "cudnn", ...), points (r[x], r[y]) sorted by x."""
    for name in sorted({r["peer"] for r in peers}):
        pts = sorted((r[x], r[y]) for r in peers if r["peer"] == name)
        label, color, marker = PEER_STYLE.get(name, (name, None, "x"))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, ls="-", color=color, label=label)


def finish_token_axis_figure(plt, fig, ax, ns, xlabel, ylabel, title, legend_loc, out):
    """Log-2 x axis ticked at the token counts ns, y from 0; labels, grid and legend; saves to out."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [tokens_label(n) for n in ns])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc=legend_loc)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_prefill(plt, rows, out, title):
    ours = [r for r in rows if r["kind"] == "prefill" and "peer" not in r and "tflops" in r]
    peers = [r for r in rows if r["kind"] == "prefill" and "peer" in r and "tflops" in r]
    if not ours and not peers:
        print("skip prefill figure: no prefill rows")
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if ours:
        ns, best = best_per_x(ours, "n", "tflops")
        variants = sorted({r.get("variant", 0) for r in ours})
        for v in variants:
            pts = sorted((r["n"], r["tflops"]) for r in ours if r.get("variant", 0) == v)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color="tab:blue", alpha=0.25, lw=1,
                    label="ours, other variants" if v == variants[0] and len(variants) > 1 else None)
        ax.plot(ns, [r["tflops"] for r in best], "o-", color="tab:blue", lw=2, label="ours (best variant)")
    plot_peers(ax, peers, "n", "tflops")
    return finish_token_axis_figure(plt, fig, ax, sorted({r["n"] for r in ours + peers}),
                                    "context length (tokens), one sequence, causal",
                                    "TFLOP/s (4 n² D H / 2 per forward)", title, "lower right", out)


def plot_decode(plt, rows, out, title):
    ours = [r for r in rows if r["kind"] in ("decode", "decode_sweep") and "peer" not in r and "gbps" in r]
    peers = [r for r in rows if r["kind"] == "decode" and "peer" in r and "gbps" in r]
    if not ours and not peers:
        print("skip decode figure: no decode rows")
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if ours:
        ns, best = best_per_x(ours, "n_k", "gbps")
        ax.plot(ns, [r["gbps"] for r in best], "o-", color="tab:blue", lw=2, label="ours (best split count)")
        for n, r in zip(ns, best):
            if "splits" in r:
                ax.annotate(f"{r['splits']} splits", (n, r["gbps"]), textcoords="offset points", xytext=(0, -14), ha="center",
                            fontsize=7, color="tab:blue")
    plot_peers(ax, peers, "n_k", "gbps")
    copies = [r for r in rows if r["kind"] == "copy" and "gbps" in r]
    if copies:
        # ours (cudaMemcpy) first when both are there: the figure PERFORMANCE.md quotes
        copy = next((r for r in copies if "peer" not in r), copies[0])
        ax.axhline(copy["gbps"], color="gray", ls="--", lw=1,
                   label=f"device copy, read + write ({copy['gbps']:.0f} GB/s)")
    return finish_token_axis_figure(plt, fig, ax, sorted({r["n_k"] for r in ours + peers}),
                                    "keys per query (one token, GQA 32/8, D 128)", "GB/s of K and V read", title,
                                    "center right", out)


def plot_scaling(plt, rows, out, title):
    sc = [r for r in rows if r["kind"] == "scaling" and "ms" in r and "gpus" in r and "n" in r]
    if not sc:
        print("skip scaling figure: no 'scaling' rows (1 -> N GPU ring benchmark not run yet)")
        return None
    by_n = defaultdict(dict)
    for r in sc:
        prev = by_n[r["n"]].get(r["gpus"])
        if prev is None or r["ms"] < prev:
            by_n[r["n"]][r["gpus"]] = r["ms"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.6, 4.0))
    gmax = max(r["gpus"] for r in sc)
    for n in sorted(by_n):
        t = by_n[n]
        if 1 not in t:
            print(f"scaling: n={n} has no 1-GPU time; left out")
            continue
        gs = sorted(t)
        a1.plot(gs, [t[1] / t[g] for g in gs], "o-", label=f"{tokens_label(n)} tokens")
        a2.plot(gs, [100 * t[1] / t[g] / g for g in gs], "o-", label=f"{tokens_label(n)} tokens")
    a1.plot([1, gmax], [1, gmax], color="gray", ls="--", lw=1, label="ideal")
    a2.axhline(100, color="gray", ls="--", lw=1)
    a2.axhline(95, color="tab:red", ls=":", lw=1, label="95% (DESIGN §8 target at 2 GPUs)")
    for ax, yl in ((a1, "speedup over 1 GPU"), (a2, "parallel efficiency (%)")):
        ax.set_xlabel("GPUs in the ring")
        ax.set_ylabel(yl)
        ax.set_xticks(sorted({r["gpus"] for r in sc}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    a2.set_ylim(0, 110)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", help="run folders (every *.json in them) or JSON-lines files")
    ap.add_argument("--out", default="out/figures", help="folder for the PNGs (default out/figures)")
    ap.add_argument("--tag", default="", help="suffix of the file names, e.g. the device (h100)")
    ap.add_argument("--title", default="", help="replaces the device and date in the titles")
    a = ap.parse_args()
    for p in a.inputs:
        if not os.path.exists(p):
            ap.error(f"{p}: no such file or folder")
    try:
        import matplotlib
    except ImportError:
        sys.exit("tools/plot.py needs matplotlib: pip install matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, dates = load_rows(a.inputs)
    os.makedirs(a.out, exist_ok=True)
    suffix = f"-{a.tag}" if a.tag else ""
    made = [
        plot_prefill(plt, rows, os.path.join(a.out, f"attention-prefill{suffix}.png"),
                     title_of(rows, dates, "Causal prefill attention, 32 heads / 8 KV heads x 128, bf16", a.title)),
        plot_decode(plt, rows, os.path.join(a.out, f"attention-decode{suffix}.png"),
                    title_of(rows, dates, "Decode attention, one query token, bf16 KV", a.title)),
        plot_scaling(plt, rows, os.path.join(a.out, f"ring-scaling{suffix}.png"),
                     title_of(rows, dates, "Ring prefill, 1 -> N GPUs", a.title)),
    ]
    for m in made:
        if m:
            print("wrote", m)
    return 0 if any(made) else 1


if __name__ == "__main__":
    sys.exit(main())
