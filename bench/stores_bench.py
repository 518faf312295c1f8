"""bitsec's three stores side by side from Python: the same operations on the in-process store
and on the host store (a shared-memory region in a temporary directory), in one run,
interleaved so both see the same machine load. Prints a markdown table (µs per call, best
round, and the ratio host / process).

Operations, 10,000 distinct keys in rotation: rate-limit take (every take allowed),
brute-force check, is_token_revoked of a revoked jti, and revoke_token of a new jti.
"""
from __future__ import annotations

import itertools
import os
import tempfile
import time

import bitsec

KEYS = [f"client-{i}" for i in range(10_000)]
AT = 1_900_000_000


def config(store: str, directory: str) -> dict:
    return {
        "allow_inline_secrets": True,
        "store": {"default": store, "host": {"name": f"stores-bench-{os.getpid()}", "directory": directory}},
        "rate_limits": {"categories": {"default": {"capacity": 1_000_000_000, "period_seconds": 60}}},
        "tokens": {"keys": [{"kid": "k", "alg": "HS256", "secret": {"value": "0123456789abcdef0123456789abcdef"}}]},
    }


def interleaved(fns: dict, n: int, reps: int) -> dict:
    best = {name: float("inf") for name in fns}
    nk = len(KEYS)
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter_ns()
            for i in range(n):
                fn(KEYS[i % nk])
            best[name] = min(best[name], (time.perf_counter_ns() - t) / n / 1000)
    return best


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bitsec-stores-bench-") as d:
        rts = {s: bitsec.Runtime(config(s, d)) for s in ("process", "host")}
        try:
            for rt in rts.values():
                for k in KEYS:
                    rt.bruteforce_record_failure(k)
                    rt.revoke_token(jti=k, exp=AT + 3600, at=AT)
            counter = itertools.count()
            ops = {
                "rate-limit take": lambda rt: (lambda k: rt.rate_limit_take(k)),
                "brute-force check": lambda rt: (lambda k: rt.bruteforce_check(k)),
                "is_token_revoked": lambda rt: (lambda k: rt.is_token_revoked(k, at=AT)),
                "revoke_token (new jti)": lambda rt: (lambda k: rt.revoke_token(jti=f"n{next(counter)}", exp=AT + 3600, at=AT)),
            }
            print("## stores (Python)\n")
            print("µs per call, best of 15 interleaved rounds of 20,000 calls (5,000 for revoke); "
                  "host = a shared-memory region\n")
            print("| operation | process | host | host / process |\n|---|---|---|---|")
            for name, make in ops.items():
                n = 5_000 if name.startswith("revoke") else 20_000
                r = interleaved({s: make(rt) for s, rt in rts.items()}, n, 15)
                print(f"| {name} | {r['process']:.2f} | {r['host']:.2f} | {r['host'] / r['process']:.2f}x |")
            assert rts["host"].rate_limit_take("check").allowed and rts["host"].is_token_revoked(KEYS[0], at=AT)
        finally:
            for rt in rts.values():
                rt.close()


if __name__ == "__main__":
    main()
