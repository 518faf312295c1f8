#!/usr/bin/env bash
# The platform wheel of `make dist`, installed as a user installs it: a fresh venv in a
# temporary directory, the working directory outside the repository, BITSEC_LIBRARY unset.
# Checks with ldd that the bundled libraries resolve inside the installed wheel (hiredis from
# bitsec.libs/, nothing "not found"; OpenSSL from the system, see docs/packaging.md), that
# the `bitsec` command runs, then runs tests/wheel/smoke.py there.
# Usage: tests/wheel/run.sh [WHEEL]   (default: the manylinux wheel in dist/)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-python3}
wheel=${1:-$(ls "$ROOT"/dist/bitsec-*-manylinux_*.whl 2>/dev/null | head -1)}
[ -n "$wheel" ] && [ -f "$wheel" ] || { echo "wheel test: no manylinux wheel in dist/ (run make dist)"; exit 1; }
tmp=$(mktemp -d /tmp/bitsec-wheel-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
unset BITSEC_LIBRARY PYTHONPATH
cd "$tmp"
"$PYTHON" -m venv venv
# fastapi and httpx (TestClient) at the versions the repository tests with.
pins=$(grep -E '^(fastapi|httpx)==' "$ROOT/requirements-dev.txt" | tr '\n' ' ')
venv/bin/pip install -q --disable-pip-version-check "$wheel" $pins
site=$(venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
lib="$site/bitsec/_lib/libbitsec.so.1"
[ -f "$lib" ] || { echo "wheel test: $lib missing"; exit 1; }
deps=$(ldd "$lib")
echo "$deps" | sed 's/^/  ldd: /'
if echo "$deps" | grep -q "not found"; then echo "wheel test: unresolved libraries"; exit 1; fi
site=$(readlink -f "$site")
# Each dependency's real path (ldd prints the RPATH form, bitsec/_lib/../../bitsec.libs/...).
resolved=$(echo "$deps" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | while read -r name path; do
  echo "$name $(readlink -f "$path")"; done)
echo "$resolved" | grep -Eq "^libhiredis[^ ]* $site/bitsec\.libs/" \
  || { echo "wheel test: libhiredis does not resolve inside the wheel ($site/bitsec.libs)"; exit 1; }
outside=$(echo "$resolved" | grep -v " $site/" | grep -Ev "^(libc|libm|libstdc\+\+|libgcc_s|libssl|libcrypto)\.so" || true)
if [ -n "$outside" ]; then
  echo "wheel test: libraries loaded from outside the wheel that the system does not provide:"; echo "$outside"; exit 1
fi
echo "wheel test: hiredis resolves inside the wheel ($site/bitsec.libs); OpenSSL, libstdc++, libgcc_s, libm, libc from the system"
venv/bin/bitsec --version
venv/bin/python "$ROOT/tests/wheel/smoke.py"
echo "wheel test: $(basename "$wheel") installed into a fresh venv and passed"
