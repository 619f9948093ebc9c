#!/usr/bin/env bash
# usage: tools/bench-cpu.sh [MODEL.gguf]   (env: THREADS, REPEATS, VENV, BUILD, NEW_TOKENS, LLAMA_WAIT_POLICY)
#
# ringinfer's CPU backend against llama.cpp (llama-cpp-python from PyPI) on the same GGUF,
# the same thread count, in one run, back to back, REPEATS times (best of each kept):
#   - prompt evaluation at 512 and 4096 tokens: `ringinfer score` (every position's logprob)
#     vs llama.cpp's prompt eval (last position's logits only)
#   - decode after a 200-token prompt: `ringinfer run` vs llama.cpp's generation
# and prints tokens/s and the ratio per row. llama-cpp-python is built once from source
# into VENV (outside the repo), without AMX (its Q4_x kernels are wrong on AMX CPUs,
# DESIGN §9); the build takes minutes on a small machine (CMAKE_BUILD_PARALLEL_LEVEL=1).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/SmolLM2-135M-Instruct-Q4_1.gguf}
THREADS=${THREADS:-$(nproc)}
REPEATS=${REPEATS:-3}
NEW_TOKENS=${NEW_TOKENS:-128}
VENV=${VENV:-$HOME/.cache/ringinfer-bench/venv}
BUILD=${BUILD:-build}
RI="$BUILD/ringinfer"
[[ -s "$MODEL" ]] || { echo "bench-cpu: $MODEL missing (tools/fetch-demo-model.sh)" >&2; exit 2; }
[[ -x "$RI" ]] || { echo "bench-cpu: $RI missing: build ringinfer first" >&2; exit 2; }

if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "bench-cpu: building llama-cpp-python into $VENV (several minutes)" >&2
  python3 -m venv "$VENV"
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-1} \
    CMAKE_ARGS="-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_NATIVE=ON" \
    "$VENV/bin/pip" install --no-binary llama-cpp-python llama-cpp-python >&2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-cpu-XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Prompts: the start of inputs/long/gpl-3.0.txt, cut to about N tokens (each side reports
# the tokens it ran; rates are per token).
python3 - "$WORK" <<'PY'
import json, sys
text = open("inputs/long/gpl-3.0.txt", encoding="utf-8").read()
for n, per_token in ((200, 4.57), (512, 4.45), (4096, 4.72)):  # SmolLM2's characters per token here
    chars = int(n * per_token)
    with open(f"{sys.argv[1]}/p{n}.jsonl", "w") as f:
        f.write(json.dumps({"id": f"p{n}", "text": text[:chars]}) + "\n")
    with open(f"{sys.argv[1]}/p{n}.txt", "w") as f:
        f.write(text[:chars])
PY
for n in 200 512 4096; do
  "$RI" prep -q --model "$MODEL" "$WORK/p$n.jsonl" --output "$WORK/p$n.h5"
done

export OMP_NUM_THREADS=$THREADS  # ringinfer: the thread count asked for (an explicit value wins)

# ringinfer: tokens/s of one document, from its JSON progress lines: score's whole
# document (prefill and every position's logprob) from document_start to document_done.
ri_score() {  # N -> "tokens tokens_per_s"
  "$RI" score --device cpu -m "$MODEL" -i "$WORK/p$1.h5" -o "$WORK/s$1.h5" --log-format json 2>&1 >/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    if line.startswith("{"):
        e = json.loads(line)
        if e.get("event") == "document_start":
            t0, n = e["elapsed_s"], e["prompt_tokens"]
        if e.get("event") == "document_done":
            print(n, n / (e["elapsed_s"] - t0))'
  rm -f "$WORK/s$1.h5"
}
ri_decode() {  # -> "generated tokens_per_s"
  "$RI" run --device cpu -m "$MODEL" -i "$WORK/p200.h5" -o "$WORK/r.h5" --max-new-tokens "$NEW_TOKENS" \
    --log-format json 2>&1 >/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    if line.startswith("{"):
        e = json.loads(line)
        if e.get("event") == "document_done":
            print(e["generated"], e["decode_tokens_per_s"])'
  rm -f "$WORK/r.h5"
}
# llama.cpp through llama-cpp-python, one fresh context per call, a short warm-up eval
# first. Both programs use OpenMP; both run with OMP_WAIT_POLICY=passive (ringinfer sets
# it itself): with libgomp's default spinning, llama.cpp ran 3x (prompt) to 12x (decode)
# slower on the shared 2-core machine of docs/PERFORMANCE.md.
llama() {  # MODE N -> "tokens tokens_per_s"
  OMP_WAIT_POLICY=${LLAMA_WAIT_POLICY:-passive} \
    "$VENV/bin/python" - "$MODEL" "$WORK/p$2.txt" "$1" "$THREADS" "$NEW_TOKENS" <<'PY' 2>/dev/null
import sys, time
from llama_cpp import Llama
model, prompt, mode, threads, new = sys.argv[1], open(sys.argv[2]).read(), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
decode = mode == "decode"  # logits of every evaluated row are kept only for decode's short context
llm = Llama(model_path=model, n_ctx=1024 if decode else 8192, n_batch=512, n_threads=threads,
            n_threads_batch=threads, logits_all=decode, verbose=False)
tokens = llm.tokenize(prompt.encode(), add_bos=False)
llm.eval(tokens[:32])  # warm-up (graph and buffer set-up), then start again
llm.reset()
if not decode:
    t0 = time.perf_counter()
    llm.eval(tokens)
    print(len(tokens), len(tokens) / (time.perf_counter() - t0))
else:
    llm.eval(tokens)
    out, t0 = [], time.perf_counter()
    for _ in range(new):  # greedy, one token per eval, as `ringinfer run` decodes
        tok = int(llm.scores[llm.n_tokens - 1].argmax())
        llm.eval([tok])
        out.append(tok)
    print(len(out), len(out) / (time.perf_counter() - t0))
PY
}

best() { sort -k2 -g | tail -1; }
declare -A RI_RES LL_RES
for ((r = 1; r <= REPEATS; ++r)); do
  echo "bench-cpu: repeat $r of $REPEATS" >&2
  for n in 512 4096; do
    RI_RES[p$n]+="$(ri_score $n)"$'\n'
    LL_RES[p$n]+="$(llama prompt $n)"$'\n'
  done
  RI_RES[dec]+="$(ri_decode)"$'\n'
  LL_RES[dec]+="$(llama decode 200)"$'\n'
done

echo "# $(date -u +%Y-%m-%dT%H:%MZ)  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) CPUs, $THREADS threads each, best of $REPEATS"
echo "# llama.cpp with OMP_WAIT_POLICY=${LLAMA_WAIT_POLICY:-passive}; model $(basename "$MODEL"); ringinfer $("$RI" --version | cut -d' ' -f2); llama-cpp-python $("$VENV/bin/python" -c 'import llama_cpp; print(llama_cpp.__version__)')"
printf "%-22s %8s %12s %8s %12s %7s\n" "row" "ri tok" "ri tok/s" "ll tok" "ll tok/s" "ratio"
for key in p512 p4096 dec; do
  read -r rn rr < <(printf '%s' "${RI_RES[$key]}" | grep . | best)
  read -r ln lr < <(printf '%s' "${LL_RES[$key]}" | grep . | best)
  case $key in p512) label="prompt 512 (score)";; p4096) label="prompt 4096 (score)";; dec) label="decode after 200 (run)";; esac
  printf "%-22s %8s %12.1f %8s %12.1f %7.2f\n" "$label" "$rn" "$rr" "$ln" "$lr" "$(python3 -c "print($rr / $lr)")"
done
