#!/usr/bin/env bash
# Usage: tools/demo.sh [NP]
# The quick-start job: installs dependencies, builds ringinfer, fetches the demo model
# (SmolLM2-135M-Instruct, Q4_1 GGUF), tokenizes the sample documents in inputs/docs with
# the summarization request inputs/summarize-user.txt put into the model's own chat
# template (recognised from the GGUF), summarizes them on NP CPU ranks (default 2) with
# mpirun, and prints the summaries. Outputs land in out/.
# Sampling suits a 135M model: greedy with a mild repetition penalty (small models loop),
# ending each summary after two sentences or at a blank line, within 80 tokens.
# With RINGINFER set (a built binary, as tests/e2e/demo_summaries.sh does) the install and
# build steps are skipped; DEMO_OUT moves the outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
np=${1:-2}
out=${DEMO_OUT:-out}

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
if [[ -z "${RINGINFER:-}" ]]; then
  tools/install-deps.sh
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j "$(nproc)" --target ringinfer
  RINGINFER=build/ringinfer
fi
model=$(tools/fetch-demo-model.sh)

mkdir -p "$out"
"$RINGINFER" prep --model "$model" --user-template inputs/summarize-user.txt inputs/docs/*.txt inputs/docs/*.jsonl \
  --output "$out/docs.h5"
mpirun --oversubscribe -np "$np" "$RINGINFER" run --device cpu --model "$model" --input "$out/docs.h5" \
  --output "$out/summaries.h5" --max-new-tokens 80 --repetition-penalty 1.1 --max-sentences 2 --stop $'\n\n'
"$RINGINFER" dump "$out/summaries.h5"
