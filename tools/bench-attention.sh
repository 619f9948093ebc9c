#!/usr/bin/env bash
# Usage: tools/bench-attention.sh [BUILD_DIR] [--quick]
# Runs on the GPU machine, from the repository root, with BUILD_DIR (default build-cuda)
# already built (ninja -C build-cuda gpu_test_flash_attention gpu_test_decode_attention
# gpu_test_attention_paths bench_attention). Runs the attention correctness tests, then bench_attention and its
# PyTorch SDPA peer (tools/bench_attention_peer.py) on the same shapes, and prints the
# table of ratios last. Logs and JSON go to $OUT (default out/bench-attention).
set -uo pipefail
cd "$(dirname "$0")/.."
build=build-cuda
quick=
for a in "$@"; do
  case $a in
    --quick) quick=--quick ;;
    *) build=$a ;;
  esac
done
out=${OUT:-out/bench-attention}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
# A build folder copied from another machine may carry the shared libraries it needs.
[ -d "$build/lib" ] && export LD_LIBRARY_PATH="$PWD/$build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The cuDNN attention path links libcudnn 9: where the system has none, take PyTorch's wheel's.
if ! ldconfig -p | grep -q 'libcudnn\.so\.9 '; then
  d=$(python3 -c 'import nvidia.cudnn as c, os; print(os.path.join(list(c.__path__)[0], "lib"))' 2>/dev/null) &&
    export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu --format=csv; } \
  > "$out/device.txt" 2>&1
cat "$out/device.txt"

status=0
for t in gpu_test_flash_attention gpu_test_decode_attention gpu_test_attention_paths; do
  "$build/tests/$t" --gtest_brief=1 2>&1 | tee -a "$out/tests.log"
  rc=${PIPESTATUS[0]}
  echo "$t: exit $rc" | tee -a "$out/tests.log"
  [ "$rc" -eq 0 ] || status=1
done

"$build/bench_attention" --json "$out/ours.json" $quick 2>&1 | tee "$out/bench.log" || status=1
python3 tools/bench_attention_peer.py --json "$out/peer.json" $quick 2>&1 | tee "$out/peer.log" || status=1
python3 tools/bench_attention_peer.py --table "$out/ours.json" "$out/peer.json" 2>&1 | tee "$out/table.txt"
grep -h "exit" "$out/tests.log"
exit $status
