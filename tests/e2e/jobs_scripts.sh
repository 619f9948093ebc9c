#!/usr/bin/env bash
# The Slurm and mpirun scripts in jobs/: they parse (bash -n, shellcheck when installed);
# every option they pass after `ringinfer COMMAND` is one that `ringinfer COMMAND --help`
# lists (a static check, line continuations joined); each script runs end to end against
# stand-ins for srun/mpirun/scontrol with the real option parser (--print-config); and the
# preemptible script forwards SIGUSR1 to the step and requeues on exit code 75.
source "$(dirname "$0")/lib/common.bash"
R="$RINGINFER"
JOBS="$SOURCE_DIR/jobs"
shopt -s nullglob
scripts=("$JOBS"/*.sbatch "$JOBS"/*.sh)
((${#scripts[@]} >= 5)) && pass "found ${#scripts[@]} job scripts" || fail "expected >= 5 scripts in jobs/, found ${#scripts[@]}"

# ---- syntax
for s in "${scripts[@]}"; do
  if bash -n "$s" 2>"$WORK/syntax.txt"; then pass "bash -n $(basename "$s")"
  else fail "bash -n $(basename "$s")"; cat "$WORK/syntax.txt"; fi
done
if command -v shellcheck >/dev/null; then
  if shellcheck -S warning "${scripts[@]}" >"$WORK/sc.txt" 2>&1; then pass "shellcheck -S warning"
  else fail "shellcheck -S warning"; head -30 "$WORK/sc.txt"; fi
else
  echo "skip shellcheck (not installed)"
fi

# ---- static option check
# Prints "FILE:LINE COMMAND OPTION" for each option after `...ringinfer COMMAND` (the
# binary named literally or by a variable whose name ends in ringinfer), up to the end
# of the command (; | & > or a closing parenthesis). Comment lines are skipped;
# backslash-newline continuations are joined first.
invocations() {
  awk '
    function flush() {
      if (cmd == "") return
      n = split(cmd, t, /[ \t]+/)
      for (i = 1; i < n; i++) {
        w = tolower(t[i]); gsub(/["'\''${}]/, "", w)
        if (w !~ /ringinfer$/ || t[i + 1] !~ /^(run|score|prep|dump|plan)$/) continue
        for (j = i + 2; j <= n; j++) {
          if (t[j] ~ /^(;|\||&|>|<|\)|&&|\|\|)/ || t[j] ~ /^[0-9]?>/) break
          if (t[j] ~ /^--[A-Za-z0-9-]+/) { o = t[j]; sub(/=.*/, "", o); print FILENAME ":" start " " t[i + 1] " " o }
          else if (t[j] ~ /^-[A-Za-z]$/) print FILENAME ":" start " " t[i + 1] " " t[j]
        }
      }
      cmd = ""
    }
    /^[ \t]*#/ { if (cmd == "") next }
    {
      line = $0
      if (cmd == "") start = FNR
      if (line ~ /\\$/) { sub(/\\$/, "", line); cmd = cmd " " line; next }
      cmd = cmd " " line; flush()
    }
    END { flush() }' "$@"
}

# check_options FILE...: prints offending "FILE:LINE COMMAND OPTION" lines; fails when any.
check_options() {
  local bad=0 loc cmd opt
  while read -r loc cmd opt; do
    [[ -f "$WORK/help.$cmd" ]] || "$R" "$cmd" --help >"$WORK/help.$cmd" 2>&1
    if ! grep -Eq -- "(^|[ \[])$opt([] ]|$)" "$WORK/help.$cmd"; then
      echo "$loc: ringinfer $cmd has no option $opt"
      bad=1
    fi
  done < <(invocations "$@")
  return $bad
}

all=$(invocations "${scripts[@]}")
count=$(grep -c . <<<"$all")
for s in "${scripts[@]}"; do
  grep -q "^$s:" <<<"$all" || fail "$(basename "$s"): no ringinfer invocation found (parser broken?)"
done
((count >= 20)) && pass "parsed $count options in ringinfer invocations" || { fail "only $count options parsed"; echo "$all"; }
if out=$(check_options "${scripts[@]}"); then pass "every option used in jobs/ exists in ringinfer COMMAND --help"
else fail "options that do not exist"; echo "$out"; fi

# The check must fail on an option that does not exist, also on a continued line, and
# pass the same script with real options.
cat >"$WORK/bad.sbatch" <<'BAD'
#!/bin/bash
srun --mpi=pmix "$RINGINFER" run --model m --input a.h5 \
    --output o.h5 --max-tokens 5 --cp 2
# ringinfer run --not-checked-in-comments
"$RINGINFER" dump o.h5 --jsonl > out.jsonl --ignored-after-redirect
BAD
if out=$(check_options "$WORK/bad.sbatch"); then fail "checker missed --max-tokens"
elif grep -q "bad.sbatch:2: ringinfer run has no option --max-tokens" <<<"$out" && [[ $(grep -c . <<<"$out") == 1 ]]; then
  pass "checker flags a nonexistent option on a continued line"
else fail "checker output unexpected"; echo "$out"; fi
sed -i 's/--max-tokens/--max-new-tokens/' "$WORK/bad.sbatch"
if out=$(check_options "$WORK/bad.sbatch"); then pass "checker passes the corrected script"
else fail "checker rejects a good script"; echo "$out"; fi

# ---- dynamic: run each script with stand-ins; ringinfer parses and prints its config
bin="$WORK/bin"
mkdir -p "$bin" "$WORK/in" "$WORK/docs" "$WORK/out"
touch "$WORK/in/a.h5" "$WORK/in/b.h5" "$WORK/docs/x.txt" "$WORK/docs/y.jsonl" "$WORK/template.txt"
# srun/mpirun stand-ins run the command from the ringinfer binary on, once.
cat >"$bin/launch" <<LAUNCH
#!/bin/bash
echo "\$(basename "\$0") \$*" >> "$WORK/launch.log"
while (( \$# )) && [[ \$1 != "\$RINGINFER" ]]; do shift; done
exec "\$@"
LAUNCH
printf '#!/bin/bash\necho "scontrol $*" >> "%s/launch.log"\n' "$WORK" >"$bin/scontrol"
# ringinfer stand-in: the real parser, with --print-config (nothing runs).
printf '#!/bin/bash\nexec "%s" "$@" --print-config\n' "$R" >"$bin/ringinfer"
chmod +x "$bin"/*
ln -sf launch "$bin/srun"
ln -sf launch "$bin/mpirun"
printf 'node01 slots=8\nnode02 slots=8\n' >"$WORK/hosts.txt"

run_script() {  # NAME SCRIPT [ARGS]
  local name=$1; shift
  : >"$WORK/launch.log"
  if (cd "$WORK" && PATH="$bin:$PATH" RINGINFER="$bin/ringinfer" MODEL=m INPUTS="$WORK/in/*.h5" \
      OUTPUT="$WORK/out/o.h5" DOCS="$WORK/docs/*" TEMPLATE="$WORK/template.txt" SHARDS="$WORK/shards" \
      HOSTFILE="$WORK/hosts.txt" MPIRUN=mpirun SLURM_NTASKS=16 SLURM_CPUS_PER_TASK=2 SLURM_JOB_ID=4242 \
      timeout -k 5 60 bash "$@" >"$WORK/$name.out" 2>&1); then
    pass "$name runs with the real option parser"
  else
    fail "$name exited non-zero"; tail -5 "$WORK/$name.out"; return 1
  fi
}
if run_script one-node "$JOBS/run-1node-8gpu.sbatch"; then
  grep -q "^cp = 8$" "$WORK/one-node.out" && grep -q "^input = $WORK/in/b.h5$" "$WORK/one-node.out" &&
    grep -q -- "--gpu-bind=none" "$WORK/launch.log" && pass "one-node: cp 8, both shards, --gpu-bind=none" ||
    { fail "one-node config"; cat "$WORK/one-node.out"; }
  grep -q "^# ringinfer dump" "$WORK/out/o.jsonl" && pass "one-node: dump after the run" || fail "one-node: no dump"
fi
if run_script srun "$JOBS/run-multinode-srun.sbatch"; then
  grep -q "^cp = 16$" "$WORK/srun.out" && grep -q "^top-p = 0.95$" "$WORK/srun.out" &&
    grep -q "^srun --mpi=pmix --gpu-bind=none" "$WORK/launch.log" && pass "srun: one ring of all 16 ranks" ||
    { fail "srun config"; cat "$WORK/srun.out" "$WORK/launch.log"; }
fi
if NCCL_IB_HCA=mlx5_0 run_script mpirun "$JOBS/run-multinode-mpirun.sbatch"; then
  grep -q "^mpirun -np 16 .*-x NCCL_IB_HCA" "$WORK/launch.log" && pass "mpirun: 16 ranks, NCCL_* passed with -x" ||
    { fail "mpirun command"; cat "$WORK/launch.log"; }
fi
run_script mpirun-node "$JOBS/mpirun-examples.sh" node
if run_script mpirun-hosts "$JOBS/mpirun-examples.sh" hosts; then
  grep -q "^mpirun -np 16 --hostfile" "$WORK/launch.log" && pass "mpirun-examples hosts: 8 ranks per host" ||
    { fail "hosts command"; cat "$WORK/launch.log"; }
fi
if run_script prep "$JOBS/prep.sbatch"; then
  grep -q "^prompt-template = $WORK/template.txt$" "$WORK/prep.out" && grep -q "^output = $WORK/shards/part-000.h5$" "$WORK/prep.out" &&
    pass "prep: template and shard name" || { fail "prep config"; cat "$WORK/prep.out"; }
fi

# ---- preemption: SIGUSR1 to the batch shell reaches the step, which exits 75; requeue.
# The step stand-in plays a rank: it waits for SIGUSR1 and exits like ringinfer would.
exit_code=$(grep -Eo "kExitPreempted = [0-9]+" "$SOURCE_DIR/include/ringinfer/signals.h" | grep -Eo "[0-9]+$")
grep -q "^EXIT_PREEMPTED=$exit_code " "$JOBS/run-preemptible.sbatch" &&
  pass "run-preemptible.sbatch uses kExitPreempted ($exit_code)" || fail "exit code differs from signals.h ($exit_code)"
for k in "#SBATCH --requeue" "#SBATCH --signal=B:USR1@" 'scontrol requeue "$SLURM_JOB_ID"'; do
  grep -qF -- "$k" "$JOBS/run-preemptible.sbatch" || fail "run-preemptible.sbatch lacks '$k'"
done
cat >"$bin/rank" <<RANK
#!/bin/bash
trap 'echo "rank got USR1" >> "$WORK/launch.log"; exit $exit_code' USR1
echo started >> "$WORK/launch.log"
for ((i = 0; i < 300; i++)); do sleep 0.1; done
exit 3
RANK
chmod +x "$bin/rank"
preempt() {  # RESTART_COUNT: runs the script, signals the batch shell; prints its exit code
  : >"$WORK/launch.log"
  (cd "$WORK" && PATH="$bin:$PATH" RINGINFER="$bin/rank" INPUTS="$WORK/in/*.h5" OUTPUT="$WORK/out/p.h5" \
    SLURM_JOB_ID=4242 SLURM_RESTART_COUNT=$1 MAX_RESTARTS=3 exec bash "$JOBS/run-preemptible.sbatch" \
    >"$WORK/preempt.out" 2>&1) &
  local pid=$! i
  for ((i = 0; i < 100; i++)); do grep -q started "$WORK/launch.log" && break; sleep 0.1; done
  kill -USR1 "$pid"
  wait "$pid"
  echo $?
}
rc=$(preempt 0)
if [[ $rc == "$exit_code" ]] && grep -q "rank got USR1" "$WORK/launch.log" && grep -q "^scontrol requeue 4242$" "$WORK/launch.log"; then
  pass "preemptible: USR1 forwarded, exit $rc, requeued"
else fail "preemptible: exit $rc"; cat "$WORK/launch.log" "$WORK/preempt.out"; fi
rc=$(preempt 3)
if [[ $rc == "$exit_code" ]] && ! grep -q "scontrol" "$WORK/launch.log" && grep -q "not requeueing" "$WORK/preempt.out"; then
  pass "preemptible: no requeue after MAX_RESTARTS"
else fail "preemptible at MAX_RESTARTS: exit $rc"; cat "$WORK/launch.log" "$WORK/preempt.out"; fi
finish
