#!/usr/bin/env bash
# Bad flags and configs: a clear one-line error, a non-zero exit, no hang, on every rank
# of `mpirun -np 2`; and the flags that are fine round-trip through --print-config.
source "$(dirname "$0")/lib/common.bash"
R="$RINGINFER"
NP2="$MPIRUN -np 2"  # word-split on purpose

expect_error "no command"            30 "usage: ringinfer COMMAND"        $NP2 "$R"
expect_error "unknown command"       30 "unknown command 'frobnicate'"    $NP2 "$R" frobnicate
expect_error "unknown option"        30 "unrecognised option '--bogus'"   $NP2 "$R" run --bogus
expect_error "missing input"         30 "--input is required"             $NP2 "$R" run -m m -o out.h5
expect_error "missing output"        30 "--output is required"            $NP2 "$R" score -m m -i in.h5
expect_error "bad device"            30 "--device must be cpu or cuda, not 'tpu'" $NP2 "$R" run -m m -i a.h5 -o b.h5 --device tpu
expect_error "bad number"            30 "the argument \('many'\) for option '--cp' is invalid" $NP2 "$R" run -m m -i a.h5 -o b.h5 --cp many
expect_error "cp zero"               30 "--cp must be at least 1"         $NP2 "$R" run -m m -i a.h5 -o b.h5 --cp 0
expect_error "top-p range"           30 "--top-p must be in \(0, 1\]"     $NP2 "$R" run -m m -i a.h5 -o b.h5 --top-p 1.5 --temperature 1
expect_error "negative temperature"  30 "--temperature must be >= 0"      $NP2 "$R" run -m m -i a.h5 -o b.h5 --temperature -1
expect_error "top-p with greedy"     30 "--top-p has no effect with greedy" $NP2 "$R" run -m m -i a.h5 -o b.h5 --top-p 0.9
expect_error "output is an input"    30 "--output a.h5 is also an input"  $NP2 "$R" run -m m -i a.h5 -o a.h5
expect_error "missing config file"   30 "nope.ini: cannot open config file" $NP2 "$R" run --config "$WORK/nope.ini"
printf 'model = m\nfrobs = 3\n' > "$WORK/bad.ini"
expect_error "unknown config key"    30 "bad.ini: unrecognised option 'frobs'" $NP2 "$R" run --config "$WORK/bad.ini"
expect_error "option twice"          30 "cannot be specified more than once" $NP2 "$R" run -m a -m b -i a.h5 -o b.h5
expect_error "dump needs one file"   30 "give exactly one output file"     $NP2 "$R" dump a.h5 b.h5
expect_error "tp zero"               30 "--tp must be at least 1"         $NP2 "$R" score -m m -i a.h5 -o b.h5 --tp 0
expect_error "bad log format"        30 "--log-format must be auto, bar or json, not 'xml'" $NP2 "$R" score -m m -i a.h5 -o b.h5 --log-format xml

# A config file and the command line merge; the command line wins.
printf 'model = from-file\ninput = x.h5\noutput = y.h5\ntemperature = 0.5\n' > "$WORK/ok.ini"
out=$("$R" run --config "$WORK/ok.ini" --temperature 0.25 --print-config 2>&1)
if grep -q "^model = from-file$" <<<"$out" && grep -q "^temperature = 0.25$" <<<"$out"; then pass "config merge"
else fail "config merge"; echo "$out"; fi
# --print-config output is itself a valid config.
"$R" run --config "$WORK/ok.ini" --print-config > "$WORK/round.ini" 2>&1
if [[ "$("$R" run --config "$WORK/round.ini" --print-config 2>&1)" == "$(cat "$WORK/round.ini")" ]]; then
  pass "print-config round trip"; else fail "print-config round trip"; fi
"$R" --version | grep -Eq "^ringinfer [0-9]+\.[0-9]+\.[0-9]+$" && pass "version" || fail "version"
finish
