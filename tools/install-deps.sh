#!/usr/bin/env bash
# Usage: tools/install-deps.sh
# Installs every system and Python package that the build, the tests and the demo need
# (Debian/Ubuntu names). Idempotent: packages already present are left alone.
# The CUDA toolkit (nvcc, cuBLAS, NCCL) is not installed here: it is detected when present.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libopenmpi-dev openmpi-bin
  libhdf5-dev hdf5-tools
  libboost-program-options-dev
  libopenblas-dev
  libpcre2-dev
  nlohmann-json3-dev
  libgtest-dev
  python3 python3-pip
  clang libclang-rt-dev  # .ci/run: libFuzzer smoke (tools/fuzz.sh)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python packages for test fixtures and the demo model (tools/requirements.txt).
req="$(dirname "$0")/requirements.txt"
if [[ -f "$req" ]] && grep -qv "^\s*\(#\|$\)" "$req"; then
  python3 -m pip install -q --disable-pip-version-check -r "$req"
fi

# The cuDNN frontend's C++ headers for the cuDNN attention path (CMake looks in
# <site-packages>/include). --no-deps: the package's Python side pulls the CUTLASS DSL,
# which the headers do not need. Pinned: the path is tested against this version.
cudnn_frontend=nvidia-cudnn-frontend==1.32.0
if [[ "$(python3 -m pip show nvidia-cudnn-frontend 2>/dev/null | sed -n 's/^Version: //p')" != "${cudnn_frontend#*==}" ]]; then
  python3 -m pip install -q --disable-pip-version-check --no-deps "$cudnn_frontend"
fi
