#!/usr/bin/env bash
# Usage: tools/demo.sh [NP]
# The quick-start job: installs dependencies, builds ringinfer, fetches the demo model
# (SmolLM2-135M-Instruct, Q4_1 GGUF), tokenizes the sample documents in inputs/docs with
# the summarization prompt, summarizes them on NP CPU ranks (default 2) with mpirun, and
# prints the summaries. Outputs land in out/.
set -euo pipefail
cd "$(dirname "$0")/.."
np=${1:-2}

tools/install-deps.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target ringinfer
model=$(tools/fetch-demo-model.sh)

mkdir -p out
build/ringinfer prep --model "$model" --prompt-template inputs/summarize.txt inputs/docs/*.txt inputs/docs/*.jsonl \
  --output out/docs.h5
mpirun --oversubscribe -np "$np" build/ringinfer run --device cpu --model "$model" --input out/docs.h5 \
  --output out/summaries.h5 --max-new-tokens 96
build/ringinfer dump out/summaries.h5
