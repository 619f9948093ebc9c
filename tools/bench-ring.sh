#!/usr/bin/env bash
# Usage: tools/bench-ring.sh [BUILD_DIR] [tests] [score] [bench]
# Runs on the GPU machine, from the repository root, with BUILD_DIR (default build-cuda)
# holding the binaries (ninja -C BUILD_DIR bench_model gpu_mpi_cuda_engine gpu_mpi_nccl_comm
# ringinfer make_test_shard) and, when copied from another machine, their shared libraries
# in BUILD_DIR/lib (and a relocated Open MPI in BUILD_DIR/openmpi, if mpirun is not installed).
# Naming stages runs only those; the default is all three, in this order:
#   tests  gpu_mpi_nccl_comm and gpu_mpi_cuda_engine under mpirun -np 2
#   score  `ringinfer score` of a fixture model (tests/fixtures/models/llama3-gqa) on a
#          random shard: --device cuda --cp 1 vs mpirun -np 2 --cp 2 (max |logprob
#          difference| <= 0.05, the bound of gpu_mpi_cuda_engine), and --device cpu (fp32) vs
#          cuda (max <= 0.35, mean <= 0.08: the bf16 bounds of the GPU tests)
#   bench  bench_model (Llama-3.1-8B shape, random bf16 weights) at --cp 1 (one rank) and
#          --cp 2 (mpirun -np 2) per context; ring efficiency = t(1 GPU) / (2 t(2 GPUs)) of
#          the prefill, at the same layer count on both sides
# With 2 or more GPUs: RINGINFER_CUDA_COMM=nccl, one GPU per rank. With ONE GPU (a smoke
# test of this script): RINGINFER_CUDA_COMM=mpi (host-staged), both ranks share the GPU,
# the NCCL test skips (77), small contexts and 2 layers; the efficiency is then meaningless
# and is printed as such.
# Environment (all optional):
#   OUT                 output folder (default out/bench-ring): logs, bench.json, summary.txt
#   RING_CONTEXTS       bench contexts (default "131072 524288"; one GPU: "8192 32768")
#   RING_LAYERS         force this layer count for every context (default: see below)
#   RING_LONG_LAYERS    layer cap for contexts above 131072 (default 8): one 524288-token
#                       prefill takes ~7 s per layer on one H100/H200 (attention-bound), so
#                       all 32 layers would take ~4 min alone; the efficiency is a per-layer
#                       ratio (every layer does the same work), so a few layers measure it
#   RING_DECODE         decode steps per context (default 16)
#   RING_MPIRUN_ARGS    extra mpirun arguments (default none)
# Layer count per context, unless RING_LAYERS: the most of the model's 32 layers whose
# weights (bf16), KV cache (bf16, 4 KiB per token and layer) and activations (~64 KB per
# token) fit on ONE GPU (the --cp 1 baseline), then RING_LONG_LAYERS above 131072 tokens.
# Llama-3.1-8B at 512K: 16 GB of weights + 64 GB of KV + ~34 GB of activations fit one
# H200 (141 GB); on one 80 GB H100 about 17 layers fit. Every reduced count is printed.
# The NVLink multicast stays off (NCCL_NVLS_ENABLE=0): see the device notes.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
build="build-cuda"
stages=()
for a in "$@"; do
  case $a in
    tests | score | bench) stages+=("$a") ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) build=${a%/} ;;
  esac
done
((${#stages[@]})) || stages=(tests score bench)
want() { [[ " ${stages[*]} " == *" $1 "* ]]; }
out=${OUT:-out/bench-ring}
mkdir -p "$out"
: > "$out/summary.txt"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export OMPI_MCA_mpi_yield_when_idle=1 PYTHONUNBUFFERED=1 LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
# A build folder copied from another machine may carry the shared libraries it needs.
[ -d "$build/lib" ] && export LD_LIBRARY_PATH="$PWD/$build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ -x "$build/openmpi/bin/mpirun" ]; then
  export OPAL_PREFIX="$PWD/$build/openmpi" PATH="$PWD/$build/openmpi/bin:$PATH"
  export LD_LIBRARY_PATH="$PWD/$build/openmpi/lib:$LD_LIBRARY_PATH"
fi
line() { echo "$*" | tee -a "$out/summary.txt"; }
SECONDS=0

# ---------------------------------------------------------------- the machine
{ date -u +%FT%TZ; nvidia-smi --query-gpu=index,name,memory.total,driver_version,clocks.max.sm --format=csv;
  nvidia-smi topo -m; } > "$out/device.txt" 2>&1
cat "$out/device.txt"
gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | wc -l)
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then gpus=$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .); fi
gpu_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits -i 0 2>/dev/null | head -1 | tr -d ' ')
if ((gpus == 0)); then echo "bench-ring: no GPU visible (nvidia-smi)"; exit 1; fi
if ((gpus >= 2)); then
  comm=nccl mode="2 GPUs, one rank each, NCCL"
  contexts=${RING_CONTEXTS:-131072 524288}
else
  comm=mpi mode="ONE GPU shared by 2 ranks, host-staged MPI (smoke test: the ring efficiency is MEANINGLESS here)"
  contexts=${RING_CONTEXTS:-8192 32768}
  : "${RING_LAYERS:=2}"
fi
export RINGINFER_CUDA_COMM=$comm
MPIRUN=${MPIRUN:-mpirun}
if ! command -v "$MPIRUN" > /dev/null; then
  echo "bench-ring: $MPIRUN not found (install Open MPI, or carry it as $build/openmpi with bin/ and lib/)"; exit 1
fi
# RING_MPIRUN_ARGS is split into words on purpose.
# --bind-to none: Open MPI binds each of 2 ranks to one core, which would serialize the
# benchmark's weight generation and the CPU-side threads.
# shellcheck disable=SC2206
mpirun2=("$MPIRUN" --allow-run-as-root --oversubscribe --bind-to none -np 2 -x RINGINFER_CUDA_COMM -x NCCL_NVLS_ENABLE
  -x LD_LIBRARY_PATH -x PATH -x OMPI_MCA_mpi_yield_when_idle ${RING_MPIRUN_ARGS:-})
line "bench-ring: $mode; $gpus visible GPU(s) of ${gpu_mib:-?} MiB; RINGINFER_CUDA_COMM=$comm; build $build"

# The test binaries find the fixtures under the source folder they were built from
# (compiled in): when that is another path on this machine, link it here. The folder is
# read from the test's own source path, which the binary holds (gtest's file names).
link_source_dir() {
  local bin=$1 f p
  f=$(grep -a -o -m1 -E '/[A-Za-z0-9_.+/-]+/tests/gpu/mpi_[a-z_]+[.]cpp' "$bin" | head -1)
  p=${f%/tests/gpu/*}
  [[ -n $f && $p == /?* ]] || return 0
  if [ ! -e "$p/tests/fixtures/models" ] && [ "$p" != "$PWD" ]; then
    echo "fixtures: $bin was built in $p; linking that path to $PWD"
    mkdir -p "$(dirname "$p")" && ln -sfn "$PWD" "$p"
  fi
}

# run_step NAME LIMIT_S command...: runs with a time limit, logs to $out/NAME.log, records
# pass / skipped (77) / FAIL / TIMEOUT in the summary.
declare -A result
run_step() {
  local name=$1 limit=$2 t0=$SECONDS rc; shift 2
  echo "== $name: $*"
  timeout -k 10 "$limit" "$@" > "$out/$name.log" 2>&1; rc=$?
  tail -25 "$out/$name.log"
  case $rc in
    0) result[$name]="pass" ;;
    77) result[$name]="$(grep -m1 -h '^skipped' "$out/$name.log" || echo skipped)" ;;
    124 | 137) result[$name]="TIMEOUT after ${limit} s" ;;
    *) result[$name]="FAIL (exit $rc)" ;;
  esac
  result[$name]="${result[$name]} [$((SECONDS - t0)) s]"
  echo "== $name: ${result[$name]}"
  return $rc
}

# ---------------------------------------------------------------- tests
if want tests; then
  for t in gpu_mpi_nccl_comm gpu_mpi_cuda_engine; do
    if [ ! -x "$build/tests/$t" ]; then result[$t]="FAIL (missing $build/tests/$t)"; continue; fi
    link_source_dir "$build/tests/$t"
    run_step "$t" 300 "${mpirun2[@]}" "$build/tests/$t" --gtest_brief=1
  done
  grep -h "^communicator\|\[ measured \]" "$out"/gpu_mpi_*.log 2>/dev/null > "$out/tests-measured.txt"
fi

# ---------------------------------------------------------------- score
score_compare() {  # A.jsonl B.jsonl MAX_TOL [MEAN_TOL]: prints max/mean |difference|, fails past the bounds
  python3 - "$@" << 'EOF'
import json, math, sys
a, b, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
mean_tol = float(sys.argv[4]) if len(sys.argv) > 4 else math.inf
A = [json.loads(l) for l in open(a)]; B = [json.loads(l) for l in open(b)]
assert len(A) == len(B) and len(A) > 0, f"{len(A)} vs {len(B)} documents"
worst, total, n = 0.0, 0.0, 0
for x, y in zip(A, B):
    assert x["id"] == y["id"], (x["id"], y["id"])
    p, q = x.get("logprobs") or [], y.get("logprobs") or []
    assert len(p) == len(q), f'{x["id"]}: {len(p)} vs {len(q)} logprobs'
    for u, v in zip(p, q):
        assert u is not None and v is not None and math.isfinite(u) and math.isfinite(v), f'{x["id"]}: not finite'
        d = abs(u - v); worst = max(worst, d); total += d; n += 1
assert n > 0, "no logprobs compared"
mean = total / n
ok = worst <= tol and mean <= mean_tol
print(f"max |diff| {worst:.3g} (bound {tol}), mean {mean:.3g}{'' if math.isinf(mean_tol) else f' (bound {mean_tol})'} over {n} tokens: {'ok' if ok else 'OUT OF BOUNDS'}")
sys.exit(0 if ok else 1)
EOF
}
if want score; then
  R="$build/ringinfer" model=tests/fixtures/models/llama3-gqa s="$out/score"
  mkdir -p "$s"
  if [ ! -x "$R" ] || [ ! -x "$build/tests/make_test_shard" ]; then
    result[score]="FAIL (missing $R or $build/tests/make_test_shard)"
  elif ! "$build/tests/make_test_shard" valid "$s/in.h5" --lengths 2500,777,64,2,1 --vocab 300 --seed 11 > "$s/shard.log" 2>&1; then
    result[score]="FAIL (make_test_shard: $(tail -1 "$s/shard.log"))"
  else
    ok=1
    run_step score_cpu 120 "$R" score -m "$model" -i "$s/in.h5" -o "$s/cpu.h5" --device cpu -q || ok=0
    run_step score_cuda_cp1 120 "$R" score -m "$model" -i "$s/in.h5" -o "$s/cp1.h5" --device cuda --cp 1 -q || ok=0
    run_step score_cuda_cp2 180 "${mpirun2[@]}" "$R" score -m "$model" -i "$s/in.h5" -o "$s/cp2.h5" --device cuda \
      --cp 2 -q || ok=0
    for f in cpu cp1 cp2; do
      [ -f "$s/$f.h5" ] && "$R" dump "$s/$f.h5" --jsonl --logprobs > "$s/$f.jsonl" 2>> "$s/dump.log"
    done
    if ((ok)); then
      cmp2=$(score_compare "$s/cp1.jsonl" "$s/cp2.jsonl" 0.05 2>&1) || ok=0
      cmpc=$(score_compare "$s/cpu.jsonl" "$s/cp1.jsonl" 0.35 0.08 2>&1) || ok=0
      result[score]="$( ((ok)) && echo pass || echo FAIL): cuda cp2 vs cp1: ${cmp2##*$'\n'}; cpu fp32 vs cuda cp1: ${cmpc##*$'\n'}"
    else
      result[score]="FAIL (a score run failed; see $s and the score_*.log files)"
    fi
  fi
fi

# ---------------------------------------------------------------- bench
# Layers of the 8B shape that fit on one GPU at S tokens (see the header).
fit_layers() {
  local S=$1 mem avail per
  mem=$(( ${gpu_mib:-0} * 1048576 ))
  avail=$(( mem - 4000000000 - 2101346304 - 64000 * S ))  # margin, embeddings + LM head (bf16), activations
  per=$(( 436207616 + 4096 * S ))                          # one layer's bf16 weights and KV cache
  local L=$(( avail > 0 ? avail / per : 0 ))
  (( L > 32 )) && L=32
  echo "$L"
}
if want bench && [ ! -x "$build/bench_model" ]; then
  result[bench]="FAIL (missing $build/bench_model)"
elif want bench; then
  json="$out/bench.json"
  : > "$json"
  declare -A layers_of
  for S in $contexts; do
    if [ -n "${RING_LAYERS:-}" ]; then L=$RING_LAYERS; why="RING_LAYERS"
    else
      L=$(fit_layers "$S"); why="the most that fit one GPU of ${gpu_mib} MiB"
      if ((L >= 32)); then L=32; why="the whole model"; fi
      if ((S > 131072 && L > ${RING_LONG_LAYERS:-8})); then L=${RING_LONG_LAYERS:-8}; why="RING_LONG_LAYERS (time)"; fi
    fi
    if ((L < 1)); then line "bench: context $S does not fit one GPU even with 1 layer: left out"; continue; fi
    layers_of[$S]=$L
    line "bench: context $S at $L of 32 layers ($why), the same on 1 and 2 ranks"
  done
  # One process per layer count, contexts together (model set-up is paid once); the most
  # layers (the shortest contexts) first.
  for L in $(printf '%s\n' "${layers_of[@]}" | sort -n -r -u); do
    ctx=$(for S in "${!layers_of[@]}"; do ((layers_of[$S] == L)) && echo "$S"; done | sort -n | paste -sd,)
    args=(--contexts "$ctx" --layers "$L" --decode "${RING_DECODE:-16}" --json "$json")
    # The 1-rank baseline runs on GPU 0 alone.
    run_step "bench_cp1_L$L" 480 env CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}" \
      "$build/bench_model" "${args[@]}" --cp 1
    run_step "bench_cp2_L$L" 480 "${mpirun2[@]}" "$build/bench_model" "${args[@]}" --cp 2
  done
  python3 - "$json" "$comm" > "$out/bench-table.txt" << 'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
shared = any(r.get("shared_gpu") for r in rows if r.get("kind") == "model")
m = {}
for r in rows:
    if r.get("kind") == "model" and "prefill_s" in r:
        m[(r["context"], r["layers"], r.get("cp", 1))] = r
errs = [r for r in rows if r.get("kind") == "model" and "error" in r]
def cell(r, key, fmt):
    return fmt.format(r[key]) if r and key in r else "n/a"
print(f"{'context':>8} {'layers':>6} {'prefill 1 GPU':>13} {'prefill 2':>10} {'efficiency':>10} "
      f"{'decode tok/s 1':>14} {'decode 2':>9} {'ring GB/s':>9} {'peak GB/rank 2':>14}")
for (S, L, cp), r1 in sorted(m.items()):
    if cp != 1:
        continue
    r2 = m.get((S, L, 2))
    eff = f"{r1['prefill_s'] / (2 * r2['prefill_s']):.3f}" if r2 else "n/a"
    peak = f"{r2['peak_device_bytes'] / 1e9:.1f}" if r2 else "n/a"
    print(f"{S:>8} {L:>6} {cell(r1, 'prefill_s', '{:.2f} s'):>13} {cell(r2, 'prefill_s', '{:.2f} s'):>10} {eff:>10} "
          f"{cell(r1, 'decode_tokens_per_s', '{:.1f}'):>14} {cell(r2, 'decode_tokens_per_s', '{:.1f}'):>9} "
          f"{cell(r2, 'ring_gbps', '{:.1f}'):>9} {peak:>14}")
for (S, L, cp), r2 in sorted(m.items()):
    if cp == 2 and (S, L, 1) not in m:
        print(f"{S:>8} {L:>6} {'n/a':>13} {r2['prefill_s']:>9.2f}s (no 1-GPU baseline)")
for r in errs:
    print(f"error at context {r['context']}, cp {r.get('cp', 1)}: {r['error']}")
print("efficiency = t(1 GPU) / (2 x t(2 GPUs)) of the prefill (slowest rank); target > 0.95 at 128K+ (DESIGN 8)")
if shared:
    print("ONE GPU shared by both ranks: the 2-rank times include both ranks' work on one GPU and host staging;"
          " the efficiency says nothing about the ring")
EOF
  cat "$out/bench-table.txt"
fi

# ---------------------------------------------------------------- summary
{
  echo
  echo "================ bench-ring summary ($mode; ${SECONDS} s) ================"
  for k in gpu_mpi_nccl_comm gpu_mpi_cuda_engine score; do
    [ -n "${result[$k]:-}" ] && printf '%-22s %s\n' "$k" "${result[$k]}"
  done
  [ -s "$out/tests-measured.txt" ] && sed 's/^/  /' "$out/tests-measured.txt"
  for k in "${!result[@]}"; do
    [[ $k == bench_* || $k == score_* ]] && printf '%-22s %s\n' "$k" "${result[$k]}"
  done | sort
  [ -n "${result[bench]:-}" ] && printf '%-22s %s\n' bench "${result[bench]}"
  [ -s "$out/bench-table.txt" ] && cat "$out/bench-table.txt"
  echo "logs and JSON: $out"
} | tee -a "$out/summary.txt"
status=0
for k in "${!result[@]}"; do [[ ${result[$k]} == FAIL* || ${result[$k]} == TIMEOUT* ]] && status=1; done
exit $status
