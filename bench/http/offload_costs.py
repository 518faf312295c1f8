"""What a trip through the thread pool costs next to the native calls it would carry.

Run: ``BITSEC_LIBRARY=build/lib/libbitsec.so.1 .venv/bin/python bench/http/offload_costs.py``.
Prints a markdown table: per token algorithm, an uncached verify (``cache_size: 0``, a new
token each call is not needed: the cache is off) and a cached one; a permission check, a local
rate-limit take, an audit emit (durability ``none``); and the same calls awaited through
``anyio.to_thread.run_sync`` from an asyncio loop (the hop ``bitsec.fastapi`` makes for
operations that may wait). Wall-clock microseconds per call (median of 5 batches); the hop
row is what ``offload="always"`` adds to every call. Used for ``SLOW_VERIFY_ALGS`` in
``bitsec.fastapi`` (BENCHMARKS.md, "Which calls run on the event loop").
"""
from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import anyio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

import bitsec

ROOT = Path(__file__).resolve().parents[2]
ISS, AUD = "https://auth.bench.example", "bench"


def _pem(key: Any) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _keys() -> dict[str, dict]:
    rsa2048 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa4096 = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    out = {"HS256": {"alg": "HS256", "secret": {"value": "k" * 32}},
           "RS256 (2048)": {"alg": "RS256", "pem": _pem(rsa2048)},
           "RS256 (4096)": {"alg": "RS256", "pem": _pem(rsa4096)},
           "PS256 (2048)": {"alg": "PS256", "pem": _pem(rsa2048)},
           "EdDSA": {"alg": "EdDSA", "pem": _pem(ed25519.Ed25519PrivateKey.generate())}}
    for alg, curve in (("ES256", ec.SECP256R1()), ("ES384", ec.SECP384R1()), ("ES512", ec.SECP521R1())):
        out[alg] = {"alg": alg, "pem": _pem(ec.generate_private_key(curve))}
    return out


def per_call(fn: Callable[[], Any], n: int) -> float:
    """Median over 5 batches of the wall-clock microseconds per call."""
    fn()
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


def hopped(fn: Callable[[], Any], n: int) -> float:
    """The same call awaited through ``anyio.to_thread.run_sync`` from an asyncio loop."""
    async def batch() -> float:
        await anyio.to_thread.run_sync(fn)
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                await anyio.to_thread.run_sync(fn)
            runs.append((time.perf_counter() - t0) / n * 1e6)
        return statistics.median(runs)
    return asyncio.run(batch())


def main() -> None:
    now = int(time.time())
    claims = {"sub": "u1", "roles": ["operator"], "iss": ISS, "aud": AUD, "iat": now, "exp": now + 3600}
    rows: list[tuple[str, float, float, float]] = []
    for name, key in _keys().items():
        for cache in (0, 1024):
            cfg = {"allow_inline_secrets": True,
                   "tokens": {"keys": [{"kid": "k", **key}], "issuer": ISS, "audience": [AUD], "cache_size": cache}}
            with bitsec.Runtime(cfg) as rt:
                tok = rt.sign_token(claims)
                n = 2000 if cache or name.startswith("HS") else 300
                inline = per_call(lambda: rt.verify_token(tok), n)
                hop = hopped(lambda: rt.verify_token(tok), min(n, 500))
            rows.append((f"verify {name}, cache {'on' if cache else 'off'}", inline, hop, hop - inline))
    with tempfile.TemporaryDirectory() as d:
        cfg = {"allow_inline_secrets": True,
               "permissions": {"policy_file": str(ROOT / "examples" / "policies" / "erp.json")},
               "rate_limits": {"store": "local", "categories": {"default": {"capacity": 10**9, "period_seconds": 60}}},
               "audit": {"sinks": [{"type": "file", "path": str(Path(d) / "audit.log")}], "durability": "none"}}
        with bitsec.Runtime(cfg) as rt:
            p = bitsec.Principal("u1", roles=["operator"])
            event = {"type": "data_access", "action": "read", "resource": "/equipment/1", "result": "success"}
            for name, fn in (("check_permission", lambda: rt.check_permission(p, "equipment", "read")),
                             ("rate_limit_take (local)", lambda: rt.rate_limit_take("user:u1", "default")),
                             ("audit_emit (durability none)", lambda: rt.audit_emit(event)),
                             ("no-op (the hop alone)", lambda: None)):
                inline = per_call(fn, 5000)
                hop = hopped(fn, 1000)
                rows.append((name, inline, hop, hop - inline))
    print("| call | inline µs | through the thread pool µs | hop adds µs |")
    print("|---|---:|---:|---:|")
    for name, a, b, c in rows:
        print(f"| {name} | {a:.1f} | {b:.1f} | {c:.1f} |")


if __name__ == "__main__":
    main()
