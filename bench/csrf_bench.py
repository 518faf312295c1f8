"""CSRF checks: bitsec (through the Python binding) vs the same construction written with the
standard library (hmac + hashlib + secrets + hmac.compare_digest: what a service writes by
hand, and what Flask-WTF-style token helpers do), on the same session ids, one run.

Rows: synchronizer token verify (valid token), double-submit verify, origin check, token issue.
Run: BENCH=csrf make bench  (or .venv/bin/python bench/csrf_bench.py with BITSEC_LIBRARY set)
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import time

import bitsec

N = 50_000
REPEAT = 3
KEY = bytes(range(32))
LABEL = b"bitsec-csrf-synchronizer-v1\x00"


def best(fn, n: int = N) -> float:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        fn(n)
        out.append((time.perf_counter() - t) / n * 1e6)
    return min(out)


def py_issue(sid: str) -> str:
    head = b"\x01" + struct.pack(">Q", int(time.time())) + secrets.token_bytes(16)
    mac = hmac.new(KEY, LABEL + hashlib.sha256(sid.encode()).digest() + head, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(head + mac).rstrip(b"=").decode()


def py_verify(sid: str, token: str, max_age: int = 86_400) -> bool:
    if len(token) != 76:
        return False
    try:
        raw = base64.urlsafe_b64decode(token + "==")
    except ValueError:
        return False
    head, mac = raw[:25], raw[25:]
    good = hmac.new(KEY, LABEL + hashlib.sha256(sid.encode()).digest() + head, hashlib.sha256).digest()
    if not hmac.compare_digest(good, mac):
        return False
    return time.time() - struct.unpack(">Q", head[1:9])[0] < max_age


def main() -> None:
    rt = bitsec.Runtime({"allow_inline_secrets": True,
                         "csrf": {"key": {"value": KEY.hex(), "encoding": "hex"},
                                  "allowed_origins": ["https://app.example.com"]}})
    sid = "s-" + secrets.token_urlsafe(24)
    tok = rt.csrf_token_issue(sid)
    cookie = rt.csrf_cookie_issue(sid)
    ptok = py_issue(sid)
    assert rt.csrf_token_verify(sid, tok) and py_verify(sid, ptok)
    assert not rt.csrf_token_verify("other", tok) and not py_verify("other", ptok)

    def b_verify(n: int) -> None:
        v = rt.csrf_token_verify
        for _ in range(n):
            v(sid, tok)

    def p_verify(n: int) -> None:
        for _ in range(n):
            py_verify(sid, ptok)

    def b_double(n: int) -> None:
        v = rt.csrf_cookie_verify
        for _ in range(n):
            v(sid, cookie, cookie)

    def p_double(n: int) -> None:
        for _ in range(n):
            hmac.compare_digest(ptok, ptok) and py_verify(sid, ptok)

    def b_origin(n: int) -> None:
        v = rt.csrf_origin_check
        for _ in range(n):
            v("POST", "https://app.example.com", "same-origin")

    allowed = {"https://app.example.com"}

    def p_origin(n: int) -> None:
        for _ in range(n):
            m, o, f = "POST", "https://app.example.com", "same-origin"
            _ = m in ("GET", "HEAD", "OPTIONS", "TRACE") or o.lower() in allowed or f in ("same-origin", "none")

    def b_issue(n: int) -> None:
        i = rt.csrf_token_issue
        for _ in range(n):
            i(sid)

    def p_issue(n: int) -> None:
        for _ in range(n):
            py_issue(sid)

    rows = [("synchronizer verify (valid)", b_verify, p_verify), ("double-submit verify", b_double, p_double),
            ("origin check", b_origin, p_origin), ("token issue", b_issue, p_issue)]
    print("## CSRF (Python binding vs stdlib hmac)")
    print()
    print("| operation | bitsec µs/call | stdlib µs/call | ratio |")
    print("|---|---:|---:|---:|")
    for name, b, p in rows:
        tb, tp = best(b), best(p)
        print(f"| {name} | {tb:.2f} | {tp:.2f} | {tp / tb:.2f}x |")
    rt.close()


if __name__ == "__main__":
    main()
