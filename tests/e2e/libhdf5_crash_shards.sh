#!/usr/bin/env bash
# Shards that crash libhdf5 1.10 itself (tests/fuzz/libhdf5-crashes/), given to
# `mpirun -np 2 ringinfer run`: rank 0 validates them in a child process first, so the
# job ends with a one-line error naming the file and a non-zero exit, never a crash of a
# rank or a hang; no validation process is left behind. Also: the hidden subcommand the
# child runs is not in --help, and refuses to run without its arguments.
source "$(dirname "$0")/lib/common.bash"
NP2="$MPIRUN -np 2"  # word-split on purpose
MODEL="$SOURCE_DIR/tests/fixtures/models/llama3-gqa"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
cd "$WORK"
"$TESTBIN/make_test_shard" valid good.h5 --docs 3 --vocab 300 >/dev/null || fail "make_test_shard"

crash_inputs=("$SOURCE_DIR"/tests/fuzz/libhdf5-crashes/crash-* "$SOURCE_DIR"/tests/fuzz/libhdf5-crashes/oom-*)
((${#crash_inputs[@]} == 5)) || fail "expected 5 inputs in tests/fuzz/libhdf5-crashes, found ${#crash_inputs[@]}"

for src in "${crash_inputs[@]}"; do
  name=$(basename "$src")
  short=${name:0:10}
  cp "$src" "$name.h5"
  # The message must start with the crashing file's name (the good shard before it is
  # validated first and must not take the blame).
  expect_error "dry run, $short" 120 "(^|: )$name\.h5: " \
    $NP2 "$RINGINFER" run --dry-run -i good.h5 "$name.h5" -o out.h5
  [[ ! -e out.h5 ]] || fail "$short: an output was written"
done

# With a model (its vocabulary is checked too), the first crash input.
first=$(basename "${crash_inputs[0]}")
expect_error "with a model, ${first:0:10}" 180 "(^|: )$first\.h5: " \
  $NP2 "$RINGINFER" run --model "$MODEL" --device cpu -i "$first.h5" -o out.h5

# A division by zero inside libhdf5 is named as such (the a3d0 input, see the README).
expect_error "SIGFPE named" 120 "crash-a3d0fff0ad61428cae04276719a299ce2d52b4a7\.h5: libhdf5 crashed \(SIGFPE\) while validating this shard: the file is corrupt; re-create it with \`ringinfer prep\`" \
  $NP2 "$RINGINFER" run --dry-run -i crash-a3d0fff0ad61428cae04276719a299ce2d52b4a7.h5 -o out.h5

# No validation child outlives the job. Only this test's children count (their working
# folder is $WORK): tests running beside this one validate the same crash inputs.
sleep 1
left=""
for pid in $(pgrep -f -- "__check-shards" || true); do
  if [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$(pwd -P)" ]; then left="$left $pid"; fi
done
if [ -n "$left" ]; then
  fail "a validation process is still running (pid$left)"
else
  pass "no validation process left"
fi

# A good shard still runs (the check is not in the way).
if out=$(timeout -k 5 120 $NP2 "$RINGINFER" run --dry-run -i good.h5 -o ok.h5 2>&1) && [[ -e ok.h5 ]]; then
  pass "good shard runs"
else
  fail "good shard: $out"
fi

# Hidden subcommand: not advertised, and harmless without its arguments.
if "$RINGINFER" --help | grep -q -- "__check-shards"; then fail "--help lists __check-shards"; else pass "hidden from --help"; fi
"$RINGINFER" __check-shards >/dev/null 2>&1
rc=$?
((rc == 2)) && pass "__check-shards without arguments exits 2" || fail "__check-shards without arguments exited $rc"
finish
