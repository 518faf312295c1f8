#!/usr/bin/env bash
# `make bench`: every benchmark, each running bitsec and the incumbent side by side in one run.
# Python benchmarks: bench/*_bench.py (run with the project's venv).
# C benchmarks: bench/c/*_bench.c (linked against build/lib/libbitsec.so and OpenSSL).
# Output: a markdown section per benchmark on stdout and in build/bench/; results are
# copied into BENCHMARKS.md by hand with the machine and the command.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
mkdir -p build/bench
export BITSEC_LIBRARY=$ROOT/build/lib/libbitsec.so.1
only=${BENCH:-}
echo "# bitsec benchmarks ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
echo "machine: $(nproc) cores, $(awk '/model name/{$1=$2=$3="";print;exit}' /proc/cpuinfo | sed 's/^ *//'), $(free -g | awk '/Mem:/{print $2}') GiB; $(swift --version 2>&1 | head -1); $(openssl version)"
for c in bench/c/*_bench.c; do
    [ -e "$c" ] || continue
    name=$(basename "$c" .c)
    [ -z "$only" ] || [[ "$name" == *"$only"* ]] || continue
    cc -O2 -std=c11 -Wall -Wextra -I include "$c" -L build/lib -lbitsec -lcrypto -lssl -lhiredis -Wl,-rpath,"$ROOT/build/lib" -o "build/bench/$name"
    # A benchmark that needs the test servers (cluster, TLS, sentinels) says so in its source:
    # it runs under the Redis fixture, which starts them on free ports and stops them by PID.
    if grep -q "RUNS UNDER tools/redis_fixture.py" "$c"; then
        echo; python3 tools/redis_fixture.py run -- "build/bench/$name" | tee "build/bench/$name.md"
    else
        echo; "build/bench/$name" | tee "build/bench/$name.md"
    fi
done
for py in bench/*_bench.py; do
    [ -e "$py" ] || continue
    name=$(basename "$py" .py)
    [ -z "$only" ] || [[ "$name" == *"$only"* ]] || continue
    echo; "$ROOT/.venv/bin/python" "$py" | tee "build/bench/$name.md"
done
