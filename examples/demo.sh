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
import json, sys
import bitsec
print(f"bitsec {bitsec.library_version()} loaded from {bitsec.library_path()}")
with bitsec.Runtime(sys.argv[1]) as rt:
    print(json.dumps(rt.describe(), indent=2))
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
