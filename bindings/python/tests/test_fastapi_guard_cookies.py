"""GuardMiddleware on cookie routes (``@guard(..., cookies=True)``): the session cookie
validated, CSRF checked on unsafe methods, the permission decided for the session's
principal, the bucket of the session's user, one audit record per request naming the
session's user. Real runtime, real HTTP through TestClient (https: the cookie is Secure)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi import Depends, FastAPI, Request, Response

with warnings.catch_warnings():  # starlette's TestClient announces a move to httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

import bitsec
from bitsec import Principal, Session
from bitsec.fastapi import (CookieSession, GuardMiddleware, GuardResult, Requirement, bitsec_lifespan,
                            compile_routes, get_runtime, guard, guard_result, public, session_of)

ROOT = Path(__file__).resolve().parents[3]
ERP_POLICY = ROOT / "examples" / "policies" / "erp.json"
CSRF_KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
ORIGIN = "https://testserver"
UA = "Mozilla/5.0 (X11; Linux x86_64)"
ROLES = {"alice": ["operator"], "vic": ["viewer"]}
COUNTED = ("session_validate", "csrf_origin_check", "csrf_token_verify", "csrf_cookie_verify", "check_permission",
           "rate_limit_take", "guard_check", "verify_token")


def config(tmp_path: Path, capacity: int = 1000) -> dict[str, Any]:
    return {
        "allow_inline_secrets": True,
        "permissions": {"policy_file": str(ERP_POLICY)},
        "sessions": {"store": "process", "binding": "user_agent"},
        "csrf": {"key": {"value": CSRF_KEY, "encoding": "hex"}, "allowed_origins": [ORIGIN]},
        "rate_limits": {"store": "local", "categories": {"default": {"capacity": capacity, "period_seconds": 60}}},
        "audit": {"sinks": [{"type": "file", "path": str(tmp_path / "audit.log")}], "durability": "none",
                  "service": "erp-api"},
    }


class Counting(bitsec.Runtime):
    """A runtime counting the guard's native calls on cookie routes."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        self.calls = dict.fromkeys(COUNTED, 0)
        for name in COUNTED:
            setattr(self, name, self._counted(name, getattr(self, name)))

    def _counted(self, name: str, fn: Any) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            self.calls[name] += 1
            return fn(*a, **k)
        return call

    def reset(self) -> None:
        self.calls = dict.fromkeys(COUNTED, 0)


@pytest.fixture()
def rt(tmp_path: Path) -> Iterator[Counting]:
    with Counting(config(tmp_path)) as r:
        yield r


def principal(session: Session) -> Principal | None:
    roles = ROLES.get(session.user)
    return None if roles is None else Principal(session.user, roles, tenant=session.tenant)


def make_app(rt: bitsec.Runtime, *, resolver: Any = principal, **options: Any) -> tuple[FastAPI, CookieSession]:
    app = FastAPI(lifespan=bitsec_lifespan(rt))
    sessions = CookieSession()

    @app.post("/login")
    @public
    def login(user: str, request: Request, response: Response) -> dict[str, str]:
        created = sessions.login(request, response, user, "t1")
        return {"csrf_token": get_runtime(request).csrf_token_issue(created.session_id)}

    @app.get("/ui/equipment/{eid}")
    @guard("equipment", "read", cookies=True, audit=True)
    def read(eid: str, request: Request, result: GuardResult = Depends(guard_result),
             again: Any = Depends(sessions)) -> dict[str, Any]:
        assert again is result.session is session_of(request)  # validated once, by the guard
        return {"eid": eid, "user": result.subject, "tenant": result.tenant, "session_id": result.session_id}

    @app.post("/ui/equipment/{eid}")
    @guard("equipment", "update", cookies=True, audit=True)
    def update(eid: str) -> dict[str, str]:
        return {"updated": eid}

    @app.get("/ui/me")
    @guard(cookies=True)
    def me(result: GuardResult = Depends(guard_result)) -> dict[str, Any]:
        return {"user": result.subject}

    @app.get("/ui/admin")
    @guard(cookies=True)
    def admin(session: Any = Depends(CookieSession(cookie_name="__Host-admin"))) -> dict[str, Any]:
        return {"admin": session.user}

    app.add_middleware(GuardMiddleware, session=sessions, session_principal=resolver, **options)
    return app, sessions


def records(tmp_path: Path, rt: bitsec.Runtime) -> list[dict[str, Any]]:
    rt.audit_flush()
    events = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines() if line.strip()]
    return [e for e in events if "request_id" in (e.get("details") or {})]


def client(app: FastAPI) -> TestClient:
    return TestClient(app, base_url="https://testserver", headers={"User-Agent": UA})


def log_in(c: TestClient, user: str) -> str:
    r = c.post("/login", params={"user": user}, headers={"Origin": ORIGIN})
    assert r.status_code == 200, r.text
    return str(r.json()["csrf_token"])


def test_a_session_reads_through_the_guard_once(rt: Counting, tmp_path: Path) -> None:
    app, _ = make_app(rt)
    with client(app) as c:
        log_in(c, "alice")
        rt.reset()
        r = c.get("/ui/equipment/7")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user"] == "alice" and body["tenant"] == "t1" and body["session_id"]
        assert r.headers["X-RateLimit-Limit"] == "1000" and r.headers["X-RateLimit-Remaining"] == "999"
        # a safe method: the session, the permission, the take; no token, no CSRF call
        assert rt.calls == dict.fromkeys(COUNTED, 0) | {"session_validate": 1, "check_permission": 1,
                                                         "rate_limit_take": 1}
    read = records(tmp_path, rt)[-1]
    assert read["type"] == "data_access" and read["action"] == "read"
    assert read["actor"] == "alice" and read["tenant"] == "t1" and read["session_id"] == body["session_id"]


def test_no_cookie_and_a_refused_session_are_401_with_the_cookie_cleared(rt: Counting, tmp_path: Path) -> None:
    app, sessions = make_app(rt)
    with client(app) as c:
        r = c.get("/ui/equipment/7")
        assert r.status_code == 401 and r.json() == {"detail": "Not authenticated: no session cookie"}
        assert r.headers["WWW-Authenticate"] == 'Cookie realm="session", cookie-name="__Host-session"'
        assert "set-cookie" not in r.headers
        c.cookies.set(sessions.cookie_name, "forged-" + "A" * 40)
        r = c.get("/ui/equipment/7")
        assert r.status_code == 401 and r.json() == {"detail": "Session is not valid: log in again"}
        assert r.headers["set-cookie"].startswith('__Host-session=""; Max-Age=0; Path=/; Secure; HttpOnly')
    failures = [(e["type"], e["reason"], e["details"]["status"]) for e in records(tmp_path, rt)]
    assert failures == [("authentication", "missing", 401), ("authentication", "unknown", 401)]


def test_a_stolen_cookie_from_another_client_ends_the_session(rt: Counting) -> None:
    app, sessions = make_app(rt)
    with client(app) as c:
        log_in(c, "alice")
        stolen = c.cookies.get(sessions.cookie_name)
        thief = TestClient(app, base_url="https://testserver", headers={"User-Agent": "curl/8.5"})
        thief.cookies.set(sessions.cookie_name, stolen or "")
        r = thief.get("/ui/equipment/7")
        assert r.status_code == 401 and "another client" in r.json()["detail"]
        assert c.get("/ui/equipment/7").status_code == 401  # the session was ended for everyone


def test_unsafe_methods_need_the_origin_and_the_sessions_csrf_token(rt: Counting, tmp_path: Path) -> None:
    app, _ = make_app(rt)
    with client(app) as c:
        csrf = log_in(c, "alice")
        cases = [
            ({}, "origin_missing"),
            ({"Origin": "https://evil.example"}, "origin_not_allowed"),
            ({"Origin": ORIGIN}, "csrf_token_missing"),
            ({"Origin": ORIGIN, "X-CSRF-Token": "x" * 20}, "csrf_token_malformed"),
            ({"Origin": ORIGIN, "X-CSRF-Token": rt.csrf_token_issue("another-session")}, "csrf_token_invalid"),
        ]
        for headers, reason in cases:
            r = c.post("/ui/equipment/7", headers=headers)
            assert (r.status_code, r.json()) == (403, {"detail": reason}), headers
        rt.reset()
        r = c.post("/ui/equipment/7", headers={"Origin": ORIGIN, "X-CSRF-Token": csrf})
        assert r.status_code == 200 and r.json() == {"updated": "7"}
        assert rt.calls == dict.fromkeys(COUNTED, 0) | {"session_validate": 1, "csrf_origin_check": 1,
                                                         "csrf_token_verify": 1, "check_permission": 1,
                                                         "rate_limit_take": 1}
    events = records(tmp_path, rt)
    refused = [e for e in events if e["details"]["status"] == 403]
    assert [e["reason"] for e in refused] == [reason for _, reason in cases]
    assert all(e["type"] == "authorization" and e["actor"] == "alice" for e in refused)
    assert events[-1]["type"] == "data_access" and events[-1]["action"] == "create" and events[-1]["actor"] == "alice"


def test_double_submit_mode(rt: Counting) -> None:
    app, _ = make_app(rt, csrf_mode="double_submit")
    with client(app) as c:
        log_in(c, "alice")
        sid = c.get("/ui/equipment/1").json()["session_id"]
        value = rt.csrf_cookie_issue(sid)
        c.cookies.set("__Host-csrf", value)
        assert c.post("/ui/equipment/7", headers={"Origin": ORIGIN, "X-CSRF-Token": value}).status_code == 200
        other = rt.csrf_cookie_issue(sid)
        r = c.post("/ui/equipment/7", headers={"Origin": ORIGIN, "X-CSRF-Token": other})
        assert (r.status_code, r.json()["detail"]) == (403, "csrf_token_mismatch")
        foreign = rt.csrf_cookie_issue("another-session")  # signed, but bound to another session
        c.cookies.set("__Host-csrf", foreign)
        r = c.post("/ui/equipment/7", headers={"Origin": ORIGIN, "X-CSRF-Token": foreign})
        assert (r.status_code, r.json()["detail"]) == (403, "csrf_token_invalid")


def test_the_permission_is_the_session_principals(rt: Counting, tmp_path: Path) -> None:
    app, _ = make_app(rt)
    with client(app) as c:
        csrf = log_in(c, "vic")  # a viewer: reads, never updates
        assert c.get("/ui/equipment/7").status_code == 200
        r = c.post("/ui/equipment/7", headers={"Origin": ORIGIN, "X-CSRF-Token": csrf})
        assert (r.status_code, r.json()) == (403, {"detail": "Insufficient permissions: equipment:update"})
        log_in(c, "mallory")  # a session whose user the application does not know (any more)
        assert c.get("/ui/me").status_code == 200  # no permission: the session alone
        r = c.get("/ui/equipment/7")
        assert r.status_code == 401 and "log in again" in r.json()["detail"]
    denied = [e for e in records(tmp_path, rt) if e["details"]["status"] == 403]
    assert [(e["actor"], e["resource"], e["action"], e["reason"]) for e in denied] == \
        [("vic", "equipment", "update", "no_grant")]


def test_the_bucket_is_the_session_users(tmp_path: Path) -> None:
    with Counting(config(tmp_path, capacity=2)) as rt:
        app, _ = make_app(rt)
        with client(app) as c:
            other = client(app)  # another browser (the application started once)
            log_in(c, "alice")
            log_in(other, "vic")
            assert [c.get("/ui/me").status_code for _ in range(3)] == [200, 200, 429]
            r = c.get("/ui/me")
            assert r.status_code == 429 and r.json() == {"detail": "Rate limit exceeded"} and "Retry-After" in r.headers
            assert other.get("/ui/me").status_code == 200  # another user, another bucket


def test_refused_requests_count_against_the_bucket(tmp_path: Path) -> None:
    """A session's requests refused by the CSRF token or the permission take from its user's
    bucket; requests from another origin, safe requests another site starts, and requests
    without a valid session, from the client address's: none can be sent without limit (each
    refusal leaves a record), and no other page can spend the user's budget. Before, a
    refused request took nothing."""
    with Counting(config(tmp_path, capacity=5)) as rt:
        app, sessions = make_app(rt)
        with client(app) as c:
            csrf = log_in(c, "vic")  # (the login: one from the address's bucket, 4 left)
            ok = {"Origin": ORIGIN, "X-CSRF-Token": csrf}
            r = c.post("/ui/equipment/1", headers=ok)  # a viewer may not update
            assert r.status_code == 403 and r.headers["X-RateLimit-Remaining"] == "4"
            r = c.post("/ui/equipment/1", headers={"Origin": ORIGIN})
            assert r.json() == {"detail": "csrf_token_missing"} and r.headers["X-RateLimit-Remaining"] == "3"
            # another origin (a sibling site the SameSite cookie is sent to as well): the
            # address's bucket (3 left), not vic's
            r = c.post("/ui/equipment/1", headers={"Origin": "https://evil.example"})
            assert r.json() == {"detail": "origin_not_allowed"}
            assert c.get("/ui/equipment/1").headers["X-RateLimit-Remaining"] == "2"  # vic's
            # a GET another site or a sibling starts (a link, an image): vic's second bucket,
            # xsite:tenant:2:t1:user:vic (not vic's own, and not the address's: a client sending the header
            # from many addresses would get a bucket per address)
            for site, left in (("cross-site", "4"), ("same-site", "3")):
                r = c.get("/ui/equipment/1", headers={"Sec-Fetch-Site": site})
                assert r.status_code == 200 and r.headers["X-RateLimit-Remaining"] == left, site
            # the application's own pages: vic's
            assert c.get("/ui/equipment/1", headers={"Sec-Fetch-Site": "same-origin"}).headers[
                "X-RateLimit-Remaining"] == "1"
            assert c.get("/ui/equipment/1").headers["X-RateLimit-Remaining"] == "0"
            r = c.post("/ui/equipment/1", headers=ok)
            assert r.status_code == 429 and r.json() == {"detail": "Rate limit exceeded"} and "Retry-After" in r.headers
            assert c.post("/ui/equipment/1", headers={"Origin": ORIGIN}).status_code == 429
            # without a valid session: the address's bucket, its last three tokens, then 429
            c.cookies.clear()
            assert [c.get("/ui/equipment/1").status_code for _ in range(3)] == [401, 401, 401]
            c.cookies.set(sessions.cookie_name, "forged-session-cookie-value")
            r = c.get("/ui/equipment/1")
            assert r.status_code == 429 and r.json() == {"detail": "Rate limit exceeded"}
            # the 429 of a refused session still clears its cookie and names the scheme
            assert r.headers["WWW-Authenticate"].startswith("Cookie") and "Max-Age=0" in r.headers["Set-Cookie"]
        posts = [e["details"]["status"] for e in records(tmp_path, rt) if e["details"]["method"] == "POST"]
        assert posts[-5:] == [403, 403, 403, 429, 429]


def test_cookie_declarations_are_checked_at_startup(tmp_path: Path) -> None:
    def app_with(route: Requirement, methods: tuple[str, ...] = ("GET",)) -> FastAPI:
        app = FastAPI()
        app.add_api_route("/x", lambda: {}, methods=list(methods))
        app.router.routes[-1].endpoint.__bitsec_guard__ = route  # type: ignore[attr-defined]
        return app

    cfg = config(tmp_path)
    with bitsec.Runtime(cfg) as rt:
        with pytest.raises(ValueError, match="needs GuardMiddleware\\(session_principal=...\\)"):
            compile_routes(app_with(Requirement("equipment", "read", cookies=True)), rt)
        compile_routes(app_with(Requirement("equipment", "read", cookies=True)), rt, session_principal=principal)
    del cfg["csrf"]
    with bitsec.Runtime(cfg) as rt:
        compile_routes(app_with(Requirement(cookies=True)), rt)  # a safe method needs no CSRF key
        with pytest.raises(ValueError, match="needs the CSRF check"):
            compile_routes(app_with(Requirement(cookies=True), ("POST",)), rt)
    with pytest.raises(ValueError, match="auth='required'"):
        Requirement(cookies=True, auth="optional")
    with pytest.raises(ValueError, match="scopes need a bearer token"):
        Requirement(cookies=True, scopes=("read",))
    with pytest.raises(ValueError, match="csrf_mode"):
        GuardMiddleware(FastAPI(), csrf_mode="cookie")


def test_a_session_principal_that_queries_a_database_runs_in_the_thread_pool(rt: Counting) -> None:
    import threading

    threads: list[int] = []

    def resolver(session: Session) -> Principal | None:
        threads.append(threading.get_ident())
        return principal(session)

    app, _ = make_app(rt, resolver=resolver)
    with client(app) as c:
        log_in(c, "alice")
        loop_thread: list[int] = []

        @app.get("/loop")
        @public
        async def loop() -> dict[str, str]:
            loop_thread.append(threading.get_ident())
            return {}

        assert c.get("/ui/equipment/1").status_code == 200
        assert c.get("/loop").status_code == 200
    assert threads and loop_thread and threads[0] != loop_thread[0]


def test_the_session_of_one_cookie_is_never_another_cookies(rt: Counting) -> None:
    app, _ = make_app(rt)
    with client(app) as c:
        log_in(c, "alice")
        # the guard validated __Host-session; the handler's dependency reads __Host-admin,
        # which the request does not carry
        r = c.get("/ui/admin")
        assert r.status_code == 401 and r.json()["detail"] == "Not authenticated: no session cookie"


def test_every_cookie_header_is_read_as_request_cookies_reads_them(rt: Counting) -> None:
    app, sessions = make_app(rt)
    with client(app) as c:
        log_in(c, "alice")
        token = c.cookies.get(sessions.cookie_name)
        bare = TestClient(app, base_url="https://testserver")
        r = bare.get("/ui/me", headers=[("User-Agent", UA), ("Cookie", "theme=dark"),
                                        ("Cookie", f"{sessions.cookie_name}={token}")])
        assert (r.status_code, r.json()) == (200, {"user": "alice"})
        # a header over the library's limits is refused without ending the session
        r = bare.get("/ui/me", headers=[("User-Agent", "x" * 20_000), ("Cookie", f"{sessions.cookie_name}={token}")])
        assert r.status_code == 401 and "set-cookie" not in r.headers
        assert c.get("/ui/me").status_code == 200


def test_a_session_principal_that_fails_is_a_recorded_503(rt: Counting, tmp_path: Path) -> None:
    def down(session: Session) -> Principal | None:
        raise ConnectionError("postgres://app:hunter2@db/users is down")

    app, _ = make_app(rt, resolver=down)
    with client(app) as c:
        log_in(c, "alice")
        r = c.get("/ui/equipment/7")
        assert (r.status_code, r.headers["Retry-After"]) == (503, "1")
        assert "hunter2" not in r.text
    assert records(tmp_path, rt)[-1]["details"]["status"] == 503

    async def coroutine(session: Session) -> Principal | None:
        return None

    with pytest.raises(ValueError, match="sync"):
        GuardMiddleware(FastAPI(), session_principal=coroutine)


def test_the_first_origin_counts_and_a_refused_context_is_a_403(rt: Counting, tmp_path: Path) -> None:
    app, _ = make_app(rt)

    @app.get("/ui/owned/{owner}")
    @guard("equipment", "read", cookies=True, owner_param="owner")
    def owned(owner: str) -> dict[str, str]:
        return {"owner": owner}

    with client(app) as c:
        csrf = log_in(c, "alice")
        r = c.post("/ui/equipment/7", headers=[("Origin", "https://evil.example"), ("Origin", ORIGIN),
                                               ("X-CSRF-Token", csrf)])
        assert (r.status_code, r.json()) == (403, {"detail": "origin_not_allowed"})  # as CSRFProtect reads it
        assert c.get("/ui/owned/alice").status_code == 200
        r = c.get("/ui/owned/a%00b")  # a NUL byte: refused by the library as context
        assert (r.status_code, r.json()) == (403, {"detail": "Insufficient permissions: equipment:read"})
    last = records(tmp_path, rt)[-1]
    assert (last["details"]["status"], last["reason"], last["actor"]) == (403, "invalid_argument", "alice")


@pytest.mark.parametrize("policy,status", [("deny", 429), ("allow", 200)])
def test_a_rate_limit_store_that_does_not_answer_is_decided_as_on_the_bearer_path(
        tmp_path: Path, policy: str, status: int) -> None:
    import time

    secret = "s3cr3t-for-tests-only-0123456789abcdef"
    cfg = config(tmp_path)
    cfg["redis"] = {"host": "127.0.0.1", "port": 1, "connect_timeout_ms": 100, "command_timeout_ms": 100}
    cfg["rate_limits"] = {"store": "redis", "categories": {
        "default": {"capacity": 5, "period_seconds": 60, "failure_policy": policy}}}
    cfg["tokens"] = {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": secret}}],
                     "revocation": {"store": "process"}}  # only the buckets are in the unreachable Redis
    with Counting(cfg) as rt:
        app, sessions = make_app(rt)

        @app.get("/api/equipment")
        @guard("equipment", "read")
        def api() -> dict[str, str]:
            return {}

        now = int(time.time())
        bearer = {"Authorization": "Bearer " + rt.sign_token({"sub": "alice", "roles": ["operator"], "iat": now,
                                                              "exp": now + 600})}
        with client(app) as c:
            # the session made directly: the login route's own bucket is in the same store
            c.cookies.set(sessions.cookie_name, rt.session_create("alice", "t1", "testclient", UA).token)
            cookie_route = c.get("/ui/equipment/7")
            bearer_route = c.get("/api/equipment", headers=bearer)
            assert cookie_route.status_code == bearer_route.status_code == status, (cookie_route.text,
                                                                                    bearer_route.text)
            if status == 429:
                assert cookie_route.headers["Retry-After"] == bearer_route.headers["Retry-After"] == "1"
