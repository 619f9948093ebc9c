#!/usr/bin/env bash
# --offload-residual (the prefill's residual stream in host memory between layers) under
# mpirun -np 1..4, documents whose lengths no rank count divides: score's logprobs and
# perplexities and run's tokens are bitwise those of the same command without it; plan
# counts it (x leaves the device's activations, two chunks of it join the scratch).
source "$(dirname "$0")/lib/common.bash"
R="$RINGINFER"
MODEL="$SOURCE_DIR/tests/fixtures/models/llama3-gqa"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1  # up to 4 ranks on 2 cores
python3 -c "import h5py, numpy" 2>/dev/null || { echo "FAIL: h5py missing: run tools/install-deps.sh"; exit 1; }
"$TESTBIN/make_test_shard" valid "$WORK/in.h5" --lengths 1,2,5,13,349,61 --vocab 300 --seed 9 > /dev/null \
  || { fail "make_test_shard"; finish; exit 1; }

# Every named dataset of two output files, byte for byte.
same_bytes() { python3 - "$@" <<'PY'
import sys, h5py
a, b, names = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r"), sys.argv[3:]
for n in names:
    x, y = a[n][()], b[n][()]
    assert x.dtype == y.dtype and x.shape == y.shape, n
    assert (x.tolist() == y.tolist()) if x.dtype.kind == "O" else x.tobytes() == y.tobytes(), n  # strings: by value
PY
}

for np in 1 2 3 4; do
  for mode in plain offload; do
    flag=(); [[ $mode == offload ]] && flag=(--offload-residual)
    if timeout -k 5 120 $MPIRUN -np $np "$R" score -m "$MODEL" -i "$WORK/in.h5" -o "$WORK/score-$mode$np.h5" \
         --device cpu -q "${flag[@]}" > "$WORK/score-$mode$np.log" 2>&1 &&
       timeout -k 5 120 $MPIRUN -np $np "$R" run -m "$MODEL" -i "$WORK/in.h5" -o "$WORK/run-$mode$np.h5" \
         --device cpu -q --max-new-tokens 5 "${flag[@]}" > "$WORK/run-$mode$np.log" 2>&1; then
      pass "score and run -np $np ($mode)"
    else fail "score / run -np $np ($mode)"; tail -5 "$WORK/score-$mode$np.log" "$WORK/run-$mode$np.log"; fi
  done
  if same_bytes "$WORK/score-plain$np.h5" "$WORK/score-offload$np.h5" token_logprobs perplexity logprob_offsets doc_ids \
       2> "$WORK/cmp.err"; then pass "score -np $np: bitwise the same with --offload-residual"
  else fail "score -np $np differs with --offload-residual"; tail -3 "$WORK/cmp.err"; fi
  if same_bytes "$WORK/run-plain$np.h5" "$WORK/run-offload$np.h5" gen_tokens gen_offsets finish_reason \
       2> "$WORK/cmp.err"; then pass "run -np $np: bitwise the same tokens with --offload-residual"
  else fail "run -np $np differs with --offload-residual"; tail -3 "$WORK/cmp.err"; fi
done

# plan: 8B shape at 512K tokens on one rank, fp8 KV. Without it x is hidden x 4 = 16384 of
# the 45184 bytes per local token (x 16384, bf16 Q 8192, O 16384, LSE 128, the bf16 copy
# of an fp8 block 4096); with it 28800, and the scratch grows by two 256-token chunks of x
# (the engine's chunk: 2 x 256 x 4096 x 4 bytes = 0.008 GB; plan prints 0.01 GB steps, so
# the printed growth is 0.00-0.02 GB; the unit test MemoryPlan.OffloadedResidualLeavesTheDevice
# checks the bytes).
CONFIG="$SOURCE_DIR/tests/fixtures/configs/llama-3.1-8b.json"
plain=$("$R" plan --model "$CONFIG" --ranks 1 --context 524288 --kv-dtype fp8 2>&1)
off=$("$R" plan --model "$CONFIG" --ranks 1 --context 524288 --kv-dtype fp8 --offload-residual 2>&1)
if grep -q "(45184 bytes per local token)" <<<"$plain" && grep -q "(28800 bytes per local token)" <<<"$off"; then
  pass "plan --offload-residual: x leaves the per-token activations"
else fail "plan per-token activations"; grep activations <<<"$plain"; grep activations <<<"$off"; fi
scratch() { sed -n 's/^  scratch *\([0-9.]*\) GB.*/\1/p' <<<"$1"; }
if python3 -c "import sys; d=float(sys.argv[2])-float(sys.argv[1]); assert abs(d-0.008)<0.011, d" \
     "$(scratch "$plain")" "$(scratch "$off")"; then pass "plan --offload-residual: two chunks of x in the scratch"
else fail "plan scratch: $(scratch "$plain") -> $(scratch "$off")"; fi
finish
