"""Where ``bitsec.fastapi`` makes its native calls: inline on the event loop when they cannot
wait (embedded configuration), in worker threads when they can (Redis, durable or blocking
audit), everything in worker threads with ``offload="always"``; and a paused Redis never
holds the event loop."""
from __future__ import annotations

import asyncio
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.security import SecurityScopes

with warnings.catch_warnings():  # starlette's TestClient announces a move to httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from redis_modes import REDIS_MODES, redis_section

import bitsec
from bitsec.fastapi import (
    AuditMiddleware, BearerAuth, OffloadPlan, RateLimit, RateLimitMiddleware, bitsec_lifespan, offload_plan,
    require_permission, run_native,
)

ROOT = Path(__file__).resolve().parents[3]
ERP_POLICY = ROOT / "examples" / "policies" / "erp.json"
ISS = "https://auth.bitcorp.example"
AUD = "erp-api"
SECRET = "s3cr3t-for-tests-only-0123456789abcdef"
CLIENT = ("203.0.113.9", 40000)
NATIVE = ("verify_token", "check_permission", "rate_limit_take", "audit_emit", "audit_submit")
#: Where a request record is handed over: in the batch of the loop's turn (inline), or one emit
#: per record in a worker thread (offloaded).
INLINE = ("verify_token", "check_permission", "rate_limit_take", "audit_submit")
OFFLOADED = ("verify_token", "check_permission", "rate_limit_take", "audit_emit")


def config(tmp_path: Path, *, redis: dict | None = None, audit: dict | None = None) -> dict:
    cfg: dict[str, Any] = {
        "allow_inline_secrets": True,
        "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": SECRET}}],
                   "issuer": ISS, "audience": [AUD], "required_claims": ["sub"]},
        "permissions": {"policy_file": str(ERP_POLICY)},
        "rate_limits": {"store": "local", "categories": {"default": {"capacity": 1000, "period_seconds": 60}}},
        "totp": {"issuer": "Bitcorp ERP"},
        "audit": {"sinks": [{"type": "file", "path": str(tmp_path / "audit.log")}], "durability": "batched",
                  **(audit or {})},
    }
    if redis is not None:
        cfg["redis"] = redis
        cfg["tokens"]["revocation"] = {"backend": "redis"}
        cfg["rate_limits"]["store"] = "redis"
        cfg["totp"]["state"] = "redis"
    return cfg


class _Recording(bitsec.Runtime):
    """A runtime that records the thread of every native call the integration makes;
    ``taking`` is set when a rate-limit take starts."""

    def __init__(self, cfg: dict) -> None:
        super().__init__(cfg)
        self.threads: dict[str, set[int]] = {name: set() for name in NATIVE}
        self.taking = threading.Event()

    def verify_token(self, *a: Any, **k: Any) -> Any:
        self.threads["verify_token"].add(threading.get_ident())
        return super().verify_token(*a, **k)

    def check_permission(self, *a: Any, **k: Any) -> Any:
        self.threads["check_permission"].add(threading.get_ident())
        return super().check_permission(*a, **k)

    def rate_limit_take(self, *a: Any, **k: Any) -> Any:
        self.threads["rate_limit_take"].add(threading.get_ident())
        self.taking.set()
        return super().rate_limit_take(*a, **k)

    def audit_emit(self, *a: Any, **k: Any) -> Any:
        self.threads["audit_emit"].add(threading.get_ident())
        return super().audit_emit(*a, **k)

    def audit_submit(self, *a: Any, **k: Any) -> Any:
        self.threads["audit_submit"].add(threading.get_ident())
        return super().audit_submit(*a, **k)


def token(rt: bitsec.Runtime, sub: str = "u1", roles: Any = ("operator",)) -> str:
    now = int(time.time())
    return rt.sign_token({"sub": sub, "roles": list(roles), "iss": ISS, "aud": AUD, "iat": now, "exp": now + 600,
                          "jti": f"j-{sub}-{now}"})


def make_app(rt: bitsec.Runtime, offload: str = "auto") -> FastAPI:
    app = FastAPI(lifespan=bitsec_lifespan(rt))
    app.add_middleware(RateLimitMiddleware, exempt=["/health"], offload=offload)
    app.add_middleware(AuditMiddleware, offload=offload)
    loop: set[int] = set()
    app.state.loop_threads = loop
    auth = BearerAuth(offload=offload)

    @app.get("/health")
    async def health() -> dict:
        loop.add(threading.get_ident())
        return {"ok": True}

    @app.put("/equipment/{eid}", dependencies=[Depends(RateLimit("default", offload=offload))])
    async def update(eid: int, claims=Depends(require_permission("equipment", "update", bearer=auth))) -> dict:
        loop.add(threading.get_ident())
        return {"id": eid, "sub": claims.subject}

    @app.get("/limited")
    async def limited() -> dict:  # only the rate-limit middleware
        return {"ok": True}

    @app.get("/me")
    async def me(claims=Depends(auth)) -> dict:
        loop.add(threading.get_ident())
        return {"sub": claims.subject}

    return app


def exercise(rt: _Recording, offload: str = "auto") -> set[int]:
    """Every native call of the integration through HTTP; returns the event loop's thread."""
    app = make_app(rt, offload)
    with TestClient(app, client=CLIENT) as c:
        t = token(rt)
        r = c.put("/equipment/7", headers={"Authorization": f"Bearer {t}"})
        assert r.status_code == 200, r.text
        assert r.json() == {"id": 7, "sub": "u1"} and "X-RateLimit-Limit" in r.headers
        r = c.get("/me", headers={"Authorization": f"Bearer {token(rt, 'u2')}"})
        assert r.status_code == 200 and r.json() == {"sub": "u2"}
        assert c.get("/me", headers={"Authorization": "Bearer nope"}).status_code == 401
    rt.audit_flush()
    # every call was made (a record: in its turn's batch, or one emit in the thread pool)
    made = OFFLOADED if offload_plan(rt, offload).offloads("audit") else INLINE
    assert all(rt.threads[name] for name in made), rt.threads
    loop: set[int] = app.state.loop_threads  # type: ignore[attr-defined]
    assert len(loop) == 1
    return loop


# ---- the plan -------------------------------------------------------------------------------

def test_plan_embedded_config_runs_everything_inline(tmp_path: Path) -> None:
    with bitsec.Runtime(config(tmp_path)) as rt:
        plan = offload_plan(rt)
        assert plan.reasons == {}
        assert plan.inline == ("tokens", "permissions", "rate_limits", "brute_force", "audit", "totp")
        assert offload_plan(rt) is plan  # decided once per runtime
        assert offload_plan(rt, "always").inline == ()
        with pytest.raises(ValueError):
            offload_plan(rt, "never")


def test_plan_with_redis(tmp_path: Path, redis_config: dict) -> None:
    with bitsec.Runtime(config(tmp_path, redis=redis_config["redis"])) as rt:
        plan = offload_plan(rt)
        assert plan.inline == ("permissions", "audit")
        assert plan.reasons == {"tokens": "revocation in redis", "rate_limits": "store redis",
                                "brute_force": "store redis", "totp": "state in redis"}


@pytest.mark.parametrize("audit, reason", [
    ({"durability": "every_event"}, "durability every_event"),
    ({"durability": "batched", "full_policy": "block"}, "full_policy block"),
    ({"durability": "none", "full_policy": "drop"}, None),
])
def test_plan_audit_waits_only_when_durable_or_blocking(tmp_path: Path, audit: dict, reason: str | None) -> None:
    with bitsec.Runtime(config(tmp_path, audit=audit)) as rt:
        assert offload_plan(rt).reasons.get("audit") == reason
        assert not offload_plan(rt).offloads("permissions")


def test_plan_slow_verify_algorithms(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def pem(curve: Any) -> str:
        return ec.generate_private_key(curve).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()

    for alg, curve, slow in (("ES256", ec.SECP256R1(), False), ("ES512", ec.SECP521R1(), True)):
        cfg = config(tmp_path)
        cfg["tokens"]["keys"].append({"kid": alg, "alg": alg, "pem": pem(curve)})
        with bitsec.Runtime(cfg) as rt:
            assert offload_plan(rt).offloads("tokens") is slow, alg


def test_plan_unknown_backend_counts_as_waiting() -> None:
    plan = OffloadPlan.from_description({"sections": {
        "tokens": {"revocation": "memcached", "keys": []}, "rate_limits": {"store": "etcd"},
        "audit": {"durability": "quorum", "full_policy": "drop"}, "totp": {"state": "sql"}}})
    assert plan.inline == ("permissions",)


# ---- where the calls run --------------------------------------------------------------------

def test_embedded_config_calls_run_on_the_event_loop(tmp_path: Path) -> None:
    with _Recording(config(tmp_path)) as rt:
        loop = exercise(rt)
        for name in INLINE:
            assert rt.threads[name] == loop, name
        assert not rt.threads["audit_emit"]  # every record in its turn's batch


def test_offload_always_runs_every_call_in_worker_threads(tmp_path: Path) -> None:
    with _Recording(config(tmp_path)) as rt:
        loop = exercise(rt, "always")
        for name in OFFLOADED:
            assert not rt.threads[name] & loop, name
        assert not rt.threads["audit_submit"]  # one emit per record, in the thread pool


@pytest.mark.parametrize("mode", REDIS_MODES)
def test_redis_config_calls_run_in_worker_threads(tmp_path: Path, request: pytest.FixtureRequest, mode: str) -> None:
    with _Recording(config(tmp_path, redis=redis_section(request, mode), audit={"durability": "every_event"})) as rt:
        loop = exercise(rt)
        for name in ("verify_token", "rate_limit_take", "audit_emit"):
            assert not rt.threads[name] & loop, name
        # The policy is in memory: once the claims are verified (by the rate-limit
        # middleware, in a worker thread), the permission check runs on the loop.
        assert rt.threads["check_permission"] == loop


def test_run_native(tmp_path: Path, redis_config: dict) -> None:
    async def where(rt: _Recording) -> tuple[int, int, int]:
        me = threading.get_ident()
        d = await run_native(rt, "rate_limits", rt.rate_limit_take, "user:rn", "default")
        assert d.allowed
        (took,) = rt.threads["rate_limit_take"]
        p = bitsec.Principal("u", roles=["operator"])
        assert await run_native(rt, "permissions", rt.check_permission, p, "equipment", "read")
        (checked,) = rt.threads["check_permission"]
        return me, took, checked

    with _Recording(config(tmp_path)) as rt:
        me, took, checked = asyncio.run(where(rt))
        assert took == me and checked == me
    with _Recording(config(tmp_path, redis=redis_config["redis"])) as rt:
        me, took, checked = asyncio.run(where(rt))
        assert took != me and checked == me  # the Redis take hopped; the policy check did not
    with pytest.raises(ValueError):
        asyncio.run(run_native(rt, "nothing", print))


def test_sync_methods_for_def_dependencies(tmp_path: Path) -> None:
    """Users who want plain ``def`` dependencies call the sync methods (FastAPI runs them in
    its thread pool)."""
    with _Recording(config(tmp_path)) as rt:
        app = FastAPI(lifespan=bitsec_lifespan(rt))
        auth = BearerAuth()
        perm = require_permission("equipment", "update", bearer=auth)
        limit = RateLimit("default")

        def mine(request: Request, security_scopes: SecurityScopes) -> str:
            allowed, headers = limit.take(rt, request.scope, "default", 1)
            assert allowed and "X-RateLimit-Limit" in headers
            return perm.check(request, security_scopes).subject or ""

        @app.get("/who")
        def who(request: Request, sub: str = Depends(mine)) -> dict:
            claims = auth.verify(request)  # cached by the dependency: no second verify
            return {"sub": sub, "same": claims is not None and claims.subject == sub}

        with TestClient(app, client=CLIENT) as c:
            r = c.get("/who", headers={"Authorization": f"Bearer {token(rt, 'u7', ['operator'])}"})
            assert r.status_code == 200 and r.json() == {"sub": "u7", "same": True}
            r = c.get("/who", headers={"Authorization": f"Bearer {token(rt, 'v7', ['viewer'])}"})
            assert r.status_code == 403 and r.json()["detail"] == "Insufficient permissions: equipment:update"
            assert c.get("/who").status_code == 401
        assert rt.threads["check_permission"] and rt.threads["rate_limit_take"]


# ---- a paused Redis does not hold the event loop ----------------------------------------------

@pytest.fixture()
def paused_redis_server(tmp_path: Path, fresh_redis: Any, request: Any) -> Iterator[tuple[str, _Recording, Any]]:
    """uvicorn on loopback with rate limits, revocation and TOTP in ``fresh_redis``."""
    redis = {"host": "127.0.0.1", "port": fresh_redis.port, "command_timeout_ms": 20000, "connect_timeout_ms": 2000}
    rt = _Recording(config(tmp_path, redis=redis))
    app = make_app(rt, request.param)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", rt, fresh_redis
    finally:
        fresh_redis.resume()
        server.should_exit = True
        thread.join(30)
        sock.close()
        rt.close()
    assert not thread.is_alive()


@pytest.mark.parametrize("paused_redis_server", ["auto", "always"], indirect=True)
def test_paused_redis_does_not_block_the_event_loop(paused_redis_server: tuple[str, _Recording, Any]) -> None:
    base, rt, redis = paused_redis_server
    t = token(rt)

    async def run() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            auth = {"Authorization": f"Bearer {t}"}
            assert (await c.put("/equipment/1", headers=auth)).status_code == 200  # pool connected
            rt.taking.clear()
            redis.pause()
            slow = asyncio.create_task(c.get("/limited"))
            # The slow request (keyed by IP: no token to verify first) reaches the
            # rate-limit middleware's take, which now waits for Redis
            # (20 s command timeout; the 10 s bound only catches a hang).
            assert await asyncio.to_thread(rt.taking.wait, 10), "the rate-limit take never started"
            health = await asyncio.wait_for(c.get("/health"), 10)
            assert health.status_code == 200 and health.json() == {"ok": True}
            assert not slow.done()  # /health was answered while the take still waited
            redis.resume()
            r = await asyncio.wait_for(slow, 30)
            assert r.status_code == 200 and r.json() == {"ok": True}, r.text
            assert "X-RateLimit-Limit" in r.headers

    asyncio.run(run())
