#!/usr/bin/env bash
# Runs bench/c/tables_bench.c against this tree's libbitsec and another build (an older
# commit's build/lib), interleaved, in one run: usage bench/tables_compare.sh OLD_LIB_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: bench/tables_compare.sh OLD_LIB_DIR}
mkdir -p build/bench
cc -O2 -std=c11 -Wall -Wextra -I include bench/c/tables_bench.c -L build/lib -lbitsec -o build/bench/tables_bench
echo "uptime: $(uptime)"
for round in 1 2 3; do
    echo; echo "old ($old), round $round"; LD_LIBRARY_PATH=$old build/bench/tables_bench
    echo; echo "new (build/lib), round $round"; LD_LIBRARY_PATH=$PWD/build/lib build/bench/tables_bench
done
echo "uptime: $(uptime)"
