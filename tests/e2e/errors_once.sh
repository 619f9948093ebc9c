#!/usr/bin/env bash
# A problem every rank finds is reported once: under `mpirun -np 2`, a bad model path, a
# corrupt (truncated) shard and a bad flag combination (--cp 3 on 2 ranks) each give
# exactly one error line, from rank 0, exit code 2, and none of Open MPI's abort text
# (MPI_ABORT banner, ORTE/PRTE error logs): the ranks agree and leave by MPI_Finalize.
source "$(dirname "$0")/lib/common.bash"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
MODEL="$SOURCE_DIR/tests/fixtures/models/llama3-gqa"
cd "$WORK"
"$TESTBIN/make_test_shard" valid in.h5 --lengths 40,30 --vocab 300 --seed 3 >/dev/null \
  || { fail "make_test_shard"; finish; exit 1; }
head -c 3000 in.h5 > corrupt.h5

# once NAME PATTERN ringinfer-arguments...
once() {
  local name=$1 pattern=$2; shift 2
  local out rc errors
  out=$(timeout -k 5 120 $MPIRUN -np 2 "$RINGINFER" "$@" 2>&1); rc=$?
  errors=$(grep -ci "error" <<<"$out")
  if ((rc != 2)); then fail "$name: exit $rc, expected 2"; echo "$out" | head -12; return; fi
  if ((errors != 1)); then fail "$name: $errors error lines, expected 1"; echo "$out" | head -12; return; fi
  if grep -Eq "MPI_ABORT|MPI_Abort|ORTE_ERROR_LOG|PRTE_ERROR_LOG|prterun|mpirun has exited|^\[rank 1\]" <<<"$out"; then
    fail "$name: launcher abort text or a second rank's line"; echo "$out" | head -12; return
  fi
  if ! grep -Eq -- "^\[rank 0\] error: .*$pattern" <<<"$out"; then fail "$name: message does not match /$pattern/"; echo "$out"; return; fi
  pass "$name: one line, exit 2"
}

once "bad model path" "no-such-model\.gguf: no such file" \
  run --device cpu -m "$WORK/no-such-model.gguf" -i in.h5 -o out1.h5
once "corrupt shard" "corrupt\.h5" run --device cpu -m "$MODEL" -i corrupt.h5 -o out2.h5
once "--cp 3 on 2 ranks" "--cp 3" score --device cpu -m "$MODEL" -i in.h5 -o out3.h5 --cp 3
finish
