#!/bin/sh
# Runs every built fuzz target for a while on a scratch copy of its committed seed corpus, and
# fails (exit 1) if any target crashes, leaks an exception, times out or allocates too much.
#
#   sh tests/fuzz/run.sh [seconds per target, default 10] [build dir, default build/fuzz]
#
# The mutations follow libFuzzer's -seed=$SOFTPROMPT_FUZZ_SEED (default 1), so a CI run explores
# the same inputs as a longer local run with the same seed, and a failure there can be replayed
# here; SOFTPROMPT_FUZZ_SEED=0 lets libFuzzer pick a new seed each run, for exploration.
#
# From the repository root, after `cmake --preset fuzz && cmake --build --preset fuzz`. The targets
# run one after the other, each on one core. A crashing input is kept as <scratch>/<target>-crash-*
# and its path printed; add it to tests/fuzz_regression_test.cpp once fixed.
set -u

seconds=${1:-10}
seed=${SOFTPROMPT_FUZZ_SEED:-1}
build=${2:-build/fuzz}
here=$(cd "$(dirname "$0")" && pwd)
targets=$(ls "$build"/tests/fuzz/*_fuzz 2>/dev/null)
if [ -z "$targets" ]; then
    echo "run.sh: no fuzz targets in $build/tests/fuzz (build them with the fuzz preset)" >&2
    exit 2
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/softprompt-fuzz.XXXXXX")
failed=""
passed=0
failures=0
for bin in $targets; do
    name=$(basename "$bin" _fuzz)
    # A copy of the seeds: what the run adds never touches the committed corpus.
    mkdir -p "$scratch/$name"
    if [ -d "$here/corpus/$name" ]; then cp "$here/corpus/$name"/* "$scratch/$name"/; fi
    # Inputs up to 64 KiB, except where a seed is larger. -malloc_limit_mb makes any single
    # allocation above 256 MB a crash: a header declaring 2^40 elements must be refused, not
    # allocated.
    max_len=65536
    case $name in gguf) max_len=131072 ;; esac
    log="$scratch/$name.log"
    "$bin" -seed="$seed" -max_total_time="$seconds" -timeout=1 -rss_limit_mb=2048 -malloc_limit_mb=256 \
        -max_len="$max_len" -print_final_stats=1 -artifact_prefix="$scratch/$name-" \
        "$scratch/$name" >"$log" 2>&1
    status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
    if [ "$status" -eq 0 ]; then
        echo "ok     $name: ${runs:-?} runs, ${cov:-cov: ?}, corpus $(ls "$scratch/$name" | wc -l) files"
        passed=$((passed + 1))
    else
        failures=$((failures + 1))
        echo "FAILED $name (exit $status): see $log"
        grep -E 'ERROR|SUMMARY|terminate|what\(\)|Test unit written' "$log" | head -n 8
        failed="$failed $name"
    fi
done

if [ -n "$failed" ]; then
    echo "run.sh: crashes in:$failed (logs and inputs in $scratch)" >&2
    echo "fuzz: $passed passed, $failures failed"
    exit 1
fi
rm -rf "$scratch"
echo "run.sh: every target ran ${seconds}s (seed $seed) without a crash"
echo "fuzz: $passed passed, $failures failed"
