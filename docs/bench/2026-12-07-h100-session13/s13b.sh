#!/usr/bin/env bash
# Session 13, a short device call (~300 s): first the correctness of what has not run on a GPU
# (flash variants 6/7, the decode combine kernel incl. more splits than head_dim, head-major fp8
# scales, --attention auto's one-rank cuDNN rule and the engine under it against native), then the combine kernel's
# rate, the flash variants' rates, and auto (cuDNN at 32K+ on one rank) against native in the
# 8B-shape prefill. DL=300 bash docs/bench/2026-12-07-h100-session13/s13b.sh
set -u
source "$(dirname "$0")/../2026-12-07-h100-session12/lib.sh"
step flash_tests 40 $B/tests/gpu_test_flash_attention --gtest_brief=1
grep -E "FAILED|Failure|PASSED" "$OUT/flash_tests.log" | head -6
step decode_tests 50 $B/tests/gpu_test_decode_attention --gtest_brief=1 --gtest_filter='*ForcedSplit*:*Fp8ScalesHeadMajor*:*Batch*:*NoKeys*:*LongCache*'
grep -E "FAILED|Failure|PASSED|splits=200|splits=90" "$OUT/decode_tests.log" | head -6
step paths_tests 40 $B/tests/gpu_test_attention_paths --gtest_brief=1
grep -E "FAILED|Failure|PASSED" "$OUT/paths_tests.log" | head -6
step auto_tests 60 $B/tests/gpu_test_query_dtype_offload --gtest_brief=1 --gtest_filter='AutoAttention*'
grep -E "FAILED|Failure|PASSED|measured" "$OUT/auto_tests.log" | cut -c1-200 | head -6
step attn 30 $B/bench_attention --decode-only 131072 --json "$OUT/attn.json"
grep -E '"decode"|"decode_fp8"' "$OUT/attn.json" | cut -c1-210
step flash_rates 60 $B/bench_attention --prefill-only 8192,32768,131072 --json "$OUT/flash_rates.json"
grep -h '"prefill' "$OUT/flash_rates.json" | cut -c1-170
for r in auto native; do
  step prefill_$r 75 $B/bench_model --contexts 32768,131072 --decode 4 --matmul-rows "" --attention $r --json "$OUT/prefill_$r.json"
  summ "$OUT/prefill_$r.json"
done
tar -czf "$OUT/raw.tgz" -C "$OUT" $(cd "$OUT" && ls) && find "$OUT" -type f ! -name raw.tgz -delete
echo "done at ${SECONDS}s"
