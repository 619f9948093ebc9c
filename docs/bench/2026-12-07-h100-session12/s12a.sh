#!/usr/bin/env bash
# Session 12, device call 1: graph tests, decode G/N at 8K/32K, fp8 decode kernels (+ D=64) and ncu.
set -u
DL=${DL:-560}
SECONDS=0
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/pack
tar -xJf .carry-final/pack.tar.xz -C /tmp/pack && source /tmp/pack/env.sh
export HDF5_USE_FILE_LOCKING=FALSE NCCL_NVLS_ENABLE=0
B=/tmp/pack/bin
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader
echo "unpacked at ${SECONDS}s"
step() {  # step NAME LIMIT CMD...
  local name=$1 lim=$2 l=$((DL - SECONDS))
  shift 2
  if [ $l -lt 20 ]; then echo "SKIP $name (budget)"; return; fi
  [ $lim -gt $l ] && lim=$l
  local t0=$SECONDS
  timeout $lim "$@" > "$OUT/$name.log" 2>&1
  echo "rc=$? $name $((SECONDS - t0))s (at ${SECONDS}s)"
}
summ() {  # decode lines of a bench_model JSON
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
step graphtests 120 $B/tests/gpu_test_cuda_backend --gtest_brief=1 --gtest_filter='*Record*:*DecodeGraph*'
grep -E "FAILED|Failure|PASSED|SKIPPED|error" "$OUT/graphtests.log" | head -12
for r in N1 G1 N2 G2; do
  f=""
  [[ $r == G* ]] && f=--decode-graph
  step model_$r 110 $B/bench_model --contexts 8192,32768 --decode 96 --matmul-rows "" $f --json "$OUT/model_$r.json"
  summ "$OUT/model_$r.json"
  grep -iE "warn|error" "$OUT/model_$r.log" | head -3
done
step attn 100 $B/bench_attention --decode-only 131072,1048576 --json "$OUT/attn.json"
grep -E '"decode' "$OUT/attn.json" | cut -c1-220
step ncu 150 ncu --clock-control none -k regex:decode_ -c 800 --csv --print-units base --print-kernel-base demangled --metrics \
  gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,lts__t_sectors_srcunit_tex_op_read.sum,lts__t_sector_hit_rate.pct \
  $B/bench_attention --decode-only 131072
python3 docs/bench/2026-12-07-h100-session12/ncu_sum.py "$OUT/ncu.log" > "$OUT/ncu_sum.txt" 2>&1
head -c 5000 "$OUT/ncu_sum.txt"
echo "done at ${SECONDS}s"
