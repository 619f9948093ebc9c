# Sourced by tests/e2e/*.sh. Environment from CTest: RINGINFER (the binary), TESTBIN
# (tests build folder: fixture tools), SOURCE_DIR, MPIRUN (mpirun with root/oversubscribe flags).
set -uo pipefail
: "${RINGINFER:?run through ctest}" "${TESTBIN:?}" "${SOURCE_DIR:?}" "${MPIRUN:?}"
export OMPI_MCA_mpi_yield_when_idle=1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringinfer-e2e-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
failures=0
passes=0

pass() { passes=$((passes + 1)); echo "ok   $*"; }
fail() { failures=$((failures + 1)); echo "FAIL $*"; }

# expect_error NAME TIMEOUT_S "expected message regex" command...
# The command must exit non-zero within TIMEOUT_S and print a line matching the regex.
expect_error() {
  local name=$1 limit=$2 pattern=$3; shift 3
  local out rc
  out=$(timeout -k 5 "$limit" "$@" 2>&1); rc=$?
  if ((rc == 124 || rc == 137)); then fail "$name: timed out after ${limit}s (hang)"; return; fi
  if ((rc == 0)); then fail "$name: exited 0, expected an error"; echo "$out" | head -5; return; fi
  if ! grep -Eq -- "$pattern" <<<"$out"; then
    fail "$name: message does not match /$pattern/"; echo "$out" | head -8; return
  fi
  if grep -Eq "Segmentation|core dumped|terminate called|Aborted \(" <<<"$out"; then
    fail "$name: crashed"; echo "$out" | head -8; return
  fi
  pass "$name (exit $rc)"
}

finish() {
  echo "$passes passed, $failures failed"
  ((failures == 0))
}
