"""bitsec rate limits vs `limits` (MemoryStorage, RedisStorage via redis-py) and a raw redis-py
EVALSHA token bucket, in one run, on the same keys. Prints a markdown table.

All limiters are configured alike (100 per minute per key) and the keys rotate over 10,000
distinct keys, so every measured take is allowed (the common path) for every library.
Redis: a redis-server of this run (tools/redis_fixture.py), on loopback.
"""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import bitsec  # noqa: E402
import limits  # noqa: E402
import redis  # noqa: E402
from bitsec import _native  # noqa: E402
from limits.storage import MemoryStorage, RedisStorage  # noqa: E402
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter, SlidingWindowCounterRateLimiter  # noqa: E402
from redis_fixture import RedisServer  # noqa: E402

KEYS = [f"user-{i}" for i in range(10_000)]


def take_script() -> str:
    """The Lua script bitsec runs, read from its Swift source, for the raw redis-py baseline."""
    src = (ROOT / "Sources/BitsecCore/RateLimit/RedisScripts.swift").read_text()
    m = re.search(r'static let take = RedisScript\(#"""\n(.*?)\n    """#\)', src, re.S)
    assert m, "take script not found"
    return "\n".join(line[4:] if line.startswith("    ") else line for line in m[1].split("\n"))


def per_op_us(fn, n: int, reps: int) -> float:
    """Best of `reps` runs of n calls, in microseconds per call."""
    return interleaved({"x": fn}, n, reps)["x"]


def interleaved(fns: dict, n: int, reps: int) -> dict:
    """Runs every contender n calls per round, `reps` rounds, interleaved so that all see the
    same machine load (the benchmark machine is shared); keeps each one's best round."""
    best = {name: float("inf") for name in fns}
    keys = KEYS
    nk = len(keys)
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter_ns()
            for i in range(n):
                fn(keys[i % nk])
            best[name] = min(best[name], (time.perf_counter_ns() - t) / n / 1000)
    return best


def main() -> None:
    rows: list[tuple[str, float, str]] = []
    cfg_rl = {"categories": {"default": {"capacity": 100, "period_seconds": 60}}}
    item = limits.parse("100/minute")

    # ---- in process ------------------------------------------------------------------------
    n_mem, reps = 20_000, 15
    with bitsec.Runtime({"rate_limits": {"store": "local", **cfg_rl}}) as rt:
        take = rt.rate_limit_take
        assert take("warm").allowed
        contenders = {"bitsec": take, "ctypes": lambda k: _native.abi_version()}
        for name, cls in [("FixedWindow", FixedWindowRateLimiter), ("SlidingWindowCounter", SlidingWindowCounterRateLimiter),
                          ("MovingWindow", MovingWindowRateLimiter)]:
            hit = cls(MemoryStorage()).hit
            contenders[name] = lambda k, hit=hit: hit(item, k)
        res = interleaved(contenders, n_mem, reps)
        d = take("user-1")
        assert d.allowed and not d.degraded
    b_mem, ctypes_us = res.pop("bitsec"), res.pop("ctypes")
    inc_mem = res

    # ---- Redis -------------------------------------------------------------------------------
    server = RedisServer().start()
    try:
        url = f"redis://127.0.0.1:{server.port}"
        n_r, reps_r = 1_000, 9
        client = redis.Redis(port=server.port)
        sha = client.script_load(take_script())
        full, rate, need = 100 * 60_000, 100, 60_000
        evalsha = client.evalsha
        with bitsec.Runtime({"redis": {"port": server.port, "command_timeout_ms": 2000}, "rate_limits": cfg_rl}) as rt:
            take = rt.rate_limit_take
            assert not take("warm").degraded
            contenders = {
                "bitsec": take,
                "ping_b": lambda k: rt.redis_ping(),
                "raw": lambda k: evalsha(sha, 1, f"raw:rl:{{default:{k}}}", full, rate, need, 0),
                "ping_py": lambda k: client.ping(),
            }
            for name, cls in [("FixedWindow", FixedWindowRateLimiter),
                              ("SlidingWindowCounter", SlidingWindowCounterRateLimiter),
                              ("MovingWindow", MovingWindowRateLimiter)]:
                # The strategies share key names with different types: one database each.
                db = {"FixedWindow": 1, "SlidingWindowCounter": 2, "MovingWindow": 3}[name]
                hit = cls(RedisStorage(f"{url}/{db}")).hit
                contenders[name] = lambda k, hit=hit: hit(item, k)
            res = interleaved(contenders, n_r, reps_r)
            assert not take("user-1").degraded
        b_redis, ping_b, raw, ping_py = res.pop("bitsec"), res.pop("ping_b"), res.pop("raw"), res.pop("ping_py")
        inc_redis = res
        client.close()
    finally:
        server.cleanup()

    print("## rate_limits (Python)\n")
    print(f"{len(KEYS)} keys, 100/minute each, every take allowed; best of {reps} interleaved rounds; "
          f"limits {limits.__version__}, redis-py {redis.__version__}, Python {sys.version.split()[0]}.\n")
    print("| operation | µs/op | incumbent / bitsec |")
    print("|---|---:|---:|")
    print(f"| bitsec `rate_limit_take`, in process | {b_mem:.2f} | |")
    for name, v in inc_mem.items():
        print(f"| limits {name} + MemoryStorage | {v:.2f} | {v / b_mem:.1f}x |")
    print(f"| (a bare ctypes call, for scale) | {ctypes_us:.2f} | |")
    print(f"| bitsec `rate_limit_take`, Redis (EVALSHA) | {b_redis:.1f} | |")
    for name, v in inc_redis.items():
        print(f"| limits {name} + RedisStorage (redis-py) | {v:.1f} | {v / b_redis:.1f}x |")
    print(f"| raw redis-py EVALSHA of the same script | {raw:.1f} | {raw / b_redis:.1f}x |")
    print(f"| (redis-py PING, for scale) | {ping_py:.1f} | |")
    print(f"| (bitsec `redis_ping`, for scale) | {ping_b:.1f} | |")
    print()
    print(f"Goals: in process >= 5x limits MemoryStorage: {min(inc_mem.values()) / b_mem:.1f}x against the fastest strategy; "
          f"Redis >= 2x limits + Redis: {min(inc_redis.values()) / b_redis:.1f}x against the fastest strategy.")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
