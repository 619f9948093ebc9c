#!/usr/bin/env bash
# Session 12, device call 2: every GPU test (tools/gpu-check.sh: the graph tests, the bitwise test of the
# prefill's bf16 hand-offs, run --max-batch 1/3/8), then 128K with and without graphs and the 32-document
# job with graphs. Run from the repository root: DL=560 bash docs/bench/2026-12-07-h100-session12/s12b.sh
set -u
DL=${DL:-560}
SECONDS=0
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/pack
tar -xJf .carry-final/pack.tar.xz -C /tmp/pack && source /tmp/pack/env.sh
export HDF5_USE_FILE_LOCKING=FALSE NCCL_NVLS_ENABLE=0
B=/tmp/pack/bin
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
step() {  # step NAME LIMIT CMD...
  local name=$1 lim=$2 l=$((DL - SECONDS))
  shift 2
  if [ $l -lt 20 ]; then echo "SKIP $name (budget)"; return; fi
  [ $lim -gt $l ] && lim=$l
  local t0=$SECONDS
  timeout $lim "$@" > "$OUT/$name.log" 2>&1
  echo "rc=$? $name $((SECONDS - t0))s (at ${SECONDS}s)"
}
summ() {
  python3 - "$1" << 'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    if d.get("kind") == "peaks": print("  peaks gemm %.1f copy %d" % (d["gemm_bf16_tflops"], d["copy_gbps"]))
    if d.get("kind") == "model":
        print("  ctx %d kv %s graph %s steps %s: decode %.2f tok/s (%.3f of copy) prefill %.3f s peak/plan %s" % (
            d["context"], d.get("kv_dtype"), d.get("decode_graph"), d.get("graph_steps"), d["decode_tokens_per_s"],
            d["decode_fraction_of_copy_bw"], d["prefill_s"], d.get("peak_over_plan", "?")))
    if d.get("kind") == "job": print("  job", {k: v for k, v in d.items() if k != "kind"})
PY
}
OUT=$OUT/check tools/gpu-check.sh .carry-final/pack.tar.xz ${CHECK_S:-330}
source /tmp/pack/env.sh  # gpu-check unpacked the pack again
for r in ${RUNS:-G128 N128}; do
  f=""
  [[ $r == G* ]] && f=--decode-graph
  step model_$r 90 $B/bench_model --contexts 131072 --decode 32 --matmul-rows "" $f --json "$OUT/model_$r.json"
  summ "$OUT/model_$r.json"
done
step jobG 150 $B/bench_model --contexts "" --job 32 --decode-graph --matmul-rows "" --json "$OUT/jobG.json"
summ "$OUT/jobG.json"
echo "done at ${SECONDS}s"
