#!/bin/sh
# A long fuzzing campaign: every target runs a fixed number of executions on a scratch copy of its
# committed corpus, a few targets at a time, then every input the run kept (and any crash) is
# replayed through the AddressSanitizer + UndefinedBehaviorSanitizer build. Prints the Markdown
# table of tests/fuzz/README.md ("One run").
#
#   sh tests/fuzz/campaign.sh [executions, default 10000000] [parallel jobs, default 2]
#
# Environment: SOFTPROMPT_FUZZ_BUILD (the build that explores, default build/fuzz-lsan, configured
# with -DSOFTPROMPT_FUZZ_SANITIZERS=leak,undefined), SOFTPROMPT_FUZZ_REPLAY (the AddressSanitizer
# build, default build/fuzz), SOFTPROMPT_FUZZ_OUT (logs and corpora, default a new folder under
# /tmp), SOFTPROMPT_FUZZ_TARGETS (names, default every target built), SOFTPROMPT_FUZZ_SEED
# (default 1). Targets run at nice 10, so that other work on the machine keeps its share.
set -u

if [ "${1:-}" = "--one" ]; then
    # One target: $2 name, $3 executions; everything else from the environment set below.
    name=$2
    runs=$3
    bin="$SOFTPROMPT_FUZZ_BUILD/tests/fuzz/${name}_fuzz"
    dir="$SOFTPROMPT_FUZZ_OUT/$name"
    mkdir -p "$dir/corpus"
    cp "$SOFTPROMPT_FUZZ_HERE/corpus/$name"/* "$dir/corpus"/ 2>/dev/null
    max_len=65536
    case $name in gguf) max_len=131072 ;; esac
    start=$(date +%s)
    nice -n 10 "$bin" -seed="$SOFTPROMPT_FUZZ_SEED" -runs="$runs" -timeout=1 -rss_limit_mb=2048 \
        -malloc_limit_mb=256 -max_len="$max_len" -print_final_stats=1 \
        -artifact_prefix="$dir/crash-" "$dir/corpus" >"$dir/explore.log" 2>&1
    echo $? >"$dir/explore.status"
    echo $(($(date +%s) - start)) >"$dir/seconds"
    # Every input kept, and any crash, through the AddressSanitizer build (-runs=0: read and run
    # the corpus once, mutate nothing).
    replay="$SOFTPROMPT_FUZZ_REPLAY/tests/fuzz/${name}_fuzz"
    nice -n 10 "$replay" -runs=0 -timeout=1 -rss_limit_mb=2048 -malloc_limit_mb=256 \
        -max_len="$max_len" "$dir/corpus" >"$dir/replay.log" 2>&1
    echo $? >"$dir/replay.status"
    for crash in "$dir"/crash-*; do
        [ -e "$crash" ] || continue
        "$replay" -timeout=1 -malloc_limit_mb=256 "$crash" >>"$dir/crashes-replayed.log" 2>&1
    done
    exit 0
fi

runs=${1:-10000000}
jobs=${2:-2}
here=$(cd "$(dirname "$0")" && pwd)
export SOFTPROMPT_FUZZ_HERE="$here"
export SOFTPROMPT_FUZZ_BUILD="${SOFTPROMPT_FUZZ_BUILD:-build/fuzz-lsan}"
export SOFTPROMPT_FUZZ_REPLAY="${SOFTPROMPT_FUZZ_REPLAY:-build/fuzz}"
export SOFTPROMPT_FUZZ_SEED="${SOFTPROMPT_FUZZ_SEED:-1}"
export SOFTPROMPT_FUZZ_OUT="${SOFTPROMPT_FUZZ_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/softprompt-campaign.XXXXXX")}"
for build in "$SOFTPROMPT_FUZZ_BUILD" "$SOFTPROMPT_FUZZ_REPLAY"; do
    if ! ls "$build"/tests/fuzz/*_fuzz >/dev/null 2>&1; then
        echo "campaign.sh: no fuzz targets in $build/tests/fuzz" >&2
        exit 2
    fi
done
targets=${SOFTPROMPT_FUZZ_TARGETS:-$(ls "$SOFTPROMPT_FUZZ_BUILD"/tests/fuzz/*_fuzz | xargs -n1 basename | sed 's/_fuzz$//')}
echo "campaign.sh: $runs executions per target, $jobs at a time, in $SOFTPROMPT_FUZZ_OUT" >&2
for name in $targets; do echo "$name"; done |
    xargs -P "$jobs" -I{} sh "$here/campaign.sh" --one {} "$runs"

status=0
echo "| target | executions | seconds | exec/s | corpus (files / bytes) | coverage (\`cov:\`) | crashes | ASan replay |"
echo "|---|---:|---:|---:|---:|---:|---|---|"
for name in $targets; do
    dir="$SOFTPROMPT_FUZZ_OUT/$name"
    executed=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/explore.log")
    seconds=$(cat "$dir/seconds")
    rate=$((${executed:-0} / (seconds > 0 ? seconds : 1)))
    files=$(ls "$dir/corpus" | wc -l)
    bytes=$(cat "$dir"/corpus/* | wc -c)
    cov=$(grep -o 'cov: [0-9]*' "$dir/explore.log" | tail -n 1 | cut -d' ' -f2)
    crashes=$(ls "$dir" | grep -c '^crash-')
    [ "$(cat "$dir/explore.status")" = 0 ] || crashes="$crashes (exit $(cat "$dir/explore.status"))"
    replay=clean
    [ "$(cat "$dir/replay.status")" = 0 ] || { replay="FAILED (exit $(cat "$dir/replay.status"))"; status=1; }
    [ "$crashes" = 0 ] || status=1
    echo "| \`$name\` | $executed | $seconds | $rate | $files / $bytes | $cov | $crashes | $replay |"
done
echo "campaign.sh: logs and corpora in $SOFTPROMPT_FUZZ_OUT" >&2
exit $status
