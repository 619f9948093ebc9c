#!/usr/bin/env bash
# Session 12, device call 1: graph tests, decode G/N at 8K/32K, fp8 decode kernels (+ D=64) and ncu.
set -u
source "$(dirname "$0")/lib.sh"
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
