#!/usr/bin/env bash
# OpenAI batch JSONL round trip on the demo model: chat and prompt request lines -> prep
# (chat template recognised from the model) -> run under mpirun -np 2 -> dump --jsonl
# --format openai: one line per input, custom_ids in input order, usage equal to the
# shard's prompt lengths and the generated lengths, max_tokens per document honoured;
# with --on-error skip an over-long document becomes an error line, without it the job
# fails. --stop ends a generation where its string shows, leaving the string out.
source "$(dirname "$0")/lib/common.bash"
R="$RINGINFER"
MODEL="$SOURCE_DIR/models/SmolLM2-135M-Instruct-Q4_1.gguf"
[[ -s "$MODEL" ]] || { echo "FAIL: $MODEL missing: run tools/fetch-demo-model.sh"; exit 1; }
python3 -c "import h5py" 2>/dev/null || { echo "FAIL: h5py missing: run tools/install-deps.sh"; exit 1; }
cd "$WORK"

long=$(python3 -c 'print(" ".join(["The river rose and the town watched it."] * 400))')
{
  echo '{"custom_id": "chat-1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "messages": [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Name a colour."}], "max_tokens": 6}}'
  echo '{"custom_id": "prompt-2", "body": {"prompt": "Once upon a time", "max_tokens": 4, "temperature": 0.7}}'
  echo "{\"custom_id\": \"long-3\", \"body\": {\"prompt\": \"$long\"}}"
  echo '{"custom_id": "chat-4", "body": {"messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}]}}'
  # The same prompt greedy (the job's temperature 0) and at the body's temperature 1.5.
  echo '{"custom_id": "same-greedy", "body": {"prompt": "My favourite animal is", "max_tokens": 12}}'
  echo '{"custom_id": "same-hot", "body": {"prompt": "My favourite animal is", "max_tokens": 12, "temperature": 1.5}}'
} > batch.jsonl
if "$R" prep --model "$MODEL" batch.jsonl --output batch.h5 >prep.log 2>&1; then pass "prep OpenAI batch lines"
else fail "prep"; cat prep.log; fi
grep -q "chat template: chatml (recognised from the model's own template)" prep.log && pass "prep says which chat template" \
  || { fail "prep did not name the chat template"; cat prep.log; }

# A memory limit that the short documents fit (~104 MB a rank: the Q4_1 weights as stored,
# 97 MB) and the long one (~3.6K tokens, ~217 MB a rank on 2 ranks) does not.
RUN=(run --model "$MODEL" --device cpu -i batch.h5 --max-new-tokens 5 --memory-limit 0.15 -q)
expect_error "over-long document fails the job" 120 "memory check: a document of [0-9]+ tokens needs" \
  $MPIRUN -np 2 "$R" "${RUN[@]}" -o fail.h5
if timeout 300 $MPIRUN -np 2 "$R" "${RUN[@]}" -o out.h5 --on-error skip >run.log 2>&1; then pass "run --on-error skip"
else fail "run --on-error skip"; tail -5 run.log; fi
"$R" dump --jsonl --format openai out.h5 > openai.jsonl 2>dump.log || { fail "dump --format openai"; cat dump.log; }
"$R" dump --jsonl out.h5 > plain.jsonl 2>/dev/null
python3 - <<'PY' && pass "openai lines: ids, order, usage, max_tokens and temperature per document, error line" || fail "openai lines"
import json, h5py
lines = [json.loads(l) for l in open("openai.jsonl")]
plain = [json.loads(l) for l in open("plain.jsonl")]
with h5py.File("batch.h5") as f:
    offsets = f["doc_offsets"][:]
    max_new = f["max_new_tokens"][:]
assert [l["custom_id"] for l in lines] == ["chat-1", "prompt-2", "long-3", "chat-4", "same-greedy", "same-hot"], lines
assert list(max_new) == [6, 4, -1, -1, 12, 12], max_new
assert plain[4]["token_ids"] != plain[5]["token_ids"], "the body's temperature changed nothing"
for d, (l, p) in enumerate(zip(lines, plain)):
    if l["custom_id"] == "long-3":
        assert l["response"] is None and l["error"]["code"] == "document_failed" and l["error"]["message"], l
        continue
    assert l["error"] is None and l["response"]["status_code"] == 200, l
    body = l["response"]["body"]
    assert body["object"] == "chat.completion" and body["model"] == "SmolLM2-135M-Instruct-Q4_1.gguf", body
    u = body["usage"]
    assert u["prompt_tokens"] == offsets[d + 1] - offsets[d], (u, offsets)
    assert u["completion_tokens"] == p["generated_tokens"] and u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"], u
    budget = max_new[d] if max_new[d] >= 0 else 5
    assert 1 <= u["completion_tokens"] <= budget, (u, budget)
    c = body["choices"][0]
    assert c["index"] == 0 and c["message"]["role"] == "assistant" and c["message"]["content"] == p["summary"], c
    assert c["finish_reason"] == ("length" if p["finish_reason"] == "length" else "stop"), (c, p)
PY

# --stop: cut where the string shows (left out), finish_reason stop; greedy, so the text
# before it is the unstopped run's.
printf '{"id": "story", "text": "<|im_start|>user\\nTell a short story about a fox.<|im_end|>\\n<|im_start|>assistant\\n"}\n' > story.jsonl
"$R" prep --model "$MODEL" story.jsonl --output story.h5 >/dev/null 2>&1
$MPIRUN -np 2 "$R" run --model "$MODEL" --device cpu -i story.h5 -o free.h5 --max-new-tokens 24 -q >/dev/null 2>&1
full=$("$R" dump --jsonl free.h5 | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["summary"])')
stop=$(python3 -c 'import sys; t = sys.argv[1]; w = t.split(); print(w[len(w) // 2] if len(w) > 3 else "")' "$full")
if [[ -z "$stop" ]]; then fail "the unstopped story is too short to pick a stop string: [$full]"
else
  $MPIRUN -np 2 "$R" run --model "$MODEL" --device cpu -i story.h5 -o stop.h5 --max-new-tokens 24 --stop "$stop" -q >stop.log 2>&1
  STOP="$stop" FULL="$full" python3 - <<'PY' && pass "--stop ends the generation at \"$stop\"" || fail "--stop"
import json, os, subprocess
r = json.loads(subprocess.run([os.environ["RINGINFER"], "dump", "--jsonl", "stop.h5"], capture_output=True, text=True).stdout)
full, stop = os.environ["FULL"], os.environ["STOP"]
assert r["finish_reason"] == "stop", r
assert r["summary"] == full[:full.index(stop)], (r["summary"], full)
assert r["generated_tokens"] < 24, r
PY
fi
finish
