"""The micro paths under a protected HTTP endpoint, from Python, each next to a floor measured
in the same run (goals to report the distance to, not acceptance criteria):

- a verified-token cache hit with 10,000 distinct tokens in rotation and a cache that holds
  them (goal ≤ 1.0 µs); floor: a dict lookup of the same token bytes;
- an in-process rate-limit take (goal ≤ 1.0 µs); floor: a ctypes call of a no-op C function;
- field encryption of 32 bytes, both ways, against raw ``AESGCM`` (goal ≤ 1.5×);
- ``audit_emit`` of a dict against ``json.dumps`` of the same event (goal ≤ 1.5×).

Best of 5 repetitions, µs per call. Prints a markdown table. Run by ``BENCH=http make bench``.
"""
from __future__ import annotations

import ctypes
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench" / "http"))
import bench_apps  # noqa: E402  (bench/http/bench_apps.py)

N_TOKENS = 10_000


def per_call_us(fn: Callable[[], Any], n: int = 20_000, reps: int = 5) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def rotating(items: list[Any]) -> Callable[[], Any]:
    it = iter(())

    def nxt() -> Any:
        nonlocal it
        try:
            return next(it)
        except StopIteration:
            it = iter(items)
            return next(it)
    return nxt


def main() -> None:
    import bitsec
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    work = Path(tempfile.mkdtemp(prefix="httpmicro-"))
    keys = bench_apps.make_keys("HS256")
    settings = {"alg": "HS256", "secret": keys["secret"], "public_pem": None, "layers": ["audit"],
                "audit_path": str(work / "audit.log")}
    cfg = bench_apps.bitsec_config(settings)
    cfg["tokens"]["cache_size"] = 2 * N_TOKENS
    cfg["fields"] = {"keys": [{"id": "k1", "secret": {"value": "f" * 32}}]}
    rt = bitsec.Runtime(cfg)
    tokens = [bench_apps.make_token(keys, f"user-{i:05d}", ["operator"]) for i in range(N_TOKENS)]
    for t in tokens:  # fill the cache (and the binding's memo)
        rt.verify_token(t)
    next_token = rotating(tokens)
    table = {t.encode(): i for i, t in enumerate(tokens)}
    next_bytes = rotating([t.encode() for t in tokens])

    hit = per_call_us(lambda: rt.verify_token(next_token()), N_TOKENS * 2)
    floor_hit = per_call_us(lambda: table.get(next_bytes()), N_TOKENS * 2)
    take = per_call_us(lambda: rt.rate_limit_take("user:user-00001", "default", 1))
    libc = ctypes.CDLL(None)
    noop = libc.getpid
    floor_take = per_call_us(lambda: noop())

    plain = os.urandom(32)
    ctx = b"users.email"
    token = rt.encrypt_field(plain, ctx, binary=True)
    enc = per_call_us(lambda: rt.encrypt_field(plain, ctx, binary=True))
    dec = per_call_us(lambda: rt.decrypt_field(token, ctx))
    aes = AESGCM(b"k" * 32)
    nonce = os.urandom(12)
    sealed = aes.encrypt(nonce, plain, ctx)
    raw_enc = per_call_us(lambda: aes.encrypt(os.urandom(12), plain, ctx))
    raw_dec = per_call_us(lambda: aes.decrypt(nonce, sealed, ctx))

    event = {"type": "data_access", "action": "read", "resource": "/api/v1/equipment/{eid}", "result": "success",
             "actor": "user-001", "tenant": "t1", "ip": "127.0.0.1", "user_agent": "wrk", "resource_id": "1",
             "details": {"request_id": "2f1c0e1e-8d4b-4b53-9a43-0f3c1b5e6d7a", "method": "GET",
                         "path": "/api/v1/equipment/1", "status": 200}}
    emit = per_call_us(lambda: rt.audit_emit(event))
    dumps = per_call_us(lambda: json.dumps(event))
    rt.audit_flush()
    rt.close()

    print("## HTTP micro paths (Python)")
    print()
    print(f"Python {sys.version.split()[0]}, bitsec {bitsec.library_version()}; best of 5, µs per call; "
          f"load average {os.getloadavg()[0]:.1f}.")
    print()
    print("| path | bitsec µs | floor (same run) | floor µs | ratio | goal | distance |")
    print("|---|---:|---|---:|---:|---|---|")

    def row(path: str, us: float, floor: str, fus: float, goal: str, ok: bool) -> None:
        print(f"| {path} | {us:.2f} | {floor} | {fus:.2f} | {us / fus:.2f}× | {goal} | {'met' if ok else 'missed'} |")

    row(f"verify, cache hit, {N_TOKENS} tokens in rotation", hit, "dict lookup of the token", floor_hit,
        "≤ 1.0 µs", hit <= 1.0)
    row("rate-limit take (in process)", take, "ctypes call of getpid()", floor_take, "≤ 1.0 µs", take <= 1.0)
    row("encrypt_field, 32 bytes", enc, "AESGCM.encrypt (+ nonce)", raw_enc, "≤ 1.5× AESGCM", enc <= 1.5 * raw_enc)
    row("decrypt_field, 32 bytes", dec, "AESGCM.decrypt", raw_dec, "≤ 1.5× AESGCM", dec <= 1.5 * raw_dec)
    row("audit_emit of a dict", emit, "json.dumps of the same event", dumps, "≤ 1.5× json.dumps",
        emit <= 1.5 * dumps)


if __name__ == "__main__":
    main()
