#!/usr/bin/env bash
# The exported symbols of libbitsec.so.1 against the committed list include/bitsec.symbols.
# Within SONAME libbitsec.so.1 the list may only grow: a listed symbol missing from the
# library breaks every program linked against an older build; a new export must be added to
# the list (sorted) in the same change, so that the growth is deliberate and reviewed.
# Usage: tools/check_symbols.sh [LIBRARY] [LIST]
set -euo pipefail
lib=${1:-build/lib/libbitsec.so.1}
list=${2:-include/bitsec.symbols}
actual=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TtWiI]$/ || $2 == "T" { print $3 }' | sed 's/@.*//' | grep '^bitsec_' | LC_ALL=C sort -u)
expected=$(grep -v '^#' "$list" | grep -v '^$' | LC_ALL=C sort -u)
if [ "$(grep -v '^#' "$list" | grep -v '^$')" != "$expected" ]; then
    echo "symbols: $list must be sorted (LC_ALL=C sort) without duplicates"; exit 1
fi
missing=$(LC_ALL=C comm -23 <(echo "$expected") <(echo "$actual"))
added=$(LC_ALL=C comm -13 <(echo "$expected") <(echo "$actual"))
rc=0
if [ -n "$missing" ]; then
    echo "symbols: listed in $list but not exported by $lib (a removed or renamed export breaks"
    echo "programs linked against SONAME libbitsec.so.1; keep the old name as a deprecated alias):"
    echo "$missing" | sed 's/^/  /'
    rc=1
fi
if [ -n "$added" ]; then
    echo "symbols: exported by $lib but not in $list; add them to $list (sorted):"
    echo "$added" | sed 's/^/  /'
    rc=1
fi
[ $rc = 0 ] && echo "symbols: $(echo "$actual" | wc -l) exports match $list"
exit $rc
