#!/usr/bin/env bash
# tools/demo.sh itself (with the built binary: no install or build) on the demo model:
# every summary of inputs/docs ends with sentence punctuation, repeats no sentence, and
# stopped by itself (EOS or a stop rule), not at the token budget; the run's wall time is
# printed (the quick start aims at under 2 minutes on 2 quiet cores).
source "$(dirname "$0")/lib/common.bash"
MODEL="$SOURCE_DIR/models/SmolLM2-135M-Instruct-Q4_1.gguf"
[[ -s "$MODEL" ]] || { echo "FAIL: $MODEL missing: run tools/fetch-demo-model.sh"; exit 1; }
start=$(date +%s)
if RINGINFER="$RINGINFER" DEMO_OUT="$WORK/out" timeout 500 bash "$SOURCE_DIR/tools/demo.sh" 2 >"$WORK/demo.log" 2>&1; then
  pass "tools/demo.sh in $(( $(date +%s) - start )) s"
else fail "tools/demo.sh"; tail -20 "$WORK/demo.log"; fi
grep -q "chat template: chatml" "$WORK/demo.log" && pass "the model's chat template was recognised" || fail "no chat template line"
"$RINGINFER" dump --jsonl "$WORK/out/summaries.h5" > "$WORK/s.jsonl"
cat "$WORK/s.jsonl"
python3 - "$WORK/s.jsonl" <<'PY' && pass "4 summaries, each ends a sentence, no sentence repeated, none cut at the budget" || fail "summaries"
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 4, len(rows)
for r in rows:
    s = r["summary"].strip()
    assert s and s[-1] in '.!?"\'', ("does not end a sentence", r["id"], s)
    assert r["finish_reason"] in ("eos", "stop"), ("cut at the budget", r["id"], r["finish_reason"])
    sentences = [x.strip().lower() for x in re.split(r"(?<=[.!?])\s+", s) if x.strip()]
    assert len(sentences) == len(set(sentences)), ("a sentence repeats", r["id"], s)
PY
finish
