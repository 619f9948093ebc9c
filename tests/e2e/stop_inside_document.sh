#!/usr/bin/env bash
# SIGTERM in the middle of a long document's prefill (the demo GGUF, 30 layers, a few
# thousand tokens, several seconds per document): every rank stops at the next layer
# boundary, well before the document would finish, with exit 75 and progress event
# job_done {"stopped": true}; the other group's finished document stays journaled and a
# re-run skips it and completes.
source "$(dirname "$0")/lib/common.bash"
MODEL="$SOURCE_DIR/models/SmolLM2-135M-Instruct-Q4_1.gguf"
[[ -s "$MODEL" ]] || { echo "FAIL: $MODEL missing: run tools/fetch-demo-model.sh"; exit 1; }
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
cd "$WORK"
python3 - "$SOURCE_DIR" > docs.jsonl <<'PY'
import json, sys
src = sys.argv[1]
for name, path, n in [("long", "inputs/long/gpl-3.0.txt", 12000), ("bread", "inputs/docs/bread.txt", None)]:
    t = open(f"{src}/{path}", encoding="utf-8").read()
    print(json.dumps({"id": name, "text": t[:n] if n else t}))
PY
"$RINGINFER" prep --model "$MODEL" docs.jsonl --output in.h5 -q >/dev/null 2>&1 || { fail "prep"; finish; exit 1; }
# --cp 1: two groups; group 0 takes the long document (longest first), group 1 the short one.
job() { timeout -k 5 300 $MPIRUN -np 2 "$RINGINFER" score --device cpu --cp 1 -m "$MODEL" -i in.h5 -o out.h5 "$@"; }
job > log 2>&1 & pid=$!
# Signal once the long document's prefill is under way and the short one is journaled:
# group 1's journal has grown past its header (the first size seen: the header, with the
# job's fingerprint, is written in one piece before any document runs).
header=0
for _ in $(seq 1 600); do
  size=$(stat -c %s out.h5.journal.1 2>/dev/null || echo 0)
  ((header == 0 && size > 0)) && header=$size
  grep -q '"event":"prefill_layer","doc":0' log && ((header > 0 && size > header)) && break
  sleep 0.05
done
grep -q '"event":"prefill_layer","doc":0' log || fail "no prefill progress event for the long document"
t0=$(date +%s.%N)
pkill -TERM -f "^$RINGINFER score --device cpu --cp 1 -m $MODEL"
wait $pid; rc=$?
dt=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
if ((rc == 75)); then pass "SIGTERM mid-prefill exits 75 after ${dt} s"; else fail "exit $rc"; tail -5 log; fi
python3 -c "import sys; sys.exit(0 if float('$dt') < 10 else 1)" && pass "stopped within 10 s" || fail "took ${dt} s"
grep -q '"event":"job_done","stopped":true' log && pass "progress says stopped" || fail "no stopped job_done event"
grep -q '"event":"document_done","doc":0' log && fail "the long document finished: the signal came too late to test"
[[ -f out.h5 ]] && fail "output written by a stopped job"
(( $(stat -c %s out.h5.journal.1 2>/dev/null || echo 0) > header && header > 0 )) && pass "short document journaled" \
  || fail "journal of group 1 holds no document"

# The re-run skips the journaled documents and finishes the long one.
if job > log2 2>&1; then pass "re-run completes"; else fail "re-run"; tail -5 log2; fi
grep -q "resuming: 1 of 2 documents are already journaled" log2 && pass "re-run skipped the journaled document" \
  || fail "re-run did not skip the journaled document"
n=$("$RINGINFER" dump --jsonl out.h5 | grep -c '"perplexity":[0-9]')
[[ $n == 2 ]] && pass "2 documents scored" || fail "$n documents in the output"
finish
