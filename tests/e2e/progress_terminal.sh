#!/usr/bin/env bash
# Progress under mpirun: when the person's terminal is a terminal (here a pty from
# `script`), rank 0 draws the bar although its own stderr is mpirun's pipe; every rank's
# log line starts by clearing the bar's line ("\r\033[K"), so none runs on after a
# half-drawn bar. Through a plain pipe the same job writes JSON lines and no escapes.
source "$(dirname "$0")/lib/common.bash"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
command -v script >/dev/null || { fail "script (util-linux) is needed for a pty"; finish; exit 1; }
MODEL="$SOURCE_DIR/tests/fixtures/models/llama3-gqa"
cd "$WORK"
"$TESTBIN/make_test_shard" valid in.h5 --lengths 300,200 --vocab 300 --seed 3 >/dev/null \
  || { fail "make_test_shard"; finish; exit 1; }
JOB="$MPIRUN -np 2 $RINGINFER run --device cpu -m $MODEL -i in.h5 --max-new-tokens 20"

timeout -k 5 120 script -qec "$JOB -o tty.h5" /dev/null > tty.log 2>&1 || { fail "job on a pty"; cat tty.log; }
python3 - tty.log <<'PY' && pass "bar on the pty, log lines clear it" || fail "bar on the pty"
import sys
out = open(sys.argv[1], "rb").read().decode()
assert '"event"' not in out, "JSON lines on a terminal"
assert "\rdoc 1/2 doc0" in out and "\rdone: 2/2 documents" in out, "no bar"
ranks = out.count("[rank ")
cleared = out.count("\r\x1b[K[rank ")
assert ranks >= 4 and ranks == cleared, f"{ranks} rank lines, {cleared} start by clearing the bar"
assert "[rank 1] document doc0" in out, "rank 1's line missing"
PY

timeout -k 5 120 $JOB -o pipe.h5 > pipe.log 2>&1 || { fail "job on a pipe"; cat pipe.log; }
python3 - pipe.log <<'PY' && pass "JSON lines on a pipe" || fail "JSON lines on a pipe"
import json, sys
out = open(sys.argv[1]).read()
assert "\x1b" not in out and "\r" not in out, "terminal escapes in a log file"
events = [json.loads(l)["event"] for l in out.splitlines() if l.startswith("{")]
assert events[0] == "job_start" and events[-1] == "job_done", events
PY
finish
