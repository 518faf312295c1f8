"""The reference service (examples/fastapi_service) over HTTP through TestClient: the ERP
guide's own security tests plus MFA, revocation, brute force, encrypted columns in the raw
SQLite file and the audit chain. Each test builds its own service on a fresh data directory
(embedded default, no Redis)."""
from __future__ import annotations

import sqlite3
import sys
import time
import urllib.parse
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

import bitsec

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from examples.fastapi_service import create_app, create_user  # noqa: E402

CONFIG = ROOT / "examples" / "fastapi_service" / "config.json"
API = "/api/v1"
SERIAL = "SN-PLAINTEXT-424242"


class Service:
    def __init__(self, tmp_path: Path, redis: dict | None = None) -> None:
        self.db_path = tmp_path / "service.db"
        self.redis = redis
        self.app = create_app(CONFIG, f"sqlite:///{self.db_path}", redis=redis)
        self.audit_path = self.app.state.audit_path
        for name, role in [("alice", "admin"), ("victor", "viewer"), ("otto", "operator"), ("mia", "manager")]:
            create_user(self.app, name, f"{name}-password-1", role, "fab-1")
        self.client = TestClient(self.app)

    @property
    def rt(self) -> bitsec.Runtime:
        return self.app.state.bitsec

    def login(self, user: str, password: str | None = None, **extra: Any) -> Any:
        return self.client.post(f"{API}/auth/login",
                                json={"username": user, "password": password or f"{user}-password-1", **extra})

    def token(self, user: str) -> str:
        r = self.login(user)
        assert r.status_code == 200, r.text
        return r.json()["access_token"]


def bearer(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


@pytest.fixture(params=["embedded", "redis"])
def svc(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    """Every test runs twice: the embedded default (no Redis), and with the shared real
    redis-server (a key prefix of the test's own, so no state carries over)."""
    redis = None
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        redis = {"host": "127.0.0.1", "port": server.port, "command_timeout_ms": 1000,
                 "key_prefix": f"refsvc:{uuid.uuid4().hex}:"}
    s = Service(tmp_path, redis)
    with s.client:
        if redis is not None:
            assert s.rt.describe()["sections"].get("redis") is not None
        yield s


def test_login_and_me_with_security_headers(svc: Service) -> None:
    r = svc.login("alice")
    assert r.status_code == 200
    pair = r.json()
    assert pair["token_type"] == "Bearer" and pair["refresh_token"] and pair["expires_in"] == 1800
    assert "X-RateLimit-Limit" in r.headers
    me = svc.client.get(f"{API}/auth/me", headers=bearer(pair["access_token"]))
    assert me.status_code == 200
    assert me.json() == {"username": "alice", "roles": ["admin"], "tenant_id": "fab-1", "mfa_enabled": False}
    for h in ("Content-Security-Policy", "Strict-Transport-Security", "X-Frame-Options", "X-Content-Type-Options"):
        assert h in me.headers
    assert svc.login("alice", "wrong").status_code == 401
    assert svc.client.get(f"{API}/auth/me").status_code == 401


def test_expired_token_is_401_with_expired_in_detail(svc: Service) -> None:
    now = int(time.time())
    expired = svc.rt.sign_token({"sub": "alice", "roles": ["admin"], "tenant_id": "fab-1", "jti": "x1",
                                 "iss": "https://auth.bitcorp.example", "aud": "erp-api",
                                 "iat": now - 7200, "exp": now - 3600})
    r = svc.client.get(f"{API}/auth/me", headers=bearer(expired))
    assert r.status_code == 401
    assert "expired" in r.json()["detail"].lower()
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


def test_rbac_through_http(svc: Service) -> None:
    viewer, operator, manager = svc.token("victor"), svc.token("otto"), svc.token("mia")
    r = svc.client.post(f"{API}/equipment", json={"name": "Lathe"}, headers=bearer(viewer))
    assert r.status_code == 403 and r.json()["detail"] == "Insufficient permissions: equipment:create"
    r = svc.client.post(f"{API}/equipment", json={"name": "Lathe", "cost": "1200.50"}, headers=bearer(manager))
    assert r.status_code == 201, r.text
    eid = r.json()["id"]
    assert svc.client.get(f"{API}/equipment/{eid}", headers=bearer(viewer)).status_code == 200
    assert svc.client.put(f"{API}/equipment/{eid}", json={"notes": "oiled"}, headers=bearer(operator)).status_code == 200
    assert svc.client.delete(f"{API}/equipment/{eid}", headers=bearer(manager)).status_code == 403
    assert svc.client.delete(f"{API}/equipment/{eid}", headers=bearer(svc.token("alice"))).status_code == 204
    assert svc.client.get(f"{API}/equipment/{eid}", headers=bearer(viewer)).status_code == 404


def test_sql_injection_search_keeps_users_table(svc: Service) -> None:
    admin = svc.token("alice")
    svc.client.post(f"{API}/equipment", json={"name": "Drill press"}, headers=bearer(admin))
    for q in ["' OR '1'='1", "'; DROP TABLE users; --", "%", "_"]:
        r = svc.client.get(f"{API}/equipment/search", params={"q": q}, headers=bearer(admin))
        assert r.status_code in (200, 400)
        assert r.json().get("items", []) == []  # the string is data: it matches no name
    r = svc.client.get(f"{API}/equipment/search", params={"q": "drill"}, headers=bearer(admin))
    assert [e["name"] for e in r.json()["items"]] == ["Drill press"]
    with sqlite3.connect(svc.db_path) as con:
        assert con.execute("SELECT count(*) FROM users").fetchone()[0] == 4


def test_bruteforce_blocks_after_five_failures_with_429(svc: Service) -> None:
    statuses = [svc.login("alice", "wrong").status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 401, 429]  # the 5th failure starts the block
    r = svc.login("alice")  # even the right password: the client address is blocked
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) > 0
    assert r.json()["detail"] == "Too many failed login attempts"
    if svc.redis is not None:  # the failure window and the block live in Redis
        import redis as redis_py
        client = redis_py.Redis(host="127.0.0.1", port=svc.redis["port"])
        try:
            keys = [k.decode() for k in client.keys(svc.redis["key_prefix"] + "*")]
        finally:
            client.close()
        assert any(":fw:" in k for k in keys), keys


def test_rapid_logins_hit_the_auth_rate_limit(svc: Service) -> None:
    # The ERP guide's test: 110 rapid logins, some 429 with Retry-After among the last 10
    # (ADR-007's auth category, 10 a minute per client address, before any password check).
    responses = [svc.client.post(f"{API}/auth/login", json={"username": "nobody", "password": "x"})
                 for _ in range(110)]
    last = responses[-10:]
    assert any(r.status_code == 429 for r in last)
    assert all("Retry-After" in r.headers and r.headers["X-RateLimit-Remaining"] == "0"
               for r in last if r.status_code == 429)
    assert sum(r.status_code != 429 for r in responses) <= 10


def test_tenant_isolation(svc: Service) -> None:
    create_user(svc.app, "fred", "fred-password-1", "admin", "fab-2")
    admin1, admin2 = svc.token("alice"), svc.token("fred")
    eid = svc.client.post(f"{API}/equipment", json={"name": "Oven"}, headers=bearer(admin1)).json()["id"]
    assert svc.client.get(f"{API}/equipment/{eid}", headers=bearer(admin2)).status_code == 404
    assert svc.client.put(f"{API}/equipment/{eid}", json={"name": "x"}, headers=bearer(admin2)).status_code == 404
    assert svc.client.get(f"{API}/equipment", headers=bearer(admin2)).json() == {"items": []}
    assert svc.client.get(f"{API}/equipment/search", params={"q": "Oven"}, headers=bearer(admin2)).json() == {"items": []}


def test_logout_revokes_access_and_refresh(svc: Service) -> None:
    pair = svc.login("alice").json()
    r = svc.client.post(f"{API}/auth/logout", json={"refresh_token": pair["refresh_token"]},
                        headers=bearer(pair["access_token"]))
    assert r.status_code == 204
    r = svc.client.get(f"{API}/auth/me", headers=bearer(pair["access_token"]))
    assert r.status_code == 401 and r.json()["detail"] == "Invalid token"
    assert svc.client.post(f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401


def test_refresh_issues_a_new_pair_once(svc: Service) -> None:
    pair = svc.login("victor").json()
    r = svc.client.post(f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert r.status_code == 200
    new = r.json()
    assert svc.client.get(f"{API}/auth/me", headers=bearer(new["access_token"])).status_code == 200
    # a refresh token works once; an access token is not a refresh token
    assert svc.client.post(f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401
    assert svc.client.post(f"{API}/auth/refresh", json={"refresh_token": new["access_token"]}).status_code == 401


def test_mfa_enrol_then_login_requires_a_valid_code(svc: Service) -> None:
    access = svc.token("mia")
    r = svc.client.post(f"{API}/auth/mfa/enroll", headers=bearer(access))
    assert r.status_code == 200
    uri = r.json()["provisioning_uri"]
    assert uri.startswith("otpauth://totp/")
    secret = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["secret"][0]
    assert svc.client.post(f"{API}/auth/mfa/enroll", headers=bearer(access)).status_code == 409
    with sqlite3.connect(svc.db_path) as con:
        sealed = con.execute("SELECT totp_sealed FROM users WHERE username='mia'").fetchone()[0]
    assert sealed and secret not in sealed
    r = svc.login("mia")
    assert r.status_code == 401 and r.json()["detail"] == "MFA code required"
    code = svc.rt.totp_now(secret)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert svc.login("mia", totp_code=wrong).status_code == 401
    r = svc.login("mia", totp_code=code)
    assert r.status_code == 200 and r.json()["access_token"]
    assert svc.login("mia", totp_code=code).status_code == 401  # a code is accepted once


def test_encrypted_columns_unreadable_in_raw_sqlite(svc: Service) -> None:
    admin = svc.token("alice")
    r = svc.client.post(f"{API}/equipment", json={"name": "CNC mill", "serial_number": SERIAL, "cost": "98765.43",
                                                  "notes": "calibrated by ACME"}, headers=bearer(admin))
    assert r.status_code == 201
    eid = r.json()["id"]
    got = svc.client.get(f"{API}/equipment/{eid}", headers=bearer(admin)).json()
    assert (got["serial_number"], got["cost"], got["notes"]) == (SERIAL, "98765.43", "calibrated by ACME")
    with sqlite3.connect(svc.db_path) as con:
        row = con.execute("SELECT serial_number, cost, notes FROM equipment WHERE id=?", (eid,)).fetchone()
    assert all(v and v not in (SERIAL, "98765.43", "calibrated by ACME") for v in row)
    raw = svc.db_path.read_bytes()
    for plain in (SERIAL, "98765.43", "calibrated by ACME"):
        assert plain.encode() not in raw


def test_health_metrics_and_audit_chain(tmp_path: Path) -> None:
    s = Service(tmp_path)
    with s.client:
        assert s.client.get("/health").json() == {"status": "ok"}
        admin = s.token("alice")
        s.client.post(f"{API}/equipment", json={"name": "Press"}, headers=bearer(admin))
        s.client.post(f"{API}/equipment", json={"name": "Press"}, headers=bearer(s.token("victor")))  # 403
        s.client.get(f"{API}/auth/me")  # 401
        m = s.client.get("/metrics")
        assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
        assert "authorization_" in m.text
    report = bitsec.audit_verify([s.audit_path])
    assert report.intact, report
    assert report.records >= 3
    text = s.audit_path.read_text()
    assert "permission_denied" in text and "data_access" in text
