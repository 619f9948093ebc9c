#!/usr/bin/env bash
# Model families through the CLI: a config.json whose sizes contradict its tensors is
# reported as such, naming config.json, with exit 2, before any memory check (regression
# 2026-12-07: an absurd hidden_size was reported as "the weights alone need 5394432 GiB
# per rank"); the Qwen3 fixture (QK-norm, head_dim 24, YaRN) scores the same from its
# safetensors folder and from its qwen3 GGUF on 1, 2 and 3 ranks, and generates; so does
# a GGUF of k-quant blocks.
source "$(dirname "$0")/lib/common.bash"
FIX="$SOURCE_DIR/tests/fixtures/models"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
cd "$WORK"
"$TESTBIN/make_test_shard" valid in.h5 --lengths 1,2,5,90,150 --vocab 300 --seed 11 >/dev/null || fail "make_test_shard"

mkdir bad && cp "$FIX/llama3-gqa/model.safetensors" bad/
python3 -c "import json,sys; c=json.load(open(sys.argv[1])); c['hidden_size']=1000000; json.dump(c, open('bad/config.json','w'))" \
  "$FIX/llama3-gqa/config.json"
want="bad/config.json does not match the weights: tensor 'model.embed_tokens.weight' has shape \[300, 64\] but the config implies \[300, 1000000\]"
for cmd in score run; do
  out=$(timeout -k 5 60 $MPIRUN -np 2 "$RINGINFER" $cmd -m bad -i in.h5 -o bad-$cmd.h5 --device cpu 2>&1); rc=$?
  if ((rc == 2)) && grep -Eq -- "$want" <<<"$out" && ! grep -q "GiB per rank\|memory check" <<<"$out"; then
    pass "$cmd: config that contradicts its tensors: exit 2, names config.json"
  else fail "$cmd: config mismatch (exit $rc)"; echo "$out" | head -5; fi
done

for np in 1 2 3; do
  for m in "$FIX/qwen3-qknorm-yarn" "$FIX/qwen3-qknorm-yarn/model.gguf"; do
    tag=$(basename "$m")-$np
    if timeout -k 5 120 $MPIRUN -np $np "$RINGINFER" score -m "$m" -i in.h5 -o "s-$tag.h5" --device cpu -q > "s-$tag.log" 2>&1 &&
       "$RINGINFER" dump --jsonl --logprobs "s-$tag.h5" > "s-$tag.jsonl"; then
      pass "score $tag"
    else fail "score $tag"; tail -5 "s-$tag.log"; fi
  done
done
# Within 1e-5 relative (|a - b| <= 1e-5 max(1, |b|)): fp32 sums in another order, as in
# tests/mpi/mpi_engine.cpp; a format or striping error moves logprobs by 1e-2 or more.
if python3 - s-qwen3-qknorm-yarn-1.jsonl s-*.jsonl <<'PY'; then pass "safetensors and GGUF, 1-3 ranks: the same logprobs"; else fail "logprobs differ"; fi
import json, sys
def load(p): return {d["id"]: d["logprobs"] for d in map(json.loads, open(p))}
base = load(sys.argv[1])
worst = 0.0
for p in sys.argv[2:]:
    got = load(p)
    assert got.keys() == base.keys(), p
    for k, v in got.items():
        assert len(v) == len(base[k]), (p, k)
        worst = max([worst] + [abs(a - b) / max(1.0, abs(b)) for a, b in zip(v, base[k])])
print(f"  max relative diff {worst:.3g}")
sys.exit(0 if worst <= 1e-5 else 1)
PY
if timeout -k 5 120 $MPIRUN -np 2 "$RINGINFER" run -m "$FIX/qwen3-qknorm-yarn/model.gguf" -i in.h5 -o gen.h5 --device cpu \
     --max-new-tokens 5 -q > gen.log 2>&1 && "$RINGINFER" dump --jsonl gen.h5 | grep -q '"finish_reason"'; then
  pass "run on the qwen3 GGUF, 2 ranks"
else fail "run on the qwen3 GGUF"; tail -5 gen.log; fi

# A GGUF of k-quant, Q5_x and IQ4 blocks (tools/make-kquant-fixtures.py), kept as stored by
# the CPU backend: the same logprobs on 1 and 3 ranks, and it generates.
KQ="$FIX/llama-kquants/model.gguf"
for np in 1 3; do
  if timeout -k 5 120 $MPIRUN -np $np "$RINGINFER" score -m "$KQ" -i in.h5 -o "kq-$np.h5" --device cpu -q > "kq-$np.log" 2>&1 &&
     "$RINGINFER" dump --jsonl --logprobs "kq-$np.h5" > "kq-$np.jsonl"; then
    pass "score the k-quant GGUF, $np ranks"
  else fail "score the k-quant GGUF, $np ranks"; tail -5 "kq-$np.log"; fi
done
if python3 - kq-1.jsonl kq-3.jsonl <<'PY'; then pass "k-quant GGUF: 1 and 3 ranks agree"; else fail "k-quant GGUF: ranks differ"; fi
import json, sys
a, b = ({d["id"]: d["logprobs"] for d in map(json.loads, open(p))} for p in sys.argv[1:])
assert a.keys() == b.keys() and any(len(v) > 50 for v in a.values())
worst = max(abs(x - y) / max(1.0, abs(y)) for k in a for x, y in zip(a[k], b[k]))
print(f"  max relative diff {worst:.3g}")
sys.exit(0 if worst <= 1e-5 else 1)
PY
if timeout -k 5 120 $MPIRUN -np 2 "$RINGINFER" run -m "$KQ" -i in.h5 -o kq-gen.h5 --device cpu --max-new-tokens 5 -q \
     > kq-gen.log 2>&1 && "$RINGINFER" dump --jsonl kq-gen.h5 | grep -q '"finish_reason"'; then
  pass "run on the k-quant GGUF, 2 ranks"
else fail "run on the k-quant GGUF"; tail -5 kq-gen.log; fi
finish
