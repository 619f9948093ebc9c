#!/usr/bin/env bash
# The demo path on the real demo model (SmolLM2-135M-Instruct Q4_1 GGUF): prep with the
# summarization template, `mpirun -np 2 ringinfer run` on the CPU, dump. The short note
# ends with EOS well inside the budget; the text is English about the note and does not
# carry the EOS token's text.
source "$(dirname "$0")/lib/common.bash"
MODEL="$SOURCE_DIR/models/SmolLM2-135M-Instruct-Q4_1.gguf"
[[ -s "$MODEL" ]] || { echo "FAIL: $MODEL missing: run tools/fetch-demo-model.sh"; exit 1; }
grep '"recipe-note"' "$SOURCE_DIR/inputs/docs/meeting.jsonl" > "$WORK/note.jsonl"
"$RINGINFER" prep --model "$MODEL" --prompt-template "$SOURCE_DIR/inputs/summarize.txt" "$WORK/note.jsonl" \
  --output "$WORK/note.h5" >/dev/null 2>&1 || fail "prep"
if timeout 300 $MPIRUN -np 2 "$RINGINFER" run --device cpu -q --model "$MODEL" -i "$WORK/note.h5" -o "$WORK/out.h5" \
     --max-new-tokens 120 >"$WORK/log" 2>&1; then pass "run on 2 ranks"; else fail "run"; cat "$WORK/log"; fi
json=$("$RINGINFER" dump --jsonl "$WORK/out.h5")
echo "$json"
grep -q '"finish_reason":"eos"' <<<"$json" && pass "stops at EOS" || fail "no EOS within 120 tokens"
grep -q 'im_end' <<<"$json" && fail "EOS text in the summary" || pass "summary without the EOS text"
summary=$(python3 -c 'import json, sys; print(json.loads(sys.stdin.readline())["summary"])' <<<"$json")
grep -qiE 'salt|soup|stock' <<<"$summary" && pass "summary is about the note" || fail "summary off topic"
finish
