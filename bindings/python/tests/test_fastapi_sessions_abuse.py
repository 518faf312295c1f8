"""Cookie sessions and client addresses against a client that uses the service as designed:
its own session from many addresses, a proxy reported in IPv4-mapped form, a logout or a
rotation that must still be attributed, headers over the library's limits. Each test failed
before its fix."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.testclient import TestClient

import bitsec
from bitsec.fastapi import (AuditMiddleware, CookieSession, GuardMiddleware, GuardResult, LoginAttempts, LoginGuard,
                            RateLimitMiddleware, bitsec_lifespan, get_runtime, guard, guard_result, public)
from bitsec.fastapi._common import ClientIP
from test_audit_limits_http import asgi_status
from test_fastapi import base_config
from test_fastapi_guard_cookies import ORIGIN, UA, config, records


def session_app(rt: bitsec.Runtime) -> tuple[FastAPI, CookieSession]:
    app = FastAPI(lifespan=bitsec_lifespan(rt), openapi_url=None)
    sessions = CookieSession()

    @app.post("/login")
    @public
    def login(user: str, request: Request, response: Response, tenant: str = "t1") -> dict[str, str]:
        created = sessions.login(request, response, user, tenant)
        return {"csrf": get_runtime(request).csrf_token_issue(created.session_id), "token": created.token}

    @app.get("/ui/export")
    @guard(cookies=True, rate="default")
    def export(result: GuardResult = Depends(guard_result)) -> dict[str, Any]:
        return {"user": result.subject}

    @app.post("/ui/step-up")
    @guard(cookies=True)
    def step_up(request: Request, response: Response) -> dict[str, str]:
        return {"csrf": get_runtime(request).csrf_token_issue(sessions.rotate(request, response).session_id)}

    @app.post("/ui/logout")
    @guard(cookies=True)
    def logout(request: Request, response: Response) -> dict[str, bool]:
        return {"ended": sessions.logout(request, response)}

    @app.get("/me")
    def me(s: Any = Depends(sessions)) -> dict[str, str]:
        return {"user": s.user}

    app.add_middleware(GuardMiddleware, session=sessions)
    return app, sessions


def test_a_session_does_not_spread_over_addresses_with_sec_fetch_site(tmp_path: Path) -> None:
    with bitsec.Runtime(config(tmp_path, capacity=3)) as rt:
        app, sessions = session_app(rt)
        with TestClient(app, base_url="https://testserver", headers={"User-Agent": UA},
                        client=("2001:db8:0:ffff::1", 1)) as c0:
            token = c0.post("/login", params={"user": "alice"}, headers={"Origin": ORIGIN}).json()["token"]
            assert [c0.get("/ui/export").status_code for _ in range(4)] == [200, 200, 200, 429]
            served = 0
            for i in range(5):  # the same session from five /64s, each GET marked cross-site
                c = TestClient(app, base_url="https://testserver", headers={"User-Agent": UA},
                               client=(f"2001:db8:0:{i:x}::1", 1), cookies={sessions.cookie_name: token})
                served += sum(c.get("/ui/export", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200
                          for _ in range(3))
    # its second bucket (xsite:tenant:2:t1:user:alice, 3): was 15, three per address
    assert served == 3


def test_a_session_user_of_another_tenant_has_its_own_buckets(tmp_path: Path) -> None:
    """Where user names are only unique within a tenant, one tenant's alice must not spend
    another tenant's alice's budget (before, both sessions took from ``user:alice`` and
    ``xsite:user:alice``): the session's tenant is part of its user's key, as a token's."""
    with bitsec.Runtime(config(tmp_path, capacity=3)) as rt:
        app, sessions = session_app(rt)

        with TestClient(app, base_url="https://testserver", headers={"User-Agent": UA}) as c:
            tokens = {}
            for tenant in ("evil", "t1"):
                c.cookies.clear()  # (a login with a session cookie ends that session)
                tokens[tenant] = c.post("/login", params={"user": "alice", "tenant": tenant},
                                        headers={"Origin": ORIGIN}).json()["token"]

            clients = {tenant: TestClient(app, base_url="https://testserver", headers={"User-Agent": UA},
                                          cookies={sessions.cookie_name: token}) for tenant, token in tokens.items()}

            def export(tenant: str, **headers: str) -> int:
                return clients[tenant].get("/ui/export", headers=headers).status_code

            assert [export("evil") for _ in range(4)] == [200, 200, 200, 429]
            cross = {"Sec-Fetch-Site": "cross-site"}
            assert [export("evil", **cross) for _ in range(4)] == [200, 200, 200, 429]
            assert [export("t1") for _ in range(3)] == [200, 200, 200]
            assert export("t1", **cross) == 200
        assert not rt.rate_limit_take("tenant:4:evil:user:alice", "default")
        assert not rt.rate_limit_take("xsite:tenant:4:evil:user:alice", "default")


def test_a_trusted_proxy_in_ipv4_mapped_form_is_trusted(tmp_path: Path) -> None:
    resolver = ClientIP(["10.0.0.0/8"])
    for peer in ("10.0.0.1", "::ffff:10.0.0.1"):
        scope = {"client": (peer, 1), "headers": [(b"x-forwarded-for", b"203.0.113.10")]}
        assert resolver(scope) == "203.0.113.10", peer  # was "::ffff:10.0.0.1": every client the proxy
    # the login guard behind such a proxy: one client's failures do not lock out another
    rt = bitsec.Runtime(base_config(tmp_path, limits={"store": "local", "categories": {
        "default": {"capacity": 1000, "period_seconds": 60}},
        "login_guard": {"client": {"max_failures": 5, "window_seconds": 3600, "block_seconds": 3600}}}))
    app = FastAPI(lifespan=bitsec_lifespan(rt), openapi_url=None)
    lg = LoginGuard(trusted_proxies=["10.0.0.0/8"])

    @app.post("/login")
    def login(user: str, pw: str, attempts: LoginAttempts = Depends(lg)) -> dict[str, str]:
        a = attempts.begin(user)
        if pw != "right":
            raise a.failed()
        a.succeeded()
        return {"client": attempts.client}

    try:
        with TestClient(app, client=("::ffff:10.0.0.1", 1)) as c:
            for i in range(6):
                c.post("/login", params={"user": f"victim{i}", "pw": "guess"},
                       headers={"X-Forwarded-For": "198.51.100.66"})
            r = c.post("/login", params={"user": "bob", "pw": "right"}, headers={"X-Forwarded-For": "203.0.113.10"})
            assert r.status_code == 200 and r.json() == {"client": "203.0.113.10"}  # was 429
    finally:
        rt.close()


def test_logout_and_rotation_records_name_the_session(tmp_path: Path) -> None:
    with bitsec.Runtime(config(tmp_path)) as rt:
        app, _ = session_app(rt)
        with TestClient(app, base_url="https://testserver", headers={"User-Agent": UA, "Origin": ORIGIN}) as c:
            csrf = c.post("/login", params={"user": "alice"}).json()["csrf"]
            csrf = c.post("/ui/step-up", headers={"X-CSRF-Token": csrf}).json()["csrf"]
            assert c.post("/ui/logout", headers={"X-CSRF-Token": csrf}).json() == {"ended": True}
            assert c.get("/ui/export").status_code == 401  # the session is gone
        mine = {e["details"]["path"]: e for e in records(tmp_path, rt) if e["details"]["method"] == "POST"}
    # who rotated and who logged out (both were recorded without an actor)
    assert mine["/ui/step-up"]["actor"] == "alice" and mine["/ui/step-up"].get("session_id")
    assert mine["/ui/logout"]["actor"] == "alice" and mine["/ui/logout"].get("session_id")


def test_headers_over_the_librarys_limits_are_refused_not_a_500(tmp_path: Path) -> None:
    with bitsec.Runtime(config(tmp_path)) as rt:
        app, sessions = session_app(rt)
        with TestClient(app, base_url="https://testserver", headers={"User-Agent": UA, "Origin": ORIGIN},
                        raise_server_exceptions=False) as c:
            token = c.post("/login", params={"user": "alice"}).json()["token"]
            c.cookies.clear()
            long_ua = {"Cookie": f"{sessions.cookie_name}={token}", "User-Agent": "U" * 5000}
            r = c.get("/me", headers=long_ua)  # the CookieSession dependency (was 500)
            assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Cookie")
            assert c.get("/ui/export", headers=long_ua).status_code == 401  # (the guard already did)
            r = c.post("/login", params={"user": "alice"}, headers={"User-Agent": "U" * 1100})
            assert r.status_code == 400 and "too long" in r.json()["detail"]  # (was 500)


def test_forwarded_addresses_with_a_port_name_the_client() -> None:
    resolver = ClientIP(["10.0.0.0/8"])
    for sent, client in (("203.0.113.10:5678", "203.0.113.10"), ("[2001:db8::1]:443", "2001:db8::1"),
                         ("[2001:db8::1]", "2001:db8::1"), ("2001:db8::2", "2001:db8::2"),
                         ("10.0.0.9:80, 203.0.113.10", "203.0.113.10"), ("203.0.113.10, 10.0.0.9:80", "203.0.113.10"),
                         ("[garbage", "10.0.0.1"), ("a:b", "10.0.0.1")):
        scope = {"client": ("10.0.0.1", 1), "headers": [(b"x-forwarded-for", sent.encode())]}
        assert resolver(scope) == client, sent  # (with a port: the proxy's address before)


def test_session_of_gives_no_ended_session(tmp_path: Path) -> None:
    from bitsec.fastapi import session_of

    seen: list[Any] = []
    with bitsec.Runtime(config(tmp_path)) as rt:
        app, sessions = session_app(rt)

        @app.post("/ui/leave")
        @guard(cookies=True)
        def leave(request: Request, response: Response) -> dict[str, bool]:
            seen.append(session_of(request))
            sessions.logout(request, response)
            seen.append(session_of(request))
            return {}

        with TestClient(app, base_url="https://testserver", headers={"User-Agent": UA, "Origin": ORIGIN}) as c:
            csrf = c.post("/login", params={"user": "alice"}).json()["csrf"]
            assert c.post("/ui/leave", headers={"X-CSRF-Token": csrf}).status_code == 200
        leave_records = [e for e in records(tmp_path, rt) if e["details"]["path"] == "/ui/leave"]
    assert seen[0] is not None and seen[0].user == "alice"
    assert seen[1] is None  # (it gave the ended session)
    assert leave_records[0]["actor"] == "alice"  # the record still names who logged out


def test_a_session_id_in_the_cookie_ends_no_session(tmp_path: Path) -> None:
    # A session's id is no secret (audit records, a token's session_id claim, session_list):
    # sent as the cookie to /login or /logout, it ended the session it names (session_revoke
    # takes an id too), so anyone who read an id could log its user out.
    with bitsec.Runtime(config(tmp_path)) as rt:
        app, sessions = session_app(rt)
        with TestClient(app, base_url="https://testserver", headers={"User-Agent": UA}) as victim:
            csrf = victim.post("/login", params={"user": "alice"}, headers={"Origin": ORIGIN}).json()["csrf"]
            (alice,) = rt.session_list("alice", "t1")
            attacker = TestClient(app, base_url="https://testserver", headers={"User-Agent": "attacker"})
            for path, params in (("/ui/logout", {}), ("/login", {"user": "mallory"})):
                attacker.cookies.clear()
                attacker.post(path, params=params, headers={"Origin": ORIGIN},
                              cookies={sessions.cookie_name: alice.session_id})
                assert victim.get("/me").json() == {"user": "alice"}, path
            assert [s.session_id for s in rt.session_list("alice", "t1")] == [alice.session_id]
            # the holder of the token still logs out
            assert victim.post("/ui/logout", headers={"Origin": ORIGIN, "X-CSRF-Token": csrf}).json() == {"ended": True}
            assert victim.get("/me").status_code == 401 and rt.session_list("alice", "t1") == []


def test_each_component_resolves_the_client_with_its_own_trusted_proxies() -> None:
    # The address was resolved once per request by whichever component read it first: a
    # RateLimitMiddleware trusting no proxy (its default) ran before a LoginGuard trusting
    # the proxy, so the login guard keyed every user as the proxy: five wrong passwords from
    # five users behind it blocked everyone's logins (429).
    rt = bitsec.Runtime({"rate_limits": {"categories": {"default": {"capacity": 1000, "period_seconds": 60},
                                                         "auth": {"capacity": 1000, "period_seconds": 60}}}})
    app = FastAPI(openapi_url=None)
    app.state.bitsec = rt
    app.add_middleware(RateLimitMiddleware)
    login_guard = LoginGuard(trusted_proxies=["10.0.0.0/8"])

    @app.post("/auth/login")
    def login(user: str, attempts: LoginAttempts = Depends(login_guard)) -> None:
        raise attempts.begin(user).failed()

    try:
        c = TestClient(app, client=("10.0.0.1", 4444))  # the proxy
        statuses = [c.post("/auth/login", params={"user": f"user{i}"},
                           headers={"X-Forwarded-For": f"198.51.100.{i + 1}"}).status_code for i in range(8)]
        assert statuses == [401] * 8
    finally:
        rt.close()


def test_a_client_address_with_an_ipv6_zone_keeps_the_record(tmp_path: Path) -> None:
    # A link-local peer is reported with its zone (fe80::1%eth0); the record's ip kept it, and
    # bitsec refused the whole record (audit/event_rejected in its place).
    with bitsec.Runtime(config(tmp_path)) as rt:
        app = FastAPI(lifespan=bitsec_lifespan(rt), openapi_url=None)

        @app.post("/things")
        def create() -> dict[str, bool]:
            return {"ok": True}

        app.add_middleware(AuditMiddleware)
        with TestClient(app, client=("fe80::1%eth0", 50000)) as c:
            assert c.post("/things", headers={"X-Request-ID": "zone-1"}).status_code == 200
        recs = records(tmp_path, rt)
        assert [r["ip"] for r in recs if r.get("details", {}).get("request_id") == "zone-1"] == ["fe80::1"]
        assert not [r for r in recs if r.get("subtype") == "event_rejected"]
    # nor does the zone make each address its own client (the /64 groups them, as without it):
    # a link-local client naming itself through other interface ids got a new budget each time
    assert ClientIP()({"client": ("fe80::1%eth0", 1)}) == "fe80::1"
    assert ClientIP(["10.0.0.0/8"])({"client": ("10.0.0.1", 1),
                                     "headers": [(b"x-forwarded-for", b"fe80::2%eth1")]}) == "fe80::2"
    # (only an IPv6 address loses a zone: "%eth0" is no empty peer, which "unix" would trust)
    assert ClientIP(["unix"])({"client": ("%eth0", 1), "headers": [(b"x-forwarded-for", b"203.0.113.9")]}) == "%eth0"
    # and only a zone the core takes for one (non-empty, no second "%"): both keep the rest
    rt0 = bitsec.Runtime({"rate_limits": {}})
    for odd in ["fe80::1%", "fe80::1%%x", "fe80::1%eth0%", "junk:x%y", "fe80::1%eth0"]:
        assert rt0.client_key(ClientIP()({"client": (odd, 1)})) == rt0.client_key(odd), odd
    rt0.close()
    rt = bitsec.Runtime(base_config(tmp_path / "lg", limits={"store": "local", "categories": {
        "default": {"capacity": 1000, "period_seconds": 60}},
        "login_guard": {"client": {"max_failures": 2, "window_seconds": 3600, "block_seconds": 3600}}}))
    app = FastAPI(lifespan=bitsec_lifespan(rt), openapi_url=None)
    lg = LoginGuard()

    @app.post("/login")
    def login(user: str, attempts: LoginAttempts = Depends(lg)) -> None:
        raise attempts.begin(user).failed()

    try:
        statuses = []
        for i in range(1, 5):
            with TestClient(app, client=(f"fe80::{i:x}%eth0", 1)) as c:
                statuses.append(c.post("/login", params={"user": f"u{i}"}).status_code)
        assert statuses == [401, 429, 429, 429]  # was four 401s: four clients
    finally:
        rt.close()
    # the reference service's own records
    import sys
    from types import SimpleNamespace
    root = str(Path(__file__).resolve().parents[3])
    if root not in sys.path:
        sys.path.insert(0, root)
    from examples.fastapi_service.common import client_ip
    assert client_ip(SimpleNamespace(client=SimpleNamespace(host="fe80::1%eth0"))) == "fe80::1"  # type: ignore[arg-type]


def test_a_login_name_the_library_cannot_key_is_counted_not_a_500(tmp_path: Path) -> None:
    # LoginAttempts.begin passed the name as it came: over 512 UTF-8 bytes (also 171 characters
    # of three bytes), empty, or with a lone surrogate (which JSON carries as \ud800), it raised
    # (TooLargeError, InvalidArgumentError, UnicodeEncodeError): a 500 that counted nothing.
    rt = bitsec.Runtime(base_config(tmp_path, limits={"store": "local", "categories": {
        "default": {"capacity": 1000, "period_seconds": 60}},
        "login_guard": {"client": {"max_failures": 4, "window_seconds": 3600, "block_seconds": 3600}}}))
    app = FastAPI(lifespan=bitsec_lifespan(rt), openapi_url=None)
    lg = LoginGuard()

    @app.post("/login")
    async def login(request: Request, attempts: LoginAttempts = Depends(lg)) -> None:
        raise attempts.begin((await request.json())["user"]).failed()

    try:
        with TestClient(app, raise_server_exceptions=False) as c:
            statuses = [c.post("/login", content=body, headers={"Content-Type": "application/json"}).status_code
                        for body in ('{"user": "%s"}' % ("a" * 513), '{"user": "%s"}' % ("\u20ac" * 171),
                                     '{"user": ""}', '{"user": "\\ud800vera"}', '{"user": "vera"}')]
        # each counted against the client: the fourth failure blocks it, the fifth is refused
        assert statuses == [401, 401, 401, 429, 429]
    finally:
        rt.close()


def test_a_padded_account_name_is_still_the_account(tmp_path: Path) -> None:
    # The library folds a name (case, compatibility forms, default-ignorable characters)
    # before it bounds it; the binding hashed a name over 512 bytes itself, before any fold,
    # so "vera" padded with zero-width spaces (three bytes each, folding to nothing) was a
    # fresh account counter per padding: unlimited guesses at one account, from clients each
    # under their own limit. Now it is vera's counter, and a name over 4,096 bytes counts
    # under its first 4,096.
    rt = bitsec.Runtime(base_config(tmp_path, limits={"store": "local", "categories": {
        "default": {"capacity": 1000, "period_seconds": 60}},
        # (one failure per account an hour: a second attempt at the account is refused when it
        # begins)
        "login_guard": {"account": {"free_failures": 0, "max_failures": 1, "max_delay_seconds": 60}}}))
    app = FastAPI(lifespan=bitsec_lifespan(rt), openapi_url=None)
    lg = LoginGuard()

    @app.post("/login")
    async def login(request: Request, attempts: LoginAttempts = Depends(lg)) -> None:
        attempts.begin((await request.json())["user"])  # 429 when the guard refuses the attempt
        raise HTTPException(status_code=401, detail="Invalid credentials")  # a wrong password

    def post(c: TestClient, user: str) -> int:
        # (one client: a refusal by the account costs the client nothing, and its two
        # failures stay under the client rule's five)
        return c.post("/login", content=json.dumps({"user": user}),
                      headers={"Content-Type": "application/json"}).status_code

    try:
        with TestClient(app) as c:
            assert post(c, "vera") == 401  # the account's one failure
            assert post(c, "vera" + "\u200b" * 200) == 429  # 604 bytes: still vera
            assert post(c, "VERA" + "\u200b" * 2000) == 429  # over 4,096: cut, still vera
            long = "w" * 4096
            assert post(c, long + "x") == 401
            assert post(c, long + "y") == 429  # the same first 4,096 bytes
    finally:
        rt.close()


def test_login_namesakes_in_two_tenants_have_two_account_counters(tmp_path: Path) -> None:
    # Where account names are only unique within a tenant, alice of t2 failing her own logins
    # must not throttle alice of t1: begin(name, tenant=...) counts the name in its tenant.
    rt = bitsec.Runtime(base_config(tmp_path, limits={"store": "local", "categories": {
        "default": {"capacity": 1000, "period_seconds": 60}},
        "login_guard": {"account": {"free_failures": 0, "max_failures": 1, "max_delay_seconds": 60}}}))
    app = FastAPI(lifespan=bitsec_lifespan(rt), openapi_url=None)
    lg = LoginGuard()

    @app.post("/login")
    async def login(request: Request, attempts: LoginAttempts = Depends(lg)) -> None:
        body = await request.json()
        attempts.begin(body["user"], tenant=body["tenant"])  # 429 when the guard refuses it
        raise HTTPException(status_code=401, detail="Invalid credentials")

    def post(c: TestClient, user: str, tenant: str) -> int:
        return c.post("/login", json={"user": user, "tenant": tenant}).status_code

    try:
        with TestClient(app) as c:
            assert post(c, "alice", "t2") == 401  # t2's alice: her account's one failure
            assert post(c, "ALICE", "t2") == 429  # folded: the same account of t2
            assert post(c, "alice", "t1") == 401  # t1's alice: an account of her own
            assert post(c, "alice", "T1") == 429  # (a tenant is folded with the name)
            assert post(c, "alice", "t1/x") == 401  # the tenant's length ends it: no overlap
    finally:
        rt.close()


def test_a_proxy_on_a_unix_socket_can_be_trusted(tmp_path: Path) -> None:
    # Behind a proxy that connects over a Unix socket (uvicorn --uds) the server reports no
    # peer address: every client was "" (the login guard's "unknown", the rate limits'
    # ip:unknown), so anyone's five failed logins blocked everyone's. "unix" trusts that peer.
    uds = {"client": None, "headers": [(b"x-forwarded-for", b"198.51.100.7, 203.0.113.10")]}
    assert ClientIP()(uds) == "" and ClientIP(["10.0.0.0/8"])(uds) == ""
    assert ClientIP(["unix"])(uds) == "203.0.113.10"
    assert ClientIP(["unix", "203.0.113.0/24"])(uds) == "198.51.100.7"
    # a TCP peer is still only trusted when listed
    tcp = {"client": ("192.0.2.1", 1), "headers": uds["headers"]}
    assert ClientIP(["unix"])(tcp) == "192.0.2.1"
    rt = bitsec.Runtime(base_config(tmp_path, limits={"store": "local", "categories": {
        "default": {"capacity": 1000, "period_seconds": 60}},
        "login_guard": {"client": {"max_failures": 2, "window_seconds": 3600, "block_seconds": 3600}}}))
    app = FastAPI(lifespan=bitsec_lifespan(rt), openapi_url=None)
    lg = LoginGuard(trusted_proxies=["unix"])

    @app.post("/login")
    def login(user: str, attempts: LoginAttempts = Depends(lg)) -> None:
        raise attempts.begin(user).failed()

    try:
        with TestClient(app) as c:  # (the lifespan)
            statuses = [c.portal.call(lambda i=i: asgi_status(  # (TestClient always reports a peer)
                app, "POST", "/login", [(b"x-forwarded-for", f"198.51.100.{i + 1}".encode())], client=None,
                query=b"user=u%d" % i)) for i in range(6)]  # six clients, one wrong password each
        assert statuses == [401] * 6  # was 401, 429, 429, ...: one "unknown" client
    finally:
        rt.close()
