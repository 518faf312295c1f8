#!/usr/bin/env python3
"""Fails when a tracked file refers to a path outside the repository.

A clone must build, test, fuzz and document itself with nothing beside it: test vectors live in
tests/vectors, and no script, test or document may read or point to a sibling folder
(the `shared` folder beside the checkout) or to an absolute path of one machine (under
`/work` or `/home`).

    python3 tools/check_self_contained.py        # exit 0 when clean, 1 with the offending lines
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A sibling folder reached by climbing out of the checkout, or a machine's absolute path.
PATTERNS = [
    re.compile(r"\.\./shared\b"),
    re.compile(r"(?<![\w.])/work/"),
    re.compile(r"(?<![\w.])/home/[a-z_][\w-]*/"),
    re.compile(r"(?<![\w/])shared/(vectors|seeds)\b"),
    re.compile(r"[\"']shared[\"']\s*/"),  # pathlib: parents[4] / "shared" / "vectors"
]
# Lines each pattern must catch: the forms the repository itself once used.
SELF_TEST = [
    'let bytes = try readFile(path + "/' + '..' + '/shared/vectors/totp/" + name, limit: 1 << 20)',
    'VECTORS = Path(__file__).resolve().parents[4] / "shared" / "vectors" / "fernet"',
    'ap.add_argument("--vectors", default=str(ROOT.parent / "shared/vectors"))',
    'corpus in `/' + 'work/main/build/fuzz/corpus`',
]
SKIP = {"tools/check_self_contained.py"}


def offenders() -> list[str]:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout.split(b"\0")
    found = []
    for raw in files:
        name = raw.decode()
        if not name or name in SKIP:
            continue
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if any(p.search(line) for p in PATTERNS):
                found.append(f"{name}:{n}: {line.strip()[:160]}")
    return found


def main() -> int:
    missed = [line for line in SELF_TEST if not any(p.search(line) for p in PATTERNS)]
    if missed:
        print("check-self-contained: the patterns miss known outside references:", *missed, sep="\n  ")
        return 1
    bad = offenders()
    if bad:
        print("tracked files refer to paths outside the repository (a clone elsewhere would fail):")
        print("\n".join(bad))
        return 1
    print("check-self-contained: no tracked file refers to a path outside the repository")
    return 0


if __name__ == "__main__":
    sys.exit(main())
