#!/usr/bin/env bash
# Session 12, device call 2: every GPU test (tools/gpu-check.sh: the graph tests, the bitwise test of the
# prefill's bf16 hand-offs, run --max-batch 1/3/8), then 128K with and without graphs and the 32-document
# job with graphs. Run from the repository root: DL=560 bash docs/bench/2026-12-07-h100-session12/s12b.sh
set -u
source "$(dirname "$0")/lib.sh"
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
