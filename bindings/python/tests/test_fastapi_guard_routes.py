"""The guard decides each request under the requirement of the route Starlette serves it with.

``GuardMiddleware`` finds the route before the router does, in a table compiled from the
application's routes; wherever the two disagree, a request is decided under another route's
requirement, or under ``default`` (public). Each test here was a way through before its fix:
a WebSocket route compiled as an HTTP route of every method, a Starlette route inside an
included router left out of the table, ``@guard`` on routes nothing enforces (WebSocket
endpoints, mounted applications), routes added after startup, a ``"GET /path"`` requirement
applied to every method of the route, the ``root_path`` and a path parameter's value choosing
the rate bucket, a body limit of an included route not applied, and a missing runtime letting
every request through."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi import APIRouter, FastAPI, Request, WebSocket
from fastapi.testclient import TestClient
from starlette.responses import JSONResponse
from starlette.routing import Host

import bitsec
from bitsec.fastapi import (PUBLIC, GuardMiddleware, PathCategories, RateLimitMiddleware, Requirement,
                            RequestLimitsMiddleware, body_limit, bitsec_lifespan, guard, public)
from test_fastapi import base_config, bearer, token


@pytest.fixture()
def rt(tmp_path: Path) -> Iterator[bitsec.Runtime]:
    r = bitsec.Runtime(base_config(tmp_path))
    yield r
    r.close()


def app_of(rt: bitsec.Runtime, **kw: Any) -> FastAPI:
    return FastAPI(lifespan=bitsec_lifespan(rt), openapi_url=None, **kw)


def health_app(rt: bitsec.Runtime, **options: Any) -> FastAPI:
    """An application with one public route, under a GuardMiddleware with ``options``."""
    app = app_of(rt)

    @app.get("/health")
    @public
    def health() -> dict:
        return {"ok": True}

    app.add_middleware(GuardMiddleware, **options)
    return app


def test_a_websocket_route_does_not_take_the_path_of_the_http_routes_after_it(rt: bitsec.Runtime) -> None:
    app = app_of(rt)

    @app.websocket("/events")
    async def events_ws(ws: WebSocket) -> None:  # undeclared: the default (public)
        await ws.accept()
        await ws.close()

    @app.get("/events")
    @guard("equipment", "read")
    def events_poll() -> dict:
        return {"secret": "events"}

    @app.websocket("/items/{iid}")
    async def item_ws(ws: WebSocket, iid: str) -> None:
        await ws.accept()
        await ws.close()

    @app.delete("/items/{iid}")
    @guard("equipment", "delete")
    def delete_item(iid: str) -> dict:
        return {"deleted": iid}

    @app.websocket("/ws/{room}")
    async def room_ws(ws: WebSocket, room: str) -> None:
        await ws.accept()
        await ws.close()

    @app.get("/ws/stats")
    @guard("equipment", "read")
    def ws_stats() -> dict:
        return {"secret": "stats"}

    app.add_middleware(GuardMiddleware)
    with TestClient(app) as c:
        # each was 200 without a token: the guard applied the WebSocket route's default
        assert c.get("/events").status_code == 401
        assert c.delete("/items/7").status_code == 401
        assert c.get("/ws/stats").status_code == 401
        assert c.get("/events", headers=bearer(token(rt, "vic", ["viewer"]))).json() == {"secret": "events"}
        with c.websocket_connect("/events"):  # (the WebSocket route itself still connects)
            pass


def test_a_requirement_on_a_websocket_route_stops_the_startup(rt: bitsec.Runtime) -> None:
    app = app_of(rt)

    @app.websocket("/ws/admin")
    @guard("equipment", "delete")  # nothing would enforce it: the guard sees HTTP requests only
    async def admin_ws(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_json({"secret": "admin"})
        await ws.close()

    app.add_middleware(GuardMiddleware)
    with pytest.raises(Exception, match="websocket route /ws/admin declares a requirement"):
        with TestClient(app):
            pass


def test_strict_wants_a_websocket_route_declared_public(tmp_path: Path) -> None:
    for declared, fails in ((False, True), (True, False)):
        r = bitsec.Runtime(base_config(tmp_path / str(declared)))
        app = app_of(r)

        async def feed(ws: WebSocket) -> None:
            await ws.accept()
            await ws.close()

        app.add_api_websocket_route("/feed", public(feed) if declared else feed)
        app.add_middleware(GuardMiddleware, strict=True)
        try:
            if fails:
                with pytest.raises(Exception, match="websocket route /feed declares no requirement"):
                    with TestClient(app):
                        pass
            else:
                with TestClient(app) as c, c.websocket_connect("/feed"):
                    pass
        finally:
            r.close()


def test_a_starlette_route_of_an_included_router_is_guarded(rt: bitsec.Runtime) -> None:
    app = app_of(rt)

    @guard("equipment", "delete")
    async def purge(request: Request) -> JSONResponse:
        return JSONResponse({"purged": True})

    router = APIRouter()
    router.add_route("/purge", purge, methods=["POST"])
    app.include_router(router, prefix="/api")
    app.add_middleware(GuardMiddleware)
    with TestClient(app) as c:
        assert c.post("/api/purge").status_code == 401  # was 200: the route was not in the table
        assert c.post("/api/purge", headers=bearer(token(rt, "vic", ["viewer"]))).status_code == 403
        assert c.post("/api/purge", headers=bearer(token(rt, "ada", ["admin"]))).json() == {"purged": True}


def test_a_requirement_under_a_mount_or_host_without_a_guard_stops_the_startup(tmp_path: Path) -> None:
    def sub_app(guarded: bool) -> FastAPI:
        sub = FastAPI(openapi_url=None)

        @sub.delete("/equipment/{eid}")
        @guard("equipment", "delete")
        def sub_delete(eid: str) -> dict:
            return {"deleted": eid}

        if guarded:
            sub.add_middleware(GuardMiddleware)
        return sub

    for how in ("mount", "host"):
        r = bitsec.Runtime(base_config(tmp_path / how))
        app = app_of(r)
        if how == "mount":
            app.mount("/v2", sub_app(False))
        else:
            app.router.routes.append(Host("admin.example.com", sub_app(False)))
        app.add_middleware(GuardMiddleware)
        try:
            with pytest.raises(Exception, match="/equipment/{eid} under .* declares a requirement"):
                with TestClient(app):
                    pass
        finally:
            r.close()
    # a mounted application with a guard of its own (it reads the same runtime) starts
    r = bitsec.Runtime(base_config(tmp_path / "own"))
    app = app_of(r)
    sub = sub_app(True)
    app.mount("/v2", sub)
    app.add_middleware(GuardMiddleware)
    try:
        with TestClient(app) as c:
            assert c.delete("/v2/equipment/9").status_code == 401
    finally:
        r.close()


def test_routes_added_after_startup_are_guarded(rt: bitsec.Runtime) -> None:
    app = health_app(rt, strict=True)
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200  # the table is compiled
        plugin = APIRouter()

        @plugin.delete("/equipment/{eid}")
        @guard("equipment", "delete")
        def plugin_delete(eid: str) -> dict:
            return {"deleted": eid}

        app.include_router(plugin, prefix="/plugin")
        assert c.delete("/plugin/equipment/3").status_code == 401  # was 200: the default
        assert c.delete("/plugin/equipment/3", headers=bearer(token(rt, "ada", ["admin"]))).status_code == 200


def test_a_method_requirement_applies_to_that_method_only(rt: bitsec.Runtime) -> None:
    app = app_of(rt)

    @app.api_route("/doc/{did}", methods=["GET", "HEAD", "DELETE"])
    @guard("equipment", "delete")
    def doc(did: str) -> dict:
        return {"did": did}

    @app.api_route("/item/{iid}", methods=["GET", "DELETE"])
    def item(iid: str) -> dict:
        return {"iid": iid}

    app.add_middleware(GuardMiddleware, requirements={
        "GET /doc/{did}": PUBLIC,
        "DELETE /item/{iid}": Requirement("equipment", "delete"),
        "GET /item/{iid}": PUBLIC,
    })
    with TestClient(app) as c:
        assert c.get("/doc/1").status_code == 200
        assert c.head("/doc/1").status_code == 200  # (a HEAD follows its GET)
        assert c.delete("/doc/1").status_code == 401  # was 200: the GET key applied to DELETE
        assert c.get("/item/1").status_code == 200
        assert c.delete("/item/1").status_code == 401  # was 200: the GET key won
        assert c.delete("/item/1", headers=bearer(token(rt, "ada", ["admin"]))).status_code == 200


@pytest.mark.filterwarnings("ignore:The `root_path` parameter is deprecated")
def test_the_root_path_does_not_change_what_the_path_decides(rt: bitsec.Runtime, tmp_path: Path) -> None:
    cats = PathCategories.from_config([{"category": "auth", "path_prefix": "/auth/"}])
    app = app_of(rt, root_path="/api")

    @app.post("/auth/login")
    @public
    def login() -> dict:
        return {"ok": True}

    app.add_middleware(GuardMiddleware, categorize=cats)
    with TestClient(app) as c:
        # auth: two a minute, whichever spelling (was unlimited by it under /api/...)
        codes = [c.post(p).status_code for p in ("/api/auth/login", "/auth/login", "/api/auth/login")]
        assert codes == [200, 200, 429]

    r = bitsec.Runtime(base_config(tmp_path / "mw"))
    app = app_of(r, root_path="/api")

    @app.post("/auth/login")
    async def login2(request: Request) -> dict:
        return {"n": len(await request.body())}

    app.add_middleware(RequestLimitsMiddleware, limits={"/auth/login": 16})
    app.add_middleware(RateLimitMiddleware, categorize=cats)
    try:
        with TestClient(app) as c:
            assert c.post("/api/auth/login", content=b"x" * 64).status_code == 413
            codes = [c.post(p).status_code for p in ("/api/auth/login", "/auth/login", "/api/auth/login")]
            assert codes[-1] == 429
    finally:
        r.close()


def test_a_path_parameter_does_not_pick_the_rate_bucket(rt: bitsec.Runtime) -> None:
    app = app_of(rt)

    @app.post("/artifacts/{name}")
    @guard()
    def store(name: str) -> dict:  # POST with an "artifacts" segment: upload, one per five minutes
        return {"stored": name}

    app.add_middleware(GuardMiddleware)
    op = bearer(token(rt, "olga", ["operator"]))
    with TestClient(app) as c:
        codes = [c.post(f"/artifacts/{n}", headers=op) for n in ("a", "b", "auth", "auth")]
    # "auth" as the name took the auth bucket (two a minute) before
    assert [r.status_code for r in codes] == [200, 429, 429, 429]
    assert codes[0].headers["X-RateLimit-Limit"] == "1"


def test_a_body_limit_of_an_included_route_applies(rt: bitsec.Runtime) -> None:
    app = app_of(rt)
    router = APIRouter()

    @router.post("/login")
    @body_limit(64)
    async def login(request: Request) -> dict:
        return {"n": len(await request.body())}

    app.include_router(router, prefix="/v1")
    app.add_middleware(RequestLimitsMiddleware)
    with TestClient(app) as c:
        assert c.post("/v1/login", content=b"x" * 10_000).status_code == 413  # was 200 (1 MiB default)
        assert c.post("/v1/login", content=b"x" * 10).json() == {"n": 10}


def test_without_its_runtime_the_guard_answers_503(caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI(openapi_url=None)  # no bitsec_lifespan: nothing opens a runtime

    @app.delete("/equipment/{eid}")
    @guard("equipment", "delete")
    def delete(eid: str) -> dict:
        return {"deleted": eid}

    app.add_middleware(GuardMiddleware)
    with caplog.at_level(logging.ERROR, logger="bitsec"), TestClient(app) as c:
        r = c.delete("/equipment/1")  # was 200: every request went through
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert c.delete("/equipment/1").status_code == 503
    assert sum("no runtime" in m for m in caplog.messages) == 1  # said once, not per request


# ---- second review: the fixes above, and what they left -------------------------------------

def test_a_route_added_after_startup_ahead_of_a_compiled_one_is_guarded(rt: bitsec.Runtime) -> None:
    app = app_of(rt)
    r = APIRouter()
    app.include_router(r, prefix="/r")

    @app.get("/r/{name}")
    @public
    def page(name: str) -> dict:
        return {"page": name}

    app.add_middleware(GuardMiddleware, routes_recheck=0.0)  # (default: within a second)
    with TestClient(app) as c:
        assert c.get("/r/x").json() == {"page": "x"}

        @r.get("/secret")
        @guard("equipment", "delete")
        def secret() -> dict:
            return {"secret": True}

        # the compiled /r/{name} (public) matches it; Starlette serves the new route first
        assert c.get("/r/secret").status_code == 401


def test_a_route_appended_to_the_list_itself_is_guarded(rt: bitsec.Runtime) -> None:
    from starlette.routing import Route

    app = health_app(rt)
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200

        @guard("equipment", "delete")
        async def purge(request: Request) -> JSONResponse:
            return JSONResponse({"purged": True})

        app.router.routes.append(Route("/purge", purge, methods=["POST"]))  # (FastAPI's version stays)
        assert c.post("/purge").status_code == 401


def test_routes_added_after_startup_that_cannot_be_guarded_get_503(rt: bitsec.Runtime,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    app = health_app(rt, strict=True)
    with caplog.at_level(logging.ERROR, logger="bitsec"), TestClient(app) as c:
        assert c.get("/health").status_code == 200

        @app.get("/undeclared")
        def undeclared() -> dict:
            return {"open": True}

        # a table that does not match the routes decides nothing: 503 (was 500 per request,
        # each one a full compile)
        assert [c.get(p).status_code for p in ("/undeclared", "/nowhere", "/undeclared")] == [503, 503, 503]
    assert sum("cannot be guarded" in m for m in caplog.messages) == 1


def test_a_template_key_of_an_http_route_is_not_a_websocket_routes(rt: bitsec.Runtime) -> None:
    app = app_of(rt)

    @app.websocket("/events")
    async def events_ws(ws: WebSocket) -> None:
        await ws.accept()
        await ws.close()

    @app.get("/events")
    def events_poll() -> dict:
        return {"secret": "events"}

    app.add_middleware(GuardMiddleware, requirements={"/events": Requirement("equipment", "read")})
    with TestClient(app) as c:  # (the startup failed: the key was read as the WebSocket route's)
        assert c.get("/events").status_code == 401


def test_an_endpoint_guarded_here_and_served_by_a_mount_stops_the_startup(rt: bitsec.Runtime) -> None:
    app = app_of(rt)
    api = APIRouter()

    @api.delete("/equipment/{eid}")
    def delete(eid: str) -> dict:
        return {"deleted": eid}

    app.include_router(api)
    v1 = FastAPI(openapi_url=None)
    v1.include_router(api)
    app.mount("/v1", v1)  # the same endpoint, under /v1 (was open there: 200 without a token)
    app.add_middleware(GuardMiddleware, requirements={"/equipment/{eid}": Requirement("equipment", "delete")})
    with pytest.raises(Exception, match="under Mount /v1"):
        with TestClient(app):
            pass


def test_a_catch_all_route_is_categorized_by_the_request_path(rt: bitsec.Runtime) -> None:
    app = app_of(rt)

    @app.api_route("/{rest:path}", methods=["POST"])
    @public
    def gateway(rest: str) -> dict:
        return {"rest": rest}

    app.add_middleware(GuardMiddleware)
    with TestClient(app) as c:
        codes = [c.post("/auth/login") for _ in range(3)]
    assert [r.status_code for r in codes] == [200, 200, 429]  # auth: two a minute (not default's 1000)
    assert codes[0].headers["X-RateLimit-Limit"] == "2"


def test_rate_limit_middleware_categorizes_by_the_route(tmp_path: Path) -> None:
    r = bitsec.Runtime(base_config(tmp_path))
    app = app_of(r)

    @app.post("/artifacts/{name}")
    def store(name: str) -> dict:
        return {"stored": name}

    app.add_middleware(RateLimitMiddleware)
    try:
        with TestClient(app) as c:
            codes = [c.post(f"/artifacts/{n}").status_code for n in ("a", "auth", "auth")]
        assert codes == [200, 429, 429]  # upload, one per five minutes ("auth" took the auth bucket)
    finally:
        r.close()


def test_a_mounted_application_with_its_own_guard_reads_the_enclosing_runtime(rt: bitsec.Runtime) -> None:
    app = app_of(rt)
    sub = FastAPI(openapi_url=None)

    @sub.delete("/equipment/{eid}")
    @guard("equipment", "delete")
    def sub_delete(eid: str) -> dict:
        return {"deleted": eid}

    @sub.get("/status")
    @public
    def status() -> dict:
        return {"ok": True}

    sub.add_middleware(GuardMiddleware)
    app.mount("/v2", sub)
    app.add_middleware(GuardMiddleware)
    with TestClient(app) as c:  # (no sub.state.bitsec: Starlette runs no lifespan for a mount)
        assert c.get("/v2/status").status_code == 200  # was 503: no runtime
        assert c.delete("/v2/equipment/9").status_code == 401
        assert c.delete("/v2/equipment/9", headers=bearer(token(rt, "ada", ["admin"]))).status_code == 200


# ---- third review: mounted applications with guards of their own, replaced routes -----------

def test_a_mounted_guard_reads_the_runtime_of_its_own_attr(tmp_path: Path) -> None:
    a = bitsec.Runtime(base_config(tmp_path / "a"))
    cfg = base_config(tmp_path / "b")
    cfg["tokens"] = {**cfg["tokens"], "keys": [{"kid": "hs2", "alg": "HS256", "secret": {"value": "p" * 40}}]}
    b = bitsec.Runtime(cfg)
    app = FastAPI(lifespan=bitsec_lifespan(a, then=bitsec_lifespan(b, attr="partner")), openapi_url=None)
    sub = FastAPI(openapi_url=None)

    @sub.get("/orders/{oid}")
    @guard()
    def order(oid: str) -> dict:
        return {"order": oid}

    sub.add_middleware(GuardMiddleware, attr="partner")
    app.mount("/partner", sub)
    app.add_middleware(GuardMiddleware)
    try:
        with TestClient(app) as c:
            # never the enclosing guard's runtime (another attr): its tokens answered 200 here.
            # The enclosing guard passes on its own attr only: without "partner" on the
            # mounted app's state, 503
            assert c.get("/partner/orders/1", headers=bearer(token(a, "ada"))).status_code == 503
            sub.state.partner = b
            assert c.get("/partner/orders/1", headers=bearer(token(a, "ada"))).status_code == 401
            assert c.get("/partner/orders/1", headers=bearer(token(b, "ada"))).status_code == 200
    finally:
        b.close()
        a.close()


def test_a_mounted_application_with_its_own_guard_is_decided_once(rt: bitsec.Runtime, tmp_path: Path) -> None:
    app = app_of(rt)
    sub = FastAPI(openapi_url=None)

    @sub.post("/auth/login")
    @public
    def sub_login() -> dict:
        return {"ok": True}

    sub.add_middleware(GuardMiddleware)
    app.mount("/v2", sub)
    app.add_middleware(GuardMiddleware, methods=("POST",))
    with TestClient(app) as c:
        rs = [c.post("/v2/auth/login") for _ in range(3)]
    # auth: two a minute; each request took twice (the enclosing guard, then the mounted one)
    assert [r.status_code for r in rs] == [200, 200, 429]
    rt.audit_flush()
    lines = [x for x in (tmp_path / "audit.log").read_text().splitlines() if '"/v2/auth/login"' in x]
    assert len(lines) == 3  # one record per request (was two for each allowed one)


def test_a_mounted_guard_whose_declarations_are_wrong_answers_503(rt: bitsec.Runtime) -> None:
    app = health_app(rt)
    sub = FastAPI(openapi_url=None)

    @sub.get("/status")
    def status() -> dict:  # undeclared, under strict
        return {"ok": True}

    sub.add_middleware(GuardMiddleware, strict=True)
    app.mount("/v2", sub)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert {c.get(f"/v2/nowhere{i}").status_code for i in range(5)} == {503}  # was 500, a compile each
        assert c.get("/health").status_code == 200


def test_a_route_replaced_in_place_is_compiled(rt: bitsec.Runtime) -> None:
    from starlette.routing import Route

    app = app_of(rt)

    @app.get("/old")
    @public
    def old() -> dict:
        return {"old": True}

    app.add_middleware(GuardMiddleware, routes_recheck=0.0)
    with TestClient(app) as c:
        assert c.get("/old").status_code == 200

        @guard("equipment", "delete")
        async def purge(request: Request) -> JSONResponse:
            return JSONResponse({"purged": True})

        i = next(k for k, r in enumerate(app.router.routes) if getattr(r, "path", "") == "/old")
        app.router.routes[i] = Route("/purge", purge, methods=["POST"])  # (same length, same version)
        assert c.post("/purge").status_code == 401


def test_routes_recheck_must_be_seconds() -> None:
    for bad in (None, -1, "1", True):
        with pytest.raises(ValueError, match="routes_recheck"):
            GuardMiddleware(FastAPI(), routes_recheck=bad)  # type: ignore[arg-type]


def test_only_the_mount_that_serves_a_request_can_take_it_from_the_enclosing_guard(rt: bitsec.Runtime) -> None:
    def sub_app(guarded: bool, label: str) -> FastAPI:
        sub = FastAPI(openapi_url=None)

        @sub.get("/secret")
        def secret() -> dict:  # undeclared: the default of the guard that decides it
            return {"secret": label}

        if guarded:
            sub.add_middleware(GuardMiddleware, default=Requirement())
        return sub

    # an application without a guard of its own, mounted before one with a guard whose
    # prefix also matches: Starlette serves the first, so the enclosing guard decides
    app = app_of(rt)
    app.mount("/api/internal", sub_app(False, "internal"))
    app.mount("/api", sub_app(True, "api"))
    app.add_middleware(GuardMiddleware, default=Requirement())  # every undeclared route: a token
    with TestClient(app) as c:
        assert c.get("/api/internal/secret").status_code == 401  # was 200: passed on, decided by no one
        assert c.get("/api/secret").status_code == 401
    app = app_of(rt)
    app.host("admin.example.com", sub_app(False, "admin"))
    app.mount("/", sub_app(True, "root"))
    app.add_middleware(GuardMiddleware, default=Requirement())
    with TestClient(app) as c:
        assert c.get("/secret", headers={"host": "admin.example.com"}).status_code == 401  # was 200
        assert c.get("/secret").status_code == 401


def test_a_mount_declared_before_a_route_serves_its_paths_under_the_default(rt: bitsec.Runtime) -> None:
    files = FastAPI(openapi_url=None)

    @files.get("/secret")
    def secret() -> dict:  # undeclared: the enclosing guard's default
        return {"secret": "files"}

    app = app_of(rt)
    app.mount("/files", files)  # declared first: Starlette serves /files/... from it

    @app.get("/files/{name}")
    @public
    def listing(name: str) -> dict:
        return {"name": name}

    @app.get("/other/{name}")
    @public
    def other(name: str) -> dict:
        return {"name": name}

    app.add_middleware(GuardMiddleware, default=Requirement())  # every undeclared route: a token
    with TestClient(app) as c:
        assert c.get("/files/secret").status_code == 401  # was 200: decided as the public route
        assert c.get("/files/secret", headers=bearer(token(rt, "vic", ["viewer"]))).json() == {"secret": "files"}
        assert c.get("/other/x").json() == {"name": "x"}  # (a route no mount can serve: as declared)


def test_a_mount_with_a_parameter_declared_before_a_route_serves_its_paths_under_the_default(
        rt: bitsec.Runtime) -> None:
    def unguarded() -> FastAPI:
        sub = FastAPI(openapi_url=None)

        @sub.get("/{rest}")
        def anything(rest: str) -> dict:  # undeclared: the enclosing guard's default
            return {"served_by": "mount", "rest": rest}

        return sub

    for mount_path, route, request in (("/t/{tenant}", "/t/acme/x", "/t/acme/x"),
                                       ("/t/{tenant}", "/t/acme/{item}", "/t/acme/x"),
                                       ("/{lang}", "/en/docs", "/en/docs"),
                                       ("/t{n}", "/ta/{x}", "/ta/y")):
        app = app_of(rt)
        app.mount(mount_path, unguarded())

        @app.get(route)
        @public
        def declared_after() -> dict:
            return {"served_by": "route"}

        app.add_middleware(GuardMiddleware, default=Requirement())
        with TestClient(app) as c:
            r = c.get(request)
            assert r.status_code == 401, (mount_path, route, r.text)  # was 200, served by the mount


def test_a_route_added_after_startup_behind_a_mount_is_decided_as_served(rt: bitsec.Runtime) -> None:
    files = FastAPI(openapi_url=None)

    @files.get("/{rest}")
    def anything(rest: str) -> dict:
        return {"served_by": "mount", "rest": rest}

    app = app_of(rt)
    app.mount("/files", files)
    app.add_middleware(GuardMiddleware, default=Requirement(), routes_recheck=60.0)
    with TestClient(app) as c:
        assert c.get("/files/secret").status_code == 401

        @app.get("/files/{name}")
        @public
        def listing(name: str) -> dict:
            return {"served_by": "route"}

        # the first request after the change finds the new route; the mount still serves it
        assert c.get("/files/secret").status_code == 401  # was 200 once per change
        assert c.get("/files/secret").status_code == 401


def test_the_startup_check_of_permissions_records_no_denial(tmp_path: Path, rt: bitsec.Runtime) -> None:
    # The route table's check that each @guard permission is known asked the policy with
    # check_permission for an empty principal: each guarded route left an automatic
    # authorization/permission_denied record and counted in authorization_events_total
    # (an alert on denials fired at every deploy), with no request made.
    app = app_of(rt)
    for i, (resource, action) in enumerate([("equipment", "read"), ("equipment", "update"), ("users", "read")]):
        app.add_api_route(f"/r{i}", guard(resource, action)(lambda: {}), methods=["GET"])

    @app.get("/misnamed")
    @guard("equipment", "launch")
    def misnamed() -> dict:
        return {}

    app.add_middleware(GuardMiddleware)
    with pytest.raises(ValueError, match="equipment:launch"):  # an unknown permission still stops the startup
        with TestClient(app):
            pass
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != "/misnamed"]
    with TestClient(app) as c:
        assert c.get("/r0", headers=bearer(token(rt, roles=["viewer"]))).status_code == 200
    rt.audit_flush()
    lines = (tmp_path / "audit.log").read_text().splitlines()
    assert [json.loads(x)["resource"] for x in lines if '"authorization"' in x] == []
    assert 'authorization_events_total{event_subtype="permission_denied",result="denied"}' not in rt.metrics_text()
