#!/usr/bin/env bash
# Instructions per call of the ABI's hot paths (bench/c/abi_paths_bench.c) for this tree's
# libbitsec and another build, on the same binary and inputs: usage
#   bench/abi_paths_compare.sh OLD_LIB_DIR [N]
# Each op runs under valgrind --tool=callgrind with N and 2N calls; the difference divided by
# N is the cost of one call (runtime setup and teardown cancel out). Instruction counts, not
# time: on a shared machine they do not move with the load.
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: bench/abi_paths_compare.sh OLD_LIB_DIR [N]}
n=${2:-20000}
mkdir -p build/bench
cc -O2 -std=c11 -Wall -Wextra -I include bench/c/abi_paths_bench.c -L build/lib -lbitsec -o build/bench/abi_paths_bench
count() {  # LIB_DIR OP N -> total instructions (every thread)
    local out; out=$(mktemp)
    LD_LIBRARY_PATH=$1 valgrind --tool=callgrind --callgrind-out-file="$out" build/bench/abi_paths_bench "$2" "$3" >/dev/null 2>&1
    awk '/^summary:/ {print $2}' "$out"; rm -f "$out"
}
echo "| call | old instr. | new instr. | new / old |"
echo "|---|---:|---:|---:|"
for op in verify permit take encrypt emit; do
    o=$(( ( $(count "$old" $op $((2 * n))) - $(count "$old" $op $n) ) / n ))
    w=$(( ( $(count "$PWD/build/lib" $op $((2 * n))) - $(count "$PWD/build/lib" $op $n) ) / n ))
    awk -v op="$op" -v o="$o" -v w="$w" 'BEGIN { printf "| %s | %d | %d | %.2f× |\n", op, o, w, w / o }'
done
