# Sourced by this session's device scripts, from the repository root: unpacks the carried build
# (.carry-final/pack.tar.xz, tools/gpu-pack.sh) into /tmp/pack and defines
#   step NAME LIMIT CMD...  runs CMD within LIMIT seconds and what is left of DL (default 560),
#                           its output in $OUT/NAME.log, and prints its exit status and time;
#   summ JSON               the peaks, model and job lines of a bench_model JSON, one line each.
DL=${DL:-560}
SECONDS=0
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/pack
tar -xJf .carry-final/pack.tar.xz -C /tmp/pack && source /tmp/pack/env.sh
export HDF5_USE_FILE_LOCKING=FALSE NCCL_NVLS_ENABLE=0
B=/tmp/pack/bin
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader
step() {
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
    if d.get("kind") == "model" and "error" in d: print("  ctx %d error: %s" % (d["context"], d["error"]))
    elif d.get("kind") == "model":
        print("  ctx %d %s kv %s graph %s steps %s: decode %.2f tok/s (%.3f of copy) prefill %.4f s (min %.4f) "
              "%.1f TFLOP/s peak/plan %s" % (
            d["context"], d.get("attention"), d.get("kv_dtype"), d.get("decode_graph"), d.get("graph_steps"),
            d["decode_tokens_per_s"], d["decode_fraction_of_copy_bw"], d["prefill_s"], d.get("prefill_s_min", 0),
            d["prefill_tflops"], d.get("peak_over_plan", "?")))
    if d.get("kind") == "job": print("  job", {k: v for k, v in d.items() if k != "kind"})
PY
}
