#!/bin/sh
# Runs dist_bench (data-parallel prompt tuning on GPT-2-small's shape) on 1, 2 and 4 processes,
# alternating the order over rounds, and prints rank 0's line of each run. On 2 cores: 1 process
# with 2 OpenMP threads, 2 with 1 each, 4 with 1 each (oversubscribed).
#   sh bench/dist/run.sh [rounds, default 2] [build dir, default build/release]
set -eu
rounds=${1:-2}
build=${2:-build/release}
bin="$build/bench/dist_bench"
[ -x "$bin" ] || { echo "run.sh: $bin not built (cmake --build --preset release --target dist_bench)" >&2; exit 2; }
launch="mpirun --allow-run-as-root --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo"
round=0
while [ "$round" -lt "$rounds" ]; do
    if [ $((round % 2)) -eq 0 ]; then order="1 2 4"; else order="4 2 1"; fi
    for n in $order; do
        threads=$((2 / n)); [ "$threads" -ge 1 ] || threads=1
        OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads $launch -n "$n" "$bin" \
            --benchmark_counters_tabular=true --benchmark_color=false 2>/dev/null | grep -E '^BM_|^Benchmark' | sed "s/^/round $round, $n processes: /"
    done
    round=$((round + 1))
done
