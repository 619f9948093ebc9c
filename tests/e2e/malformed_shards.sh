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

# A version-1 style shard (variable-length /doc_ids) is refused unread, with the advice to
# re-run prep, on every rank (checked literally, in case the variant list changes).
"$T" list | cut -f1 | grep -qx vlen-ids || fail "make_test_shard list has no vlen-ids variant"
dir="$WORK/vlen-literal"; mkdir -p "$dir"; cd "$dir"
"$T" vlen-ids v1.h5 >/dev/null
expect_error "vlen /doc_ids refused" 60 \
  "v1\.h5: /doc_ids uses variable-length strings \(shard version 1, or not written by ringinfer prep\): re-run ringinfer prep" \
  $NP2 "$RINGINFER" run --dry-run -i v1.h5 -o out.h5
cd "$WORK"
finish
