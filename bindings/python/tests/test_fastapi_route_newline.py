"""A final newline in the request path (``%0A``): Starlette serves ``/admin\\n`` with the
``/admin`` route (its patterns end in ``$``, which in Python's ``re`` also matches before one
final newline), so every decision ``bitsec.fastapi`` makes from the path must read it the
same way: the guard's route table, the rate categories and exemptions, the body limits and
``sensitive``. Before the fix, ``GET /equipment%0A`` without a token reached the protected
endpoint (the guard found no route and applied the default, public, requirement)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient

import bitsec
from bitsec.fastapi import (AuditMiddleware, GuardMiddleware, GuardResult, RateLimitMiddleware,
                            RequestLimitsMiddleware, bitsec_lifespan, guard, guard_result, public)
from test_audit_limits_http import Served
from test_fastapi import base_config, bearer, token


@pytest.fixture()
def rt(tmp_path: Path) -> Iterator[bitsec.Runtime]:
    r = bitsec.Runtime(base_config(tmp_path))
    yield r
    r.close()


def guarded_app(rt: bitsec.Runtime) -> FastAPI:
    app = FastAPI(lifespan=bitsec_lifespan(rt))

    @app.get("/equipment")
    @guard("equipment", "read", audit=True)
    def list_equipment(result: GuardResult = Depends(guard_result)) -> dict:
        return {"sub": result.subject}

    @app.delete("/admin")
    @guard("equipment", "delete")
    def admin() -> dict:
        return {"admin": True}

    @app.post("/artifacts")
    @guard()
    def upload() -> dict:  # rate category from the path: a POST with an "artifacts" segment -> upload
        return {"stored": True}

    @app.api_route("/{page}", methods=["GET", "DELETE"])
    @public
    def page(page: str) -> dict:  # declared after the static routes: never their paths
        return {"page": page}

    app.add_middleware(GuardMiddleware)
    return app


def records(tmp_path: Path, rt: bitsec.Runtime) -> list[dict[str, Any]]:
    rt.audit_flush()
    lines = (tmp_path / "audit.log").read_bytes().split(b"\n")
    return [e for e in (json.loads(x) for x in lines if x) if "request_id" in (e.get("details") or {})]


def test_routed_path_reads_the_path_as_the_router_does() -> None:
    from bitsec.fastapi._common import routed_path

    def p(path: str, root: str = "") -> str:
        return routed_path({"type": "http", "path": path, "root_path": root})

    assert p("/admin\n") == "/admin"
    assert p("/admin") == "/admin"
    assert p("/admin\n\n") == "/admin\n"  # (``$`` matches before one newline, not two)
    assert p("/ad\nmin") == "/ad\nmin"
    assert p("") == ""
    # the root_path left out when the path starts with it (as Starlette's get_route_path)
    assert p("/api/auth/login", "/api") == "/auth/login"
    assert p("/auth/login", "/api") == "/auth/login"
    assert p("/api/auth/login\n", "/api") == "/auth/login"
    assert p("/apiary", "/api") == "/apiary"


def test_a_final_newline_reaches_a_protected_route_under_its_own_requirement(rt: bitsec.Runtime,
                                                                            tmp_path: Path) -> None:
    viewer = bearer(token(rt, "vic", ["viewer"]))
    with TestClient(guarded_app(rt)) as c:
        assert c.get("/equipment%0A").status_code == 401  # was 200: the endpoint ran for nobody
        r = c.get("/equipment%0A", headers=viewer)
        assert r.status_code == 200 and r.json() == {"sub": "vic"}
        assert r.headers["X-RateLimit-Limit"] == "1000"
        # a later public route with a parameter does not take the static route's path either
        assert c.delete("/admin%0A").status_code == 401
        assert c.delete("/admin%0A", headers=viewer).status_code == 403
        assert c.get("/other").json() == {"page": "other"}  # (the public route still serves its own)
    mine = [e for e in records(tmp_path, rt) if e["details"]["path"] == "/equipment\n"]
    assert [e["type"] for e in mine] == ["authentication", "data_access"]
    assert mine[1]["resource"] == "/equipment" and mine[1]["actor"] == "vic"


def test_a_final_newline_keeps_the_paths_rate_category(rt: bitsec.Runtime) -> None:
    op = bearer(token(rt, "olga", ["operator"]))
    with TestClient(guarded_app(rt)) as c:
        codes = [c.post("/artifacts%0A", headers=op) for _ in range(2)]
    # upload: one per five minutes (was the default category's 1000 a minute)
    assert [r.status_code for r in codes] == [200, 429]
    assert codes[0].headers["X-RateLimit-Limit"] == "1"


def test_rate_limit_middleware_reads_the_routed_path(tmp_path: Path) -> None:
    app = FastAPI(lifespan=bitsec_lifespan(base_config(tmp_path)))

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    @app.post("/artifacts")
    def upload() -> dict:
        return {"stored": True}

    app.add_middleware(RateLimitMiddleware, exempt=["/health"])
    with TestClient(app) as c:
        h = c.get("/health%0A")
        assert h.status_code == 200 and "X-RateLimit-Limit" not in h.headers  # exempt, as /health
        assert [c.post("/artifacts%0A").status_code for _ in range(2)] == [200, 429]


def test_body_limits_and_sensitive_read_the_routed_path(tmp_path: Path) -> None:
    rt = bitsec.Runtime(base_config(tmp_path))
    seen: list[str] = []

    def sensitive(path: str) -> bool:
        seen.append(path)
        return path == "/upload"

    app = FastAPI(lifespan=bitsec_lifespan(rt))

    @app.post("/upload")
    async def upload(request: Request) -> dict:
        return {"ok": len(await request.body())}

    app.add_middleware(RequestLimitsMiddleware, limits={"/upload": 16})
    app.add_middleware(AuditMiddleware, sensitive=sensitive)
    try:
        with TestClient(app) as c:
            r = c.post("/upload%0A", content=b"x" * 64)
            assert r.status_code == 413  # the route's 16 bytes (was the default 1 MiB)
            assert c.post("/upload%0A", content=b"x" * 8).status_code == 200
        assert seen and set(seen) == {"/upload"}
        mine = [e for e in records(tmp_path, rt) if e["details"]["path"] == "/upload\n"]
        assert mine and all(e.get("sensitive_data_accessed") is True for e in mine if e["type"] == "data_access")
    finally:
        rt.close()


def test_over_real_http_a_final_newline_meets_the_guard(rt: bitsec.Runtime) -> None:
    with Served(guarded_app(rt)) as s:
        async def run() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=s.base) as c:
                return [await c.get("/equipment%0A"), await c.get("/equipment%0a"),
                        await c.get("/equipment%0A", headers=bearer(token(rt, "vic", ["viewer"])))]

        rs = asyncio.run(run())
    assert [r.status_code for r in rs] == [401, 401, 200]
    assert rs[2].json() == {"sub": "vic"}
