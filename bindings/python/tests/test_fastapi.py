"""bitsec.fastapi over real HTTP: TestClient for every status code and header, plus a real
uvicorn server on 127.0.0.1 (ephemeral port) driven by httpx; a killed Redis never gives a 500;
audit events land in an audit file."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import uvicorn
from fastapi import Body, Depends, FastAPI, Request, Security
import warnings

with warnings.catch_warnings():  # starlette's TestClient announces a move to httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

import bitsec
from bitsec.fastapi import (
    DEFAULT_SECURITY_HEADERS, AuditMiddleware, BearerAuth, ClientIP, MFACode, RateLimit, RateLimitMiddleware,
    SecurityHeadersMiddleware, adr007_category, bitsec_lifespan, get_runtime, mfa_enroll, mfa_user, request_id,
    require_permission, verify_mfa_code,
)

ROOT = Path(__file__).resolve().parents[3]
ERP_POLICY = ROOT / "examples" / "policies" / "erp.json"
ISS = "https://auth.bitcorp.example"
AUD = "erp-api"
SECRET = "s3cr3t-for-tests-only-0123456789abcdef"
CLIENT = ("203.0.113.7", 40000)
PROXY = "10.0.0.1"


def base_config(tmp_path: Path, *, audit: bool = True, limits: dict | None = None, redis: dict | None = None,
                default_capacity: int = 1000, **extra: Any) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg: dict[str, Any] = {
        "allow_inline_secrets": True,
        "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": SECRET}}],
                   "issuer": ISS, "audience": [AUD], "required_claims": ["sub"]},
        "permissions": {"policy_file": str(ERP_POLICY)},
        "rate_limits": limits or {"store": "local", "categories": {
            "default": {"capacity": default_capacity, "period_seconds": 60},
            "auth": {"capacity": 2, "period_seconds": 60},
            "upload": {"capacity": 1, "period_seconds": 300},
            "inference": {"capacity": 3, "period_seconds": 60},
        }},
        "totp": {"issuer": "Bitcorp ERP"},
        "fields": {"keys": [{"id": "k1", "secret": {"value": "f" * 32}}]},
    }
    if audit:
        cfg["audit"] = {"sinks": [{"type": "file", "path": str(tmp_path / "audit.log")}], "durability": "none",
                        "service": "erp-api"}
    if redis is not None:
        cfg["redis"] = redis
    cfg.update(extra)
    return cfg


def token(rt: bitsec.Runtime, sub: str = "u1", roles: Any = ("viewer",), exp_in: int = 600, **claims: Any) -> str:
    now = int(time.time())
    doc = {"sub": sub, "roles": list(roles), "iss": ISS, "aud": AUD, "iat": now, "exp": now + exp_in,
           "tenant_id": "t1", **claims}
    return rt.sign_token(doc)


def bearer(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


def make_app(cfg: dict, *, proxies: Any = (), middleware: bool = True,
             headers: dict | None = None, on_backend_error: str = "deny") -> FastAPI:
    auth = BearerAuth(realm="erp")
    optional = BearerAuth(auto_error=False)
    app = FastAPI(lifespan=bitsec_lifespan(cfg))
    if middleware:
        app.add_middleware(RateLimitMiddleware, trusted_proxies=proxies, exempt=["/health", "/mfa/*"],
                           on_backend_error=on_backend_error)
        app.add_middleware(AuditMiddleware, trusted_proxies=proxies)
        app.add_middleware(SecurityHeadersMiddleware, headers=headers)
    sealed: dict[str, str] = {}
    app.state.sealed = sealed
    threads: dict[str, int] = {}
    app.state.threads = threads

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    @app.get("/me")
    def me(claims=Depends(auth)) -> dict:
        return {"sub": claims.subject, "roles": list(claims.roles)}

    @app.get("/maybe")
    def maybe(claims=Depends(optional)) -> dict:
        return {"sub": None if claims is None else claims.subject}

    @app.get("/equipment")
    def list_equipment(claims=Depends(require_permission("equipment", "read", bearer=auth))) -> dict:
        return {"items": [], "sub": claims.subject}

    @app.put("/equipment/{eid}")
    def update_equipment(eid: int, claims=Depends(require_permission("equipment", "update", bearer=auth))) -> dict:
        return {"id": eid}

    @app.put("/tenants/{tenant}/users/{owner}/records/{rid}")
    def update_record(tenant: str, owner: str, rid: int,
                      claims=Depends(require_permission("maintenance_records", "update", bearer=auth,
                                                        owner_param="owner", tenant_param="tenant"))) -> dict:
        return {"updated": rid}

    def sales(request: Request, claims: Any) -> dict:
        threads["context"] = threading.get_ident()
        return {"department": request.query_params.get("dept", "sales")}

    @app.get("/reports/export")
    def export(claims=Security(require_permission("reports", "export", bearer=auth, context=sales),
                               scopes=["reports:export"])) -> dict:
        return {"exported": True}

    @app.get("/loop")
    async def loop_thread() -> dict:
        threads["loop"] = threading.get_ident()
        return {}

    @app.post("/auth/login")
    def login() -> dict:
        return {"ok": True}

    @app.post("/artifacts/upload")
    def upload() -> dict:
        return {"ok": True}

    @app.post("/v1/infer")
    def infer() -> dict:
        return {"ok": True}

    @app.get("/limited", dependencies=[Depends(RateLimit("auth", trusted_proxies=proxies,
                                                         on_backend_error=on_backend_error))])
    def limited() -> dict:
        return {"ok": True}

    @app.post("/mfa/enroll")
    def enroll(request: Request, claims=Depends(auth)) -> dict:
        e = mfa_enroll(get_runtime(request), mfa_user(claims), claims.subject)
        sealed[mfa_user(claims)] = e.sealed
        return {"uri": e.uri, "qr": e.qr_data_uri}

    @app.post("/mfa/verify")
    def verify(request: Request, code: str = Body(embed=True), claims=Depends(auth)) -> dict:
        d = verify_mfa_code(get_runtime(request), sealed[mfa_user(claims)], code, mfa_user(claims))
        return {"step": d.step}

    @app.get("/mfa/sensitive")
    def sensitive(claims=Depends(MFACode(lambda r, c: sealed.get(mfa_user(c)), bearer=auth))) -> dict:
        return {"ok": True}

    @app.get("/rid")
    def rid(request: Request) -> dict:
        return {"rid": request_id(request)}

    return app


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(make_app(base_config(tmp_path)), client=CLIENT) as c:
        yield c


@pytest.fixture()
def limited(tmp_path: Path) -> Iterator[TestClient]:
    """Default bucket of 5 per minute."""
    with TestClient(make_app(base_config(tmp_path, default_capacity=5)), client=CLIENT) as c:
        yield c


def rt_of(c: TestClient) -> bitsec.Runtime:
    return c.app.state.bitsec  # type: ignore[attr-defined,no-any-return]


def audit_events(c: TestClient, tmp_path: Path) -> list[dict]:
    rt_of(c).audit_flush()
    # newlines only: str.splitlines would also split inside a record at U+2028
    return [json.loads(line) for line in (tmp_path / "audit.log").read_bytes().split(b"\n") if line]


# ---- bearer ---------------------------------------------------------------------------------

def test_no_token_is_401_bearer_without_error_code(client: TestClient) -> None:
    r = client.get("/me")
    assert r.status_code == 401
    assert r.json() == {"detail": "Not authenticated"}
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="erp"'
    r = client.get("/me", headers={"Authorization": "Basic dTpw"})  # another scheme: no bearer token
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Bearer realm="erp"'


def test_valid_token_exposes_claims(client: TestClient) -> None:
    r = client.get("/me", headers=bearer(token(rt_of(client), "alice", ["manager"])))
    assert r.status_code == 200
    assert r.json() == {"sub": "alice", "roles": ["manager"]}


def test_expired_and_invalid_tokens(client: TestClient) -> None:
    rt = rt_of(client)
    r = client.get("/me", headers=bearer(token(rt, exp_in=-3600)))
    assert r.status_code == 401
    assert r.json()["detail"] == "Token has expired"
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer ")
    good = token(rt)
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for bad in (tampered, "not.a.jwt", "x" * 50):
        r = client.get("/me", headers=bearer(bad))
        assert r.status_code == 401
        assert r.json()["detail"] == "Invalid token"
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    other_aud = rt.sign_token({"sub": "u", "iss": ISS, "aud": "other", "exp": int(time.time()) + 60})
    r = client.get("/me", headers=bearer(other_aud))
    assert r.status_code == 401 and r.json()["detail"] == "Invalid token"
    r = client.get("/me", headers={"Authorization": "Bearer"})
    assert r.status_code == 400
    assert 'error="invalid_request"' in r.headers["WWW-Authenticate"]


def test_optional_auth(client: TestClient) -> None:
    assert client.get("/maybe").json() == {"sub": None}
    assert client.get("/maybe", headers=bearer(token(rt_of(client), "bob"))).json() == {"sub": "bob"}
    r = client.get("/maybe", headers=bearer("garbage.token.here"))
    assert r.status_code == 401 and r.json()["detail"] == "Invalid token"


def test_revoked_token_refused(client: TestClient) -> None:
    rt = rt_of(client)
    t = token(rt, jti="j-1")
    assert client.get("/me", headers=bearer(t)).status_code == 200
    assert rt.revoke_token(t)
    r = client.get("/me", headers=bearer(t))
    assert r.status_code == 401 and r.json()["detail"] == "Invalid token"


# ---- permissions ----------------------------------------------------------------------------

def test_permission_granted_and_denied(client: TestClient) -> None:
    rt = rt_of(client)
    viewer = bearer(token(rt, "v", ["viewer"]))
    assert client.get("/equipment", headers=viewer).status_code == 200
    r = client.put("/equipment/7", headers=viewer)
    assert r.status_code == 403
    assert r.json() == {"detail": "Insufficient permissions: equipment:update"}
    assert "WWW-Authenticate" not in r.headers
    assert client.put("/equipment/7", headers=bearer(token(rt, "o", ["operator"]))).status_code == 200
    assert client.put("/equipment/7").status_code == 401


def test_owner_and_tenant_context_from_path(client: TestClient) -> None:
    rt = rt_of(client)
    op = bearer(token(rt, "u1", ["operator"]))
    assert client.put("/tenants/t1/users/u1/records/3", headers=op).status_code == 200
    r = client.put("/tenants/t1/users/u2/records/3", headers=op)
    assert r.status_code == 403
    assert r.json()["detail"] == "Insufficient permissions: maintenance_records:update"
    assert client.put("/tenants/t2/users/u1/records/3", headers=op).status_code == 403  # other tenant
    mgr = bearer(token(rt, "m", ["manager"]))  # no owner_only condition for managers
    assert client.put("/tenants/t1/users/u2/records/3", headers=mgr).status_code == 200
    assert client.put("/tenants/t2/users/u2/records/3", headers=mgr).status_code == 403


def test_context_callable_and_security_scopes(client: TestClient) -> None:
    rt = rt_of(client)
    # Manager in sales, token scope includes reports:export: allowed.
    ok = bearer(token(rt, "m", ["manager"], department="sales", scope="reports:export reports:read"))
    assert client.get("/reports/export", headers=ok).status_code == 200
    # Same department rule: another department is denied by the policy.
    r = client.get("/reports/export?dept=finance", headers=ok)
    assert r.status_code == 403 and r.json()["detail"] == "Insufficient permissions: reports:export"
    # The route's Security scopes are not in the token: insufficient_scope.
    r = client.get("/reports/export", headers=bearer(token(rt, "m", ["manager"], department="sales", scope="reports:read")))
    assert r.status_code == 403
    assert r.json()["detail"] == "Insufficient permissions: reports:export"
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    assert 'scope="reports:export"' in r.headers["WWW-Authenticate"]
    # Roles grant it, the token's scopes do not (policy reason scope_missing).
    r = client.put("/equipment/1", headers=bearer(token(rt, "a", ["admin"], scope="equipment:read")))
    assert r.status_code == 403
    assert 'scope="equipment:update"' in r.headers["WWW-Authenticate"]
    assert client.put("/equipment/1", headers=bearer(token(rt, "a", ["admin"], scope="equipment:write"))).status_code == 200


def test_openapi_security_schemes(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["BearerAuth"] == {"type": "http", "scheme": "bearer",
                                                                  "bearerFormat": "JWT"}
    assert doc["paths"]["/me"]["get"]["security"] == [{"BearerAuth": []}]
    assert doc["paths"]["/reports/export"]["get"]["security"] == [{"BearerAuth": ["reports:export"]}]


def test_native_calls_run_off_the_event_loop(client: TestClient) -> None:
    rt = rt_of(client)
    client.get("/loop")
    client.get("/reports/export", headers=bearer(token(rt, "m", ["manager"], department="sales", scope="reports:export")))
    threads = client.app.state.threads  # type: ignore[attr-defined]
    assert threads["context"] != threads["loop"]


# ---- rate limits ----------------------------------------------------------------------------

def test_rate_limit_headers_and_429(limited: TestClient) -> None:
    seen = []
    for _ in range(5):
        r = limited.get("/maybe")
        assert r.status_code == 200
        assert r.headers["X-RateLimit-Limit"] == "5"
        seen.append(int(r.headers["X-RateLimit-Remaining"]))
        assert int(r.headers["X-RateLimit-Reset"]) >= 1
        assert "Retry-After" not in r.headers
    assert seen == [4, 3, 2, 1, 0]
    r = limited.get("/maybe")
    assert r.status_code == 429
    assert r.json() == {"detail": "Rate limit exceeded"}
    assert int(r.headers["Retry-After"]) >= 1
    assert r.headers["X-RateLimit-Limit"] == "5" and r.headers["X-RateLimit-Remaining"] == "0"
    assert "X-RateLimit-Reset" in r.headers
    # The 429 still carries the security headers and a request id.
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["X-Request-ID"]
    # Exempt path.
    assert limited.get("/health").status_code == 200
    assert "X-RateLimit-Limit" not in limited.get("/health").headers


def test_categories_by_path(client: TestClient) -> None:
    assert adr007_category("POST", "/api/v1/auth/login") == "auth"
    assert adr007_category("GET", "/artifacts/1") == "default"
    assert adr007_category("POST", "/v1/artifacts/") == "upload"
    assert adr007_category("POST", "/v1/infer") == "inference"
    assert adr007_category("GET", "/equipment") == "default"
    assert [client.post("/auth/login").status_code for _ in range(3)] == [200, 200, 429]
    assert client.post("/auth/login").headers["X-RateLimit-Limit"] == "2"
    assert [client.post("/artifacts/upload").status_code for _ in range(2)] == [200, 429]
    assert [client.post("/v1/infer").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert client.get("/maybe").headers["X-RateLimit-Remaining"] == "999"  # default bucket untouched


def test_keyed_by_user_when_authenticated(limited: TestClient) -> None:
    rt = rt_of(limited)
    a, b = bearer(token(rt, "alice")), bearer(token(rt, "bob"))
    for _ in range(5):
        assert limited.get("/maybe", headers=a).status_code == 200
    assert limited.get("/maybe", headers=a).status_code == 429
    assert limited.get("/maybe", headers=b).status_code == 200  # bob has his own bucket
    assert limited.get("/maybe").status_code == 200  # anonymous: the client IP's bucket
    # A forged token does not borrow alice's identity: it is keyed by IP (and refused).
    assert limited.get("/maybe", headers=bearer("forged.token.x")).headers["X-RateLimit-Remaining"] == "3"


def test_long_subject_and_unknown_category_are_not_500(tmp_path: Path) -> None:
    limits = {"store": "local", "categories": {"default": {"capacity": 3, "period_seconds": 60}}}
    with TestClient(make_app(base_config(tmp_path, limits=limits)), client=CLIENT) as c:
        long_sub = bearer(token(rt_of(c), "x" * 2000))
        assert c.get("/me", headers=long_sub).status_code == 200  # key hashed below 512 bytes
        # /auth/login's category "auth" is not configured: the default bucket limits it.
        assert [c.post("/auth/login").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_rate_limit_dependency(client: TestClient) -> None:
    r1, r2, r3 = (client.get("/limited") for _ in range(3))
    # /limited is also "default" for the middleware; the dependency's auth bucket (2) decides.
    assert (r1.status_code, r2.status_code, r3.status_code) == (200, 200, 429)
    assert r1.headers["X-RateLimit-Limit"] == "2" and r1.headers["X-RateLimit-Remaining"] == "1"
    assert int(r3.headers["Retry-After"]) >= 1 and r3.headers["X-RateLimit-Remaining"] == "0"


def test_x_forwarded_for_trusted_only_from_proxies(tmp_path: Path) -> None:
    cfg = base_config(tmp_path, default_capacity=5)
    app = make_app(cfg, proxies=(PROXY, "10.1.0.0/16"))
    with TestClient(app, client=(PROXY, 1234)) as c:
        for _ in range(5):
            assert c.get("/maybe", headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 200
        assert c.get("/maybe", headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 429
        # Another client behind the same proxy has its own bucket.
        assert c.get("/maybe", headers={"X-Forwarded-For": "198.51.100.2"}).status_code == 200
        # A client-supplied entry left of the real one is ignored: rightmost untrusted wins,
        # trusted proxies in the chain are skipped.
        r = c.get("/maybe", headers={"X-Forwarded-For": "1.2.3.4, 198.51.100.1, 10.1.2.3"})
        assert r.status_code == 429
    # From an untrusted peer the header is ignored: every request is the peer's.
    with TestClient(make_app(base_config(tmp_path / "x", default_capacity=5)), client=("192.0.2.9", 1)) as c:
        codes = [c.get("/maybe", headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code for i in range(6)]
        assert codes == [200] * 5 + [429]


def test_client_ip_resolver() -> None:
    r = ClientIP(["10.0.0.0/8"])
    scope = {"client": ("10.0.0.5", 1), "headers": [(b"x-forwarded-for", b"203.0.113.1, 10.0.0.9")]}
    assert r(scope) == "203.0.113.1"
    assert ClientIP()(scope) == "10.0.0.5"
    assert r({"client": ("10.0.0.5", 1), "headers": [(b"x-forwarded-for", b"junk")]}) == "10.0.0.5"
    assert r({"client": ("198.51.100.3", 1), "headers": [(b"x-forwarded-for", b"1.1.1.1")]}) == "198.51.100.3"


def test_forwarded_header_names_the_client_behind_a_proxy_that_writes_it() -> None:
    """A proxy that writes RFC 7239's ``Forwarded`` (Envoy, HAProxy, nginx configured so)
    instead of ``X-Forwarded-For``: with ``header="forwarded"`` its ``for=`` nodes name the
    client, read right to left past trusted proxies, and the other header is not read (the
    proxy passes a client's own copy of it through). Before, only ``X-Forwarded-For`` was
    read: every client behind such a proxy was the proxy (one bucket, one login-guard client,
    everyone locked out by one client's failed logins)."""
    r = ClientIP(["10.0.0.0/8"], header="forwarded")

    def client(*forwarded: str, xff: str | None = None) -> str:
        headers = [(b"forwarded", f.encode()) for f in forwarded]
        if xff is not None:
            headers.append((b"x-forwarded-for", xff.encode()))
        return r({"client": ("10.0.0.5", 1), "headers": headers})

    assert client("for=203.0.113.1;proto=https;by=10.0.0.5") == "203.0.113.1"
    assert client('For="[2001:db8:cafe::17]:4711"') == "2001:db8:cafe::17"
    assert client('for="[2001:db8::1]"', "for=10.0.0.9") == "2001:db8::1"  # (two headers: one list)
    assert client("for=198.51.100.7, for=203.0.113.1, for=10.0.0.9") == "203.0.113.1"  # rightmost untrusted
    assert client('by="a,b;c";for=198.51.100.9, for=203.0.113.2') == "203.0.113.2"
    assert client('by="x, for=203.0.113.2";for=198.51.100.9') == "198.51.100.9"  # (quoted: no split)
    assert client('for="\\[2001:db8::\\9]"') == "2001:db8::9"  # (a quoted-pair is its character)
    assert client("for=203.0.113.1", xff="198.51.100.1") == "203.0.113.1"  # X-Forwarded-For not read
    assert client(xff="198.51.100.1") == "10.0.0.5"
    # what names no address is the proxy's: unknown, obfuscated, none, garbage, too long a chain
    for sent in ("for=unknown", 'for="_hidden"', "proto=https", "", 'for="[junk"', 'for="1.2.3.4:5:6"'):
        assert client(sent) == "10.0.0.5", sent
    # A proxy may append its element to the client's own line: a line off the grammar (an
    # unterminated quoted string swallowing the proxy's element, text after a quoted string,
    # a parameter twice, an IPv6 address or a port outside quotes) names nobody, not the
    # client's pick. Before, 'for=198.51.100.1;x=", for=203.0.113.7' was 198.51.100.1.
    for forged in ('for=198.51.100.1;x=", for=203.0.113.7', 'for=198.51.100.1;x="\\", for=203.0.113.7',
                   'for=198.51.100.1;x=", for="[2001:db8::7]:4711"', 'for="198.51.100.1"x, for=203.0.113.7',
                   "for=198.51.100.1;for=198.51.100.2, for=203.0.113.7", "for=2001:db8::1, for=203.0.113.7",
                   "for=198.51.100.1:80, for=203.0.113.7", "for=198.51.100.1 x, for=203.0.113.7"):
        assert client(forged) == "10.0.0.5", forged
    assert client('for=198.51.100.1;x="', "for=203.0.113.7") == "10.0.0.5"  # (one bad line spoils the header)
    assert client("for=203.0.113.7 ;  proto=https ,for=10.0.0.9") == "203.0.113.7"  # (whitespace is fine)
    assert client("for=203.0.113.7,, for=10.0.0.9,") == "203.0.113.7"  # (empty elements are none)
    # the header's size is bounded (the parse runs on the event loop)
    assert client("for=203.0.113.7;" + "x=y;" * 2100) == "10.0.0.5"
    assert client(", ".join(["for=10.0.0.9"] * 64 + ["for=203.0.113.1"])) == "203.0.113.1"
    assert client(", ".join(["for=203.0.113.1"] + ["for=10.0.0.9"] * 64)) == "10.0.0.5"
    # from a peer that is no trusted proxy the header is ignored
    assert r({"client": ("192.0.2.9", 1), "headers": [(b"forwarded", b"for=203.0.113.1")]}) == "192.0.2.9"
    # the default reads X-Forwarded-For only; a component takes the resolver as trusted_proxies
    assert ClientIP(["10.0.0.0/8"])({"client": ("10.0.0.5", 1),
                                     "headers": [(b"forwarded", b"for=203.0.113.1")]}) == "10.0.0.5"
    assert ClientIP.of(r) is r and ClientIP.of(["10.0.0.0/8"]).header == "x-forwarded-for"
    assert RateLimit(trusted_proxies=r).client_ip is r
    with pytest.raises(ValueError):
        ClientIP(["10.0.0.0/8"], header="x-real-ip")
    with pytest.raises(TypeError):  # one string, not a list (was a ValueError about ".")
        ClientIP("10.0.0.0/8")
    assert r.state_key != ClientIP(["10.0.0.0/8"]).state_key  # (each its own answer per request)


def test_forwarded_header_keys_the_rate_limit_per_client(tmp_path: Path) -> None:
    cfg = base_config(tmp_path, default_capacity=2)
    app = make_app(cfg, proxies=ClientIP([PROXY], header="forwarded"))
    with TestClient(app, client=(PROXY, 1234)) as c:
        one = {"Forwarded": "for=198.51.100.1;proto=http"}
        assert [c.get("/maybe", headers=one).status_code for _ in range(3)] == [200, 200, 429]
        assert c.get("/maybe", headers={"Forwarded": 'for="[2001:db8::5]:80"'}).status_code == 200
        # a client's own X-Forwarded-For changes nothing: it is not the header the proxy writes
        assert c.get("/maybe", headers={**one, "X-Forwarded-For": "203.0.113.9"}).status_code == 429


def test_redis_outage_never_500(tmp_path: Path, fresh_redis: Any) -> None:
    redis = {"host": "127.0.0.1", "port": fresh_redis.port, "command_timeout_ms": 200, "connect_timeout_ms": 200}
    limits = {"store": "redis", "outage_retry_ms": 0, "categories": {
        "default": {"capacity": 5, "period_seconds": 60},  # failure_policy local (default)
        "auth": {"capacity": 2, "period_seconds": 60, "failure_policy": "deny"},
        "upload": {"capacity": 1, "period_seconds": 300, "failure_policy": "allow"},
        "inference": {"capacity": 3, "period_seconds": 60}}}
    cfg = base_config(tmp_path, limits=limits, redis=redis)
    cfg["tokens"]["revocation"] = {"backend": "redis"}
    with TestClient(make_app(cfg), client=CLIENT) as c:
        rt = rt_of(c)
        t = token(rt, "u1", jti="j-9")
        assert c.get("/me", headers=bearer(t)).status_code == 200
        assert c.get("/maybe").headers["X-RateLimit-Remaining"] == "4"  # the IP's bucket (/me took u1's)
        fresh_redis.kill()
        codes = {}
        for path, method in (("/maybe", "GET"), ("/auth/login", "POST"), ("/artifacts/upload", "POST"),
                             ("/me", "GET"), ("/limited", "GET")):
            hdrs = bearer(t) if path == "/me" else {}
            r = c.request(method, path, headers=hdrs)
            assert r.status_code != 500, (path, r.status_code, r.text)
            codes[path] = r
        assert codes["/maybe"].status_code == 200  # local policy: in-process bucket
        assert codes["/auth/login"].status_code == 429  # deny policy
        assert int(codes["/auth/login"].headers["Retry-After"]) >= 1
        assert codes["/artifacts/upload"].status_code == 200  # allow policy
        # The bearer token needs the revocation store: 503 with Retry-After, never a 500.
        assert codes["/me"].status_code == 503
        assert codes["/me"].headers["Retry-After"] == "1"
        assert codes["/me"].json() == {"detail": "Service temporarily unavailable"}
        assert codes["/limited"].status_code == 429


def test_backend_unavailable_policy_of_the_dependency(tmp_path: Path) -> None:
    """BackendUnavailableError from the library (whatever raises it) is a 503 by default,
    allowed with on_backend_error="allow"; never a 500."""
    from bitsec.fastapi import _RateLimiting

    class Down:
        def rate_limit_take(self, *a: Any, **k: Any) -> Any:
            raise bitsec.BackendUnavailableError("redis down")

        def verify_token(self, *a: Any) -> Any:
            raise bitsec.BackendUnavailableError("redis down")

    scope = {"client": CLIENT, "headers": [], "state": {}}
    assert _RateLimiting((), "deny", "bitsec").take(Down(), scope, "default", 1) == (False, {"Retry-After": "1"})
    assert _RateLimiting((), "allow", "bitsec").take(Down(), scope, "default", 1) == (True, {})
    for policy, expected in (("deny", 503), ("allow", 200)):
        app = make_app(base_config(tmp_path / policy), middleware=True, on_backend_error=policy)
        with TestClient(app, client=CLIENT) as c:
            real = app.state.bitsec
            app.state.bitsec = Down()
            try:
                r = c.get("/limited")
                assert r.status_code == expected
                if expected == 503:
                    assert r.headers["Retry-After"] == "1"
            finally:
                app.state.bitsec = real
    with pytest.raises(ValueError):
        RateLimit(on_backend_error="maybe")


# ---- audit ----------------------------------------------------------------------------------

def test_audit_events_in_the_audit_file(client: TestClient, tmp_path: Path) -> None:
    rt = rt_of(client)
    ua = {"User-Agent": "pytest-agent/1.0"}
    op = {**bearer(token(rt, "u1", ["operator"], session_id="sess-1")), **ua}
    r = client.put("/tenants/t1/users/u1/records/3", headers={**op, "X-Request-ID": "req-abc.1"})
    assert r.status_code == 200 and r.headers["X-Request-ID"] == "req-abc.1"
    r = client.put("/tenants/t1/users/u2/records/3", headers=op)
    assert r.status_code == 403
    denied_rid = r.headers["X-Request-ID"]
    r = client.get("/me", headers={**bearer(token(rt, exp_in=-3600)), **ua})
    assert r.status_code == 401
    r = client.get("/me", headers={**ua, "X-Request-ID": "bad id with spaces"})
    assert r.status_code == 401 and r.headers["X-Request-ID"] != "bad id with spaces"
    client.get("/equipment", headers=op)  # a read: not audited by the middleware
    events = [e for e in audit_events(client, tmp_path) if not e.get("automatic") and e["type"] != "audit"]
    by_rid = {e["details"]["request_id"]: e for e in events}
    e = by_rid["req-abc.1"]
    assert e["type"] == "data_access" and e["action"] == "update" and e["result"] == "success"
    assert e["actor"] == "u1" and e["tenant"] == "t1" and e["session_id"] == "sess-1"
    assert e["ip"] == CLIENT[0] and e["user_agent"] == "pytest-agent/1.0"
    # The resource is the route's template; the raw path and its parameters are in details.
    assert e["resource"] == "/tenants/{tenant}/users/{owner}/records/{rid}" and e["details"]["status"] == 200
    assert e["details"]["path"] == "/tenants/t1/users/u1/records/3"
    assert e["details"]["path_params"] == {"tenant": "t1", "owner": "u1", "rid": "3"}
    e = by_rid[denied_rid]
    assert e["type"] == "authorization" and e["subtype"] == "permission_denied" and e["result"] == "denied"
    assert e["resource"] == "maintenance_records" and e["action"] == "update"
    assert e["reason"] == "condition_failed:owner_only" and e["actor"] == "u1"
    auth = [e for e in events if e["type"] == "authentication"]
    assert [a["reason"] for a in auth] == ["expired", "missing"]
    assert all(a["subtype"] == "unauthorized" and a["result"] == "failure" and a["ip"] == CLIENT[0] for a in auth)
    assert not any(e["type"] == "data_access" and e["details"]["method"] == "GET" for e in events)
    report = bitsec.audit_verify([tmp_path / "audit.log"])
    assert report.intact and report.records >= len(events), report


def test_adversarial_claims_paths_and_headers_are_recorded_cut_down(client: TestClient, tmp_path: Path) -> None:
    """Every value the middleware puts into an event, hostile: non-ASCII, control characters,
    percent-encoded, over every limit. The event is recorded, cut by bytes at a character
    boundary by bitsec, with the route template as the resource."""
    from urllib.parse import quote
    rt = rt_of(client)
    sub = "\u00fc\x01\u2028\U0001d11e" * 200          # 2000 characters, 1 to 4 bytes each
    tenant = "t\u00e9\x7f" * 300
    sid = "s\t\u00ff" * 300
    t = token(rt, sub, ["operator"], tenant_id=tenant, session_id=sid)
    path = f"/tenants/{quote(tenant, safe='')}/users/{quote(sub, safe='')}/records/3"
    ua = "\u00e9\u00e8\t".encode("utf-8") * 400  # the server sees 2000 Latin-1 characters, 3600 bytes in UTF-8
    r = client.put(path, headers={**bearer(t), "User-Agent": ua, "X-Request-ID": "adv-1"})
    assert r.status_code == 200, r.text
    e = next(x for x in audit_events(client, tmp_path) if x.get("details", {}).get("request_id") == "adv-1")
    assert e["type"] == "data_access" and e["resource"] == "/tenants/{tenant}/users/{owner}/records/{rid}"
    assert "resource_id" not in e  # three parameters: no single resource_id
    for name, sent, limit in (("actor", sub, 256), ("tenant", tenant, 256), ("session_id", sid, 256),
                              ("user_agent", ua.decode("latin-1"), 1024)):
        assert len(e[name].encode()) <= limit and len(e[name].encode()) > limit - 4 and sent.startswith(e[name]), name
    assert {"actor", "tenant", "session_id", "user_agent"} <= set(e["truncated"])
    assert e["details"]["path_params"]["rid"] == "3"
    assert bitsec.audit_verify([tmp_path / "audit.log"]).intact


def test_request_id_created_and_visible(client: TestClient) -> None:
    r = client.get("/rid")
    assert r.json()["rid"] == r.headers["X-Request-ID"]
    assert len(r.headers["X-Request-ID"]) == 36


def test_audit_unconfigured_does_nothing(tmp_path: Path) -> None:
    with TestClient(make_app(base_config(tmp_path, audit=False)), client=CLIENT) as c:
        rt = rt_of(c)
        op = bearer(token(rt, "u1", ["operator"]))
        for _ in range(2):
            assert c.put("/tenants/t1/users/u1/records/3", headers=op).status_code == 200
            assert c.get("/me").status_code == 401
        assert c.get("/rid").headers["X-Request-ID"]
    assert not (tmp_path / "audit.log").exists()


def test_audit_of_a_failing_endpoint(tmp_path: Path) -> None:
    app = make_app(base_config(tmp_path))

    @app.delete("/boom")
    def boom() -> None:
        raise RuntimeError("bug")

    with TestClient(app, client=CLIENT, raise_server_exceptions=False) as c:
        r = c.delete("/boom", headers={"X-Request-ID": "boom-1"})
        assert r.status_code == 500
        events = [e for e in audit_events(c, tmp_path) if e["type"] == "data_access"]
    assert events[-1]["result"] == "failure" and events[-1]["action"] == "delete"
    assert events[-1]["details"] == {"request_id": "boom-1", "method": "DELETE", "path": "/boom", "status": 500}


def test_lifespan_with_open_runtime_and_inner_lifespan(tmp_path: Path) -> None:
    import contextlib

    entered = []

    @contextlib.asynccontextmanager
    async def inner(app: FastAPI) -> Any:
        entered.append(app.state.bitsec)
        yield
        entered.append("exit")

    rt = bitsec.Runtime(base_config(tmp_path, audit=False))
    app = FastAPI(lifespan=bitsec_lifespan(rt, then=inner))

    @app.get("/me")
    def me(claims=Depends(BearerAuth())) -> dict:
        return {"sub": claims.subject}

    with TestClient(app) as c:
        assert c.get("/me", headers=bearer(token(rt, "zoe"))).json() == {"sub": "zoe"}
    assert entered == [rt, "exit"]
    assert not rt.closed and not hasattr(app.state, "bitsec")  # given open: left open
    rt.close()
    with pytest.raises(bitsec.ConfigError):
        with TestClient(FastAPI(lifespan=bitsec_lifespan({"tokens": {"nope": 1}}))):
            pass


# ---- security headers -----------------------------------------------------------------------

def test_security_headers_defaults(client: TestClient) -> None:
    for r in (client.get("/health"), client.get("/me"), client.get("/nope")):
        for name, value in DEFAULT_SECURITY_HEADERS.items():
            assert r.headers[name] == value
    h = client.get("/health").headers
    assert h["X-Frame-Options"] == "DENY" and h["X-Content-Type-Options"] == "nosniff"
    assert "max-age=31536000" in h["Strict-Transport-Security"]
    assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
    assert h["Referrer-Policy"] == "strict-origin-when-cross-origin"


def test_security_headers_overridable(tmp_path: Path) -> None:
    app = make_app(base_config(tmp_path), headers={"Content-Security-Policy": "default-src 'none'",
                                                    "Strict-Transport-Security": None})

    @app.get("/framed")
    def framed() -> Any:
        from fastapi.responses import JSONResponse
        return JSONResponse({}, headers={"X-Frame-Options": "SAMEORIGIN"})

    with TestClient(app, client=CLIENT) as c:
        h = c.get("/health").headers
        assert h["Content-Security-Policy"] == "default-src 'none'"
        assert "Strict-Transport-Security" not in h
        assert h["X-Frame-Options"] == "DENY"
        assert c.get("/framed").headers.get_list("X-Frame-Options") == ["SAMEORIGIN"]  # the app's own wins


# ---- MFA ------------------------------------------------------------------------------------

def test_mfa_enrol_verify_replay_throttle(client: TestClient) -> None:
    import base64
    import urllib.parse

    rt = rt_of(client)
    h = bearer(token(rt, "carol"))
    r = client.post("/mfa/enroll", headers=h)
    assert r.status_code == 200
    body = r.json()
    assert body["uri"].startswith("otpauth://totp/") and "issuer=Bitcorp" in body["uri"]
    assert base64.b64decode(body["qr"].split(",", 1)[1]).startswith(b"\x89PNG")
    secret = urllib.parse.parse_qs(urllib.parse.urlparse(body["uri"]).query)["secret"][0]
    code = rt.totp_now(secret)
    r = client.get("/mfa/sensitive", headers=h)
    assert r.status_code == 401 and r.json() == {"detail": "MFA code required"}
    assert r.headers["WWW-Authenticate"].startswith('Bearer realm="erp", error="insufficient_user_authentication"')
    r = client.post("/mfa/verify", headers=h, json={"code": code})
    assert r.status_code == 200
    r = client.post("/mfa/verify", headers=h, json={"code": code})
    assert r.status_code == 401 and r.json()["detail"] == "MFA code already used"
    assert 'error="insufficient_user_authentication"' in r.headers["WWW-Authenticate"]
    r = client.get("/mfa/sensitive", headers={**h, "X-MFA-Code": code})
    assert r.status_code == 401 and r.json()["detail"] == "MFA code already used" and "WWW-Authenticate" in r.headers
    wrong = "000000" if code != "000000" else "111111"
    statuses = [client.post("/mfa/verify", headers=h, json={"code": wrong}).status_code for _ in range(6)]
    assert statuses[0] == 401 and statuses[-1] == 429
    r = client.post("/mfa/verify", headers=h, json={"code": wrong})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert client.get("/mfa/sensitive", headers=bearer(token(rt, "dave"))).status_code == 403  # not enrolled


def test_an_mfa_code_with_a_lone_surrogate_is_a_malformed_code(client: TestClient, tmp_path: Path) -> None:
    # JSON may carry a lone surrogate (\ud800) that no UTF-8 encodes: the code is malformed,
    # a 401 and the library's malformed_code record as for any other; it was a 500
    # (UnicodeEncodeError) with no record.
    rt = rt_of(client)
    h = bearer(token(rt, "frank"))
    assert client.post("/mfa/enroll", headers=h).status_code == 200
    for body in ('{"code": "\\ud800"}', '{"code": "12\\udc0034"}', '{"code": "123456\\ud800"}'):
        r = client.post("/mfa/verify", headers={**h, "content-type": "application/json"}, content=body)
        assert r.status_code == 401 and r.json() == {"detail": "Invalid MFA code"}, body
        assert 'error="insufficient_user_authentication"' in r.headers["WWW-Authenticate"]
    mfa = [(e["subtype"], e["reason"], e["actor"]) for e in audit_events(client, tmp_path) if e["type"] == "mfa"]
    # (the actor is the MFA user: the sub qualified by the token's tenant, mfa_user)
    assert mfa == [("totp_failed", "malformed_code", "tenant:2:t1:user:frank")] * 3


def test_mfa_helpers_direct(tmp_path: Path) -> None:
    with bitsec.Runtime(base_config(tmp_path, audit=False)) as rt:
        e = mfa_enroll(rt, "erin", "erin@example.com", qr=False)
        assert e.qr_png is None and e.qr_data_uri is None and "erin%40example.com" in e.uri or "erin@example.com" in e.uri
        from fastapi import HTTPException
        with pytest.raises(HTTPException) as ei:
            verify_mfa_code(rt, e.sealed, "123", "erin")
        assert ei.value.status_code == 401
        with pytest.raises(HTTPException) as ei:
            verify_mfa_code(rt, e.sealed, "123456", "mallory")  # sealed for another user
        assert ei.value.status_code == 401


def test_mfa_namesakes_in_two_tenants_are_two_users(tmp_path: Path) -> None:
    # MFACode verified with the token's plain sub: alice of tenant t2 and alice of tenant t1
    # shared one last step and one failure count. t2's alice, passing her own step-up, made
    # t1's alice's correct code of that step "already used" (401), and five wrong codes of
    # her own throttled t1's alice (429). mfa_user qualifies the sub with the token's tenant.
    cfg = base_config(tmp_path, audit=False)
    secrets = {"t1": bitsec.totp_generate_secret(), "t2": bitsec.totp_generate_secret()}
    auth = BearerAuth()
    app = FastAPI(lifespan=bitsec_lifespan(cfg))
    sealed: dict[str, str] = {}

    @app.get("/sensitive")
    def sensitive(claims: Any = Depends(MFACode(lambda r, c: sealed.get(mfa_user(c)), bearer=auth))) -> dict:
        return {"tenant": claims.tenant_id}

    with TestClient(app, client=CLIENT) as c:
        rt = rt_of(c)
        headers = {}
        for tenant in ("t1", "t2"):
            t = token(rt, "alice", tenant_id=tenant)
            user = mfa_user(rt.verify_token(t))
            assert user == f"tenant:2:{tenant}:user:alice"
            sealed[user] = rt.totp_seal_secret(secrets[tenant], user)
            headers[tenant] = {"Authorization": "Bearer " + t}
        now = int(time.time())
        code = {t: rt.totp_now(secrets[t], at=now) for t in secrets}
        assert c.get("/sensitive", headers={**headers["t2"], "X-MFA-Code": code["t2"]}).json() == {"tenant": "t2"}
        r = c.get("/sensitive", headers={**headers["t1"], "X-MFA-Code": code["t1"]})
        assert r.status_code == 200 and r.json() == {"tenant": "t1"}, r.text
        wrong = "000000" if "000000" not in (code["t2"], rt.totp_now(secrets["t2"], at=now + 30)) else "111111"
        for _ in range(5):
            assert c.get("/sensitive", headers={**headers["t2"], "X-MFA-Code": wrong}).status_code in (401, 429)
        r = c.get("/sensitive", headers={**headers["t1"], "X-MFA-Code": rt.totp_now(secrets["t1"], at=now + 30)})
        assert r.status_code == 200, r.text  # (the next step: this one's was just used)
    # A token without a tenant is its sub; a long qualified name is hashed to fit.
    with bitsec.Runtime(cfg) as rt:
        assert mfa_user(rt.verify_token(token(rt, "bob", tenant_id=""))) == "bob"
        # a sub without a tenant that reads as a qualified name is not one
        assert mfa_user(rt.verify_token(token(rt, "tenant:2:t1:user:alice", tenant_id=""))) == \
            "user:tenant:2:t1:user:alice"
        long = mfa_user(rt.verify_token(token(rt, "b" * 200, tenant_id="t" * 100)))
        assert long.startswith("sha256:") and len(long) == 71


# ---- a real server --------------------------------------------------------------------------

def test_real_uvicorn_server(tmp_path: Path) -> None:
    app = make_app(base_config(tmp_path, default_capacity=5))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        rt = app.state.bitsec
        base = f"http://127.0.0.1:{port}"

        async def run() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=base) as c:
                good = bearer(token(rt, "u1", ["operator"]))
                rs = await asyncio.gather(*(c.get("/me", headers=good) for _ in range(3)))
                rs.append(await c.get("/me", headers=bearer(token(rt, exp_in=-100))))
                rs.append(await c.put("/equipment/1", headers=bearer(token(rt, "v", ["viewer"]))))
                rs.append(await c.get("/me", headers=good))
                rs.append(await c.get("/me", headers=good))
                rs.append(await c.get("/me", headers=good))  # the 6th default take of u1
                return rs

        rs = asyncio.run(run())
        assert [r.status_code for r in rs[:3]] == [200, 200, 200]
        assert all(r.headers["X-RateLimit-Limit"] == "5" and r.headers["X-Frame-Options"] == "DENY" for r in rs[:3])
        assert rs[3].status_code == 401 and rs[3].json()["detail"] == "Token has expired"
        assert 'error="invalid_token"' in rs[3].headers["WWW-Authenticate"]
        assert rs[4].status_code == 403 and rs[4].json()["detail"] == "Insufficient permissions: equipment:update"
        assert rs[6].status_code == 200 and rs[7].status_code == 429 and int(rs[7].headers["Retry-After"]) >= 1
        rt.audit_flush()
        lines = [json.loads(x) for x in (tmp_path / "audit.log").read_text().splitlines()]
        mine = [e for e in lines if not e.get("automatic") and e["type"] in ("authentication", "authorization")]
        assert {e["type"] for e in mine} == {"authentication", "authorization"}
        assert all(e["ip"] == "127.0.0.1" for e in mine)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    assert not thread.is_alive()


def test_rate_limit_keys_group_ipv6_clients_by_64(tmp_path: Path) -> None:
    """Rotating addresses inside one IPv6 /64 does not buy a fresh bucket: the middleware keys
    on rt.client_key, the login guard's grouping (IPv4 stays per address)."""
    app = make_app(base_config(tmp_path))
    with TestClient(app) as c:
        statuses = [TestClient(app, client=(f"2001:db8:5:6::{i + 1:x}", 4000)).post("/auth/login").status_code
                    for i in range(3)]
        assert statuses == [200, 200, 429]  # auth: 2 a minute per client
        assert TestClient(app, client=("2001:db8:5:7::1", 4000)).post("/auth/login").status_code == 200
        ipv4 = [TestClient(app, client=(f"192.0.2.{i + 1}", 4000)).post("/auth/login").status_code for i in range(3)]
        assert ipv4 == [200, 200, 200]
        assert c.app.state.bitsec.client_key("2001:db8:5:6::99") == "2001:db8:5:6::/64"
