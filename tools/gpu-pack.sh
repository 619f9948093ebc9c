#!/usr/bin/env bash
# Usage: tools/gpu-pack.sh BUILD_DIR PACK.tar.xz [BINARY ...]
# Packs binaries built here (paths relative to BUILD_DIR; default: ringinfer, bench_model,
# bench_attention and every tests/gpu_* binary) with the shared libraries they need that a
# GPU machine image may lack (HDF5, OpenBLAS, Open MPI with its mpirun, ...), into one
# compressed archive small enough to travel with a device call. The CUDA libraries
# (cudart, cuBLAS, NCCL, cuDNN) are left out: the GPU machine has them (PyTorch's wheels).
# On the GPU machine, from the repository root:
#   mkdir -p /tmp/pack && tar -xJf PACK.tar.xz -C /tmp/pack && source /tmp/pack/env.sh
# env.sh puts the libraries, the relocated Open MPI and the CUDA wheels' libraries on the
# paths, and links the test fixtures' source folder (compiled into the test binaries) to
# the current folder when that path does not exist there.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
build=${1%/}
mkdir -p "$(dirname "$2")"
pack=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
shift 2
bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
  for b in ringinfer bench_model bench_attention; do [ -x "$build/$b" ] && bins+=("$b"); done
  for b in "$build"/tests/gpu_* "$build"/tests/make_test_shard; do [ -x "$b" ] && bins+=("${b#"$build"/}"); done
fi
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$stage/openmpi"
for b in "${bins[@]}"; do
  mkdir -p "$stage/bin/$(dirname "$b")"
  cp "$build/$b" "$stage/bin/$b"
done
# Libraries outside the C runtime and the CUDA toolkit.
skip='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|librt\.|libpthread\.|libstdc\+\+|libgcc_s|libcud|libcublas|libnccl|libnvrtc|libnvJitLink)'
for b in "${bins[@]}"; do
  ldd "$build/$b" | awk '/=> \// {print $1, $3}'
done | sort -u | while read -r name path; do
  [[ $name =~ $skip ]] || cp -L "$path" "$stage/lib/$name"
done
# Open MPI, relocatable through OPAL_PREFIX: mpirun and orted, the MCA components and help texts.
ompi_lib=$(dirname "$(readlink -f "$(ldconfig -p | awk '/libmpi\.so\.40 / {print $NF; exit}')")")
mkdir -p "$stage/openmpi/bin" "$stage/openmpi/lib" "$stage/openmpi/share"
cp -L "$(readlink -f "$(command -v mpirun)")" "$stage/openmpi/bin/mpirun"
cp -L "$(command -v orted)" "$stage/openmpi/bin/orted"
cp -rL "$ompi_lib/openmpi/lib/openmpi3" "$stage/openmpi/lib/openmpi" 2> /dev/null || true
cp -rL /usr/share/openmpi "$stage/openmpi/share/openmpi"
cp -L "$ompi_lib"/libmca_common_*.so.* "$ompi_lib"/libopen-*.so.40 "$stage/lib/" 2> /dev/null || true
src=$(cd "$(dirname "$0")/.." && pwd)
cat > "$stage/env.sh" << EOF
# Sourced on the GPU machine from the repository root (see tools/gpu-pack.sh).
pack=\$(cd "\$(dirname "\${BASH_SOURCE[0]}")" && pwd)
nv=\$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2> /dev/null)/nvidia
export LD_LIBRARY_PATH="\$pack/lib:\$(ls -d "\$nv"/*/lib 2> /dev/null | tr '\n' ':')\${LD_LIBRARY_PATH:-}"
export OPAL_PREFIX="\$pack/openmpi" PATH="\$pack/openmpi/bin:\$pack/bin:\$PATH"
export OMPI_MCA_mca_base_component_path="\$pack/openmpi/lib/openmpi"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
# The test binaries read fixtures from the source folder they were built in.
[ -e "$src" ] || { mkdir -p "\$(dirname "$src")" && ln -s "\$PWD" "$src"; }
EOF
tar -cJf "$pack" -C "$stage" .
echo "gpu-pack: ${#bins[@]} binaries, $(ls "$stage/lib" | wc -l) libraries -> $pack ($(du -h "$pack" | cut -f1))"
