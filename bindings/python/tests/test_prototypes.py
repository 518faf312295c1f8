"""Every function in the committed header has exactly one matching ctypes prototype."""
from __future__ import annotations

import ctypes
import importlib
import pkgutil
import re
from ctypes import POINTER, c_char_p, c_int32, c_int64, c_size_t, c_uint32, c_uint64, c_void_p, c_double, c_uint8
from pathlib import Path

import pytest

import bitsec
from bitsec import _native

# The one mapping from C types in include/bitsec_api.h to ctypes types.
C_TO_CTYPES = {
    "void": None,
    "int32_t": c_int32,
    "uint32_t": c_uint32,
    "int64_t": c_int64,
    "uint64_t": c_uint64,
    "size_t": c_size_t,
    "double": c_double,
    "uint8_t": c_uint8,
    "char const *": c_char_p,
    "char *": c_char_p,
    "uint8_t const *": c_char_p,
    "uint8_t *": c_char_p,
    "void *": c_void_p,
    "bitsec_runtime *": c_void_p,
    "bitsec_runtime **": POINTER(c_void_p),
    "bitsec_guard_result *": c_void_p,
    "bitsec_guard_route const *": c_void_p,
    "bitsec_guard_request *": c_void_p,
    "char **": POINTER(c_void_p),
    "size_t *": POINTER(c_size_t),
    "size_t const *": POINTER(c_size_t),
    "int32_t *": POINTER(c_int32),
    "uint32_t *": POINTER(c_uint32),
    "int64_t *": POINTER(c_int64),
    "uint64_t *": POINTER(c_uint64),
    "double *": POINTER(c_double),
}

DECL = re.compile(r"^(?P<ret>[\w ]+?\s*\**)\s*(?P<name>bitsec_\w+)\((?P<args>[^)]*)\)(?: BITSEC_NODISCARD)?(?: BITSEC_DEPRECATED\(\"[^\"]*\"\))?;$")


def parse_header(path: Path) -> dict[str, tuple[str, list[str]]]:
    out: dict[str, tuple[str, list[str]]] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith(("///", "#", "/*", " *", "extern", "}")):
            continue
        m = DECL.match(line.strip())
        assert m, f"unparsed declaration in the header: {line!r}"
        args = [] if m["args"].strip() == "void" else [a.strip() for a in m["args"].split(",")]
        types = []
        for a in args:
            am = re.match(r"^(?P<type>.*?[\s*])(?P<pname>\w+)$", a)
            assert am, f"cannot parse parameter {a!r} of {m['name']}"
            types.append(re.sub(r"\s+\*", " *", am["type"].strip()).replace("* *", "**"))
        out[m["name"]] = (re.sub(r"\s+\*", " *", m["ret"].strip()), types)
    return out


def import_all_modules() -> None:
    for mod in pkgutil.walk_packages(bitsec.__path__, "bitsec."):
        if mod.name.startswith("bitsec.fastapi") or mod.name.startswith("bitsec.sqlalchemy"):
            continue  # optional extras import their framework
        importlib.import_module(mod.name)


def test_header_and_prototypes_agree(repo_root: Path) -> None:
    import_all_modules()
    header = parse_header(repo_root / "include" / "bitsec_api.h")
    assert header, "no declarations parsed"
    assert set(header) == set(_native.PROTOTYPES), (
        f"missing prototypes: {sorted(set(header) - set(_native.PROTOTYPES))}; "
        f"not in header: {sorted(set(_native.PROTOTYPES) - set(header))}"
    )
    for name, (ret, args) in header.items():
        restype, argtypes = _native.PROTOTYPES[name]
        assert ret in C_TO_CTYPES, f"{name}: unmapped return type {ret!r}"
        assert restype == C_TO_CTYPES[ret], f"{name}: restype {restype} but header says {ret}"
        assert len(argtypes) == len(args), f"{name}: {len(argtypes)} argtypes but header has {len(args)} parameters"
        for i, (a, t) in enumerate(zip(args, argtypes)):
            assert a in C_TO_CTYPES, f"{name}: unmapped parameter type {a!r}"
            assert t == C_TO_CTYPES[a], f"{name} parameter {i}: {t} but header says {a}"


def test_the_parser_catches_a_mismatch(tmp_path: Path) -> None:
    # The check above must be able to fail: a header whose function differs is caught.
    fake = tmp_path / "h.h"
    fake.write_text("int32_t bitsec_random_bytes(uint8_t *out_buf, size_t len, int64_t extra) BITSEC_NODISCARD;\n")
    parsed = parse_header(fake)
    assert parsed["bitsec_random_bytes"] == ("int32_t", ["uint8_t *", "size_t", "int64_t"])
    assert len(_native.PROTOTYPES["bitsec_random_bytes"][1]) != len(parsed["bitsec_random_bytes"][1])


def test_status_codes_match_header(repo_root: Path) -> None:
    text = (repo_root / "include" / "bitsec.h").read_text()
    codes = {m[1]: int(m[2]) for m in re.finditer(r"#define (BITSEC_(?:OK|E_\w+)) (\d+)", text)}
    from bitsec.errors import BY_CODE, HEADER_NAMES
    assert {v: k for k, v in HEADER_NAMES.items()} == codes
    assert set(BY_CODE) == set(codes.values()) - {0}
    for code, cls in BY_CODE.items():
        assert _native.strerror(code).decode() != "unknown status"
        assert cls.code == code


def test_versions_match_header(repo_root: Path) -> None:
    text = (repo_root / "include" / "bitsec.h").read_text()
    ver = re.search(r'#define BITSEC_VERSION_STRING "([^"]+)"', text)[1]
    abi = int(re.search(r"#define BITSEC_ABI_VERSION (\d+)", text)[1])
    assert bitsec.library_version() == ver == bitsec.__version__
    assert bitsec.ABI_VERSION == abi == _native.abi_version()


def test_exact_semantics_exports_are_declared(repo_root: Path) -> None:
    """The exports that give exact time and TTL semantics (added beside the originals, whose
    meaning is unchanged) are in the header and declared once, with the header's types."""
    import_all_modules()
    header = parse_header(repo_root / "include" / "bitsec_api.h")
    expected = {
        "bitsec_verify_token_at": ["bitsec_runtime *", "char const *", "size_t", "int64_t", "int32_t", "int32_t *",
                                   "char *", "size_t", "size_t *"],
        "bitsec_fernet_decrypt_ttl": ["bitsec_runtime *", "char const *", "size_t", "int64_t", "int64_t", "uint8_t *",
                                      "size_t", "size_t *", "int32_t *"],
        "bitsec_fernet_migrate_ttl": ["bitsec_runtime *", "char const *", "size_t", "int64_t", "int64_t", "char const *",
                                      "size_t", "uint32_t", "char *", "size_t", "size_t *", "int32_t *"],
    }
    for name, args in expected.items():
        assert header[name] == ("int32_t", args), name
        assert _native.PROTOTYPES[name][1] == [C_TO_CTYPES[a] for a in args], name
    text = (repo_root / "include" / "bitsec.h").read_text()
    from bitsec.fields import FERNET_NO_TTL
    assert re.search(r"#define BITSEC_FERNET_NO_TTL \((-?\d+)\)", text)[1] == str(FERNET_NO_TTL)


def test_login_guard_constants_match_header(repo_root: Path) -> None:
    text = (repo_root / "include" / "bitsec.h").read_text()
    defs = {m[1]: int(m[2]) for m in re.finditer(r"#define (BITSEC_LOGIN_GUARD_\w+) (\d+)", text)}
    from bitsec import ratelimit as rl
    assert defs["BITSEC_LOGIN_GUARD_DECISION_LEN"] == rl.GUARD_DECISION_LEN
    reasons = {k[len("BITSEC_LOGIN_GUARD_REASON_"):].lower(): v for k, v in defs.items()
               if k.startswith("BITSEC_LOGIN_GUARD_REASON_")}
    assert reasons == {name: i for i, name in enumerate(rl.GUARD_REASONS)}
    assert (defs["BITSEC_LOGIN_GUARD_FLAG_DEGRADED"], defs["BITSEC_LOGIN_GUARD_FLAG_NEWLY_BLOCKED"],
            defs["BITSEC_LOGIN_GUARD_FLAG_TABLE_FULL"]) == (rl.GUARD_FLAG_DEGRADED, rl.GUARD_FLAG_NEWLY_BLOCKED,
                                                           rl.GUARD_FLAG_TABLE_FULL)
    assert [defs["BITSEC_LOGIN_GUARD_KEY_NONE"], defs["BITSEC_LOGIN_GUARD_KEY_CLIENT"],
            defs["BITSEC_LOGIN_GUARD_KEY_ACCOUNT"]] == [0, 1, 2]
    for name in ("bitsec_login_guard_begin", "bitsec_login_guard_succeeded", "bitsec_login_guard_cancel",
                 "bitsec_login_guard_client_key"):
        assert name in _native.PROTOTYPES


def test_generated_prototypes_are_the_header(repo_root: Path) -> None:
    """_abi.PROTOTYPES (written by tools/gen_abi.py) holds exactly the header's functions, each
    with the types this test's own mapping gives; _native.declare binds exactly those."""
    from bitsec import _abi
    header = parse_header(repo_root / "include" / "bitsec_api.h")
    assert set(_abi.PROTOTYPES) == set(header)
    for name, (ret, args) in header.items():
        restype, argtypes = _abi.PROTOTYPES[name]
        assert restype == C_TO_CTYPES[ret] and argtypes == [C_TO_CTYPES[a] for a in args], name
    import_all_modules()
    for name, (restype, argtypes) in _native.PROTOTYPES.items():
        fn = getattr(_native.lib, name)
        assert (fn.restype, fn.argtypes) == (restype, argtypes) == tuple(_abi.PROTOTYPES[name]), name
    with pytest.raises(RuntimeError, match="declared twice"):
        _native.declare("bitsec_random_bytes")
