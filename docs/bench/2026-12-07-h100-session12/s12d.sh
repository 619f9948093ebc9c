#!/usr/bin/env bash
# Issue 17: the 8B shape at 1M tokens on one H200 (fp8 KV, the residual stream in host memory), one
# call of its own: run it only on a held H200 with at least 11 minutes of device time left.
# Prefill at cuDNN's ~556 TFLOP/s (128K, H100) is ~520 s of attention and ~20 s of products:
# the run fits the 600-s call with ~40 s to spare, no more (the native kernel's ~420 would not).
# bench_model prints each prefill layer as it is enqueued, so a run cut short still says its rate.
# Run from the repository root: bash docs/bench/2026-12-07-h100-session12/s12d.sh
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/pack
tar -xJf .carry-final/pack.tar.xz -C /tmp/pack && source /tmp/pack/env.sh
export HDF5_USE_FILE_LOCKING=FALSE NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
/tmp/pack/bin/ringinfer plan -m tests/fixtures/configs/llama-3.1-8b.json --context 1048576 --ranks 1 --kv-dtype fp8 \
  --offload-residual 2>&1 | tail -12
timeout ${LIMIT_S:-580} /tmp/pack/bin/bench_model --contexts 1048576 --decode 8 --kv-dtype fp8 --offload-residual \
  --attention cudnn --matmul-rows "" --json "$OUT/model_1m.json" 2>&1 | tee "$OUT/model_1m.log" | tail -40
echo "rc=${PIPESTATUS[0]} at ${SECONDS}s"
cut -c1-900 "$OUT/model_1m.json"
