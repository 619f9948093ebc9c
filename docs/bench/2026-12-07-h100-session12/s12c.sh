#!/usr/bin/env bash
# Device call for issue 16 (prefill): the flash kernels' float64-reference tests (the pipelined wgmma
# variants 6 and 7 are new) and their rates alone at 8K/32K/128K (bench_attention --prefill-only);
# then the prefill of the 8B shape, this build (bench_model: the layer's bf16 hand-offs, 57e3542)
# against the build before them (bench_model_base, 84e57c9, carried in .carry-final/base.tar.xz),
# alternating on one machine; then the per-kernel profile of this build (ncu, 2 layers at 32K) that
# says where the rest of the layer's time goes.
# Run from the repository root: DL=560 bash docs/bench/2026-12-07-h100-session12/s12c.sh
set -u
source "$(dirname "$0")/lib.sh"
tar -xJf .carry-final/base.tar.xz -C /tmp/pack/bin  # bench_model_base
step flash_tests 90 $B/tests/gpu_test_flash_attention --gtest_brief=1
grep -E "FAILED|Failure|PASSED" "$OUT/flash_tests.log" | head -8
step flash_rates 150 $B/bench_attention --prefill-only 8192,32768,131072 --json "$OUT/flash_rates.json"
grep -h '"prefill' "$OUT/flash_rates.json" | cut -c1-160
for r in new1 base1 new2; do
  bin=$B/bench_model
  [[ $r == base* ]] && bin=$B/bench_model_base
  step prefill_$r 100 $bin --contexts 8192,32768 --decode 8 --matmul-rows "" --json "$OUT/prefill_$r.json"
  summ "$OUT/prefill_$r.json"
done
step ncu_prefill 200 ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base --print-kernel-base function \
  $B/bench_model --contexts 32768 --layers 2 --decode 2 --matmul-rows "" --json "$OUT/prefill_ncu.json"
python3 tools/ncu_kernel_times.py "$OUT/ncu_prefill.log" 40
# The pipelined flash kernel (variant 6) in the whole prefill, if time is left.
step prefill_v6 100 $B/bench_model --contexts 8192,32768 --decode 8 --matmul-rows "" --flash-variant 6 \
  --json "$OUT/prefill_v6.json"
summ "$OUT/prefill_v6.json"
echo "done at ${SECONDS}s"
