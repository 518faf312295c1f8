"""TOTP: bitsec (through the Python binding) vs pyotp, same secrets and codes, one run.

pyotp's verify has no replay protection, so the like-for-like comparison is
``bitsec.totp_check`` (stateless, window 1). ``Runtime.totp_verify`` adds per-user replay
protection and throttling (in process here): a right code is accepted once per user, so each
iteration uses a fresh user, as a login burst of many users would.
Run: BENCH=totp make bench  (or .venv/bin/python bench/totp_bench.py with BITSEC_LIBRARY set)
"""
from __future__ import annotations

import itertools
import os
import sys
import time

import pyotp

import bitsec

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from redis_fixture import RedisServer  # noqa: E402  (a real redis-server on loopback, stopped by PID)

N = 100_000
REPEAT = 5


def best(fn, n: int = N) -> float:  # type: ignore[no-untyped-def]
    """Best of REPEAT runs, in microseconds per call."""
    out = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        fn(n)
        out.append((time.perf_counter() - t) / n * 1e6)
    return min(out)


def main() -> None:
    secret = pyotp.random_base32()
    ref = pyotp.TOTP(secret)
    rt = bitsec.Runtime({"totp": {"window": 1, "throttle": {"max_failures": 1000}}})
    right = ref.now()
    near = {ref.at(time.time() + k * 30) for k in (-1, 0, 1, 2)}
    wrong = next(f"{n:06d}" for n in range(10**6) if f"{n:06d}" not in near)
    assert ref.verify(right, valid_window=1) and bitsec.totp_check(secret, right)
    assert not ref.verify(wrong, valid_window=1) and not bitsec.totp_check(secret, wrong)
    users = [f"user{i}" for i in range(N * REPEAT * 2)]
    it = iter(users)

    # A code of None means "the right code now", taken when each run starts (it stays in the
    # window for the run's fraction of a second).
    def pyotp_verify(fixed: str | None):  # type: ignore[no-untyped-def]
        v = ref.verify
        def run(n: int) -> None:
            code = fixed or ref.now()
            for _ in range(n):
                v(code, valid_window=1)
        return run

    def bitsec_check(fixed: str | None):  # type: ignore[no-untyped-def]
        c = bitsec.totp_check
        def run(n: int) -> None:
            code = fixed or ref.now()
            for _ in range(n):
                d = c(secret, code)
            assert bool(d) == (fixed is None), d
        return run

    def bitsec_verify(fixed: str | None, runtime: bitsec.Runtime, users):  # type: ignore[no-untyped-def]
        v = runtime.totp_verify
        def run(n: int) -> None:
            code = fixed or ref.now()
            for _ in range(n):
                d = v(secret, code, next(users))
            assert bool(d) == (fixed is None), d
        return run

    # Wrong codes: 60 000 users failing a few times each (the throttle's in-process table holds
    # at most 100 000 users with failures in the window; beyond, a new user's failure is
    # answered "throttled", the safe side, which is not what this measures).
    failing = itertools.cycle([f"w{i}" for i in range(60_000)])
    rows = []
    for label, code in (("right code", None), ("wrong code", wrong)):
        p = best(pyotp_verify(code))
        c = best(bitsec_check(code))
        v = best(bitsec_verify(code, rt, it if code is None else failing))
        rows.append((label, p, c, v))
    # Sealed secrets: the secret stored encrypted (fields capability) and opened inside the
    # library for each verification; a sealed secret is bound to its user, so each fresh user
    # has its own (sealed beforehand, outside the timing).
    sealed_rt = bitsec.Runtime({"allow_inline_secrets": True,
                                "fields": {"keys": [{"id": "k1", "secret": {"value": "00" * 32, "encoding": "hex"}}]},
                                "totp": {"window": 1, "throttle": {"max_failures": 1000}}})
    SN = 12_000

    def bitsec_verify_sealed(fixed: str | None):  # type: ignore[no-untyped-def]
        v = sealed_rt.totp_verify_sealed
        pairs = iter([(u, sealed_rt.totp_seal_secret(secret, u)) for u in (f"s{fixed}{i}" for i in range(SN * REPEAT))])
        def run(n: int) -> None:
            code = fixed or ref.now()
            for _ in range(n):
                u, sealed = next(pairs)
                d = v(sealed, code, u)
            assert bool(d) == (fixed is None), d
        return run

    sealed_rows = [(label, best(bitsec_verify_sealed(code), SN)) for label, code in (("right code", None), ("wrong code", wrong))]
    now_p = best(lambda n: [ref.now() for _ in range(n)])
    now_b = best(lambda n: [bitsec.totp_now(secret) for _ in range(n)])

    # Cluster-wide state: the same verifications with "state": "redis" (a local redis-server;
    # the round trips dominate: 2 for a right code, 2 for a wrong one).
    server = RedisServer().start()
    try:
        shared = bitsec.Runtime({"redis": {"port": server.port}, "totp": {"state": "redis", "throttle": {"max_failures": 1000}}})
        r_users = iter([f"r{i}" for i in range(40_000)])
        redis_rows = [(label, best(bitsec_verify(code, shared, r_users), 4_000)) for label, code in
                      (("right code", None), ("wrong code", wrong))]
        shared.close()
    finally:
        server.cleanup()

    print("## totp (Python): bitsec vs pyotp 2.12.0, window 1, SHA-1, 6 digits")
    print()
    print("| operation | pyotp µs/op | bitsec.totp_check µs/op | ratio | rt.totp_verify (replay + throttle) µs/op | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, p, c, v in rows:
        print(f"| verify, {label} | {p:.2f} | {c:.2f} | {p / c:.1f}x | {v:.2f} | {p / v:.1f}x |")
    print(f"| current code (`now`) | {now_p:.2f} | {now_b:.2f} | {now_p / now_b:.1f}x | | |")
    for (label, p, _, _), (_, sv) in zip(rows, sealed_rows):
        print(f"| verify, {label}, sealed secret (`rt.totp_verify_sealed`) | {p:.2f} | | | {sv:.2f} | {p / sv:.1f}x |")
    for label, r in redis_rows:
        print(f"| verify, {label}, `state: redis` (local redis-server) | | | | {r:.2f} | |")


if __name__ == "__main__":
    main()
