#!/usr/bin/env bash
# Usage: tools/bench-prefill.sh [BUILD_DIR]
# One GPU, one call: ringinfer's prefill of the Llama-3.1-8B shape (bench_model: random bf16
# weights, one sequence per context, --decode 1) once per --attention path, then transformers'
# prefill of the same shape (tools/bench_prefill_peer.py: bf16, SDPA, random weights), then
# the table of ratios (transformers s / ringinfer s) and MFU. Runs on the GPU machine from
# the repository root with BUILD_DIR (default build-cuda) holding bench_model (ninja -C
# BUILD_DIR bench_model); shared libraries carried in BUILD_DIR/lib are used.
# Environment (optional): OUT (default out/bench-prefill), PREFILL_CONTEXTS (default
# 8192,32768,131072), PREFILL_PATHS (default "native cudnn"), PREFILL_LAYERS (default: all).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
build=${1:-build-cuda}
out=${OUT:-out/bench-prefill}
contexts=${PREFILL_CONTEXTS:-8192,32768,131072}
paths=${PREFILL_PATHS:-native cudnn}
layers=${PREFILL_LAYERS:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
[ -d "$build/lib" ] && export LD_LIBRARY_PATH="$PWD/$build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The cuDNN attention path links libcudnn 9: where the system has none, take PyTorch's wheel's.
if ! ldconfig -p | grep -q 'libcudnn\.so\.9 '; then
  d=$(python3 -c 'import nvidia.cudnn as c, os; print(os.path.join(list(c.__path__)[0], "lib"))' 2>/dev/null) &&
    export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw,temperature.gpu \
    --format=csv; } > "$out/device.txt" 2>&1
cat "$out/device.txt"
status=0
rm -f "$out/ours.json"
launcher=""
command -v mpirun >/dev/null && launcher="mpirun -np 1"  # bench_model starts MPI
for p in $paths; do
  ${launcher} "$build/bench_model" --contexts "$contexts" --decode 1 --attention "$p" ${layers:+--layers "$layers"} \
    --json "$out/ours.json" 2>&1 | tee -a "$out/ours.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
python3 tools/bench_prefill_peer.py --json "$out/peer.json" --contexts "$contexts" ${layers:+--layers "$layers"} 2>&1 |
  tee "$out/peer.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
python3 tools/bench_prefill_peer.py --table "$out/ours.json" "$out/peer.json" 2>&1 | tee "$out/table.txt"
exit $status
