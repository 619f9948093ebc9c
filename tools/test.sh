#!/usr/bin/env bash
# Usage: tools/test.sh [ctest args...]
# From a fresh clone to green tests: installs dependencies (tools/install-deps.sh), fetches
# the demo model (tools/fetch-demo-model.sh),
# configures and builds in build/ (the CUDA sources too, compile only, when nvcc exists),
# then runs every test. GPU tests (label gpu) skip themselves where no GPU is visible.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install-deps.sh
tools/fetch-demo-model.sh >/dev/null  # the GGUF and prep tests read the demo model
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Oversubscribed ranks must yield the core instead of spinning, or -np 4 on 2 cores crawls.
export OMPI_MCA_mpi_yield_when_idle=1 OMPI_MCA_rmaps_base_oversubscribe=1

build=${BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-Release} ${CMAKE_ARGS:-}
cmake --build "$build" -j "$(nproc)"
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" "$@"
