#!/usr/bin/env python3
"""Usage:
  bench_attention_peer.py --json PEER.json [--quick]   time PyTorch SDPA peers on this GPU
  bench_attention_peer.py --table OURS.json PEER.json  print ours vs peer, with ratios

The peer of bench_attention (tools/bench/bench_attention.cu), same shapes, bf16 random inputs:
  prefill: torch.nn.functional.scaled_dot_product_attention, is_causal=True, q [1,32,n,128],
           k/v [1,8,n,128], enable_gqa=True (falls back to repeat_interleave of K/V if a backend
           refuses; the JSON records which), backends FLASH_ATTENTION and CUDNN_ATTENTION.
           TFLOP/s counts 4 * n^2 * D * H / 2.
  decode:  one query token, 32 query heads over 8 KV heads: the 4 query heads of a KV group
           are passed as 4 query rows of that head (q [1,8,4,128], k/v [1,8,n_k,128], no mask),
           which is the same attention and reads each KV byte once. GB/s counts K+V bytes.
  copy:    torch copy_ of 2 GiB; GB/s counts bytes read + written.
Times: CUDA events, median of repeats after warm-up.
"""
import argparse
import json
import sys


def median_ms(fn, warmup, reps):
    import torch
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def run_peer(out_path, quick):
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    rows = []

    def emit(row):
        print(json.dumps(row), flush=True)
        rows.append(row)

    dev = torch.cuda.get_device_properties(0)
    emit({"kind": "device", "name": dev.name, "torch": torch.__version__,
          "cudnn": torch.backends.cudnn.version()})

    nbytes = 2 << 30
    src = torch.ones(nbytes // 2, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), 3, 20)
    emit({"kind": "copy", "bytes": nbytes, "ms": ms, "gbps": 2 * nbytes / ms / 1e6})
    del src, dst

    backends = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]
    H, Hkv, D = 32, 8, 128
    for n in ([8192] if quick else [8192, 32768, 131072]):
        g = torch.Generator(device="cuda").manual_seed(n)
        q = torch.randn(1, H, n, D, device="cuda", dtype=torch.bfloat16, generator=g)
        k = torch.randn(1, Hkv, n, D, device="cuda", dtype=torch.bfloat16, generator=g)
        v = torch.randn(1, Hkv, n, D, device="cuda", dtype=torch.bfloat16, generator=g)
        reps = 3 if n >= 131072 else 10 if n >= 32768 else 30
        for name, backend in backends:
            for gqa in ("enable_gqa", "repeat_interleave"):
                try:
                    if gqa == "enable_gqa":
                        fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                    else:
                        kr, vr = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
                        fn = lambda: F.scaled_dot_product_attention(q, kr, vr, is_causal=True)
                    with sdpa_kernel([backend]):
                        ms = median_ms(fn, 1, reps)
                    emit({"kind": "prefill", "peer": name, "gqa": gqa, "n": n, "H": H, "Hkv": Hkv, "D": D,
                          "ms": ms, "tflops": 4.0 * n * n * D * H / 2 / ms / 1e9})
                    break
                except Exception as e:  # a backend that refuses this shape/option
                    emit({"kind": "prefill", "peer": name, "gqa": gqa, "n": n, "error": str(e)[:200]})
        del q, k, v
        torch.cuda.empty_cache()

    for n_k in ([131072] if quick else [131072, 1048576]):
        g = torch.Generator(device="cuda").manual_seed(n_k)
        q = torch.randn(1, Hkv, H // Hkv, D, device="cuda", dtype=torch.bfloat16, generator=g)
        k = torch.randn(1, Hkv, n_k, D, device="cuda", dtype=torch.bfloat16, generator=g)
        v = torch.randn(1, Hkv, n_k, D, device="cuda", dtype=torch.bfloat16, generator=g)
        for name, backend in backends:
            try:
                with sdpa_kernel([backend]):
                    ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v), 5, 50)
                emit({"kind": "decode", "peer": name, "n_k": n_k, "H": H, "Hkv": Hkv, "D": D, "ms": ms,
                      "gbps": 2.0 * n_k * Hkv * D * 2 / ms / 1e6})
            except Exception as e:
                emit({"kind": "decode", "peer": name, "n_k": n_k, "error": str(e)[:200]})
        del q, k, v
        torch.cuda.empty_cache()

    with open(out_path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def table(ours_path, peer_path):
    ours, peer = load(ours_path), load(peer_path)
    dev = next((r["name"] for r in ours if r["kind"] == "device"), "?")
    print(f"device: {dev}")
    copy = next((r for r in ours if r["kind"] == "copy"), None)
    pcopy = next((r for r in peer if r["kind"] == "copy"), None)
    if copy:
        print(f"copy bandwidth (read+write): ours cudaMemcpy {copy['gbps']:.0f} GB/s"
              + (f", torch copy_ {pcopy['gbps']:.0f} GB/s" if pcopy else ""))
    print(f"{'shape':<34} {'ours ms':>9} {'ours':>12} {'peer':>24} {'peer ms':>9} {'ratio':>6}")
    for n in sorted({r["n"] for r in ours if r["kind"] == "prefill"}):
        best = min((r for r in ours if r["kind"] == "prefill" and r["n"] == n), key=lambda r: r["ms"])
        for r in ours:
            if r["kind"] == "prefill" and r["n"] == n:
                tag = "*" if r is best else " "
                print(f"prefill causal n={n:<7} v{r['variant']}{tag}{'':<10} {r['ms']:9.3f} {r['tflops']:8.1f} TF/s")
        for p in peer:
            if p["kind"] == "prefill" and p.get("n") == n and "ms" in p:
                print(f"{'':<34} {'':>9} {'':>12} {p['peer'] + ' ' + p['gqa']:>16} {p['tflops']:5.0f}TF"
                      f" {p['ms']:9.3f} {p['ms'] / best['ms']:6.2f}")
    for n_k in sorted({r["n_k"] for r in ours if r["kind"] == "decode"}):
        best = min((r for r in ours if r["kind"] == "decode" and r["n_k"] == n_k), key=lambda r: r["ms"])
        for r in ours:
            if r["kind"] == "decode" and r["n_k"] == n_k:
                tag = "*" if r is best else " "
                frac = f" {100 * r['gbps'] / copy['gbps']:.0f}%copy" if copy else ""
                print(f"decode n_k={n_k:<8} v{r['variant']}{tag} s={r['splits']:<4}{'':<5} {r['ms']:9.3f} "
                      f"{r['gbps']:6.0f} GB/s{frac}")
        for p in peer:
            if p["kind"] == "decode" and p.get("n_k") == n_k and "ms" in p:
                print(f"{'':<34} {'':>9} {'':>12} {p['peer']:>14} {p['gbps']:5.0f}GB/s {p['ms']:9.3f}"
                      f" {p['ms'] / best['ms']:6.2f}")
    print("ratio = peer ms / our best ms (> 1: ours faster); * = our best variant")
    paths = [r for r in ours if r["kind"] == "path" and "ms" in r]
    if paths:
        print()
        print("the backend's attention op (fp32 Q in, merged into fp32 (O, LSE), what the engine calls) per "
              "--attention path,\nbeside PyTorch SDPA on the cuDNN backend; ratio = torch cuDNN ms / ours ms "
              "(>= 1: at or above cuDNN)")
        print(f"{'path':<8} {'n':>7} {'chunk':>7} {'ms':>9} {'TF/s':>7} {'first ms':>9} {'plans':>6} "
              f"{'torch cudnn ms':>15} {'ratio':>6}")
        for r in paths:
            peer_ms = min((p["ms"] for p in peer if p["kind"] == "prefill" and p.get("n") == r["n"]
                           and p.get("peer") == "cudnn" and "ms" in p), default=None)
            ratio = f"{peer_ms / r['ms']:6.2f}" if peer_ms else "   n/a"
            pm = f"{peer_ms:15.3f}" if peer_ms else f"{'n/a':>15}"
            print(f"{r['path']:<8} {r['n']:>7} {r['chunk']:>7} {r['ms']:9.3f} {r['tflops']:7.1f} "
                  f"{r['first_ms']:9.1f} {r['cudnn_plans']:>6} {pm} {ratio}")
    for r in ours:
        if r["kind"] == "path" and "error" in r:
            print(f"path {r['path']}: {r['error']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--table", nargs=2, metavar=("OURS", "PEER"))
    a = ap.parse_args()
    if a.table:
        table(*a.table)
    elif a.json:
        run_peer(a.json, a.quick)
    else:
        ap.error("give --json or --table")


if __name__ == "__main__":
    sys.exit(main())
