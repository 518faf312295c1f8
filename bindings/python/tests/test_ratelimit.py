"""Rate limits and brute-force blocking through the Python binding (in process and Redis)."""
from __future__ import annotations

import os
import time
import uuid

import pytest

import bitsec
from bitsec import RateLimitDecision
from redis_modes import REDIS_MODES, redis_section

T0 = 1_800_000_000

CATEGORIES = {
    "default": {"capacity": 3, "period_seconds": 30},
    "odd": {"capacity": 7, "refill": 3, "period_seconds": 11},
    "auth": {"capacity": 10, "period_seconds": 60, "failure_policy": "deny"},
}


def key(name: str) -> str:
    return f"{name}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


@pytest.fixture()
def rt():
    with bitsec.Runtime({"rate_limits": {"categories": CATEGORIES}}) as r:
        yield r


@pytest.fixture()
def rrt(redis_mode_config):
    """A runtime whose rate limits are in Redis, once per Redis mode (standalone, cluster,
    TLS, sentinel)."""
    with bitsec.Runtime({**redis_mode_config, "rate_limits": {"categories": CATEGORIES}}) as r:
        yield r


def bucket_model(capacity: int, refill: int, period: int, schedule: list[tuple[int, int]]) -> list[tuple[bool, int, int, int]]:
    """An independent model with Python's exact fractions: (allowed, remaining, reset, retry)."""
    from fractions import Fraction
    from math import ceil, floor
    tokens, last = Fraction(capacity), None
    out = []
    for at, cost in schedule:
        if last is not None and at > last:
            tokens = min(Fraction(capacity), tokens + Fraction(refill, period) * (at - last))
        if last is None or at > last:
            last = at
        per_sec = Fraction(refill, period)
        if tokens >= cost:
            tokens -= cost
            out.append((True, floor(tokens), ceil((capacity - tokens) / per_sec), 0))
        else:
            out.append((False, floor(tokens), ceil((capacity - tokens) / per_sec), max(1, ceil((cost - tokens) / per_sec))))
    return out


def run_schedule(r: bitsec.Runtime, k: str, schedule: list[tuple[int, int]]) -> list[tuple[bool, int, int, int]]:
    out = []
    for at, cost in schedule:
        d = r.rate_limit_take(k, "odd", cost=cost, at=at)
        assert not d.degraded and d.limit == 7
        out.append((d.allowed, d.remaining, d.reset_after, d.retry_after))
    return out


SCHEDULE = [(T0 + s, c) for s, c in [(0, 1), (0, 3), (0, 3), (0, 1), (1, 1), (3, 1), (4, 2), (4, 1), (15, 4), (15, 4),
                                     (16, 1), (19, 2), (22, 7), (40, 7), (40, 1), (50, 1), (51, 1), (52, 5), (200, 7)]]


def test_exact_schedule_in_process(rt: bitsec.Runtime) -> None:
    # 3 tokens per 11 s: no integral number of seconds per token, still exact.
    assert run_schedule(rt, "k", SCHEDULE) == bucket_model(7, 3, 11, SCHEDULE)


def test_exact_schedule_through_redis(rrt: bitsec.Runtime) -> None:
    assert run_schedule(rrt, key("sched"), SCHEDULE) == bucket_model(7, 3, 11, SCHEDULE)


def test_headers_at_the_boundaries(rt: bitsec.Runtime) -> None:
    # 3 per 30 s: one token every 10 s.
    d = rt.rate_limit_take("ip", at=T0)
    assert isinstance(d, RateLimitDecision) and d and d.reason == "ok"
    assert d.headers() == {"X-RateLimit-Limit": "3", "X-RateLimit-Remaining": "2", "X-RateLimit-Reset": "10"}
    rt.rate_limit_take("ip", at=T0)
    last = rt.rate_limit_take("ip", at=T0)
    assert last.allowed and last.headers() == {"X-RateLimit-Limit": "3", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "30"}
    denied = rt.rate_limit_take("ip", at=T0)
    assert not denied and denied.reason == "limited"
    assert denied.headers() == {"X-RateLimit-Limit": "3", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "30",
                                "Retry-After": "10"}
    assert rt.rate_limit_take("ip", at=T0 + 9).headers()["Retry-After"] == "1"
    again = rt.rate_limit_take("ip", at=T0 + 10)
    assert again.allowed and again.retry_after == 0 and "Retry-After" not in again.headers()
    assert repr(again).startswith("RateLimitDecision(allowed=True")


def test_bad_input(rt: bitsec.Runtime) -> None:
    with pytest.raises(bitsec.NotFoundError):
        rt.rate_limit_take("k", category="nope")
    with pytest.raises(bitsec.InvalidArgumentError, match="key is empty"):
        rt.rate_limit_take("")
    with pytest.raises(bitsec.TooLargeError):
        rt.rate_limit_take("x" * 513)
    assert rt.rate_limit_take("é" * 256).allowed  # 512 bytes of UTF-8
    with pytest.raises(bitsec.InvalidArgumentError, match="at least 1"):
        rt.rate_limit_take("k", cost=0)
    with pytest.raises(bitsec.InvalidArgumentError, match="exceeds the capacity"):
        rt.rate_limit_take("k", cost=4)
    with pytest.raises(bitsec.InvalidArgumentError):
        rt.rate_limit_take("k", at=-1)
    with pytest.raises(TypeError):
        rt.rate_limit_take(12)  # type: ignore[arg-type]
    assert rt.rate_limit_take(b"bytes-key").allowed
    with pytest.raises(bitsec.NotConfiguredError):
        with bitsec.Runtime({}) as bare:
            bare.rate_limit_take("k")


def test_reset_and_describe(rt: bitsec.Runtime) -> None:
    for _ in range(3):
        rt.rate_limit_take("r", at=T0)
    assert not rt.rate_limit_take("r", at=T0)
    rt.rate_limit_reset("r")
    assert rt.rate_limit_take("r", at=T0).remaining == 2
    sec = rt.describe()["sections"]["rate_limits"]
    assert sec["store"] == "process" and sec["categories"]["odd"] == {
        "capacity": 7, "refill": 3, "period_seconds": 11, "failure_policy": "local", "local_share_percent": 100}


@pytest.mark.parametrize("mode", [None, *REDIS_MODES])
def test_bruteforce(mode: str | None, request: pytest.FixtureRequest) -> None:
    cfg = {"rate_limits": {"brute_force": {"max_failures": 5, "window_seconds": 3600, "block_seconds": 3600}}}
    if mode:
        cfg["redis"] = redis_section(request, mode)
    with bitsec.Runtime(cfg) as r:
        ip = key("10.1.1.1")
        for n in range(1, 5):
            s = r.bruteforce_record_failure(ip, at=T0 + n * 60)
            assert not s and s.failures == n and s.remaining_attempts == 5 - n
        s = r.bruteforce_record_failure(ip, at=T0 + 300)
        assert s.blocked and s.newly_blocked and s.blocked_until == T0 + 300 + 3600 and s.retry_after == 3600
        assert not s.degraded
        c = r.bruteforce_check(ip, at=T0 + 1000)
        assert c.blocked and not c.newly_blocked and c.retry_after == 2900
        assert r.bruteforce_record_success(ip, at=T0 + 1000).blocked  # a success does not lift a block
        assert not r.bruteforce_check(ip, at=T0 + 3900)
        r.bruteforce_reset(ip)
        u = key("user")
        for _ in range(4):
            r.bruteforce_record_failure(u, at=T0)
        assert r.bruteforce_record_success(u, at=T0).failures == 0
        assert r.bruteforce_record_failure(u, at=T0).failures == 1
        assert "BruteForceStatus(blocked=False" in repr(r.bruteforce_check(u, at=T0))
        with pytest.raises(bitsec.InvalidArgumentError):
            r.bruteforce_check("")


def test_redis_store_uses_server_time_and_prefix(redis_config: dict, redis_server) -> None:
    import redis as redispy
    cfg = {"redis": {**redis_config["redis"], "key_prefix": "pyt:"},
           "rate_limits": {"categories": {"c": {"capacity": 2, "period_seconds": 3600}}}}
    k = key("now")
    with bitsec.Runtime(cfg) as r:
        assert r.describe()["sections"]["rate_limits"]["store"] == "redis"
        assert r.rate_limit_take(k, "c").remaining == 1
        client = redispy.Redis(port=redis_server.port)
        assert client.exists(f"pyt:rl:{{c:{k}}}") == 1
        r.rate_limit_take(k, "c")
        d = r.rate_limit_take(k, "c")
        assert not d.allowed and 1790 <= d.retry_after <= 1800
        r.rate_limit_reset(k, "c")
        assert client.exists(f"pyt:rl:{{c:{k}}}") == 0
        client.close()


def test_decision_objects_can_be_built_and_compared() -> None:
    d = RateLimitDecision(False, 10, 0, 60, 6, degraded=True, reason="backend_deny")
    assert not d and d.degraded and d.reason == "backend_deny" and d.limit == 10 and d.reset_after == 60
    assert d.headers() == {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "60",
                           "Retry-After": "6"}
    assert d == RateLimitDecision(False, 10, 0, 60, 6, True, "backend_deny")
    assert d != RateLimitDecision(True, 10, 0, 60, 0)
    assert isinstance(bitsec.BruteForceStatus, type)


# ---- the login guard ---------------------------------------------------------------------

def _reference_client_key(addr: str, v4: int = 32, v6: int = 64) -> str:
    """The documented rule, written independently with Python's ipaddress."""
    import ipaddress
    if "%" in addr:  # an IPv6 zone (link-local scope) is dropped; any other "%" is no address
        head, _, zone = addr.partition("%")
        try:
            ipaddress.IPv6Address(head)
        except ValueError:
            return addr
        if not zone or "%" in zone:
            return addr
        addr = head
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    p = v4 if ip.version == 4 else v6
    net = ipaddress.ip_network(f"{ip}/{p}", strict=False)
    return str(net.network_address) if p == ip.max_prefixlen else str(net)


def test_client_key_agrees_with_the_documented_rule() -> None:
    import random
    rnd = random.Random(7)
    samples = ["127.0.0.1", "::1", "::", "::ffff:10.1.2.3", "2001:db8::1", "fe80::1%eth0", "fe80::1%eth1", "FE80::1%25",
               "fe80::1%", "%eth0", "192.0.2.1%eth0", "fe80::1%%x", "::ffff:1.2.3.4%z", "testclient",
               "1.2.3.04", "001.2.3.4", "1:2:3:4:5:6:7:8", "1::8", "::2:3:4:5:6:7:8", "2001:DB8:0:0:8:800:200C:417A"]
    for _ in range(300):
        groups = [rnd.choice([0, 0, rnd.randrange(0x10000)]) for _ in range(8)]
        samples.append(":".join(f"{g:x}" for g in groups))
        samples.append(str(__import__("ipaddress").IPv6Address(":".join(f"{g:x}" for g in groups))))
        samples.append(".".join(str(rnd.randrange(256)) for _ in range(4)))
    for v4, v6 in [(32, 64), (24, 48), (32, 128)]:
        with bitsec.Runtime({"rate_limits": {"login_guard": {"ipv4_prefix": v4, "ipv6_prefix": v6}}}) as r:
            for s in samples:
                assert r.client_key(s) == _reference_client_key(s, v4, v6), s


def test_a_login_attempt_is_refunded_once() -> None:
    """``LoginAttempt.cancel()`` twice (or ``cancel()`` then ``succeeded()``) refunds the
    attempt once. A ticket is the attempt's instant in milliseconds: two attempts of one
    client in the same millisecond share it, and a second refund took back the other
    attempt's failure (the client then had a guess more than its limit)."""
    from bitsec.fastapi import LoginAttempt
    with bitsec.Runtime({"rate_limits": {"login_guard": {"client": {"max_failures": 3}}}}) as r:
        ip, account, now = "10.9.9.9", "victim", int(time.time())
        d1, d2 = r.login_guard_begin(account, ip, at=now), r.login_guard_begin(account, ip, at=now)
        assert d1 and d2 and d1.ticket == d2.ticket
        attempt = LoginAttempt(r, account, ip, d1)
        attempt.cancel()
        attempt.cancel()
        attempt.succeeded()  # (clears the account; refunds nothing more)
        d3 = r.login_guard_begin(account, ip, at=now)
        assert d3 and d3.remaining == 1  # d2 and d3 count (was 2: d2's failure was taken back too)
        d4 = r.login_guard_begin(account, ip, at=now)
        assert d4 and d4.remaining == 0  # the client's third failure (max_failures: 3) blocks it
        assert not r.login_guard_begin(account, ip, at=now)


@pytest.mark.parametrize("mode", [None, *REDIS_MODES])
def test_login_guard_begin_and_succeeded(mode: str | None, request: pytest.FixtureRequest) -> None:
    cfg: dict = {"rate_limits": {}}
    if mode:
        cfg["redis"] = redis_section(request, mode)
    with bitsec.Runtime(cfg) as r:
        ip, victim, own = "10.7.7." + str(os.getpid() % 250), key("victim"), key("own")
        for i in range(4):
            d = r.login_guard_begin(victim, ip, at=T0 + 2 * i)
            assert d and d.reason == "ok" and d.remaining == 4 - i and d.failure_retry_after == 0 and d.ticket > 0
            mine = r.login_guard_begin(own.upper(), ip, at=T0 + 2 * i + 1)
            assert mine
            r.login_guard_succeeded(own, ip, mine, at=T0 + 2 * i + 1)
        d = r.login_guard_begin(victim, ip, at=T0 + 10)
        assert d and d.remaining == 0 and d.failure_retry_after == 3600
        d = r.login_guard_begin(own, ip, at=T0 + 11)
        assert not d and d.reason == "client_blocked" and d.refused_by == "client" and d.newly_blocked
        assert d.headers() == {"Retry-After": str(d.retry_after)} and 1 <= d.retry_after <= 3600
        # cancel refunds both keys: an MFA step pending is not a failure.
        other = "10.8.8." + str(os.getpid() % 250)
        for _ in range(6):
            c = r.login_guard_begin(own, other, at=T0 + 20)
            assert c
            r.login_guard_cancel(own, other, c, at=T0 + 20)
        with pytest.raises(bitsec.InvalidArgumentError):
            r.login_guard_begin("", ip)
        with pytest.raises(bitsec.TooLargeError):
            r.login_guard_begin("a" * 4097, ip)  # (BITSEC_LOGIN_GUARD_MAX_ACCOUNT_BYTES: 4096)
