"""The csrf capability through the Python binding, and bitsec.fastapi's CSRFProtect over real
HTTP (TestClient): tokens accepted and refused, origin checks, double-submit cookies, and
bearer-token routes unaffected."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI, Request, Response

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

import bitsec
from bitsec import _abi
from bitsec.csrf import REASONS, TOKEN_BYTES
from bitsec.errors import InvalidArgumentError, NotConfiguredError
from bitsec.fastapi import CSRFProtect, bitsec_lifespan, get_runtime, set_csrf_cookie

KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
KEY2 = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100"
APP_ORIGIN = "https://app.example.com"
T0 = 1_900_000_000


def config(**csrf: Any) -> dict:
    section = {"key": {"value": KEY, "encoding": "hex"}, "allowed_origins": [APP_ORIGIN]}
    section.update(csrf)
    return {"allow_inline_secrets": True, "csrf": section,
            "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "0123456789abcdef0123456789abcdef"}}]}}


@pytest.fixture()
def rt() -> Any:
    with bitsec.Runtime(config()) as r:
        yield r


def test_reason_names_come_from_the_library() -> None:
    assert REASONS[_abi.BITSEC_CSRF_VALID] == "valid"
    assert REASONS[_abi.BITSEC_CSRF_MISSING] == "csrf_token_missing"
    assert REASONS[_abi.BITSEC_CSRF_INVALID] == "csrf_token_invalid"
    assert REASONS[_abi.BITSEC_CSRF_ORIGIN_NOT_ALLOWED] == "origin_not_allowed"
    assert len(REASONS) == 9


def test_synchronizer_token(rt: Any) -> None:
    t = rt.csrf_token_issue("session-1", at=T0)
    assert len(t) == TOKEN_BYTES and "session-1" not in t
    assert rt.csrf_token_verify("session-1", t, at=T0 + 1)
    assert rt.csrf_token_verify("session-2", t, at=T0 + 1).reason == "csrf_token_invalid"
    assert rt.csrf_token_verify("session-1", None).reason == "csrf_token_missing"
    assert rt.csrf_token_verify("session-1", "x" * 10_000).reason == "csrf_token_malformed"
    assert rt.csrf_token_verify("session-1", t, at=T0 + 86_400).reason == "csrf_token_expired"
    with pytest.raises(InvalidArgumentError):
        rt.csrf_token_verify("", t)


def test_double_submit(rt: Any) -> None:
    c = rt.csrf_cookie_issue("b1")
    assert rt.csrf_cookie_verify("b1", c, c)
    assert rt.csrf_cookie_verify("b1", c, rt.csrf_cookie_issue("b1")).reason == "csrf_token_mismatch"
    assert rt.csrf_cookie_verify("b2", c, c).reason == "csrf_token_invalid"
    assert rt.csrf_cookie_verify("b1", None, c).reason == "csrf_token_missing"


def test_origin_check(rt: Any) -> None:
    assert rt.csrf_origin_check("GET", "https://evil.example")
    assert rt.csrf_origin_check("POST", "https://APP.example.com:443")
    assert rt.csrf_origin_check("POST", "https://evil.example").reason == "origin_not_allowed"
    assert rt.csrf_origin_check("POST", None, "cross-site").reason == "cross_site_request"
    assert rt.csrf_origin_check("POST").reason == "origin_missing"
    assert rt.csrf_origin_check("POST", None, "same-origin")
    with bitsec.Runtime(config(missing_origin="allow")) as lenient:
        assert lenient.csrf_origin_check("POST")


def test_keys_reload(rt: Any) -> None:
    t = rt.csrf_token_issue("s")
    rt.csrf_keys_reload({"key": {"value": KEY2, "encoding": "hex"}, "previous_keys": [{"value": KEY, "encoding": "hex"}]})
    assert rt.csrf_token_verify("s", t)
    rt.csrf_keys_reload({"key": {"value": KEY2, "encoding": "hex"}})
    assert rt.csrf_token_verify("s", t).reason == "csrf_token_invalid"


def test_not_configured() -> None:
    with bitsec.Runtime({}) as r:
        with pytest.raises(NotConfiguredError):
            r.csrf_token_issue("s")


# ---- FastAPI ---------------------------------------------------------------------------------

def session_of(request: Request) -> str | None:
    """Stands in for the cookie session dependency: the session identifier from a cookie."""
    return request.cookies.get("__Host-session")


def make_app(**protect: Any) -> FastAPI:
    app = FastAPI(lifespan=bitsec_lifespan(config()))
    csrf = CSRFProtect(session_id=session_of, **protect)

    @app.get("/form")
    def form(request: Request) -> dict:
        sid = session_of(request)
        return {"csrf_token": get_runtime(request).csrf_token_issue(sid) if sid else None}

    @app.post("/transfer", dependencies=[Depends(csrf)])
    def transfer() -> dict:
        return {"ok": True}

    @app.post("/transfer-form", dependencies=[Depends(csrf)])
    async def transfer_form(request: Request) -> dict:
        return {"body": (await request.body()).decode()}  # the body is still readable

    @app.get("/cookie")
    def cookie(request: Request, response: Response) -> dict:
        return {"csrf": set_csrf_cookie(response, get_runtime(request), session_of(request) or "")}

    @app.post("/bearer")
    def bearer() -> dict:  # a bearer-token route: no CSRFProtect
        return {"ok": True}

    return app


@pytest.fixture()
def client() -> Any:
    with TestClient(make_app(), base_url="https://app.example.com") as c:
        c.cookies.set("__Host-session", "sess-1")
        yield c


def test_fastapi_a_form_with_many_fields(client: Any) -> None:
    # parse_qs(max_num_fields=1000) raised past 1000 fields: a 500, not a decision
    token = client.get("/form").json()["csrf_token"]
    form = {"Origin": APP_ORIGIN, "Content-Type": "application/x-www-form-urlencoded"}
    many = "&".join(["a=1"] * 1001)
    r = client.post("/transfer-form", content=many, headers=form)
    assert (r.status_code, r.json()["detail"]) == (403, "csrf_token_missing")
    r = client.post("/transfer-form", content=f"{many}&csrf%5Ftoken={token}&csrf_token=second", headers=form)
    assert r.status_code == 200 and r.json()["body"].startswith("a=1&")  # (the first value, its name decoded)


def test_fastapi_synchronizer_accepts_and_refuses(client: Any) -> None:
    token = client.get("/form").json()["csrf_token"]
    ok = {"Origin": APP_ORIGIN, "X-CSRF-Token": token}
    assert client.post("/transfer", headers=ok).json() == {"ok": True}
    # From a form field instead of the header.
    r = client.post("/transfer-form", data={"amount": "5", "csrf_token": token}, headers={"Origin": APP_ORIGIN})
    assert r.status_code == 200 and r.json()["body"].startswith("amount=5&csrf_token=")
    r = client.post("/transfer-form", data={"amount": "5", "csrf_token": "forged"}, headers={"Origin": APP_ORIGIN})
    assert (r.status_code, r.json()["detail"]) == (403, "csrf_token_malformed")
    cases = [
        ({"Origin": APP_ORIGIN}, "csrf_token_missing"),
        ({"Origin": APP_ORIGIN, "X-CSRF-Token": "garbage"}, "csrf_token_malformed"),
        ({"Origin": APP_ORIGIN, "X-CSRF-Token": token[:-2] + ("AA" if token[-2:] != "AA" else "BB")}, "csrf_token_invalid"),
        ({"Origin": "https://evil.example", "X-CSRF-Token": token}, "origin_not_allowed"),
        ({"Origin": "null", "X-CSRF-Token": token}, "origin_not_allowed"),
        ({"Sec-Fetch-Site": "cross-site", "X-CSRF-Token": token}, "cross_site_request"),
        ({"X-CSRF-Token": token}, "origin_missing"),
    ]
    for headers, reason in cases:
        r = client.post("/transfer", headers=headers)
        assert (r.status_code, r.json()["detail"]) == (403, reason), headers
    # Another session's token.
    client.cookies.set("__Host-session", "sess-2")
    r = client.post("/transfer", headers=ok)
    assert (r.status_code, r.json()["detail"]) == (403, "csrf_token_invalid")
    # No session at all.
    client.cookies.clear()
    r = client.post("/transfer", headers=ok)
    assert (r.status_code, r.json()["detail"]) == (403, "csrf_session_missing")


def test_fastapi_same_origin_fetch_metadata(client: Any) -> None:
    token = client.get("/form").json()["csrf_token"]
    r = client.post("/transfer", headers={"Sec-Fetch-Site": "same-origin", "X-CSRF-Token": token})
    assert r.status_code == 200


def test_fastapi_safe_methods_and_bearer_routes_are_unaffected(client: Any) -> None:
    assert client.get("/form").status_code == 200
    # A route without CSRFProtect (bearer tokens): no origin or token needed.
    assert client.post("/bearer", headers={"Origin": "https://evil.example"}).status_code == 200


def test_fastapi_double_submit() -> None:
    with TestClient(make_app(mode="double_submit"), base_url="https://app.example.com") as c:
        c.cookies.set("__Host-session", "sess-1")
        r = c.get("/cookie")
        set_cookie = r.headers["set-cookie"]
        assert set_cookie.startswith("__Host-csrf=") and "Secure" in set_cookie and "Path=/" in set_cookie
        assert "HttpOnly" not in set_cookie and "SameSite=strict" in set_cookie
        value = r.json()["csrf"]
        assert c.post("/transfer", headers={"Origin": APP_ORIGIN, "X-CSRF-Token": value}).status_code == 200
        r = c.post("/transfer", headers={"Origin": APP_ORIGIN, "X-CSRF-Token": "x" + value[1:]})
        assert (r.status_code, r.json()["detail"]) == (403, "csrf_token_mismatch")
        # A cookie planted for another session (cookie tossing) does not pass.
        with bitsec.Runtime(config()) as other:
            planted = other.csrf_cookie_issue("attacker-session")
        c.cookies.clear()
        c.cookies.set("__Host-session", "sess-1")
        c.cookies.set("__Host-csrf", planted)
        r = c.post("/transfer", headers={"Origin": APP_ORIGIN, "X-CSRF-Token": planted})
        assert (r.status_code, r.json()["detail"]) == (403, "csrf_token_invalid")


def test_csrf_protect_rejects_bad_mode() -> None:
    with pytest.raises(ValueError):
        CSRFProtect(session_id=session_of, mode="cookie")


def test_origin_decisions_are_remembered_within_a_bound(rt: Any) -> None:
    # Many distinct origins (an attacker's flood): every answer stays right, memory bounded.
    from bitsec.csrf import _ORIGIN_MEMO_MAX
    for i in range(2 * _ORIGIN_MEMO_MAX + 100):
        assert rt.csrf_origin_check("POST", f"https://evil{i}.example").reason == "origin_not_allowed"
        assert len(rt.__dict__["_csrf_origin_memo"]) <= _ORIGIN_MEMO_MAX
    assert rt.csrf_origin_check("POST", APP_ORIGIN)
    assert rt.csrf_origin_check("post", APP_ORIGIN.upper())


def test_closed_runtime_raises() -> None:
    from bitsec.errors import ClosedError
    r = bitsec.Runtime(config())
    t = r.csrf_token_issue("s")
    assert r.csrf_token_verify("s", t) and r.csrf_cookie_verify("s", "", "").reason == "csrf_token_missing"
    r.close()
    with pytest.raises(ClosedError):
        r.csrf_token_verify("s", t)
    with pytest.raises(ClosedError):
        r.csrf_cookie_verify("s", t, t)
