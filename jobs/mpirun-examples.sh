#!/bin/bash
# Usage: jobs/mpirun-examples.sh cpu-demo|node|hosts      (from the repository root)
# Launching ringinfer with Open MPI's mpirun, without Slurm. One rank per GPU (or per CPU
# rank with --device cpu). What to change: the variables below; for `hosts`, HOSTFILE.
#   cpu-demo  4 CPU ranks on this machine with the demo model (tools/fetch-demo-model.sh):
#             tokenize inputs/docs, run, dump. Runs anywhere, no GPU needed.
#   node      8 GPUs of this machine, one ring of 8 ranks.
#   hosts     several machines listed in HOSTFILE ("node01 slots=8" per line), 8 GPUs each.
set -euo pipefail

RINGINFER=${RINGINFER:-build/ringinfer}             # change: path to the binary
MODEL=${MODEL:-models/Llama-3.1-8B-Instruct}        # change: HF folder or .gguf (GPU examples)
INPUTS=${INPUTS:-shards/part-*.h5}                  # change: input shards (glob)
OUTPUT=${OUTPUT:-out/summaries.h5}                  # change: output HDF5
HOSTFILE=${HOSTFILE:-hosts.txt}                     # change: for `hosts`
MPIRUN=${MPIRUN:-mpirun}                            # as root (containers) add --allow-run-as-root

export HDF5_USE_FILE_LOCKING=FALSE
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
# shellcheck disable=SC2206  # the glob is meant to expand
inputs=($INPUTS)

case ${1:-} in
  cpu-demo)
    demo_model=$(tools/fetch-demo-model.sh)
    mkdir -p out
    "$RINGINFER" prep --model "$demo_model" --prompt-template inputs/summarize.txt \
      --input inputs/docs/* --output out/demo-shard.h5
    # OMP_NUM_THREADS=1: 4 ranks share the cores; --oversubscribe allows more ranks than cores.
    OMP_NUM_THREADS=1 $MPIRUN -np 4 --oversubscribe -x OMP_NUM_THREADS \
      "$RINGINFER" run --model "$demo_model" --input out/demo-shard.h5 --output out/demo.h5 \
        --device cpu --max-new-tokens 32
    "$RINGINFER" dump out/demo.h5
    ;;
  node)
    mkdir -p "$(dirname "$OUTPUT")"
    # --bind-to none: ranks keep all cores; ringinfer takes GPU = node-local rank.
    $MPIRUN -np 8 --bind-to none \
      "$RINGINFER" run --model "$MODEL" --input "${inputs[@]}" --output "$OUTPUT" \
        --device cuda --cp 8 --max-new-tokens 512
    ;;
  hosts)
    mkdir -p "$(dirname "$OUTPUT")"
    nodes=$(grep -c . "$HOSTFILE")
    # For InfiniBand, export NCCL_IB_HCA / NCCL_SOCKET_IFNAME first (see
    # run-multinode-srun.sbatch) and pass them with -x; Open MPI 4's -x takes exact names.
    xflags=(-x PATH -x LD_LIBRARY_PATH -x HDF5_USE_FILE_LOCKING)
    for v in $(compgen -e | grep -E '^(NCCL|UCX)_' || true); do xflags+=(-x "$v"); done
    $MPIRUN -np $((8 * nodes)) --hostfile "$HOSTFILE" --map-by ppr:8:node --bind-to none "${xflags[@]}" \
      "$RINGINFER" run --model "$MODEL" --input "${inputs[@]}" --output "$OUTPUT" \
        --device cuda --max-new-tokens 512 --quiet
    ;;
  *)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 2 ;;
esac
