#!/usr/bin/env bash
# Batched decode (DESIGN §5, issue 20): `run --max-batch 1, 3, 8` under mpirun -np 1..4
# (one CP group of all ranks, two DP groups, and 2 CP x 2 TP) writes the same datasets as
# the unbatched one-rank run, greedy and sampled (temperature, top-p, top-k, penalties);
# so do an fp8 cache and the default batch (as many documents as memory holds), which the
# log names.
source "$(dirname "$0")/lib/common.bash"
R="$RINGINFER"
MODEL="$SOURCE_DIR/tests/fixtures/models/llama3-gqa"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
cd "$WORK"
# Documents of many lengths (empty and 1-token ones too) with budgets that end them at
# different steps, so documents join and leave the batch all through the run.
"$TESTBIN/make_test_shard" valid in.h5 --docs 12 --lengths 300,40,1,250,7,0,280,190,90,350,22,33 \
  --vocab 300 --seed 5 >/dev/null || { fail "make_test_shard"; finish; exit 1; }
datasets() {  # every dataset outside /timing, as text
  for d in doc_ids prompt_tokens gen_offsets gen_tokens text finish_reason; do h5dump -d "/$d" "$1" | sed 1d; done
}
job() {  # np, output, options...
  timeout -k 5 300 $MPIRUN -np "$1" "$R" run -m "$MODEL" -i in.h5 -o "$2" --device cpu --max-new-tokens 10 "${@:3}"
}
for mode in greedy sampled; do
  opts=()
  [[ $mode == sampled ]] && opts=(--temperature 0.9 --top-p 0.95 --top-k 60 --repetition-penalty 1.2 --seed 4)
  rm -f ref.h5
  job 1 ref.h5 --max-batch 1 -q "${opts[@]}" >log 2>&1 || { fail "$mode reference run"; cat log; continue; }
  datasets ref.h5 > "ref_$mode.txt"
  for case in "1 1 1 3" "1 1 1 8" "2 2 1 3" "2 1 1 8" "3 3 1 3" "4 4 1 8" "4 2 2 3"; do
    read -r np cp tp b <<<"$case"
    rm -f out.h5
    if job "$np" out.h5 --cp "$cp" --tp "$tp" --max-batch "$b" -q "${opts[@]}" >log 2>&1 &&
       datasets out.h5 | cmp -s - "ref_$mode.txt"; then
      pass "$mode: -np $np --cp $cp --tp $tp --max-batch $b identical to the unbatched run"
    else fail "$mode: -np $np --cp $cp --tp $tp --max-batch $b"; tail -5 log; fi
  done
done
# An fp8 cache: each row's K,V stored by its owner mid-batch, read by the batched attention.
rm -f ref8.h5 out8.h5
if job 1 ref8.h5 --max-batch 1 --kv-dtype fp8 -q >log 2>&1 && job 4 out8.h5 --max-batch 3 --kv-dtype fp8 -q >log 2>&1 &&
   cmp -s <(datasets ref8.h5) <(datasets out8.h5); then
  pass "fp8 KV: -np 4 --max-batch 3 identical to the unbatched run"
else fail "fp8 KV batched"; tail -5 log; fi
# The default batch: as many documents as memory holds (at most 32), printed.
rm -f out.h5
job 2 out.h5 >log 2>&1 && datasets out.h5 | cmp -s - ref_greedy.txt && pass "default batch identical" || { fail "default batch"; tail -5 log; }
grep -q "decode batch: up to 32 document(s) per group (as many as memory holds" log && pass "the log names the batch" \
  || { fail "no decode batch line"; grep -i batch log; }
expect_error "--max-batch 0 refused" 30 "--max-batch must be between 1 and 256" \
  "$R" run -m "$MODEL" -i in.h5 -o bad.h5 --device cpu --max-batch 0
finish
