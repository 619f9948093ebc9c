#!/usr/bin/env bash
# Session 13 device call: s12c's questions in a smaller budget (the flash kernels' float64 tests incl.
# the pipelined variants 6/7, their rates, prefill new vs 84e57c9 alternating, the per-kernel profile
# of a 32K layer) and the new decode combine kernel (its float64 tests incl. more splits than D, its
# rate at 131,072 keys). Every bench_model run is --attention native (auto gives one-rank 32K+ blocks to
# cuDNN since 452be61), so the question stays the layer's hand-offs and the native kernels.
# Run from the repository root with .carry-final carried:
#   DL=480 bash docs/bench/2026-12-07-h100-session13/s13a.sh
set -u
source "$(dirname "$0")/../2026-12-07-h100-session12/lib.sh"
tar -xJf .carry-final/base.tar.xz -C /tmp/pack/bin  # bench_model_base (84e57c9)
step flash_tests 60 $B/tests/gpu_test_flash_attention --gtest_brief=1
grep -E "FAILED|Failure|PASSED" "$OUT/flash_tests.log" | head -8
step decode_tests 60 $B/tests/gpu_test_decode_attention --gtest_brief=1 --gtest_filter='*ForcedSplit*:*Fp8CacheReadDirectly*:*Batch*:*NoKeys*:*LongCache*'
grep -E "FAILED|Failure|PASSED|splits=200|splits=90" "$OUT/decode_tests.log" | head -8
step attn 40 $B/bench_attention --decode-only 131072 --json "$OUT/attn.json"
grep -E '"decode' "$OUT/attn.json" | grep -E '"D":128' | cut -c1-200
step flash_rates 120 $B/bench_attention --prefill-only 8192,32768,131072 --json "$OUT/flash_rates.json"
grep -h '"prefill' "$OUT/flash_rates.json" | cut -c1-170
for r in new1 base1 new2; do
  bin=$B/bench_model
  [[ $r == base* ]] && bin=$B/bench_model_base
  step prefill_$r 70 $bin --contexts 8192,32768 --decode 8 --matmul-rows "" --attention native --json "$OUT/prefill_$r.json"
  summ "$OUT/prefill_$r.json"
done
step ncu_prefill 150 ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base --print-kernel-base function \
  $B/bench_model --contexts 32768 --layers 2 --decode 2 --matmul-rows "" --attention native --json "$OUT/prefill_ncu.json"
python3 tools/ncu_kernel_times.py "$OUT/ncu_prefill.log" 30
# Why fp8 decode streams slower than bf16: warp stalls and memory pipelines of bf16 variant 0 and fp8 variant 1.
step ncu_fp8 90 ncu --clock-control none --kernel-name-base demangled -k 'regex:decode_split_kernel<128, 4, (32, 2, 0|16, 4, 1), 0, 0>' -c 2 \
  --section WarpStateStats --section SchedulerStats --section Occupancy --section MemoryWorkloadAnalysis --section LaunchStats \
  $B/bench_attention --decode-only 131072
grep -E "decode_split_kernel|Stall|Warp Cycles|Issued Warp|Eligible|Active Warps|Achieved Occupancy|Registers|Mem Busy|Max Bandwidth|L1/TEX Hit|Mem Pipes" "$OUT/ncu_fp8.log" | cut -c1-150 | head -60
step prefill_v6 70 $B/bench_model --contexts 8192,32768 --decode 8 --matmul-rows "" --attention native --flash-variant 6 --json "$OUT/prefill_v6.json"
summ "$OUT/prefill_v6.json"
rm -f "$OUT"/ncu_prefill.log
tar -czf "$OUT/raw.tgz" -C "$OUT" $(cd "$OUT" && ls) && find "$OUT" -type f ! -name raw.tgz -delete
echo "done at ${SECONDS}s"
