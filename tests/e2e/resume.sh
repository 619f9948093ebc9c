#!/usr/bin/env bash
# Resume (DESIGN §6): a `run` under mpirun -np 2 is killed with SIGKILL at random moments,
# then re-run with the same command until it completes; its datasets (all but /timing)
# must equal an uninterrupted run's. SIGTERM stops the job with exit 75 and a resume
# completes it; the same across --max-batch values. A re-run with other options refuses the
# journal.
source "$(dirname "$0")/lib/common.bash"
R="$RINGINFER"
MODEL="$SOURCE_DIR/tests/fixtures/models/llama3-gqa"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
KILLS=${RESUME_KILLS:-20}
cd "$WORK"
# Long enough documents (a few seconds of work in all) that kills and signals land while
# documents are being processed, not only during start-up; empty and 1-token documents too.
"$TESTBIN/make_test_shard" valid in.h5 --docs 20 \
  --lengths 3000,40,1,2500,7,0,2800,1900,90,3500,2200,33,3100,12,2700,75,2000,5,3300,2600 \
  --vocab 300 --seed 11 >/dev/null || { fail "make_test_shard"; finish; exit 1; }
# One document at a time unless MB says otherwise, so kills land between journal records
# (a decode batch journals its documents as they finish, often all near the end).
job() { $MPIRUN -np 2 "$R" run -m "$MODEL" -i in.h5 -o "$1" --device cpu --max-new-tokens 12 --temperature 0.8 --top-p 0.9 --seed 3 ${Q--q} ${MB:---max-batch 1} "${@:2}"; }
datasets() {  # every dataset outside /timing, as text
  for d in doc_ids prompt_tokens gen_offsets gen_tokens text finish_reason; do h5dump -d "/$d" "$1" | sed 1d; done
}

start=$(date +%s.%N)
job ref.h5 >/dev/null 2>&1 || fail "uninterrupted run"
span=$(python3 -c "import time; print(max(0.5, time.time() - $start))")
datasets ref.h5 > ref.txt

# SIGKILL at random moments (the whole job: every rank and mpirun), then resume.
journal_bytes() { cat out.h5.journal.* 2>/dev/null | wc -c; }
mid_run=0 progressed=0
for i in $(seq 1 "$KILLS"); do
  delay=$(python3 -c "import random; random.seed($i); print(round(random.uniform(0.05, 0.8 * $span), 2))")
  before=$(journal_bytes)
  job out.h5 >/dev/null 2>&1 &
  sleep "$delay"
  pkill -9 -f "ringinfer run -m $MODEL -i in.h5 -o out.h5" ; pkill -9 -f "mpirun.*-o out.h5"
  wait 2>/dev/null
  after=$(journal_bytes)
  ((after > 0)) && mid_run=$((mid_run + 1))            # killed while documents were being run
  ((after > before && before > 0)) && progressed=$((progressed + 1))  # a resumed attempt journaled more
done
journals=$(ls out.h5.journal.* 2>/dev/null | wc -l)
echo "after $KILLS kills: $mid_run mid-run, $progressed resumed attempts added documents; now $journals journal(s)," \
  "$( [[ -e out.h5 ]] && echo output || echo 'no output')"
# Otherwise the kills all landed in start-up or after the end, and resume went untested.
((mid_run >= KILLS / 4 && progressed >= 2)) && pass "kills landed mid-run and resumed attempts made progress" ||
  fail "too few kills mid-run ($mid_run) or resumed attempts with progress ($progressed)"
if job out.h5 >log 2>&1; then pass "resume after $KILLS SIGKILLs completes"; else fail "resume"; cat log; fi
datasets out.h5 > out.txt
cmp -s ref.txt out.txt && pass "resumed datasets identical to an uninterrupted run" || { fail "datasets differ"; diff ref.txt out.txt | head; }
ls out.h5.journal.* >/dev/null 2>&1 && fail "journals left after completion" || pass "journals removed"

# SIGTERM: every rank stops at a document boundary with exit 75; a re-run completes.
rm -f term.h5*
job term.h5 >termlog 2>&1 & pid=$!
# Signal once the first document is journaled: mid-run, with more documents to go.
# (The journal's header, with the job's fingerprint, is written in one piece first.)
header=0
for _ in $(seq 1 600); do
  size=$(stat -c %s term.h5.journal.0 2>/dev/null || echo 0)
  ((header == 0 && size > 0)) && header=$size
  ((header > 0 && size > header)) && break
  sleep 0.05
done
pkill -TERM -f "^$R run -m $MODEL -i in.h5 -o term.h5"  # the ranks, as Slurm signals them
t0=$(date +%s); wait $pid; rc=$?; t1=$(date +%s)
if ((rc == 75)); then pass "SIGTERM exits 75 in $((t1 - t0)) s"
else fail "SIGTERM exit $rc"; cat termlog; fi
job term.h5 >/dev/null 2>&1 && datasets term.h5 | cmp -s - ref.txt && pass "resume after SIGTERM identical" || fail "resume after SIGTERM"

# The batch does not change results, so a job killed at one --max-batch resumes at another
# (the journal's fingerprint leaves it out): killed at B = 3 twice, SIGTERM at B = 8, then
# completed at B = 1.
rm -f mb.h5*
for i in 1 2; do
  MB="--max-batch 3" job mb.h5 >/dev/null 2>&1 &
  sleep "$(python3 -c "print(round(0.3 * $i * $span, 2))")"
  pkill -9 -f "ringinfer run -m $MODEL -i in.h5 -o mb.h5" ; pkill -9 -f "mpirun.*-o mb.h5"
  wait 2>/dev/null
done
# Signalled when this attempt starts its first document (rank 0's JSON progress; -q and
# the log format are outside the journal's fingerprint), so the stop lands mid-run: a
# journal record came too late (a batch's documents finish together, and the CPU backend
# runs this whole job in about a second), and token events are throttled.
Q= MB="--max-batch 8" job mb.h5 --log-format json >mblog 2>&1 & pid=$!
for _ in $(seq 1 600); do
  grep -q '"event":"document_start"' mblog 2>/dev/null && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.05
done
pkill -TERM -f "^$R run -m $MODEL -i in.h5 -o mb.h5"
wait $pid; rc=$?
((rc == 75)) && pass "--max-batch 8 stopped by SIGTERM (exit 75)" || { fail "--max-batch 8 SIGTERM exit $rc"; tail -5 mblog; }
job mb.h5 >/dev/null 2>&1 && datasets mb.h5 | cmp -s - ref.txt \
  && pass "killed at --max-batch 3 and 8, resumed at 1: identical" || fail "resume across --max-batch"

# Other options over an existing journal: refused, not mixed.
job mix.h5 >mixlog 2>&1 & pid=$!
# Wait for a journal while the job still runs (it is removed when the job completes).
for _ in $(seq 1 600); do [[ -s mix.h5.journal.0 ]] || ! kill -0 $pid 2>/dev/null && break; sleep 0.05; done
pkill -9 -f "^$R run .*-o mix.h5"; pkill -9 -f "mpirun.*-o mix.h5"; wait 2>/dev/null
if [[ -e mix.h5 ]]; then fail "the job completed before it could be killed: no journal to test"
elif ls mix.h5.journal.* >/dev/null 2>&1; then
  expect_error "journal of other options refused" 60 "different model or options" \
    $MPIRUN -np 2 "$R" run -m "$MODEL" -i in.h5 -o mix.h5 --device cpu --max-new-tokens 5 -q
  [[ ! -e mix.h5 ]] && pass "no mixed output written" || fail "an output was written from mixed options"
else fail "no journal appeared within 30 s"; cat mixlog; fi
finish
