#!/usr/bin/env bash
# `ringinfer score` on the demo GGUF (SmolLM2-135M-Instruct Q4_1) against transformers
# loading the same file in float64 (tests/fixtures/gguf/, from tools/gguf-reference.py):
# the same token ids (the fixture's come from Hugging Face `tokenizers` with SmolLM2's
# tokenizer.json setup; transformers' GGUF tokenizer skips its digit split), every token's
# logprob within TOL, on 1 and 2 ranks.
# TOL = 5e-4 absolute: ours is fp32 through 30 layers; plain float32 transformers is
# 1.4e-4 from the float64 reference on these documents and we measured at most 5.5e-5
# (2026-11-23), so 5e-4 leaves room for another fp32 summation order while anything
# structurally wrong (dequantization, RoPE, mask, norm) moves logprobs by far more.
source "$(dirname "$0")/lib/common.bash"
MODEL="$SOURCE_DIR/models/SmolLM2-135M-Instruct-Q4_1.gguf"
REF="$SOURCE_DIR/tests/fixtures/gguf/smollm2-135m-instruct-q4_1.json"
[[ -s "$MODEL" ]] || { echo "FAIL: $MODEL missing: run tools/fetch-demo-model.sh"; exit 1; }
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
python3 - "$MODEL" "$REF" "$SOURCE_DIR" "$WORK/docs.jsonl" <<'PY' || { fail "fixture"; finish; exit 1; }
import hashlib, json, os, sys
model, ref, src, out = sys.argv[1:]
r = json.load(open(ref))
h = hashlib.sha256(open(model, "rb").read()).hexdigest()
if h != r["sha256"]:
    sys.exit(f"{model}: sha256 {h} is not the reference's {r['sha256']}")
files = {"bread.txt": "inputs/docs", "lighthouse.txt": "inputs/docs", "gpl-3.0.txt": "inputs/long"}
with open(out, "w") as f:
    for d in r["documents"]:
        text = open(os.path.join(src, files[d["file"]], d["file"]), encoding="utf-8").read()[: d["chars"]]
        f.write(json.dumps({"id": d["file"], "text": text}) + "\n")
PY
"$RINGINFER" prep --model "$MODEL" "$WORK/docs.jsonl" --output "$WORK/docs.h5" -q > "$WORK/prep.log" 2>&1 \
  || { fail "prep"; cat "$WORK/prep.log"; finish; exit 1; }
for np in 1 2; do
  if timeout -k 5 600 $MPIRUN -np $np "$RINGINFER" score --device cpu -q -m "$MODEL" -i "$WORK/docs.h5" \
       -o "$WORK/s$np.h5" > "$WORK/s$np.log" 2>&1 && "$RINGINFER" dump --jsonl --logprobs "$WORK/s$np.h5" > "$WORK/s$np.jsonl"; then
    pass "score -np $np"
  else fail "score -np $np"; tail -5 "$WORK/s$np.log"; continue; fi
  if python3 - "$REF" "$WORK/s$np.jsonl" <<'PY'; then pass "-np $np within 5e-4 of transformers float64"; else fail "-np $np vs transformers"; fi
import json, sys
ref = {d["file"]: d for d in json.load(open(sys.argv[1]))["documents"]}
worst = 0.0
for line in open(sys.argv[2]):
    got = json.loads(line)
    want = ref[got["id"]]["logprobs"]
    if len(got["logprobs"]) != len(want):
        sys.exit(f'{got["id"]}: {len(got["logprobs"])} scored tokens, reference {len(want)} (tokenization differs)')
    diff = max(abs(a - b) for a, b in zip(got["logprobs"], want))
    print(f'  {got["id"]}: {len(want)} tokens, max |diff| {diff:.3g}')
    worst = max(worst, diff)
sys.exit(0 if worst <= 5e-4 else f"max |diff| {worst:.3g} > 5e-4")
PY
done
finish
