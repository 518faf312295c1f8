#!/usr/bin/env bash
# The cost of the latency histograms (`metrics.histograms`) on the ABI's hot paths: the same
# binary (bench/c/abi_paths_bench.c) and library with histograms off, sampled and on.
#   bench/histogram_cost.sh [N] [REPS]
# Time: each (op, mode) runs REPS times, interleaved so that the machine's load hits every
# mode alike; the fastest run is reported, in CPU ns per call of the process (after 1000
# warm-up calls): on a shared machine CPU time moves less with the load than wall time.
# Instructions: callgrind, (count(2N') - count(N')) / N' with N' = N / 50, as
# bench/abi_paths_compare.sh does (valgrind runs clock_gettime outside the vDSO, so the
# clock's own cost is missing from this column: the time columns carry it).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
reps=${2:-7}
ops=(verify permit take encrypt emit)
modes=(off sampled on)
mkdir -p build/bench
cc -O2 -std=c11 -Wall -Wextra -I include bench/c/abi_paths_bench.c -L build/lib -lbitsec -o build/bench/abi_paths_bench
declare -A best
for ((r = 0; r < reps; r++)); do
    for op in "${ops[@]}"; do
        for m in "${modes[@]}"; do
            t=$(BITSEC_BENCH_HISTOGRAMS=$m LD_LIBRARY_PATH=build/lib build/bench/abi_paths_bench "$op" "$n" | awk '{print $2}')
            k="$op/$m"
            if [[ -z "${best[$k]:-}" ]] || awk -v a="$t" -v b="${best[$k]}" 'BEGIN { exit !(a < b) }'; then best[$k]=$t; fi
        done
    done
done
instr() {  # MODE OP N -> instructions of the whole run
    local out; out=$(mktemp)
    BITSEC_BENCH_HISTOGRAMS=$1 LD_LIBRARY_PATH=build/lib valgrind --tool=callgrind --callgrind-out-file="$out" \
        build/bench/abi_paths_bench "$2" "$3" >/dev/null 2>&1
    awk '/^summary:/ {print $2}' "$out"; rm -f "$out"
}
ni=$((n / 50))
echo "| call | off ns | sampled ns | on ns | sampled - off | on - off | off instr. | sampled instr. | on instr. |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for op in "${ops[@]}"; do
    declare -A ins=()
    for m in "${modes[@]}"; do ins[$m]=$(( ( $(instr "$m" "$op" $((2 * ni))) - $(instr "$m" "$op" "$ni") ) / ni )); done
    awk -v op="$op" -v off="${best[$op/off]}" -v s="${best[$op/sampled]}" -v on="${best[$op/on]}" \
        -v io="${ins[off]}" -v is="${ins[sampled]}" -v ion="${ins[on]}" \
        'BEGIN { printf "| %s | %.0f | %.0f | %.0f | %+.0f ns (%+.1f%%) | %+.0f ns (%+.1f%%) | %d | %d | %d |\n", op, off, s, on, s - off, 100 * (s - off) / off, on - off, 100 * (on - off) / off, io, is, ion }'
done
