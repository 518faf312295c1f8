"""No hand-kept copy of an ABI constant remains in the Python binding or its tests.

Every status code, reason, flag, limit and fixed size of the C ABI is declared once, in
Sources/Bitsec/ABIConstants.swift, and generated into ``bitsec._abi``; Python code names it
from there. The scan reads the source (AST) of every module of ``src/bitsec`` (but ``_abi``,
which is generated) and of ``tests/`` and reports:

1. a copied constant: an assignment to a name that looks like an ABI constant -- its last
   part is ``LEN``, ``BYTES``, ``TOKEN``, ``TTL``, ``KEY``, ``SEALED``, ``BATCH``, ``CODE``,
   ``REQUEST`` or ``SMALL``, or it contains ``MAX``, ``FLAG``, ``REASON``, ``BINARY``,
   ``DETERMINISTIC``, or it is an ABI constant's name without ``BITSEC_`` -- from a value
   computed from number literals only, equal to an ABI constant's value;
2. a copied table: a tuple/list of strings or a dict with number keys assigned to a
   ``*REASONS*``, ``*_NAMES``, ``*_KEYS`` or ``ALGORITHMS`` name (the tables of reason and
   status names, which come from ``_abi`` or from the library);
3. a status compared with a number: ``rc == 4``, where ``rc``/``status`` (or ``*.code``) is
   compared with a number literal other than 0 (BITSEC_OK, kept readable);
4. a distinctive value: a number literal equal to an ABI constant of 100000 or more that is
   not a power of two (e.g. the largest field token, 1398190), anywhere.

The value -1 is the "unknown" sentinel of the exception classes (``code``, ``reason_code``)
and only counts for ``*TTL*`` names (BITSEC_FERNET_NO_TTL). ``NOT_ABI`` lists the names
that look like ABI constants but are the binding's or a test's own settings.

It does not try to understand arithmetic on literals elsewhere (a test's own buffer size of
8192 bytes is not a copy of BITSEC_TOKEN_MAX_BYTES_DEFAULT); names and tables are what a
copy looks like in this code base.
"""
from __future__ import annotations

import ast
import operator
import re
from pathlib import Path

from bitsec import _abi

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src" / "bitsec"

ABI: dict[str, int] = {k: v for k, v in vars(_abi).items() if k.startswith("BITSEC_") and isinstance(v, int)}
ABI_VALUES = set(ABI.values())
SHORT_NAMES = {k[len("BITSEC_"):] for k in ABI}
DISTINCTIVE = {v for v in ABI_VALUES if v >= 100_000 and v & (v - 1)}

NAME_LIKE = re.compile(r"(?:^|_)(?:LEN|BYTES|TOKEN|TTL|KEY|SEALED|BATCH|REQUEST|SMALL|CODE)$|MAX|FLAG|REASON|BINARY|DETERMINISTIC")
TABLE_LIKE = re.compile(r"REASONS|_NAMES$|_KEYS$|^ALGORITHMS$")
STATUS_LIKE = re.compile(r"^(?:rc|status|_?code)$")

#: Names that look like ABI constants but are not copies of one, and why.
NOT_ABI = {
    "DEFAULT_MAX_BODY_BYTES": "the FastAPI integration's own request body limit",
    "_MEMO_MAX": "entries of the Python verify memo",
    "MAX_BYTES": "the JWKS fetcher's HTTP response limit",
    "MAX_KEYS": "a test's configured rate_limits.max_keys",
    "_MAX_VALUE": "the alert webhook's longest label value (characters)",
    "FORWARDED_MAX_BYTES": "ClientIP's bound on a Forwarded header (bytes of all its lines)",
    "MAX_FORWARDED_ELEMENTS": "ClientIP's bound on a Forwarded chain (elements read from the right)",
}

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.LShift: operator.lshift,
        ast.Pow: operator.pow}


def literal_int(node: ast.AST) -> int | None:
    """The value of an expression of number literals only (e.g. ``64 * 1024``), else None."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        v = literal_int(node.operand)
        return None if v is None else -v
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        a, b = literal_int(node.left), literal_int(node.right)
        return None if a is None or b is None else int(_OPS[type(node.op)](a, b))
    return None


def _target_names(t: ast.AST) -> list[str]:
    if isinstance(t, ast.Name):
        return [t.id]
    if isinstance(t, ast.Attribute):
        return [t.attr]
    if isinstance(t, (ast.Tuple, ast.List)):
        return [n for e in t.elts for n in _target_names(e)]
    return []


def _is_copied_table(value: ast.AST) -> bool:
    if isinstance(value, (ast.Tuple, ast.List)) and value.elts:
        return all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts)
    if isinstance(value, ast.Dict) and value.keys:
        return all(k is not None and literal_int(k) is not None for k in value.keys) or \
            all(literal_int(v) is not None for v in value.values)
    return False


def scan(source: str, filename: str) -> list[str]:
    found: list[str] = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [n for t in targets for n in _target_names(t)]
            values = node.value.elts if isinstance(node.value, ast.Tuple) and len(names) > 1 else [node.value]
            pairs = zip(names, values) if len(values) == len(names) else ((n, node.value) for n in names)
            for name, value in pairs:
                bare = name.lstrip("_").upper()
                v = literal_int(value)
                if name in NOT_ABI or (v == -1 and "TTL" not in bare):
                    continue
                if v is not None and v in ABI_VALUES and (NAME_LIKE.search(bare) or bare in SHORT_NAMES):
                    found.append(f"{where}: {name} = {v} copies an ABI constant (use bitsec._abi)")
                if TABLE_LIKE.search(bare) and _is_copied_table(value):
                    found.append(f"{where}: {name} is a hand-kept table of ABI codes (derive it from bitsec._abi)")
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.Eq, ast.NotEq)):
            left, right = node.left, node.comparators[0]
            for a, b in ((left, right), (right, left)):
                names = _target_names(a)
                v = literal_int(b)
                if names and STATUS_LIKE.match(names[0]) and v not in (None, 0) and v in ABI_VALUES:
                    found.append(f"{where}: status compared with the number {v} (use bitsec._abi.BITSEC_E_*)")
        elif isinstance(node, ast.Constant) and type(node.value) is int and node.value in DISTINCTIVE:
            found.append(f"{where}: the number {node.value} is an ABI constant's value (use bitsec._abi)")
    return found


def python_files() -> list[Path]:
    files = [p for p in sorted(SRC.rglob("*.py")) if p.name != "_abi.py"]
    return files + sorted(HERE.glob("*.py"))


def test_no_hand_kept_copy_of_an_abi_constant() -> None:
    problems: list[str] = []
    for path in python_files():
        if path == Path(__file__).resolve():
            continue  # this file names the patterns it looks for
        problems += scan(path.read_text(), str(path.relative_to(HERE.parent)))
    assert not problems, "hand-kept copies of ABI constants:\n  " + "\n  ".join(problems)


def test_the_scan_finds_each_kind_of_copy() -> None:
    # The copies this binding had before its constants were generated, each must be found.
    copies = '''
DECISION_LEN = 7  # BITSEC_RATE_LIMIT_DECISION_LEN
FIELD_MAX_TOKEN = 1398190
MAX_REQUEST = 64 * 1024
_BUFFER_TOO_SMALL = 4
FERNET_NO_TTL = -1
BF_FLAG_DEGRADED, BF_FLAG_NEWLY_BLOCKED, BF_FLAG_TABLE_FULL = 1, 2, 4
class E:
    code = 1
REASONS = ("ok", "limited", "key_table_full")
HEADER_NAMES = {0: "BITSEC_OK", 1: "BITSEC_E_INVALID_ARGUMENT"}
ALGORITHMS = {"SHA1": 0, "SHA256": 1}
if rc == 4 and n > cap:
    pass
cap = 1398190 + 1
'''
    found = scan(copies, "copies.py")
    lines = sorted({int(f.split(":")[1]) for f in found})
    assert lines == [2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 15], found
    # Names from _abi, derived tables and ordinary numbers pass.
    clean = '''
DECISION_LEN: int = _abi.BITSEC_RATE_LIMIT_DECISION_LEN
REASONS = N.names_by_value("BITSEC_RATE_LIMIT_REASON_")
timeout = 4
if rc == _abi.BITSEC_E_BUFFER_TOO_SMALL:
    pass
if rc == 0:
    pass
'''
    assert scan(clean, "clean.py") == []


def test_abi_constants_match_the_header(repo_root: Path) -> None:
    """_abi holds exactly the object-like integer macros of include/bitsec.h, with their values
    (the C compiler's view is checked by tests/c; this checks the generator's Python side)."""
    text = (repo_root / "include" / "bitsec.h").read_text()
    defines: dict[str, int] = {}
    for m in re.finditer(r"^#define (BITSEC_\w+) (.+?)(?:\s+/\*.*\*/)?$", text, re.M):
        expr = m[2].strip()
        if m[1] in ("BITSEC_H", "BITSEC_NODISCARD") or expr.startswith('"'):
            continue
        if expr.startswith("__attribute__") or re.match(r"BITSEC_\w+\(", m[0][8:]):
            continue
        expr = re.sub(r"(\d+)u\b", r"\1", expr)
        defines[m[1]] = eval(expr, {}, dict(defines))  # noqa: S307 - integer expressions of the header
    assert defines == ABI
    assert re.search(r'#define BITSEC_VERSION_STRING "([^"]+)"', text)[1] == _abi.VERSION  # type: ignore[index]
    assert re.search(r'#define BITSEC_TOTP_SEALED_SECRET_CONTEXT_PREFIX "([^"]+)"', text)[1] == \
        _abi.BITSEC_TOTP_SEALED_SECRET_CONTEXT_PREFIX  # type: ignore[index]


def test_abi_constants_agree_with_the_library() -> None:
    """The generated constants are the library's: every status code has a text, every token and
    field reason the name its constant spells, every permission reason a text, and the next
    number after each family is unknown (a code added to the core gets a constant too)."""
    from bitsec import _native, fields, permissions, tokens

    def family(prefix: str, skip: tuple[str, ...] = ()) -> dict[str, int]:
        return {k[len(prefix):].lower(): v for k, v in ABI.items()
                if k.startswith(prefix) and not k[len(prefix):].startswith(skip)}

    status = family("BITSEC_E_")
    for code in status.values():
        assert _native.strerror(code).decode() != "unknown status", code
    assert _native.strerror(max(status.values()) + 1).decode() == "unknown status"
    token_reasons = family("BITSEC_TOKEN_", skip=("MAX_",))
    for name, code in token_reasons.items():
        if code:
            assert tokens.token_reason_name(code) == name, (code, name)
    assert tokens.token_reason_name(max(token_reasons.values()) + 1) == "unknown"
    field_reasons = family("BITSEC_FIELD_REASON_")
    for name, code in field_reasons.items():
        assert fields.reason_name(code) == name, (code, name)
    assert fields.reason_name(max(field_reasons.values()) + 1) == "unknown"
    perm = family("BITSEC_PERM_")
    assert sorted(perm.values()) == sorted(permissions.REASONS) == list(range(1, len(perm) + 1))
    assert all(permissions.REASONS.values())
    assert permissions.permission_reason(len(perm) + 1) in ("", "unknown")
