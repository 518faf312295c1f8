#!/usr/bin/env bash
# `make demo`: opens a runtime from the example configuration (embedded default, no Redis)
# through Python and through the C example, and prints what is configured.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CONFIG=examples/config/embedded.json
echo "== bitsec demo: embedded default ($CONFIG), no Redis needed"
echo
echo "-- through Python (bindings/python, ctypes)"
BITSEC_LIBRARY=$ROOT/build/lib/libbitsec.so.1 "$ROOT/.venv/bin/python" - "$CONFIG" <<'PY'
import sys
import bitsec
print(f"bitsec {bitsec.library_version()} loaded from {bitsec.library_path()}")
with bitsec.Runtime(sys.argv[1]) as rt:
    d = rt.describe()
    configured = [k for k, v in d["sections"].items() if v is not None]
    print(f"runtime open: ABI {d['abi']}, {d['openssl']}, configured sections: {', '.join(configured) or 'none'}")
    try:
        rt.redis_ping()
    except bitsec.NotConfiguredError as e:
        print(f"redis: not configured ({e.detail}): cluster-wide state stays in process")
print(f"random bytes from OpenSSL: {bitsec.random_bytes(16).hex()}")
PY
echo
echo "== every operation, in process (examples/demo.py, examples/config/demo.json)"
rm -rf build/demo && mkdir -p build/demo
head -c 32 /dev/urandom | base64 > build/demo/field-key
BITSEC_DEMO_JWT_SECRET=$(head -c 32 /dev/urandom | base64) BITSEC_LIBRARY=$ROOT/build/lib/libbitsec.so.1 \
    "$ROOT/.venv/bin/python" examples/demo.py examples/config/demo.json
echo
echo "-- through C (examples/c/example.c, linked against build/lib/libbitsec.so)"
mkdir -p build
cc -std=c11 -Wall -Wextra -Werror -I include examples/c/example.c -L build/lib -lbitsec -Wl,-rpath,"$ROOT/build/lib" -o build/example
./build/example "$CONFIG"

echo
echo "== the reference service over real HTTP (examples/fastapi_service: serve.py, then walkthrough.py)"
# A fresh data directory each time (the walkthrough enrols MFA and anonymises a user: once each);
# embedded default, no Redis; 127.0.0.1 on a free port; stopped by PID even when a step fails.
DATA=build/fastapi_service
LOG=build/fastapi_service.log
rm -rf "$DATA" && mkdir -p "$DATA"
export BITSEC_LIBRARY=$ROOT/build/lib/libbitsec.so.1
VPY=$ROOT/.venv/bin/python
"$VPY" examples/fastapi_service/serve.py --data-dir "$DATA" --url-file "$DATA/url" --no-access-log >"$LOG" 2>&1 &
SERVER=$!
stop_server() {
    if kill -0 "$SERVER" 2>/dev/null; then
        kill -TERM "$SERVER"
        wait "$SERVER" || true
    fi
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM
ready=""
for _ in $(seq 1 600); do
    kill -0 "$SERVER" 2>/dev/null || break
    if [ -s "$DATA/url" ] && "$VPY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/health", timeout=2)' \
            "$(cat "$DATA/url")" 2>/dev/null; then
        ready=yes
        break
    fi
    sleep 0.1
done
if [ -z "$ready" ]; then
    echo "the service did not answer /health (log: $LOG):"
    cat "$LOG"
    exit 1
fi
URL=$(cat "$DATA/url")
sed -n '1,8p' "$LOG" | sed 's/^/   /'
echo "   (pid $SERVER, log $LOG)"
"$VPY" examples/fastapi_service/walkthrough.py --url "$URL" --data-dir "$DATA"
stop_server
trap - EXIT INT TERM
echo
echo "-- service stopped (pid $SERVER): its audit queue was flushed at shutdown"
"$VPY" examples/fastapi_service/walkthrough.py --audit --data-dir "$DATA"
echo
echo "-- operations (serve.py): schema revision, retention (nothing is 90 days old yet), the trail with retention records"
"$VPY" examples/fastapi_service/serve.py migrate --data-dir "$DATA"
"$VPY" examples/fastapi_service/serve.py retention --data-dir "$DATA"
"$VPY" examples/fastapi_service/serve.py verify-audit --data-dir "$DATA"
echo
echo "-- alert rules (deploy/prometheus): promtool's unit tests of ADR-007's alerts"
if command -v promtool >/dev/null; then
    (cd deploy/prometheus && promtool test rules bitsec-rules.test.yml)
else
    echo "promtool not installed (make test-alerts installs Debian's prometheus package): skipped"
fi
echo
echo "demo: done (the service's data is left in $DATA; 'make serve' runs it for manual use)"
