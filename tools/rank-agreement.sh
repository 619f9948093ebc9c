#!/usr/bin/env bash
# usage: tools/rank-agreement.sh [RANKS...]   (env: BUILD, DTYPES, MODELS, THREADS, WORK)
#
# `ringinfer score` on the test fixtures (tests/fixtures/models, each reference.json's
# documents) under mpirun -np 1..4 (default) with each --kv-dtype, CPU backend; prints per
# dtype and rank count the largest |logprob - np 1's| and the share of logprobs within
# 1e-5 of np 1's, and per dtype the mean and max |logprob - float64 reference|, plus the
# wall time of each score run. THREADS sets OMP_NUM_THREADS per rank (unset: ringinfer
# splits the node's cores among its ranks, so the thread count changes with the ranks).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RI="$BUILD/ringinfer"
RANKS=("${@:-1 2 3 4}")
read -r -a RANKS <<<"${RANKS[*]}"
DTYPES=${DTYPES:-f32 bf16 fp8}
MODELS=${MODELS:-llama3-gqa qwen2-bias-tied mistral-mqa qwen3-qknorm-yarn}
WORK=${WORK:-$(mktemp -d)}
[[ -x "$RI" ]] || { echo "rank-agreement: $RI missing: build ringinfer first" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_mpi_yield_when_idle=1 OMPI_MCA_rmaps_base_oversubscribe=1
[[ -n "${THREADS:-}" ]] && export OMP_NUM_THREADS=$THREADS

for m in $MODELS; do
  python3 - "tests/fixtures/models/$m" "$WORK/$m.h5" <<'PY'
import h5py, json, numpy as np, sys
ref = json.load(open(sys.argv[1] + "/reference.json"))
vocab = json.load(open(sys.argv[1] + "/config.json"))["vocab_size"]
docs = [d["tokens"] for d in ref["documents"]]
with h5py.File(sys.argv[2], "w") as f:
    f.attrs["format"], f.attrs["version"] = "ringinfer.tokens", 2
    f.attrs["vocab_size"], f.attrs["tokenizer"] = vocab, "fixture"
    f["tokens"] = np.concatenate([np.asarray(d, np.int32) for d in docs])
    f["doc_offsets"] = np.cumsum([0] + [len(d) for d in docs], dtype=np.int64)
    f.create_dataset("doc_ids", data=[f"d{i}" for i in range(len(docs))], dtype=h5py.string_dtype())
PY
  for dt in $DTYPES; do
    for np in "${RANKS[@]}"; do
      out="$WORK/$m-$dt-$np"
      t0=$(date +%s.%N)
      mpirun -np "$np" "$RI" score -m "tests/fixtures/models/$m" -i "$WORK/$m.h5" -o "$out.h5" --device cpu -q \
        --kv-dtype "$dt" > "$out.log" 2>&1 || { echo "score $m $dt -np $np failed:"; tail -5 "$out.log"; exit 1; }
      echo "$(date +%s.%N) - $t0" | bc > "$out.time"
      "$RI" dump "$out.h5" --jsonl --logprobs > "$out.jsonl"
    done
  done
done

python3 - "$WORK" "$MODELS" "$DTYPES" "${RANKS[*]}" <<'PY'
import json, sys
work, models, dtypes, ranks = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4].split()
def lps(path):
    return [x for l in open(path) for x in json.loads(l)["logprobs"]]
print(f"{'kv':5} {'np':>3} {'tokens':>7} {'max |d| vs np ' + ranks[0]:>16} {'within 1e-5':>12} {'ref mean':>10} {'ref max':>10} {'seconds':>8}")
for dt in dtypes:
    base = {m: lps(f"{work}/{m}-{dt}-{ranks[0]}.jsonl") for m in models}
    for np in ranks:
        n = close = 0; dmax = 0.0; esum = emax = 0.0; secs = 0.0
        for m in models:
            ref = [x for d in json.load(open(f"tests/fixtures/models/{m}/reference.json"))["documents"] for x in d["logprobs"]]
            got = lps(f"{work}/{m}-{dt}-{np}.jsonl")
            assert len(got) == len(ref) == len(base[m]), (m, len(got), len(ref))
            for g, b, r in zip(got, base[m], ref):
                d = abs(g - b) / max(1.0, abs(b)); dmax = max(dmax, d); close += d <= 1e-5; n += 1
                e = abs(g - r); esum += e; emax = max(emax, e)
            secs += float(open(f"{work}/{m}-{dt}-{np}.time").read())
        print(f"{dt:5} {np:>3} {n:>7} {dmax:>16.3g} {100.0 * close / n:>11.2f}% {esum / n:>10.3g} {emax:>10.3g} {secs:>8.2f}")
PY
