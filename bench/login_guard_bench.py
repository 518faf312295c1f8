"""The login guard's cost from Python: one login's two calls, rt.login_guard_begin +
rt.login_guard_succeeded (allowed, then refunded), in process and through a redis-server of
this run (tools/redis_fixture.py), on loopback. Accounts and clients rotate over 10,000 each.

    BITSEC_LIBRARY=build/lib/libbitsec.so.1 .venv/bin/python bench/login_guard_bench.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import bitsec  # noqa: E402
from redis_fixture import RedisServer  # noqa: E402

ACCOUNTS = [f"user-{i}" for i in range(10_000)]
CLIENTS = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(10_000)]


def per_login_us(rt: bitsec.Runtime, n: int, reps: int = 3) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for i in range(n):
            a, c = ACCOUNTS[i % 10_000], CLIENTS[i % 10_000]
            d = rt.login_guard_begin(a, c)
            rt.login_guard_succeeded(a, c, d)
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def main() -> None:
    print("| store | begin + succeeded (Python) |\n|---|---|")
    with bitsec.Runtime({"rate_limits": {"store": "local"}}) as rt:
        print(f"| in process | {per_login_us(rt, 50_000):.2f} us |")
    with RedisServer() as server:
        cfg = {"redis": {"host": "127.0.0.1", "port": server.port}, "rate_limits": {}}
        with bitsec.Runtime(cfg) as rt:
            print(f"| redis (loopback) | {per_login_us(rt, 3_000):.1f} us |")


if __name__ == "__main__":
    main()
