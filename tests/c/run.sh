#!/usr/bin/env bash
# The C side of `make test`: the header compiles cleanly as C11 and C++17 with gcc and clang
# at -Wall -Wextra -Werror, links against libbitsec.so and runs; then `make install` into a
# temporary prefix and the example program builds with `pkg-config --cflags --libs bitsec`.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=$ROOT/build/c-tests
mkdir -p "$OUT"
LIBDIR=$ROOT/build/lib
passed=0; failed=0
run() {  # name, then command
    local name=$1; shift
    if "$@"; then passed=$((passed + 1)); else echo "FAILED: $name"; failed=$((failed + 1)); fi
}
GCC=$(command -v gcc); GXX=$(command -v g++)
CLANG=$(command -v clang); CLANGXX=$(command -v clang++)
for cc in "$GCC:c:c11" "$CLANG:c:c11" "$GXX:c++:c++17" "$CLANGXX:c++:c++17"; do
    IFS=: read -r compiler lang std <<<"$cc"
    for test in test_abi test_claims_chain; do
        exe=$OUT/$test-$(basename "$compiler")-$std
        run "compile $test $(basename "$compiler") -std=$std" "$compiler" -x "$lang" -std="$std" -Wall -Wextra -Werror -pedantic \
            -I include tests/c/$test.c -L "$LIBDIR" -lbitsec -Wl,-rpath,"$LIBDIR" -o "$exe"
        run "run $(basename "$exe")" "$exe"
    done
done

# The library contract, on the built file.
lib=$LIBDIR/libbitsec.so.1
run "soname is libbitsec.so.1" bash -c "readelf -d '$lib' | grep -q 'Library soname: \[libbitsec.so.1\]'"
run "only bitsec_* symbols exported" bash -c "! nm -D --defined-only '$lib' | awk '{print \$NF}' | grep -v '^bitsec_'"
run "no libswift* dependency" bash -c "! ldd '$lib' | grep -q libswift"
run "no Foundation linked" bash -c "! nm '$lib' | grep -q 'Foundation' && ! ldd '$lib' | grep -qi foundation"
run "depends on libssl, libcrypto, libhiredis" bash -c "ldd '$lib' | grep -q libcrypto.so.3 && ldd '$lib' | grep -q libhiredis"

# make install + pkg-config + the C example.
PREFIX=$(mktemp -d)
trap 'rm -rf "$PREFIX"' EXIT
run "make install" make --no-print-directory -s install PREFIX="$PREFIX" >/dev/null
run "installed files" test -f "$PREFIX/include/bitsec.h" -a -f "$PREFIX/include/bitsec_api.h" -a -L "$PREFIX/lib/libbitsec.so" -a -f "$PREFIX/lib/pkgconfig/bitsec.pc"
export PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig
flags=$(pkg-config --cflags --libs bitsec)
run "example builds with pkg-config" cc -std=c11 -Wall -Wextra -Werror examples/c/example.c $flags -Wl,-rpath,"$PREFIX/lib" -o "$OUT/example"
run "example runs" "$OUT/example" examples/config/embedded.json

echo "c tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
