#!/usr/bin/env bash
# Usage: tools/gpu-check.sh PACK.tar.xz [SECONDS]
# On the GPU machine, from the repository root: unpacks a tools/gpu-pack.sh archive into
# /tmp/pack and runs every GPU test in it (each tests/gpu_* binary; the mpi_* ones under
# mpirun -np 2 with RINGINFER_CUDA_COMM=mpi, the two ranks sharing the GPU), then CUDA
# `run --max-batch 1/3/8` on a fixture job (the token ids must agree), stopping early when
# SECONDS (default 300) of wall time are spent. Prints one line per step ("PASS", "FAIL" with
# gtest's failure lines, or "SKIP": exit code 77 or no budget left); logs go to $OUT (default
# /tmp/out).
# Exit status: 1 when any step failed, else 0. Device time is scarce: one call runs it all.
set -uo pipefail
[ $# -ge 1 ] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
pack=$1
budget=${2:-300}
log=${OUT:-/tmp/out}
mkdir -p "$log"
SECONDS=0
rm -rf /tmp/pack && mkdir -p /tmp/pack && tar -xJf "$pack" -C /tmp/pack || exit 2
# shellcheck disable=SC1091
source /tmp/pack/env.sh
bin=/tmp/pack/bin
export HDF5_USE_FILE_LOCKING=FALSE NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
failed=0

step() {  # step NAME LIMIT CMD...: runs CMD within LIMIT seconds (and the budget left)
  local name=$1 limit=$2 left=$((budget - SECONDS))
  shift 2
  if [ "$left" -lt 10 ]; then
    echo "SKIP $name (budget spent)"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$SECONDS
  timeout "$limit" "$@" > "$log/$name.log" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then
    echo "PASS $name ($((SECONDS - t0)) s)"
  elif [ $rc -eq 77 ]; then  # the tests' "skipped" (e.g. NCCL with fewer GPUs than ranks)
    echo "SKIP $name ($(grep -m1 -iE 'skip' "$log/$name.log" | cut -c1-120))"
  else
    failed=1
    echo "FAIL $name (rc $rc, $((SECONDS - t0)) s; $log/$name.log)"
    grep -E "^\[  FAILED  \]|Failure|rror" "$log/$name.log" | head -8 | sed 's/^/  /'
  fi
}

for t in "$bin"/tests/gpu_test_*; do
  step "$(basename "$t")" 180 "$t" --gtest_brief=1
done
for t in "$bin"/tests/gpu_mpi_*; do
  [ -e "$t" ] || continue
  RINGINFER_CUDA_COMM=mpi step "$(basename "$t")_np2" 180 mpirun --oversubscribe --bind-to none -np 2 \
    -x RINGINFER_CUDA_COMM -x LD_LIBRARY_PATH -x PATH -x OPAL_PREFIX -x OMPI_MCA_mca_base_component_path \
    -x HDF5_USE_FILE_LOCKING "$t" --gtest_brief=1
done

# Batched decode on the GPU: the same token ids at every batch size on a fixture job.
"$bin"/tests/make_test_shard valid /tmp/gpu-check-in.h5 --docs 12 --lengths 300,40,1,250,7,0,280,190,90,350,22,33 \
  --vocab 300 --seed 5 > /dev/null 2>&1
for b in 1 3 8; do
  step "run_max_batch_$b" 60 "$bin"/ringinfer run -m tests/fixtures/models/llama3-gqa -i /tmp/gpu-check-in.h5 \
    -o "/tmp/gpu-check-b$b.h5" --device cuda --max-new-tokens 10 --max-batch $b -q
  "$bin"/ringinfer dump -i "/tmp/gpu-check-b$b.h5" --jsonl 2> /dev/null |
    grep -oE '"id":"[^"]*"|"token_ids":\[[0-9,]*\]' > "/tmp/gpu-check-b$b.txt"
done
for b in 3 8; do
  if [ -s /tmp/gpu-check-b1.txt ] && cmp -s /tmp/gpu-check-b1.txt "/tmp/gpu-check-b$b.txt"; then
    echo "PASS token ids at --max-batch $b == --max-batch 1"
  else
    failed=1
    echo "FAIL token ids at --max-batch $b differ from --max-batch 1 (or no output)"
  fi
done
echo "gpu-check: $SECONDS s, $([ $failed -eq 0 ] && echo 'all passed' || echo 'FAILURES')"
exit $failed
