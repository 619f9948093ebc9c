#!/usr/bin/env bash
# Shards written by users' own h5py code (variable-length strings, h5py's defaults):
# the README's example, run verbatim, writes the tokens of a `prep` shard; `score` under
# mpirun -np 2 gives identical logprobs for both. The make_test_shard variants with
# variable-length strings are accepted by `run` too (read after the isolated check).
source "$(dirname "$0")/lib/common.bash"
R="$RINGINFER"
MODEL="$SOURCE_DIR/models/SmolLM2-135M-Instruct-Q4_1.gguf"
[[ -s "$MODEL" ]] || { echo "FAIL: $MODEL missing: run tools/fetch-demo-model.sh"; exit 1; }
python3 -c "import h5py, numpy" 2>/dev/null || { echo "FAIL: h5py missing: run tools/install-deps.sh"; exit 1; }
cd "$WORK"

# The README's code block after the h5py-shard-example marker, exactly as shown there.
awk '/<!-- h5py-shard-example -->/ {on = 1; next} on && /^```python/ {grab = 1; next}
     grab && /^```/ {exit} grab {print}' "$SOURCE_DIR/README.md" > example.py
grep -q "def write_shard" example.py && pass "README h5py example found" || fail "README h5py example not found"

printf 'The harbour froze early that winter, and the ferry stopped running in December.\n' > harbour.txt
printf '{"id": "q-7", "text": "Bees dance to tell the hive where the flowers are."}\n' > bees.jsonl
"$R" prep --model "$MODEL" harbour.txt bees.jsonl --output prep.h5 >prep.log 2>&1 || { fail "prep"; cat prep.log; }

# Take prep's tokens and write them again with the README's function.
cat example.py - > write_user.py <<'PY'

with h5py.File("prep.h5", "r") as f:
    tokens, offsets = f["tokens"][:], f["doc_offsets"][:]
    ids = [i.decode() if isinstance(i, bytes) else i for i in f["doc_ids"][:]]
    vocab, tok = int(f.attrs["vocab_size"]), f.attrs["tokenizer"]
    tok = tok.decode() if isinstance(tok, bytes) else tok
write_shard("user.h5", {ids[d]: tokens[offsets[d]:offsets[d + 1]].tolist() for d in range(len(ids))}, vocab, tok)
PY
python3 write_user.py >py.log 2>&1 || { fail "the README example failed"; cat py.log; }
header=$(h5dump -H user.h5 2>&1)
if grep -q "H5T_VARIABLE" <<<"$header"; then pass "the example writes variable-length strings (h5py's default)"
else fail "the example wrote no variable-length string: the test would not test anything"; fi

for s in prep user; do
  $MPIRUN -np 2 "$R" score --model "$MODEL" --device cpu -i "$s.h5" -o "score-$s.h5" -q >"score-$s.log" 2>&1 \
    || { fail "score $s.h5"; tail -5 "score-$s.log"; }
  "$R" dump --jsonl --logprobs "score-$s.h5" > "$s.jsonl" 2>/dev/null
done
# Everything but the wall time: ids, token counts, perplexities, every logprob, bit for bit.
same() {
  python3 - "$1" "$2" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
for r in a + b: r.pop("seconds")
sys.exit(0 if len(a) == 2 and a == b and all(r["logprobs"] for r in a) else 1)
PY
}
if same prep.jsonl user.jsonl; then
  pass "h5py-written shard scores identically to prep's"
else fail "scores differ"; diff prep.jsonl user.jsonl | head -5; fi

# make_test_shard's variable-length variants: read by run after the isolated check.
for variant in vlen-ids vlen-tokenizer; do
  "$TESTBIN/make_test_shard" "$variant" "$variant.h5" >/dev/null
  if $MPIRUN -np 2 "$R" run --dry-run -i "$variant.h5" -o "out-$variant.h5" -q >"$variant.log" 2>&1 &&
     [[ $("$R" dump --jsonl "out-$variant.h5" | wc -l) -eq 3 ]]; then pass "$variant shard accepted by run"
  else fail "$variant shard refused"; tail -3 "$variant.log"; fi
done
finish
