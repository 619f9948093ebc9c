#!/usr/bin/env bash
# ringinfer plan against hand-computed figures (DESIGN §3, issues 7 and 10):
# Llama-3.1-8B at 1,048,576 tokens on 2 ranks: 128 KiB of KV per token, 68.7 GB of KV per rank;
# Llama-3.1-70B at 1,000,000 tokens: 327.68 GB of KV in all; on 16 ranks with --tp 8,
# 17.6 GB of weights and 20.5 GB of KV per rank.
source "$(dirname "$0")/lib/common.bash"
C="$SOURCE_DIR/tests/fixtures/configs"
check() {  # name, output, regex
  grep -Eq "$3" <<<"$2" && pass "$1" || { fail "$1: no /$3/"; echo "$2"; }
}
out=$("$RINGINFER" plan --model "$C/llama-3.1-8b.json" --context 1048576 --ranks 2 2>&1)
check "8B KV per token" "$out" "^KV per token +131072 bytes"
check "8B KV per rank" "$out" "^  KV cache +68\.7[0-9] GB"
check "8B fits on 2 H200" "$out" "total .*: fits$"
check "8B smallest" "$out" "^smallest fitting 2 ranks"
check "8B one document of 1M at a time" "$out" "^decode batch +1 documents"
# Issue 20's job: 32 documents of 8K prompt + 128 new tokens (34 GB of KV) fit one H100.
out=$("$RINGINFER" plan --model "$C/llama-3.1-8b.json" --context 8320 --ranks 1 --gpu-memory 80 2>&1)
check "8B 8K: the default batch is 32" "$out" "^decode batch +32 documents"
check "8B 8K: the batch's KV" "$out" "^  KV cache +1\.09 GB per document, 34\.9[0-9] GB for the decode batch"
out=$("$RINGINFER" plan --model "$C/llama-3.1-70b.json" --context 1000000 --ranks 1 2>&1)
check "70B KV total" "$out" "^KV total +327\.68 GB"
check "70B does not fit one GPU" "$out" "DOES NOT FIT"
out=$("$RINGINFER" plan --model "$C/llama-3.1-70b.json" --context 1000000 --ranks 16 --tp 8 2>&1)
check "70B tp8 weights" "$out" "^  weights +17\.6[0-9] GB"
check "70B tp8 KV" "$out" "^  KV cache +20\.4[0-9] GB"
# RoPE as read: llama3 recognised in a GGUF's rope_freqs (original context 64, no metadata
# key for it), YaRN from config.json.
M="$SOURCE_DIR/tests/fixtures/models"
out=$("$RINGINFER" plan --model "$M/llama3-gqa/model.gguf" --context 1000 --ranks 1 2>&1)
check "llama3 from rope_freqs" "$out" "^rope +theta 10000, llama3 x8 \(original 64, low 1, high 4\)$"
out=$("$RINGINFER" plan --model "$M/qwen3-qknorm-yarn" --context 1000 --ranks 1 2>&1)
check "yarn from config.json" "$out" "^rope +theta 10000, yarn x4 \(original 64, beta 32/1, attention factor 1.1386"
expect_error "ranks not a multiple of tp" 10 "--ranks must be a multiple of --tp" \
  "$RINGINFER" plan --model "$C/llama-3.1-70b.json" --context 1000 --ranks 6 --tp 4
expect_error "missing config" 10 "nope.json" "$RINGINFER" plan --model "$WORK/nope.json" --context 1000 --ranks 1
finish
