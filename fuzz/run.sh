#!/usr/bin/env bash
# Runs libFuzzer targets of bitsec-fuzz one after the other (docs/fuzzing.md).
#   fuzz/run.sh SECONDS TARGET...      (FUZZ_RUNS=N also stops a target after N executions)
# Each target starts from its seed corpus (fuzz/corpus/<target>, copied into
# build/fuzz/corpus/<target>, where the inputs it finds accumulate across runs; the repository's
# seeds are never modified), with its -max_len and dictionary. Logs: build/fuzz/<target>.log;
# crash/leak/timeout inputs: build/fuzz/artifacts/<target>/. Prints executions and exec/s
# per target and exits non-zero if any target found anything.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BITSEC_FUZZ_BIN:-$ROOT/.build-fuzz/release/bitsec-fuzz}
SECONDS_PER_TARGET=$1
shift
OUT=$ROOT/build/fuzz
[ -x "$BIN" ] || { echo "fuzz/run.sh: $BIN not built (make fuzz-build)"; exit 2; }

max_len() {
    case $1 in
        check_permission) echo 1024 ;;
        totp | csrf | password_phc | session) echo 512 ;;
        decrypt_field) echo 2048 ;;
        verify_token | verify_token_jose | audit_emit) echo 4096 ;;
        *) echo 8192 ;;
    esac
}
dict() {
    case $1 in
        verify_token) echo "$ROOT/fuzz/dict/jose.dict" ;;
        totp | decrypt_field | csrf | password_phc | session) echo "" ;;
        *) echo "$ROOT/fuzz/dict/json.dict" ;;
    esac
}

export BITSEC_FUZZ_REPO=$ROOT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:symbolize=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$ROOT/fuzz/lsan.supp}

failed=()
summary=()
for t in "$@"; do
    corpus=$OUT/corpus/$t
    artifacts=$OUT/artifacts/$t/
    rm -rf "$artifacts"
    mkdir -p "$corpus" "$artifacts"
    cp -n "$ROOT"/fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
    d=$(dict "$t")
    args=(-max_total_time="$SECONDS_PER_TARGET" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048
          -print_final_stats=1 -artifact_prefix="$artifacts")
    [ -n "$d" ] && args+=(-dict="$d")
    [ -n "${FUZZ_RUNS:-}" ] && args+=(-runs="$FUZZ_RUNS")
    echo "fuzz: $t for ${SECONDS_PER_TARGET}s"
    rc=0
    BITSEC_FUZZ_TARGET=$t "$BIN" "${args[@]}" "$corpus" >"$OUT/$t.log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$OUT/$t.log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$OUT/$t.log" | tail -1)
    cov=$(grep -oE ' cov: [0-9]+' "$OUT/$t.log" | tail -1 | tr -dc 0-9)
    found=$(find "$artifacts" -type f | wc -l)
    result=ok
    if [ "$rc" != 0 ] || [ "$found" != 0 ]; then
        result="FAILED (exit $rc, $found artifact(s) in $artifacts; see $OUT/$t.log)"
        grep -E "ERROR: |SUMMARY: |bitsec-fuzz: " "$OUT/$t.log" | head -5 || true
        failed+=("$t")
    fi
    line=$(printf "%-18s %12s executions %8s exec/s  cov %5s  corpus %5s  %s" "$t" "${execs:-0}" "${rate:-0}" \
        "${cov:-0}" "$(find "$corpus" -type f | wc -l)" "$result")
    echo "$line"
    summary+=("$line")
done
echo "---- fuzz summary (${SECONDS_PER_TARGET}s per target) ----"
printf "%s\n" "${summary[@]}" | tee "$OUT/summary.txt"
if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz: findings in: ${failed[*]}"
    exit 1
fi
