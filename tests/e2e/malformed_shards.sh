#!/usr/bin/env bash
# Every malformed-shard variant of tests/tools/make_test_shard, read by
# `mpirun -np 2 ringinfer run --dry-run`: the expected one-line error naming the file,
# a non-zero exit on every rank, no crash, no hang.
source "$(dirname "$0")/lib/common.bash"
T="$TESTBIN/make_test_shard"
NP2="$MPIRUN -np 2"  # word-split on purpose
for variant in $("$T" list | cut -f1); do
  dir="$WORK/$variant"; mkdir -p "$dir"
  mapfile -t spec < <(cd "$dir" && "$T" "$variant" bad.h5)
  read -r -a paths <<<"${spec[0]}"
  vocab=${spec[1]}
  [[ "${spec[2]}" == accepted ]] && continue  # run reads it (h5py's defaults): tests/e2e/h5py_shard.sh
  message=${spec[2]#on-read: }
  message=${message#prefix: }
  if [[ "$vocab" != "-1" ]]; then
    # Needs a model vocabulary; the dry run has none. Covered by the unit tests.
    continue
  fi
  # Match the message literally (escape regex characters).
  pattern=$(printf '%s' "$message" | sed 's/[][\.*^$(){}?+|/]/\\&/g')
  cd "$dir"
  expect_error "$variant" 60 "$pattern" $NP2 "$RINGINFER" run --dry-run -i "${paths[@]}" -o out.h5
  cd "$WORK"
  [[ ! -e "$dir/out.h5" ]] || fail "$variant: an output was written"
done

# A version-1 shard (variable-length strings and version 1) is refused after its strings
# were read in the isolated check, with the advice to re-run prep (checked literally).
"$T" list | cut -f1 | grep -qx version-1 || fail "make_test_shard list has no version-1 variant"
dir="$WORK/v1-literal"; mkdir -p "$dir"; cd "$dir"
"$T" version-1 v1.h5 >/dev/null
expect_error "version 1 refused" 60 \
  "v1\.h5: unsupported version 1 \(this build reads version 2\): re-run ringinfer prep" \
  $NP2 "$RINGINFER" run --dry-run -i v1.h5 -o out.h5
cd "$WORK"
finish
