#!/usr/bin/env bash
# run --dry-run over two shards under mpirun with 1..4 ranks and every --cp: the output
# lists every document once, in input order, with its prompt length; dump --jsonl prints
# one JSON object per document.
source "$(dirname "$0")/lib/common.bash"
T="$TESTBIN/make_test_shard"
cd "$WORK"
"$T" valid a.h5 --docs 3 --lengths 5,0,17 --vocab 1000 --seed 1 --id-prefix a > a.txt
"$T" valid b.h5 --docs 4 --lengths 4099,1,2,3 --vocab 1000 --seed 2 --id-prefix b > b.txt
# Shard version 2: no variable-length strings anywhere (libhdf5 reads those unchecked).
if h5dump -H a.h5 | grep -q "H5T_VARIABLE"; then fail "a.h5 holds variable-length strings"; h5dump -H a.h5 | head -40
else pass "shard holds only fixed-length strings"; fi
expected=$(cat a.txt b.txt | awk '{printf "%s %s\n", $1, $2}')
for np in 1 2 3 4; do
  for cp in $(seq 1 $np); do
    ((np % cp == 0)) || continue
    rm -f out.h5
    if ! timeout 120 $MPIRUN -np $np "$RINGINFER" run --dry-run -i a.h5 b.h5 -o out.h5 --cp $cp >log 2>&1; then
      fail "np $np cp $cp: exit non-zero"; cat log; continue
    fi
    got=$("$RINGINFER" dump --jsonl out.h5 | python3 -c '
import json, sys
for line in sys.stdin:
    d = json.loads(line)
    print(d["id"], d["prompt_tokens"])')
    [[ "$got" == "$expected" ]] && pass "np $np cp $cp: documents in input order" || { fail "np $np cp $cp"; echo "$got"; }
  done
done
n=$("$RINGINFER" dump --jsonl out.h5 | wc -l)
((n == 7)) && pass "dump --jsonl: one line per document" || fail "dump --jsonl printed $n lines"
"$RINGINFER" dump out.h5 | grep -q "^=== \[3\] b0" && pass "dump text" || fail "dump text"
finish
