"""Redis faults and concurrency for rate limits: a killed, restarted, flushed and silent
server (each test owns its redis-server), and 8 threads plus 2 processes on one key."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid

import bitsec

T0 = 1_800_000_000


def config(port: int, **rl: object) -> dict:
    return {
        "redis": {"host": "127.0.0.1", "port": port, "command_timeout_ms": 200, "connect_timeout_ms": 200,
                  "reconnect_backoff_ms": 10, "reconnect_backoff_max_ms": 50},
        "rate_limits": {
            "outage_retry_ms": 50,
            "categories": {
                "local": {"capacity": 10, "period_seconds": 3600, "local_share_percent": 50},
                "allow": {"capacity": 1, "period_seconds": 3600, "failure_policy": "allow"},
                "deny": {"capacity": 100, "period_seconds": 3600, "failure_policy": "deny"},
            },
            **rl,
        },
    }


def wait_for_recovery(r: bitsec.Runtime, key: str, limit_s: float = 15.0) -> bitsec.RateLimitDecision:
    deadline = time.monotonic() + limit_s
    while True:
        d = r.rate_limit_take(key, "deny", at=T0)
        if not d.degraded or time.monotonic() > deadline:
            return d
        time.sleep(0.02)


def test_killed_then_restarted(fresh_redis) -> None:
    with bitsec.Runtime(config(fresh_redis.port)) as r:
        k = uuid.uuid4().hex
        for _ in range(4):
            d = r.rate_limit_take(k, "local", at=T0)
            assert d.allowed and not d.degraded and d.limit == 10
        fresh_redis.kill()
        local = [r.rate_limit_take(k, "local", at=T0) for _ in range(10)]
        assert all(d.degraded for d in local)
        assert sum(d.allowed for d in local) == 5 and all(d.limit == 5 for d in local)  # 50 % share, in process
        a = r.rate_limit_take(k, "allow", at=T0)
        assert a.allowed and a.degraded and a.reason == "backend_allow"
        dn = r.rate_limit_take(k, "deny", at=T0)
        assert not dn.allowed and dn.degraded and dn.reason == "backend_deny" and dn.retry_after >= 1
        assert dn.headers()["Retry-After"] == str(dn.retry_after)
        bf = r.bruteforce_record_failure(k, at=T0)
        assert bf.degraded and bf.failures == 1
        fresh_redis.restart()
        d = wait_for_recovery(r, k)
        assert not d.degraded and d.allowed
        # The bucket state written before the outage survives only if the server kept it;
        # this one restarted empty (no persistence): the key starts full again.
        d = r.rate_limit_take(k, "local", at=T0)
        assert not d.degraded and d.remaining == 9


def test_killed_during_a_threaded_run_never_raises(fresh_redis) -> None:
    errors: list[BaseException] = []
    counts = {"degraded": 0, "normal": 0}
    lock = threading.Lock()
    stop = threading.Event()
    with bitsec.Runtime(config(fresh_redis.port)) as r:
        def worker(i: int) -> None:
            k = f"w{i}-{uuid.uuid4().hex}"
            while not stop.is_set():
                try:
                    d = r.rate_limit_take(k, "deny")
                    with lock:
                        counts["degraded" if d.degraded else "normal"] += 1
                except BaseException as e:  # noqa: BLE001
                    errors.append(e)
                    return
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        fresh_redis.kill()
        time.sleep(0.3)
        fresh_redis.restart()
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert counts["degraded"] > 0 and counts["normal"] > 0


def test_script_flush_during_a_run(fresh_redis) -> None:
    import redis as redispy
    client = redispy.Redis(port=fresh_redis.port)
    with bitsec.Runtime(config(fresh_redis.port)) as r:
        k = uuid.uuid4().hex
        stop = threading.Event()
        def flusher() -> None:
            while not stop.is_set():
                client.script_flush()
                time.sleep(0.001)
        t = threading.Thread(target=flusher)
        t.start()
        try:
            decisions = [r.rate_limit_take(k, "deny", at=T0) for _ in range(300)]
        finally:
            stop.set()
            t.join()
    client.close()
    assert not any(d.degraded for d in decisions)
    assert sum(d.allowed for d in decisions) == 100  # exactly the capacity: no take lost or doubled


def test_silent_server_times_out_then_recovers(fresh_redis) -> None:
    with bitsec.Runtime(config(fresh_redis.port)) as r:
        k = uuid.uuid4().hex
        assert not r.rate_limit_take(k, "deny", at=T0).degraded
        fresh_redis.pause()  # accepts connections (kernel backlog), never answers
        try:
            d = r.rate_limit_take(k, "deny", at=T0)
            assert d.degraded and not d.allowed
            assert r.rate_limit_take(k, "allow", at=T0).degraded
            assert r.bruteforce_check(k, at=T0).degraded
        finally:
            fresh_redis.resume()
        d = wait_for_recovery(r, k)
        assert not d.degraded


WORKER = r"""
import sys, time, bitsec
port, key, start, end = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
cfg = {"redis": {"port": port, "command_timeout_ms": 2000},
       "rate_limits": {"categories": {"c": {"capacity": 50, "refill": 100, "period_seconds": 1}}}}
n = 0
degraded = 0
with bitsec.Runtime(cfg) as r:
    while time.time() < start:
        time.sleep(0.001)
    while time.time() < end:
        d = r.rate_limit_take(key, "c")
        n += d.allowed
        degraded += d.degraded
print(n, degraded)
"""


def test_eight_threads_and_two_processes_on_one_key(redis_server) -> None:
    # 50 tokens, refilled 100 per second, on the Redis server's clock. Over T seconds of
    # saturation at most 50 + 100 T takes can be allowed, and nearly that many are.
    key = f"conc-{os.getpid()}-{uuid.uuid4().hex}"
    start = time.time() + 1.5
    duration = 3.0
    end = start + duration
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(redis_server.port), key, repr(start), repr(end)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    cfg = {"redis": {"port": redis_server.port, "command_timeout_ms": 2000},
           "rate_limits": {"categories": {"c": {"capacity": 50, "refill": 100, "period_seconds": 1}}}}
    counts = [0] * 8
    degraded = [0] * 8
    with bitsec.Runtime(cfg) as r:
        def worker(i: int) -> None:
            while time.time() < start:
                time.sleep(0.001)
            while time.time() < end:
                d = r.rate_limit_take(key, "c")
                counts[i] += d.allowed
                degraded[i] += d.degraded
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    total = sum(counts) + sum(int(o[0]) for o in outs)
    assert sum(degraded) == 0 and all(o[1] == "0" for o in outs)
    ceiling = 50 + 100 * (duration + 0.25)  # + the last round trips that started before `end`
    assert total <= ceiling, (total, ceiling)
    assert total >= 0.8 * (50 + 100 * duration), total


def test_login_guard_under_an_outage_follows_each_rules_failure_policy(fresh_redis) -> None:
    """Redis killed: the client rule ("local") keeps counting in process, so the limit still
    holds; an account rule with "deny" refuses (backend_deny) while Redis is away; after a
    restart the guard is back on Redis."""
    cfg = config(fresh_redis.port, login_guard={"account": {"failure_policy": "deny"}})
    with bitsec.Runtime(cfg) as r:
        acct, ip = uuid.uuid4().hex, "10.55.0.1"
        d = r.login_guard_begin(acct, ip, at=T0)
        assert d and not d.degraded
        fresh_redis.kill()
        d = r.login_guard_begin(acct, ip, at=T0 + 1)
        assert not d and d.degraded and d.reason == "backend_deny" and d.refused_by == "account"
        assert d.retry_after >= 1
        with bitsec.Runtime(config(fresh_redis.port)) as r2:  # both rules "local"
            allowed = [bool(r2.login_guard_begin(f"u{i}-{acct}", ip, at=T0)) for i in range(8)]
            assert allowed == [True] * 5 + [False] * 3  # the client limit holds in process
            assert r2.login_guard_begin("x-" + acct, ip, at=T0).degraded
        fresh_redis.restart()
        deadline = time.monotonic() + 15
        while True:
            d = r.login_guard_begin(acct, "10.55.0.2", at=T0 + 2)
            if not d.degraded or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert d and not d.degraded
