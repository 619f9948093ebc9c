#!/usr/bin/env bash
# --output and the resume journal must never destroy or mix anything:
#   - an output (or its .tmp / .journal.* companions) that is an input, the model file or a
#     file of the model folder is refused at start, and the file is left as it was;
#   - an output that is a directory, or lies in a missing folder, is refused at start;
#   - resume identifies the model and the inputs by content: a changed config.json or a
#     same-size different shard is refused; a byte-identical copy at another path and
#     mtime (inputs re-staged on requeue) resumes, and the result equals an uninterrupted run;
#   - a journal with a corrupt record in the middle is repaired with a message that says so;
#     a foreign file under the journal's name is refused and kept; a second job on the same
#     --output fails at start while the first completes unharmed.
source "$(dirname "$0")/lib/common.bash"
R="$RINGINFER"
M="$SOURCE_DIR/tests/fixtures/models/llama3-gqa"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
cd "$WORK"
# Documents long enough (seconds of work in all) that a job can be stopped mid-run.
LENGTHS=3000,400,1,2500,70,0,1200,3100,900,600,2000,330,2800,120,1500,750,2990,5,1800,2,2600,440,1300,3
"$TESTBIN/make_test_shard" valid in.h5 --docs 24 --lengths $LENGTHS --vocab 300 --seed 11 >/dev/null &&
"$TESTBIN/make_test_shard" valid other.h5 --docs 24 --lengths $LENGTHS --vocab 300 --seed 12 >/dev/null ||
  { fail "make_test_shard"; finish; exit 1; }
cp -r "$M" model
# job OUT ARGS...: the run under test (a script, so that expect_error's timeout can run it).
# One document at a time (--max-batch 1), so records reach the journal steadily while the
# job runs (a decode batch journals its documents as they finish, often all near the end).
cat > job <<SH
#!/usr/bin/env bash
out=\$1; shift
exec $MPIRUN -np 2 "$R" run -o "\$out" --device cpu --max-new-tokens 24 --temperature 0.8 --top-p 0.9 --seed 3 --max-batch 1 "\$@"
SH
chmod +x job
datasets() { for d in doc_ids prompt_tokens gen_offsets gen_tokens text finish_reason; do h5dump -d "/$d" "$1" | sed 1d; done; }
# journal.py count FILE | corrupt FILE: result records in a journal / flip one payload bit
# of its first result record and print that record's byte offset.
cat > journal.py <<'PY'
import struct, sys
mode, path = sys.argv[1], sys.argv[2]
d = bytearray(open(path, "rb").read()); pos = 0; frames = []
while pos + 16 <= len(d):
    magic, n, _ = struct.unpack_from("<IQI", d, pos)
    if magic != 0x314A4952 or pos + 16 + n > len(d): break
    frames.append(pos); pos += 16 + n
if mode == "count": print(max(0, len(frames) - 1))
else:
    d[frames[1] + 16 + 5] ^= 0x08; open(path, "wb").write(d); print(frames[1])
PY
records() { python3 journal.py count "$1" 2>/dev/null || echo 0; }

./job ref.h5 -m model -i in.h5 -q >ref.log 2>&1 || { fail "uninterrupted run"; cat ref.log; }
datasets ref.h5 > ref.txt
sha() { sha256sum "$@" | cut -c1-64; }
model_sha=$(cat model/* | sha)
in_sha=$(sha in.h5)

# ---------------------------------------------------------------- output over what the job reads
expect_error "output = a file of the model folder" 60 "is the file .*model.safetensors of the model folder" \
  ./job model/model.safetensors -m model -i in.h5
expect_error "score output = the model's config.json" 60 "is the file .*config.json of the model folder" \
  $MPIRUN -np 2 "$R" score -m model -i in.h5 -o model/config.json --device cpu
expect_error "output = the input, spelled ./in.h5" 60 "is the input $WORK/in.h5" ./job ./in.h5 -m model -i "$WORK/in.h5"
ln -s in.h5 link.h5
expect_error "output = the target of a symlinked input" 60 "is the input link.h5" ./job in.h5 -m model -i link.h5
cp in.h5 stage.h5.tmp
expect_error "output's .tmp = an input" 60 "would write stage.h5.tmp, which is the input" \
  ./job stage.h5 -m model -i stage.h5.tmp
echo "precious words" > precious.txt
expect_error "prep output = its text input" 60 "is the input precious.txt" \
  "$R" prep --model model precious.txt --output precious.txt
printf 'GGUF-not-really' > smol.gguf
expect_error "prep output = the model file" 60 "is the model file smol.gguf" \
  "$R" prep --model smol.gguf precious.txt --output smol.gguf
[[ "$(cat model/* | sha)" == "$model_sha" && "$(sha in.h5)" == "$in_sha" && "$(cat precious.txt)" == "precious words" &&
   "$(cat smol.gguf)" == "GGUF-not-really" ]] && pass "no protected file changed" || fail "a protected file changed"

# ---------------------------------------------------------------- output location, at start
mkdir outdir.h5
expect_error "output is a directory" 60 "--output outdir.h5 is a directory" ./job outdir.h5 -m model -i in.h5
[[ -z "$(ls outdir.h5)" && ! -e outdir.h5.tmp && ! -e outdir.h5.journal.0 ]] && pass "nothing written for a directory output" ||
  fail "files written for a directory output"
expect_error "output folder missing" 60 "the folder nodir does not exist" ./job nodir/out.h5 -m model -i in.h5

# ---------------------------------------------------------------- a journal to resume from
# SIGTERM once at least 3 documents are journaled: exit 75, the journal stays.
make_journal() {  # OUT: leaves OUT.journal.0 with >= 3 records, saved as OUT.saved
  ./job "$1" -m model -i in.h5 -q >"$1.log" 2>&1 & local pid=$!
  for _ in $(seq 1 600); do (( $(records "$1.journal.0") >= 3 )) && break; sleep 0.05; done
  pkill -TERM -f "^$R run -o $1 " ; wait $pid; local rc=$?
  ((rc == 75)) && [[ -e "$1.journal.0" ]] && cp "$1.journal.0" "$1.saved" && return 0
  fail "could not stop a job mid-run to make a journal (exit $rc)"; cat "$1.log"; return 1
}

if make_journal out.h5; then
  n=$(records out.h5.journal.0)
  # A changed model config: refused, journal untouched.
  cp -r model model_rope
  python3 - <<'PY'
import json; p = "model_rope/config.json"; c = json.load(open(p))
c["rope_scaling"] = {"type": "linear", "factor": 2.0}; json.dump(c, open(p, "w"))
PY
  expect_error "resume with a changed config.json refused" 60 "different model or options" \
    ./job out.h5 -m model_rope -i in.h5
  # A same-size shard with other tokens under the same name: refused.
  mkdir -p swapped && cp other.h5 swapped/in.h5
  [[ $(stat -c %s other.h5) == $(stat -c %s in.h5) ]] || fail "the replacement shard is not the same size"
  expect_error "resume with a same-size different input refused" 60 "different model or options" \
    ./job out.h5 -m model -i swapped/in.h5
  cmp -s out.h5.journal.0 out.h5.saved && [[ ! -e out.h5 ]] && pass "refused resumes left the journal alone" ||
    fail "a refused resume changed the journal or wrote output"
  # A byte-identical copy at another path and mtime (re-staged inputs): resumes.
  mkdir staged && cp -r model staged/model && cp in.h5 staged/in.h5
  touch -d "3 hours ago" staged/in.h5 staged/model/*
  if ./job out.h5 -m staged/model -i staged/in.h5 >resume.log 2>&1 && grep -q "resuming: $n of 24" resume.log; then
    pass "byte-identical staged copy resumes ($n documents skipped)"
  else fail "staged copy did not resume"; tail -5 resume.log; fi
  datasets out.h5 | cmp -s - ref.txt && pass "resumed output equals the uninterrupted run" || fail "resumed output differs"
fi

# ---------------------------------------------------------------- journal damage and foreign files
if make_journal mid.h5; then
  at=$(python3 journal.py corrupt mid.h5.journal.0)
  if ./job mid.h5 -m model -i in.h5 >mid.resume.log 2>&1 &&
     grep -q "mid.h5.journal.0: found a corrupt record at byte $at; dropped it and everything after it" mid.resume.log &&
     ! grep -q "torn" mid.resume.log; then
    pass "a corrupt record in the middle is reported as such"
  else fail "corrupt middle record"; grep -i "journal\|error" mid.resume.log | head -5; fi
  datasets mid.h5 | cmp -s - ref.txt && pass "repaired journal: output equals the uninterrupted run" ||
    fail "output after a corrupt journal differs"
fi
head -c 5000 /dev/urandom > foreign.h5.journal.0; printf 'x' | dd of=foreign.h5.journal.0 conv=notrunc 2>/dev/null
cp foreign.h5.journal.0 foreign.saved
expect_error "a foreign file as journal refused" 60 "foreign.h5.journal.0: not a ringinfer journal .*remove it" \
  ./job foreign.h5 -m model -i in.h5
cmp -s foreign.h5.journal.0 foreign.saved && pass "the foreign file is kept" || fail "the foreign file was changed"

# ---------------------------------------------------------------- two jobs on one output
# Ten 3000-token documents keep the first job busy for seconds after its first record.
"$TESTBIN/make_test_shard" valid long.h5 --docs 10 --lengths 3000,3000,3000,3000,3000,3000,3000,3000,3000,3000 \
  --vocab 300 --seed 13 >/dev/null || fail "make_test_shard long.h5"
./job two.h5 -m model -i long.h5 -q >two.a.log 2>&1 & pid=$!
for _ in $(seq 1 600); do (( $(records two.h5.journal.0) >= 1 )) && break; sleep 0.05; done
expect_error "a second job on the same --output fails at start" 60 \
  "two.h5.journal.0 is in use by another ringinfer job \(same --output\)" ./job two.h5 -m model -i long.h5
if wait $pid; then pass "the first job completes"; else fail "the first job failed"; cat two.a.log; fi
if [[ $("$R" dump two.h5 --jsonl 2>/dev/null | wc -l) == 10 ]] && ! ls two.h5.journal.* >/dev/null 2>&1; then
  pass "the first job's output holds every document"
else fail "the first job's output is incomplete"; fi
finish
