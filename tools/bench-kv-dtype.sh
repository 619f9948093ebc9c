#!/usr/bin/env bash
# Usage: tools/bench-kv-dtype.sh [BUILD_DIR] [tests] [accuracy] [bandwidth] [longest]
# fp8 KV cache on ONE GPU (issue 17), from the repository root, with BUILD_DIR (default
# build) holding ringinfer, the gpu_test_* binaries, bench_attention and bench_model.
# Naming stages runs only those; the default is all four, in this order:
#   tests      the kernels and backend tests that cover fp8 (float64 references of the
#              dequantized inputs; bytes equal to the CPU's)
#   accuracy   `ringinfer score` of the SmolLM2 GGUF (models/, tools/fetch-demo-model.sh) on
#              the long sample document: cuda with --kv-dtype bf16 and fp8 against the CPU's
#              fp32 result, mean and max |dlogprob| (for docs/PERFORMANCE.md)
#   bandwidth  bench_attention --quick: the decode lines at 128K keys, bf16 ("decode") and
#              fp8 ("decode_fp8": GB/s over the fp8 bytes and scales read, and vs_bf16 = the
#              bf16 time over the fp8 time), against the device copy rate ("copy"); and the
#              8K prefill, bf16 ("prefill") and fp8 ("prefill_fp8": dequantize + flash)
#   longest    bench_model, Llama-3.1-8B shape, fp8 KV, one rank, at KV_CONTEXTS (default
#              "262144 524288 786432 1048576"); each line has peak_device_bytes, printed
#              beside `ringinfer plan`'s total for the same context; a context that does
#              not fit prints an error line and the next one runs
# Output: OUT (default out/bench-kv-dtype): logs, JSON lines and summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
build=build
stages=()
for a in "$@"; do
  case $a in
    tests|accuracy|bandwidth|longest) stages+=("$a") ;;
    *) build=$a ;;
  esac
done
[ ${#stages[@]} -eq 0 ] && stages=(tests accuracy bandwidth longest)
out=${OUT:-out/bench-kv-dtype}
mkdir -p "$out"
[ -d "$build/lib" ] && export LD_LIBRARY_PATH="$PWD/$build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
R="$build/ringinfer"
status=0
summary="$out/summary.txt"
: > "$summary"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$summary"

for stage in "${stages[@]}"; do
  case $stage in
  tests)
    for t in gpu_test_decode_attention gpu_test_flash_attention gpu_test_cuda_backend; do
      "$build/tests/$t" 2>&1 | tee "$out/$t.log" | grep -E "measured|FAILED|PASSED"
      rc=${PIPESTATUS[0]}
      echo "$t: exit $rc" | tee -a "$summary"
      [ "$rc" -eq 0 ] || status=1
    done
    ;;
  accuracy)
    model=models/SmolLM2-135M-Instruct-Q4_1.gguf
    "$R" prep --model "$model" --prompt-template inputs/summarize.txt inputs/long/gpl-3.0.txt \
      --output "$out/long.h5" > "$out/prep.log" 2>&1 || { echo "prep failed" | tee -a "$summary"; status=1; }
    for v in "cpu f32" "cuda bf16" "cuda fp8"; do
      read -r dev kv <<<"$v"
      "$R" score --model "$model" --input "$out/long.h5" --output "$out/score-$dev-$kv.h5" --device "$dev" \
        --kv-dtype "$kv" -q > "$out/score-$dev-$kv.log" 2>&1 &&
        "$R" dump "$out/score-$dev-$kv.h5" --jsonl --logprobs > "$out/score-$dev-$kv.jsonl" ||
        { echo "score $dev $kv failed" | tee -a "$summary"; status=1; }
    done
    for kv in bf16 fp8; do
      python3 - "$out/score-cpu-f32.jsonl" "$out/score-cuda-$kv.jsonl" "$kv" <<'EOF' | tee -a "$summary" || status=1
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
d = [abs(x - y) for p, q in zip(a, b) for x, y in zip(p["logprobs"], q["logprobs"])]
print(f"SmolLM2 Q4_1 score, cuda --kv-dtype {sys.argv[3]} vs cpu fp32: mean |dlogprob| {sum(d) / len(d):.4g}, "
      f"max {max(d):.4g} over {len(d)} tokens")
EOF
    done
    ;;
  bandwidth)
    "$build/bench_attention" --quick --json "$out/attention.json" > "$out/attention.log" 2>&1 || status=1
    grep -E '"kind":"(copy|decode|decode_fp8|prefill|prefill_fp8)"' "$out/attention.json" | tee -a "$summary"
    ;;
  longest)
    for S in ${KV_CONTEXTS:-262144 524288 786432 1048576}; do
      "$build/bench_model" --kv-dtype fp8 --contexts "$S" --decode 16 --json "$out/longest.json" \
        > "$out/longest-$S.log" 2>&1 || status=1
      mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
      "$R" plan --model tests/fixtures/configs/llama-3.1-8b.json --context "$S" --ranks 1 --kv-dtype fp8 \
        --gpu-memory "$(python3 -c "print(${mib:-81559} * 1048576 / 1e9)")" > "$out/plan-$S.txt" 2>&1
      echo "context $S: $(grep -h "\"context\":$S" "$out/longest.json" | tail -1)" | tee -a "$summary"
      echo "  plan: $(grep -h "total" "$out/plan-$S.txt")" | tee -a "$summary"
    done
    ;;
  esac
done
echo "summary in $summary"
exit $status
