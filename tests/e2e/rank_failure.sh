#!/usr/bin/env bash
# No hang on rank failure: one rank of `mpirun -np 3 ringinfer score` is killed (SIGKILL:
# a death) or frozen (SIGSTOP: a hang) mid-run. Every rank must be gone and mpirun must
# exit non-zero within --comm-timeout plus a margin; for the hang, the survivors' message
# names the timeout. Nothing may be left running, even when a check fails.
source "$(dirname "$0")/lib/common.bash"
R="$RINGINFER"
MODEL="$SOURCE_DIR/tests/fixtures/models/llama3-gqa"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1  # 3 ranks on 2 cores
TIMEOUT=5     # --comm-timeout, seconds
MARGIN=30     # time for the abort to spread and mpirun to reap every rank
cd "$WORK"
# Twelve documents of 3000 tokens (vocab 300 = the model's): about a second each.
"$TESTBIN/make_test_shard" valid in.h5 --lengths 3000,3000,3000,3000,3000,3000,3000,3000,3000,3000,3000,3000 \
  --vocab 300 --seed 17 >/dev/null || { fail "make_test_shard"; finish; exit 1; }

RANKS=()  # the ranks of the current job, killed at exit whatever happened
cleanup() {
  for pid in "${RANKS[@]}"; do kill -CONT "$pid" 2>/dev/null; kill -9 "$pid" 2>/dev/null; done
  [[ -n ${MPI_PID:-} ]] && kill -9 "$MPI_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

alive() {  # PIDs among the arguments that still run (zombies do not count)
  local pid state
  for pid in "$@"; do
    state=$(ps -o stat= -p "$pid" 2>/dev/null) || continue
    [[ $state == Z* ]] || echo "$pid"
  done
}

# failure_case NAME SIGNAL MESSAGE_REGEX
failure_case() {
  local name=$1 sig=$2 pattern=$3 out="$1.log"
  rm -f "$name.h5"*
  $MPIRUN -np 3 "$R" score -m "$MODEL" -i in.h5 -o "$name.h5" --device cpu --comm-timeout "$TIMEOUT" >"$out" 2>&1 &
  MPI_PID=$!
  # Mid-run: after the first document is done, with eleven to go.
  local i
  for i in $(seq 1 600); do grep -q "document doc0" "$out" 2>/dev/null && break; sleep 0.1; done
  mapfile -t RANKS < <(pgrep -P "$MPI_PID" -x ringinfer)
  if ((${#RANKS[@]} != 3)) || ! grep -q "document doc0" "$out"; then
    fail "$name: the job did not get going (${#RANKS[@]} ranks found)"; tail -5 "$out"; return
  fi
  local victim=${RANKS[1]} t0 t1 rc
  kill "-$sig" "$victim"
  t0=$(date +%s.%N)
  # Wait for mpirun, but never longer than the limit.
  local limit=$((TIMEOUT + MARGIN))
  for i in $(seq 1 $((limit * 10))); do kill -0 "$MPI_PID" 2>/dev/null || break; sleep 0.1; done
  t1=$(date +%s.%N)
  local took
  took=$(python3 -c "print(round($t1 - $t0, 1))")
  if kill -0 "$MPI_PID" 2>/dev/null; then
    fail "$name: mpirun still running ${limit} s after SIG$sig of rank PID $victim (hang)"; tail -5 "$out"
    return
  fi
  wait "$MPI_PID"; rc=$?
  MPI_PID=
  ((rc != 0)) && pass "$name: mpirun exited $rc, ${took} s after SIG$sig of one rank" ||
    { fail "$name: mpirun exited 0 after SIG$sig of one rank"; tail -5 "$out"; }
  # Let the ranks mpirun no longer waits for settle, then none may run.
  for i in $(seq 1 50); do [[ -z $(alive "${RANKS[@]}") ]] && break; sleep 0.1; done
  local left
  left=$(alive "${RANKS[@]}" | tr '\n' ' ')
  [[ -z $left ]] && pass "$name: no rank left running" || fail "$name: ranks still running: $left"
  if grep -Eq -- "$pattern" "$out"; then pass "$name: the message names the cause"
  else fail "$name: no line matches /$pattern/"; tail -8 "$out"; fi
  [[ -e $name.h5 ]] && fail "$name: an output was written by a failed job" || pass "$name: no output written"
  for pid in "${RANKS[@]}"; do kill -CONT "$pid" 2>/dev/null; kill -9 "$pid" 2>/dev/null; done
  RANKS=()
}

# A death: MPI (or the timeout) notices the missing rank.
failure_case killed KILL "signal 9|Killed|did not complete within $TIMEOUT s \(--comm-timeout\)"
# A hang: only the timeout can tell; the survivors must say so.
failure_case stopped STOP "did not complete within $TIMEOUT s \(--comm-timeout\): a rank has died or hangs"
finish
