#!/usr/bin/env python3
"""Writes the C ABI's constants and the Python binding's low-level module from their sources.

Sources (each value is declared once, in Swift):
  Sources/Bitsec/ABIConstants.swift    status codes, reasons, flags, limits, fixed sizes
  Sources/BitsecCore/Support/Version.swift   the library version and the ABI version
  include/bitsec_api.h                 the exported functions' prototypes (itself generated
                                       from Sources/Bitsec by tools/gen_header.py)
Outputs:
  include/bitsec.h                     the sections between "BEGIN GENERATED" and "END
                                       GENERATED" comments, one per family; the rest of the
                                       file (conventions, the opaque handle, function-like
                                       macros, prose) is written by hand and kept as is
  bindings/python/src/bitsec/_abi.py   the same constants, the version, and the ctypes
                                       prototype (restype, argtypes) of every export

Usage: gen_abi.py [--check]   (from the repository root; --check writes nothing and fails
when a committed output differs from what its sources give: `make check-generated`).
"""
from __future__ import annotations

import ast
import difflib
import operator
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTANTS = ROOT / "Sources/Bitsec/ABIConstants.swift"
VERSION = ROOT / "Sources/BitsecCore/Support/Version.swift"
API_HEADER = ROOT / "include/bitsec_api.h"
UMBRELLA = ROOT / "include/bitsec.h"
PY_ABI = ROOT / "bindings/python/src/bitsec/_abi.py"

SWIFT_TYPES = {"Int32": "int32_t", "UInt32": "uint32_t", "Int64": "int64_t", "StaticString": "char const *"}

# The one mapping from C types in include/bitsec_api.h to ctypes types (the Python tests keep
# an independent copy in tests/test_prototypes.py to check the generated prototypes).
C_TO_CTYPES = {
    "void": "None",
    "int32_t": "c_int32",
    "uint32_t": "c_uint32",
    "int64_t": "c_int64",
    "uint64_t": "c_uint64",
    "size_t": "c_size_t",
    "double": "c_double",
    "uint8_t": "c_uint8",
    "char const *": "c_char_p",
    "char *": "c_char_p",
    "uint8_t const *": "c_char_p",
    "uint8_t *": "c_char_p",
    "void *": "c_void_p",
    "bitsec_runtime *": "c_void_p",
    "bitsec_runtime **": "POINTER(c_void_p)",
    "bitsec_guard_result *": "c_void_p",
    "bitsec_guard_route const *": "c_void_p",
    "bitsec_guard_request *": "c_void_p",
    "char **": "POINTER(c_void_p)",
    "size_t *": "POINTER(c_size_t)",
    "size_t const *": "POINTER(c_size_t)",
    "int32_t *": "POINTER(c_int32)",
    "uint32_t *": "POINTER(c_uint32)",
    "int64_t *": "POINTER(c_int64)",
    "uint64_t *": "POINTER(c_uint64)",
    "double *": "POINTER(c_double)",
}


class GenError(Exception):
    pass


@dataclass
class Const:
    name: str
    swift_type: str
    expr: str  # as written in Swift
    value: int | str
    comment: str | None
    heading: list[str]  # `//:` lines before it


@dataclass
class Family:
    ident: str
    title: str
    consts: list[Const] = field(default_factory=list)


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.LShift: operator.lshift}


def _evaluate(expr: str, known: dict[str, int | str], where: str) -> int | str:
    """An integer expression (literals, + - * <<, parentheses, earlier constants) or a string."""
    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return int(_OPS[type(node.op)](ev(node.left), ev(node.right)))
        if isinstance(node, ast.Name) and isinstance(known.get(node.id), int):
            value = known[node.id]
            assert isinstance(value, int)
            return value
        raise GenError(f"{where}: unsupported value {expr!r}")
    tree = ast.parse(expr, mode="eval").body
    if isinstance(tree, ast.Constant) and isinstance(tree.value, str):
        return tree.value
    return ev(tree)


CONST_RE = re.compile(r"^    public static let (BITSEC_[A-Z0-9_]+): (\w+) = (.+?)(?:\s+// (.*))?$")
FAMILY_RE = re.compile(r"^    // MARK: family (\w+) -- (.+)$")


def parse_constants(path: Path = CONSTANTS) -> list[Family]:
    families: list[Family] = []
    known: dict[str, int | str] = {}
    heading: list[str] = []
    in_enum = False
    for n, line in enumerate(path.read_text().splitlines(), 1):
        where = f"{path.name}:{n}"
        if line.startswith("public enum BitsecABI {"):
            in_enum = True
            continue
        if not in_enum or not line.strip():
            continue
        if line == "}":
            in_enum = False
            continue
        if m := FAMILY_RE.match(line):
            if heading:
                raise GenError(f"{where}: `//:` comment before a family heading")
            families.append(Family(m[1], m[2]))
        elif line.startswith("    //: ") or line == "    //:":
            heading.append(line[8:])
        elif m := CONST_RE.match(line):
            if not families:
                raise GenError(f"{where}: a constant before the first family")
            name, st, expr, comment = m[1], m[2], m[3].strip(), m[4]
            if st not in SWIFT_TYPES:
                raise GenError(f"{where}: type {st} is not one of {sorted(SWIFT_TYPES)}")
            if name in known:
                raise GenError(f"{where}: {name} is declared twice")
            value = _evaluate(expr, known, where)
            if (st == "StaticString") != isinstance(value, str):
                raise GenError(f"{where}: {name}: value does not match type {st}")
            if isinstance(value, int):
                bits, signed = {"Int32": (32, True), "UInt32": (32, False), "Int64": (64, True)}[st]
                lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
                if not lo <= value <= hi:
                    raise GenError(f"{where}: {name} = {value} does not fit {st}")
            known[name] = value
            families[-1].consts.append(Const(name, st, expr, value, comment, heading))
            heading = []
        else:
            raise GenError(f"{where}: not in the constants format: {line!r}")
    if heading:
        raise GenError(f"{path.name}: `//:` comment after the last constant")
    return families


def parse_version(path: Path = VERSION) -> tuple[int, int, int, str, int]:
    text = path.read_text()

    def get(name: str, pattern: str) -> str:
        m = re.search(rf"public static let {name}: \w+ = {pattern}$", text, re.M)
        if not m:
            raise GenError(f"{path.name}: no `{name}`")
        return m[1]
    major, minor, patch = (int(get(k, r"(\d+)")) for k in ("major", "minor", "patch"))
    string = get("string", r'"([^"]*)"')
    abi = int(get("abi", r"(\d+)"))
    if string != f"{major}.{minor}.{patch}":
        raise GenError(f"{path.name}: string {string!r} is not major.minor.patch")
    return major, minor, patch, string, abi


def version_family(version: tuple[int, int, int, str, int]) -> Family:
    major, minor, patch, string, abi = version
    fam = Family("version", "Versions")
    h1 = ["Versions: one number, MAJOR*10000 + MINOR*100 + PATCH (compare with bitsec_version_number())."]
    fam.consts = [
        Const("BITSEC_VERSION_MAJOR", "Int32", str(major), major, None, h1),
        Const("BITSEC_VERSION_MINOR", "Int32", str(minor), minor, None, []),
        Const("BITSEC_VERSION_PATCH", "Int32", str(patch), patch, None, []),
        Const("BITSEC_VERSION_NUMBER", "Int32",
              "BITSEC_VERSION_MAJOR * 10000 + BITSEC_VERSION_MINOR * 100 + BITSEC_VERSION_PATCH",
              major * 10000 + minor * 100 + patch, None, []),
        Const("BITSEC_VERSION_STRING", "StaticString", f'"{string}"', string, None, []),
        Const("BITSEC_ABI_VERSION", "Int32", str(abi), abi, None,
              ["ABI version: the SONAME suffix (libbitsec.so.1); compare with bitsec_abi_version()."]),
    ]
    return fam


# ---- include/bitsec.h --------------------------------------------------------------------
SOURCE_OF = {"version": "Sources/BitsecCore/Support/Version.swift"}


def begin_marker(fam: Family) -> str:
    src = SOURCE_OF.get(fam.ident, "Sources/Bitsec/ABIConstants.swift")
    return f"/* ==== BEGIN GENERATED {fam.ident}: {fam.title} (tools/gen_abi.py from {src}; do not edit) ==== */"


def end_marker(fam: Family) -> str:
    return f"/* ==== END GENERATED {fam.ident} ==== */"


def c_value(c: Const) -> str:
    if isinstance(c.value, str):
        return c.expr
    expr = c.expr + ("u" if c.swift_type == "UInt32" and c.expr.isdigit() else "")
    if c.swift_type == "Int64" and c.expr.lstrip("-").isdigit():
        expr = f"INT64_C({c.expr})"
    return expr if re.fullmatch(r"\d+u?|INT64_C\(-?\d+\)", expr) else f"({expr})"


def c_section(fam: Family) -> list[str]:
    lines = [begin_marker(fam)]
    width = max((len(f"#define {c.name} {c_value(c)}") for c in fam.consts if c.comment), default=0)
    width = min(width, 56)
    for c in fam.consts:
        if c.heading:
            if len(c.heading) == 1:
                lines.append(f"/* {c.heading[0]} */")
            else:
                lines.append(f"/* {c.heading[0]}")
                lines.extend(f" * {h}" if h else " *" for h in c.heading[1:-1])
                lines.append(f" * {c.heading[-1]} */")
        d = f"#define {c.name} {c_value(c)}"
        lines.append(f"{d.ljust(width)} /* {c.comment} */" if c.comment else d)
    lines.append(end_marker(fam))
    return lines


def render_umbrella(current: str, families: list[Family]) -> str:
    text = current
    for fam in families:
        pattern = re.compile(
            rf"^/\* ==== BEGIN GENERATED {fam.ident}: .*?^/\* ==== END GENERATED {fam.ident} ==== \*/$",
            re.M | re.S)
        found = pattern.findall(text)
        if len(found) != 1:
            raise GenError(f"include/bitsec.h: expected one generated section '{fam.ident}', found {len(found)}")
        text = pattern.sub(lambda _m: "\n".join(c_section(fam)), text)
    stray = set(re.findall(r"BEGIN GENERATED (\w+):", text)) - {f.ident for f in families}
    if stray:
        raise GenError(f"include/bitsec.h: generated sections without a family: {sorted(stray)}")
    return text


# ---- prototypes ----------------------------------------------------------------------------
# One declaration per line, as tools/gen_header.py writes them; attribute macros after the
# parameter list (BITSEC_NODISCARD, a deprecation macro with its message) are allowed.
DECL = re.compile(r"^(?P<ret>[\w ]+?\s*\**)\s*(?P<name>bitsec_\w+)\((?P<args>[^)]*)\)"
                  r"(?:\s+BITSEC_\w+(?:\((?:[^()\"]|\"[^\"]*\")*\))?)*;$")


def parse_prototypes(path: Path = API_HEADER) -> dict[str, tuple[str, list[str]]]:
    out: dict[str, tuple[str, list[str]]] = {}
    for line in path.read_text().splitlines():
        s = line.strip()
        if not s.startswith(("int", "uint", "void", "char", "size_t", "double", "bitsec_runtime")):
            continue
        if "(" not in s or s.startswith("#"):
            continue
        m = DECL.match(s)
        if not m:
            raise GenError(f"bitsec_api.h: unparsed declaration {line!r}")
        args = [] if m["args"].strip() == "void" else [a.strip() for a in m["args"].split(",")]
        types = []
        for a in args:
            am = re.match(r"^(?P<type>.*?[\s*])(?P<pname>\w+)$", a)
            if not am:
                raise GenError(f"bitsec_api.h: cannot parse parameter {a!r} of {m['name']}")
            types.append(re.sub(r"\s+\*", " *", am["type"].strip()).replace("* *", "**"))
        ret = re.sub(r"\s+\*", " *", m["ret"].strip())
        for t in [ret, *types]:
            if t not in C_TO_CTYPES:
                raise GenError(f"bitsec_api.h: {m['name']}: no ctypes mapping for {t!r}")
        if m["name"] in out:
            raise GenError(f"bitsec_api.h: {m['name']} declared twice")
        out[m["name"]] = (ret, types)
    if not out:
        raise GenError("bitsec_api.h: no declarations found")
    return out


# ---- bindings/python/src/bitsec/_abi.py --------------------------------------------------
def render_python(families: list[Family], protos: dict[str, tuple[str, list[str]]]) -> str:
    ver = next(f for f in families if f.ident == "version")
    string = next(c.value for c in ver.consts if c.name == "BITSEC_VERSION_STRING")
    lines = [
        '"""The C ABI of libbitsec, low level: its constants and the ctypes prototype of every export.',
        "",
        "GENERATED by tools/gen_abi.py (`make header`) from Sources/Bitsec/ABIConstants.swift,",
        "Sources/BitsecCore/Support/Version.swift and include/bitsec_api.h. Do not edit;",
        "`make check-generated` fails when this file differs from its sources.",
        '"""',
        "from __future__ import annotations",
        "",
        "from ctypes import POINTER, c_char_p, c_double, c_int32, c_int64, c_size_t, c_uint8, c_uint32, c_uint64, c_void_p",
        "from typing import Any, Final",
        "",
        "#: The library's version, also the Python package's version (pyproject reads it).",
        f'VERSION = "{string}"',
        "",
    ]
    for fam in families:
        lines.append(f"# ---- {fam.ident}: {fam.title} " + "-" * max(4, 80 - len(fam.ident) - len(fam.title) - 10))
        for c in fam.consts:
            for h in c.heading:
                lines.append(f"# {h}".rstrip())
            if c.comment:
                lines.append(f"#: {c.comment}")
            value = repr(c.value)
            lines.append(f"{c.name}: Final = {value}")
        lines.append("")
    lines += [
        "#: Every export of include/bitsec_api.h: name -> (restype, argtypes).",
        "PROTOTYPES: Final[dict[str, tuple[Any, list[Any]]]] = {",
    ]
    for name in sorted(protos):
        ret, args = protos[name]
        lines.append(f'    "{name}": ({C_TO_CTYPES[ret]}, [{", ".join(C_TO_CTYPES[a] for a in args)}]),')
    lines += ["}", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    check = argv[1:] == ["--check"]
    if argv[1:] not in ([], ["--check"]):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        families = [version_family(parse_version()), *parse_constants()]
        protos = parse_prototypes()
        outputs = {
            UMBRELLA: render_umbrella(UMBRELLA.read_text(), families),
            PY_ABI: render_python(families, protos),
        }
    except GenError as e:
        print(f"gen_abi: {e}", file=sys.stderr)
        return 1
    stale = []
    for path, text in outputs.items():
        old = path.read_text() if path.exists() else ""
        if old == text:
            continue
        rel = path.relative_to(ROOT)
        if check:
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True),
                                                       f"{rel} (committed)", f"{rel} (from its sources)"))
            stale.append(str(rel))
        else:
            path.write_text(text)
            print(f"gen_abi: wrote {rel}")
    if stale:
        print(f"gen_abi: stale: {', '.join(stale)}: run 'make header' and commit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
