"""bitsec.sessions: server-side sessions through the C ABI, in process and in Redis, and the
CookieSession FastAPI dependency."""
from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any, Iterator

import pytest
from fastapi import Depends, FastAPI, Request, Response
from fastapi.testclient import TestClient

import bitsec
from bitsec import Runtime, Session
from bitsec.fastapi import CookieSession, bitsec_lifespan

AT = 1_900_000_000
ADDR = "203.0.113.7"
UA = "Mozilla/5.0 (X11; Linux x86_64)"
TOKENS = {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "0123456789abcdef0123456789abcdef"}}]}


def _config(store: str, redis_port: int | None, sessions: dict[str, Any] | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"allow_inline_secrets": True, "sessions": dict(sessions or {}, store=store), "tokens": TOKENS}
    if store == "redis":
        assert redis_port is not None
        c["redis"] = {"host": "127.0.0.1", "port": redis_port, "command_timeout_ms": 1000,
                      "key_prefix": f"t-{uuid.uuid4().hex}:"}
        c["tokens"] = dict(TOKENS, revocation={"store": "redis"})
    return c


@pytest.fixture(params=["process", "redis"])
def rt(request: pytest.FixtureRequest) -> Iterator[Runtime]:
    port = request.getfixturevalue("redis_server").port if request.param == "redis" else None
    with Runtime(_config(request.param, port)) as r:
        yield r


def test_lifecycle(rt: Runtime) -> None:
    c = rt.session_create("alice", "acme", ADDR, UA, at=AT)
    assert len(c.token) == bitsec._abi.BITSEC_SESSION_TOKEN_LEN
    assert len(c.session_id) == bitsec._abi.BITSEC_SESSION_ID_LEN
    v = rt.session_validate(c.token, ADDR, UA, at=AT + 60)
    assert v and v.reason == "valid"
    assert v.session == Session(c.session_id, "alice", "acme", AT, AT + 60, AT + 86400, AT + 60 + 1800)
    # The list shows the session (never the token); revoke ends it.
    listed = rt.session_list("alice", "acme", at=AT + 61)
    assert [s.session_id for s in listed] == [c.session_id]
    assert c.token not in json.dumps([s._asdict() for s in listed])
    assert rt.session_revoke(c.session_id, at=AT + 62)
    assert not rt.session_revoke(c.session_id, at=AT + 62)
    assert rt.session_validate(c.token, ADDR, UA, at=AT + 63).reason == "unknown"


def test_idle_and_hijack(rt: Runtime) -> None:
    c = rt.session_create("bob", None, ADDR, UA, at=AT)
    assert rt.session_validate(c.token, ADDR, UA, at=AT + 1800).reason == "idle_timeout"
    c = rt.session_create("bob", None, ADDR, UA, at=AT)
    v = rt.session_validate(c.token, "198.51.100.9", UA, at=AT + 1)
    assert not v and v.reason == "binding_mismatch"
    assert rt.session_validate(c.token, ADDR, UA, at=AT + 2).reason == "unknown"


def test_rotate_and_revoke_user(rt: Runtime) -> None:
    c = rt.session_create("carol", None, ADDR, UA, at=AT)
    r = rt.session_rotate(c.token, ADDR, UA, at=AT + 5)
    assert r and r.rotated is not None
    assert rt.session_validate(c.token, ADDR, UA, at=AT + 6).reason == "unknown"
    assert rt.session_validate(r.rotated.token, ADDR, UA, at=AT + 6)
    rt.session_create("carol", None, ADDR, UA, at=AT + 7)
    assert len(rt.session_list("carol", at=AT + 8)) == 2
    assert rt.session_revoke_user("carol", at=AT + 9) == 2
    assert rt.session_list("carol", at=AT + 10) == []
    assert rt.session_validate(r.rotated.token, ADDR, UA, at=AT + 10).reason == "unknown"


def test_refresh_replay_revokes_the_family_under_races(rt: Runtime) -> None:
    c = rt.session_create("dave", None, ADDR, UA, at=AT)
    pair = rt.issue_token_pair({"sub": "dave", "session_id": c.session_id}, at=AT)
    results: list[str] = []
    lock = threading.Lock()

    def replay() -> None:
        try:
            rt.refresh_token_pair(pair["refresh_token"], at=AT + 3)
            outcome = "ok"
        except bitsec.RevokedTokenError:
            outcome = "revoked"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=replay) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok"] + ["revoked"] * 11
    assert rt.session_validate(c.token, ADDR, UA, at=AT + 4).reason == "unknown"


def test_invalid_arguments(rt: Runtime) -> None:
    with pytest.raises(bitsec.InvalidArgumentError):
        rt.session_create("", None, ADDR, UA)
    with pytest.raises(bitsec.TooLargeError):
        rt.session_create("x" * 129, None, ADDR, UA)
    with pytest.raises(bitsec.InvalidArgumentError):
        rt.session_create("erin", None, None, UA)  # bound to the address: required
    with pytest.raises(bitsec.InvalidArgumentError):
        rt.session_create(b"\xff", None, ADDR, UA)
    assert rt.session_validate("garbage", ADDR, UA).reason == "unknown"


# ---- FastAPI -----------------------------------------------------------------------------------

def _app(config: dict[str, Any], **options: Any) -> tuple[FastAPI, CookieSession]:
    sessions = CookieSession(**options)
    app = FastAPI(lifespan=bitsec_lifespan(config))

    @app.post("/login")
    def login(request: Request, response: Response, user: str) -> dict[str, str]:
        return {"session_id": sessions.login(request, response, user).session_id}

    @app.get("/me")
    def me(session: Session = Depends(sessions)) -> dict[str, Any]:
        return {"user": session.user, "session_id": session.session_id}

    @app.post("/elevate")
    def elevate(request: Request, response: Response, session: Session = Depends(sessions)) -> dict[str, str]:
        return {"session_id": sessions.rotate(request, response).session_id}

    @app.post("/logout")
    def logout(request: Request, response: Response) -> dict[str, bool]:
        return {"ended": sessions.logout(request, response)}

    return app, sessions


@pytest.fixture(params=["process", "redis"])
def config(request: pytest.FixtureRequest) -> dict[str, Any]:
    port = request.getfixturevalue("redis_server").port if request.param == "redis" else None
    return _config(request.param, port, {"binding": "user_agent"})


def test_cookie_session_login_me_logout(config: dict[str, Any]) -> None:
    app, _ = _app(config)
    with TestClient(app, base_url="https://testserver", headers={"User-Agent": UA}) as client:
        assert client.get("/me").status_code == 401
        assert client.get("/me").json()["detail"] == "Not authenticated: no session cookie"
        r = client.post("/login", params={"user": "alice"})
        assert r.status_code == 200
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("__Host-session=")
        for attr in ("HttpOnly", "Secure", "Path=/", "SameSite=lax"):
            assert attr.lower() in cookie.lower()
        assert "domain" not in cookie.lower()
        me = client.get("/me")
        assert me.status_code == 200 and me.json() == {"user": "alice", "session_id": r.json()["session_id"]}
        token = client.cookies.get("__Host-session")
        assert client.post("/logout").json() == {"ended": True}
        client.cookies.set("__Host-session", token or "")
        refused = client.get("/me")
        assert refused.status_code == 401
        assert refused.json()["detail"] == "Session is not valid: log in again"
        assert "max-age=0" in refused.headers["set-cookie"].lower()


def test_cookie_session_fixation_and_rotation(config: dict[str, Any]) -> None:
    app, _ = _app(config)
    with TestClient(app, base_url="https://testserver", headers={"User-Agent": UA}) as client:
        # An attacker's planted session (a valid one of the attacker's own account).
        client.post("/login", params={"user": "mallory"})
        planted = client.cookies.get("__Host-session")
        # The victim logs in over it: a new identifier, the planted one ended.
        client.post("/login", params={"user": "victim"})
        assert client.cookies.get("__Host-session") != planted
        assert client.get("/me").json()["user"] == "victim"
        # A second browser (no lifespan of its own: the app's runtime is already open).
        attacker = TestClient(app, base_url="https://testserver", headers={"User-Agent": UA})
        attacker.cookies.set("__Host-session", planted or "")
        assert attacker.get("/me").status_code == 401
        before = client.cookies.get("__Host-session")
        sid = client.post("/elevate").json()["session_id"]
        assert client.cookies.get("__Host-session") != before
        assert client.get("/me").json()["session_id"] == sid


def test_cookie_session_hijack_is_refused(config: dict[str, Any]) -> None:
    app, _ = _app(config)
    with TestClient(app, base_url="https://testserver", headers={"User-Agent": UA}) as client:
        client.post("/login", params={"user": "alice"})
        stolen = client.cookies.get("__Host-session")
        thief = TestClient(app, base_url="https://testserver", headers={"User-Agent": "curl/8.5"})
        thief.cookies.set("__Host-session", stolen or "")
        r = thief.get("/me")
        assert r.status_code == 401
        assert r.json()["detail"] == "Session ended: it was used from another client"
        # The hijack ended the session for its owner too.
        assert client.get("/me").status_code == 401


def test_cookie_session_options() -> None:
    with pytest.raises(ValueError):
        CookieSession(cookie_name="session")
    with pytest.raises(ValueError):
        CookieSession(same_site="none")
    s = CookieSession(same_site="Strict")
    r = Response()
    s.set_cookie(r, "tok")
    assert "samesite=strict" in r.headers["set-cookie"].lower()


def test_rate_limit_after_a_cookie_session_keys_its_user(config: dict[str, Any]) -> None:
    # RateLimit placed after CookieSession takes from the session user's bucket, as the guard
    # does on its cookie routes: two users behind one address are limited apart, and one user
    # is one bucket. Before, a cookie-only request was keyed by its address alone.
    from bitsec.fastapi import RateLimit

    cfg = dict(config)
    cfg["rate_limits"] = {"store": "local", "categories": {"default": {"capacity": 3, "period_seconds": 60}}}
    app, sessions = _app(cfg)

    @app.get("/limited", dependencies=[Depends(sessions), Depends(RateLimit("default"))])
    def limited() -> dict[str, bool]:
        return {"ok": True}

    with TestClient(app, base_url="https://testserver", headers={"User-Agent": UA}) as client:
        cookies = {}
        for user in ("alice", "bob"):
            client.cookies.clear()
            assert client.post("/login", params={"user": user}).status_code == 200
            cookies[user] = client.cookies.get("__Host-session")

        def get(user: str) -> Any:
            client.cookies.clear()
            client.cookies.set("__Host-session", cookies[user])
            return client.get("/limited")

        assert [get("alice").status_code for _ in range(4)] == [200, 200, 200, 429]
        assert get("bob").status_code == 200  # the same address, another user's bucket
        assert int(get("bob").headers["x-ratelimit-remaining"]) == 1
        # the session comes first, as on the guard's cookie routes: bob sending carol's valid
        # token spends his own budget, not hers
        rt = app.state.bitsec
        carol = rt.sign_token({"sub": "carol", "exp": int(time.time()) + 600})
        client.cookies.clear()
        client.cookies.set("__Host-session", cookies["bob"])
        assert client.get("/limited", headers={"Authorization": f"Bearer {carol}"}).status_code == 200
        assert client.get("/limited", headers={"Authorization": f"Bearer {carol}"}).status_code == 429
        # a request another site started (Sec-Fetch-Site cross-site / same-site) takes from the
        # user's second bucket: another page cannot spend the user's own budget
        client.cookies.clear()
        client.cookies.set("__Host-session", cookies["alice"])
        for site in ("cross-site", "same-site", "cross-site"):
            assert client.get("/limited", headers={"Sec-Fetch-Site": site}).status_code == 200
        assert client.get("/limited", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 429
        assert client.get("/limited", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 429  # her own: spent
