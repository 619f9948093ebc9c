#!/usr/bin/env bash
# The memory check before work: a document too long for the memory per rank is refused up
# front, on every rank, naming the bytes needed and the smallest rank count that fits;
# no output and no journal are left.
source "$(dirname "$0")/lib/common.bash"
MODEL="$SOURCE_DIR/tests/fixtures/models/llama3-gqa"
cd "$WORK"
"$TESTBIN/make_test_shard" valid in.h5 --lengths 40,3000 --vocab 300 --seed 4 >/dev/null || fail "make_test_shard"
# The fixture's fp32 weights are ~0.5 MB; 3000 tokens of fp32 KV, activations and scratch
# need several MB per rank on one rank, and less on more ranks.
expect_error "too long for 2 MB per rank" 60 "memory check: a document of 3012 tokens needs [0-9]+ bytes .* per rank with 2 ranks .*but only 2000000 bytes .*smallest rank count that fits is [0-9]+" \
  $MPIRUN -np 2 "$RINGINFER" run -m "$MODEL" -i in.h5 -o out.h5 --device cpu --max-new-tokens 12 --memory-limit 0.002
[[ ! -e out.h5 ]] && ! ls out.h5.journal.* >/dev/null 2>&1 && pass "nothing written" || fail "output or journal left"
expect_error "weights alone do not fit" 60 "no rank count fits: the weights alone need" \
  $MPIRUN -np 2 "$RINGINFER" score -m "$MODEL" -i in.h5 -o out.h5 --device cpu --memory-limit 0.0001
if $MPIRUN -np 2 "$RINGINFER" score -m "$MODEL" -i in.h5 -o ok.h5 --device cpu -q --memory-limit 1 >log 2>&1; then
  pass "fits in 1 GB per rank"; else fail "refused at 1 GB"; cat log; fi
finish
