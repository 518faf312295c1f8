"""The scripted walkthrough of ``make demo``: the reference service's security controls,
exercised over real HTTP against a running service (``serve.py``).

    python examples/fastapi_service/walkthrough.py --url http://127.0.0.1:PORT --data-dir DIR
    python examples/fastapi_service/walkthrough.py --audit --data-dir DIR   # once the service stopped

``DIR`` is the service's data directory (serve.py's ``--data-dir``): the demo users'
credentials (``users.json``), the SQLite file whose raw bytes are inspected and the audit
log. The first form needs a fresh directory (it enrols MFA for the admin of ``plant-a`` and
has that admin anonymise the manager of ``plant-a``, after a role change beyond her authority
is refused).
Each step prints what it sent and what came back; the first step whose result is not the
expected one stops the walkthrough with exit status 1 (``make demo`` then fails).

Rate limits and the brute-force block are per client IP, as in production. The walkthrough
is one client (127.0.0.1) and spends its budget of unauthenticated ``/auth/`` requests (10 a
minute: five logins, two for MFA, two refreshes) with care; requests with a bearer token
(MFA enrolment and confirmation, logout, ``/auth/me``) count against the user, not the
address. Its burst into the limit comes last. The brute-force step plays an attacker from
another loopback address (127.0.0.2), whose one-hour block leaves the first client alone;
without that address (not every system routes 127.0.0.0/8) the step is skipped and says so.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import socket
import sqlite3
import sys
import textwrap
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

API = "/api/v1"
CLIENT_IP = "127.0.0.1"
ATTACKER_IP = "127.0.0.2"
USER_AGENT = "bitsec-walkthrough/1"
TENANT, OTHER_TENANT = "plant-a", "plant-b"

#: An ADR-007 inspection (findings are encrypted at rest) and how it is closed.
INSPECTION = {"lot_id": "LOT-2026-0142", "station": "AOI-3", "defect_count": 2,
              "findings": "Solder bridge on U7 pins 3-4; lifted pad near J2"}
CLOSE = {"status": "failed"}

#: What each ERP role may do with equipment (examples/policies/erp.json), as HTTP statuses.
EXPECTED_MATRIX = {
    "viewer": {"read": 200, "create": 403, "update": 403, "delete": 403},
    "operator": {"read": 200, "create": 403, "update": 200, "delete": 403},
    "manager": {"read": 200, "create": 201, "update": 200, "delete": 403},
    "admin": {"read": 200, "create": 201, "update": 200, "delete": 204},
}

#: The encrypted record: serial number, cost and notes are bitsec field tokens at rest.
RECORD = {"name": "CNC mill M-7", "serial_number": "SN-7731-XK-2026", "cost": "48250.75",
          "notes": "Spindle bearings replaced in March; next service due in Q3"}
ENCRYPTED_COLUMNS = ("serial_number", "cost", "notes")


class StepFailed(Exception):
    pass


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise StepFailed(what)


_current_step = "start"


def step(title: str) -> None:
    global _current_step
    _current_step = title
    print(f"\n-- {title}", flush=True)


def say(text: str = "") -> None:
    print(f"   {text}", flush=True)


def short(s: str, n: int = 24) -> str:
    return s if len(s) <= n else s[:n] + "…"


def body(r: httpx.Response, limit: int = 110) -> str:
    """The response body, compact: JSON on one line, cut at ``limit`` characters."""
    if not r.content:
        return ""
    try:
        text = json.dumps(r.json(), separators=(", ", ": "))
    except ValueError:
        text = r.text
    return short(text, limit)


def body_of(doc: Any, limit: int = 110) -> str:
    return short(json.dumps(doc, separators=(", ", ": ")), limit)


def show(r: httpx.Response, *headers: str) -> str:
    """``<status> <body>`` plus the named headers."""
    out = f"{r.status_code} {body(r)}".rstrip()
    extra = [f"{h}: {r.headers[h]}" for h in headers if h in r.headers]
    return out + (" | " + ", ".join(extra) if extra else "")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def totp_period(uri: str) -> int:
    return int(urllib.parse.parse_qs(urllib.parse.urlparse(uri).query).get("period", ["30"])[0])


def totp_code(uri: str, at: float | None = None) -> str:
    """The code of an ``otpauth://totp/`` URI at ``at`` (default: now), computed as an
    authenticator app does (RFC 6238 over RFC 4226, stdlib only): the service is checked
    against an independent implementation, not against bitsec itself."""
    q = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)
    secret = q["secret"][0].upper()
    digits = int(q.get("digits", ["6"])[0])
    period = int(q.get("period", ["30"])[0])
    digest = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}[
        q.get("algorithm", ["SHA1"])[0].upper()]
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    counter = int((time.time() if at is None else at) // period)
    mac = hmac.new(key, counter.to_bytes(8, "big"), digest).digest()
    offset = mac[-1] & 0x0F
    value = (int.from_bytes(mac[offset:offset + 4], "big") & 0x7FFFFFFF) % 10 ** digits
    return f"{value:0{digits}d}"


def all_keys(doc: Any) -> set[str]:
    """Every member name in a JSON document, at any depth."""
    if isinstance(doc, dict):
        return set(doc) | {k for v in doc.values() for k in all_keys(v)}
    if isinstance(doc, list):
        return {k for v in doc for k in all_keys(v)}
    return set()


def token_payload(token: str) -> dict[str, Any]:
    """The claims of a token the service returned, decoded for display only (the service
    verifies tokens; the walkthrough just shows what is inside)."""
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # type: ignore[no-any-return]


def roles_of(u: dict[str, Any]) -> list[str]:
    return list(u["roles"]) if "roles" in u else str(u["role"]).split()


def can_bind(address: str) -> bool:
    with socket.socket() as s:
        try:
            s.bind((address, 0))
            return True
        except OSError:
            return False


class Walkthrough:
    def __init__(self, url: str, data_dir: Path) -> None:
        self.url = url.rstrip("/")
        self.data_dir = data_dir
        users_file = data_dir / "users.json"
        expect(users_file.exists(), f"{users_file} not found: is --data-dir the service's data directory?")
        self.users: list[dict[str, str]] = json.loads(users_file.read_text())
        self.client = self._client(CLIENT_IP)
        self.tokens: dict[str, dict[str, Any]] = {}
        self.denied: httpx.Response | None = None

    def _client(self, local_address: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, headers={"User-Agent": USER_AGENT},
                            transport=httpx.HTTPTransport(local_address=local_address))

    def user(self, role: str, tenant: str = TENANT) -> dict[str, Any]:
        for u in self.users:
            if role in roles_of(u) and u["tenant_id"] == tenant:
                return u
        raise StepFailed(f"users.json has no {role} of {tenant}: run serve.py on a fresh data directory")

    def bearer_of(self, role: str, tenant: str = TENANT) -> dict[str, str]:
        return bearer(self.tokens[self.user(role, tenant)["username"]]["access_token"])

    def login(self, u: dict[str, Any], client: httpx.Client | None = None, password: str | None = None,
              **extra: Any) -> httpx.Response:
        return (client or self.client).post(f"{API}/auth/login", json={
            "username": u["username"], "password": u["password"] if password is None else password, **extra})

    # ---- the steps ----

    def run(self) -> None:
        self.health()
        self.logins()
        self.mfa()
        self.rbac()
        eid = self.encrypted_record()
        self.raw_database(eid)
        self.tenant_isolation(eid)
        self.inspections()
        self.adr007_records()
        self.input_rules()
        self.cors()
        self.web_ui()
        self.signing_keys()
        self.refresh_and_logout()
        self.gdpr(eid)
        self.brute_force()
        self.login_burst()
        self.metrics()

    def health(self) -> None:
        step(f"the service at {self.url}: health and security headers")
        r = self.client.get("/health")
        expect(r.status_code == 200 and r.json() == {"status": "ok"}, f"GET /health: {show(r)}")
        say(f"GET /health -> {show(r)}")
        wanted = ["Content-Security-Policy", "Strict-Transport-Security", "X-Frame-Options",
                  "X-Content-Type-Options", "Referrer-Policy"]
        missing = [h for h in wanted if h not in r.headers]
        expect(not missing, f"security headers missing: {missing}")
        say(f"headers: X-Frame-Options: {r.headers['X-Frame-Options']}, "
            f"Strict-Transport-Security: {r.headers['Strict-Transport-Security']}, CSP, nosniff, Referrer-Policy")
        r = self.client.get(f"{API}/equipment")
        expect(r.status_code == 401 and r.headers.get("WWW-Authenticate", "").startswith("Bearer"),
               f"GET /equipment without a token: {show(r)}")
        say(f"GET {API}/equipment without a token -> {show(r, 'WWW-Authenticate')}")

    def logins(self) -> None:
        step("log in with a password (scrypt hash in the database): one user per ERP role, two with an ADR-007 role "
             "too, one of another tenant")
        width = max(len(" + ".join(roles_of(u))) for u in self.users)
        for i, u in enumerate(self.users):
            r = self.login(u)
            expect(r.status_code == 200 and r.json().get("token_type") == "Bearer",
                   f"login of {u['username']}: {show(r)}")
            pair = r.json()
            self.tokens[u["username"]] = pair
            claims = token_payload(pair["access_token"])
            expect(str(claims.get("sub", "")).isdigit() and claims.get("roles") == roles_of(u)
                   and claims.get("tenant_id") == u["tenant_id"], f"the token of {u['username']}: claims {claims}")
            say(f"{u['username']:<6} {u['tenant_id']}  {' + '.join(roles_of(u)):<{width}}  -> 200 sub={claims['sub']} "
                f"(access {pair['expires_in'] // 60} min + refresh)")
            if i == 0:
                expect("X-RateLimit-Limit" in r.headers, "no X-RateLimit-* headers on an allowed login")
                first_headers = (f"X-RateLimit-Limit: {r.headers['X-RateLimit-Limit']}, "
                                 f"X-RateLimit-Remaining: {r.headers['X-RateLimit-Remaining']}")
        say(f"tokens carry the numeric user id as sub, not the username; first login's headers: {first_headers}")

    def mfa(self) -> None:
        admin = self.user("admin")
        name = admin["username"]
        step(f"MFA: {name} (admin) enrols TOTP, confirms it with a code, then logs in with password + code")
        token = self.tokens[name]["access_token"]
        me = self.client.get(f"{API}/auth/me", headers=bearer(token))
        expect(me.status_code == 200, f"GET /auth/me: {show(me)}")
        expect(not me.json()["mfa_enabled"],
               f"{name} already has MFA enrolled: run the walkthrough against a fresh data directory "
               "(make demo wipes build/fastapi_service)")
        r = self.client.post(f"{API}/auth/mfa/enroll", headers=bearer(token))
        expect(r.status_code == 200 and r.json().get("provisioning_uri", "").startswith("otpauth://totp/"),
               f"POST /auth/mfa/enroll: {show(r)}")
        uri = r.json()["provisioning_uri"]
        shown = urllib.parse.urlparse(uri)
        masked = "&".join("secret=<" + str(len(v)) + " base32 chars>" if k == "secret" else f"{k}={v}"
                          for k, v in urllib.parse.parse_qsl(shown.query))
        say(f"POST {API}/auth/mfa/enroll -> 200 {shown.scheme}://{shown.netloc}{shown.path}?{masked}")
        say("(pending: the database keeps only bitsec's sealed secret; the URI is shown once, for the app)")
        # Codes are computed from the URI (RFC 6238 with hmac + hashlib), as an authenticator
        # app would. The confirming code uses its time step (replay protection); bitsec accepts
        # one step either side (totp.window 1, docs/configuration.md), so the login uses the
        # code of the step after it at once instead of waiting up to 30 s for that step to come.
        confirmed_at = time.time()
        code = totp_code(uri, confirmed_at)
        r = self.client.post(f"{API}/auth/mfa/confirm", json={"code": code}, headers=bearer(token))
        expect(r.status_code == 200 and r.json() == {"mfa_enabled": True}, f"POST /auth/mfa/confirm: {show(r)}")
        say(f"POST {API}/auth/mfa/confirm {{\"code\": \"{code}\"}} -> {show(r)}")
        r = self.login(admin)
        expect(r.status_code == 401 and r.json().get("detail") == "MFA code required",
               f"login with the password alone after confirmation: {show(r)}")
        say(f"password alone          -> {show(r)}")
        later = totp_code(uri, confirmed_at + totp_period(uri))
        expect(later != code, "the next step's code equals the confirming one (1 in a million): run again")
        r = self.login(admin, totp_code=later)
        expect(r.status_code == 200, f"login with password + the next step's TOTP code: {show(r)}")
        self.tokens[name] = r.json()
        say(f"password + code {later}  -> 200 (the next time step's code: the confirming step {code} "
            "is used up)")
        me = self.client.get(f"{API}/auth/me", headers=bearer(self.tokens[name]["access_token"]))
        expect(me.status_code == 200 and me.json()["mfa_enabled"] is True, f"GET /auth/me after MFA: {show(me)}")
        say(f"GET {API}/auth/me -> {show(me)}")

    def rbac(self) -> None:
        step("RBAC: each ERP role calls the equipment API (policy.json, the roles of examples/policies/erp.json)")
        admin = self.tokens[self.user("admin")["username"]]["access_token"]
        r = self.client.post(f"{API}/equipment", json={"name": "Matrix target"}, headers=bearer(admin))
        expect(r.status_code == 201, f"admin creates the target record: {show(r)}")
        target = r.json()["id"]
        say(f"target: equipment {target}, created by the admin; each role tries read, create, update, delete")
        say(f"{'':<17}{'GET list':<10}{'POST':<8}{'PUT':<8}DELETE /equipment/{target}")
        for role in ("viewer", "operator", "manager", "admin"):
            u = self.user(role)
            h = bearer(self.tokens[u["username"]]["access_token"])
            got = {
                "read": self.client.get(f"{API}/equipment", headers=h),
                "create": self.client.post(f"{API}/equipment", json={"name": f"Press ({role})"}, headers=h),
                "update": self.client.put(f"{API}/equipment/{target}", json={"notes": f"checked by {role}"}, headers=h),
                "delete": self.client.delete(f"{API}/equipment/{target}", headers=h),
            }
            codes = {k: v.status_code for k, v in got.items()}
            say(f"{u['username'] + ' (' + role + ')':<17}{codes['read']:<10}{codes['create']:<8}{codes['update']:<8}"
                f"{codes['delete']}")
            for action, expected in EXPECTED_MATRIX[role].items():
                expect(codes[action] == expected,
                       f"{role} {action}: expected {expected}, got {show(got[action])}")
            if role == "viewer":
                self.denied = got["create"]
        assert self.denied is not None
        expect(self.denied.json().get("detail") == "Insufficient permissions: equipment:create",
               f"the 403's detail: {show(self.denied)}")
        say(f"a 403 in full: viewer POST {API}/equipment -> {show(self.denied)}")

    def encrypted_record(self) -> int:
        step("field encryption: a manager stores a record with serial number, cost and notes; a viewer reads it")
        manager = self.tokens[self.user("manager")["username"]]["access_token"]
        viewer = self.tokens[self.user("viewer")["username"]]["access_token"]
        r = self.client.post(f"{API}/equipment", json=RECORD, headers=bearer(manager))
        expect(r.status_code == 201, f"POST /equipment: {show(r)}")
        eid = int(r.json()["id"])
        say(f"POST {API}/equipment {json.dumps(RECORD)[:70]}… -> 201 id {eid}")
        r = self.client.get(f"{API}/equipment/{eid}", headers=bearer(viewer))
        expect(r.status_code == 200, f"GET /equipment/{eid}: {show(r)}")
        back = r.json()
        for col in ("name",) + ENCRYPTED_COLUMNS:
            expect(back.get(col) == RECORD[col], f"{col} read back as {back.get(col)!r}, stored {RECORD[col]!r}")
        say(f"GET {API}/equipment/{eid} -> 200 serial_number={back['serial_number']!r} cost={back['cost']!r}")
        say(f"{'':<{len(API) + 20}}notes={back['notes']!r}")
        return eid

    def raw_database(self, eid: int) -> None:
        db = self.data_dir / "service.db"
        step(f"the same row in the raw SQLite file ({db.name}, read with sqlite3, no bitsec)")
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT name, serial_number, cost, notes FROM equipment WHERE id = ?", (eid,)).fetchone()
        finally:
            conn.close()
        expect(row is not None, f"equipment {eid} not in {db}")
        name, *cipher = row
        say(f"{'name':<14} {name!r}  (clear: searched with a bound LIKE parameter)")
        for col, value in zip(ENCRYPTED_COLUMNS, cipher):
            expect(isinstance(value, str) and value != RECORD[col] and RECORD[col] not in value,
                   f"{col} is stored in clear: {value!r}")
            say(f"{col:<14} {short(value, 46)} ({len(value)} chars)")
        raw = b"".join(p.read_bytes() for p in sorted(self.data_dir.glob("service.db*")))
        for col in ENCRYPTED_COLUMNS:
            expect(RECORD[col].encode() not in raw, f"the plaintext of {col} is in the database file")
        expect(RECORD["name"].encode() in raw, "the clear name not found in the database file: wrong file?")
        say(f"the plaintexts {RECORD['serial_number']!r}, {RECORD['cost']!r}, notes: nowhere in the file's "
            f"{len(raw)} bytes")

    def tenant_isolation(self, eid: int) -> None:
        other = self.user("admin", OTHER_TENANT)
        step(f"tenant isolation: {other['username']}, admin of {OTHER_TENANT}, looks for {TENANT}'s record")
        h = bearer(self.tokens[other["username"]]["access_token"])
        r = self.client.get(f"{API}/equipment/{eid}", headers=h)
        expect(r.status_code == 404, f"another tenant's GET /equipment/{eid}: {show(r)}")
        say(f"GET {API}/equipment/{eid} -> {show(r)}")
        r = self.client.get(f"{API}/equipment/search", params={"q": "CNC"}, headers=h)
        expect(r.status_code == 200 and r.json()["items"] == [], f"another tenant's search: {show(r)}")
        say(f"GET {API}/equipment/search?q=CNC -> {show(r)}")

    def inspections(self) -> None:
        qe, op = self.user("inspection.quality_engineer"), self.user("inspection.operator")
        step(f"ADR-007 inspections (/v1/inspections): {qe['username']} is also inspection.quality_engineer, "
             f"{op['username']} inspection.operator")
        h_qe, h_op, h_viewer = (self.bearer_of("inspection.quality_engineer"), self.bearer_of("inspection.operator"),
                                self.bearer_of("viewer"))
        r = self.client.post("/v1/inspections", json=INSPECTION, headers=h_qe)
        expect(r.status_code == 201 and r.json().get("status") == "open"
               and r.json().get("findings") == INSPECTION["findings"], f"POST /v1/inspections: {show(r)}")
        iid = int(r.json()["id"])
        say(f"{qe['username']:<5} POST /v1/inspections {{lot {INSPECTION['lot_id']}, {INSPECTION['defect_count']} defects, "
            f"findings}} -> 201 id {iid}, status open")
        r = self.client.put(f"/v1/inspections/{iid}", json=CLOSE, headers=h_op)
        expect(r.status_code == 403 and r.json().get("detail") == "Insufficient permissions: inspections:update",
               f"an inspection.operator closes an inspection: {show(r)}")
        say(f"{op['username']:<5} PUT /v1/inspections/{iid} {json.dumps(CLOSE)} -> {show(r)}")
        r = self.client.get("/v1/inspections", headers=h_viewer)
        expect(r.status_code == 403 and r.json().get("detail") == "Insufficient permissions: inspections:read",
               f"an ERP viewer lists inspections: {show(r)}")
        say(f"{self.user('viewer')['username']:<5} GET /v1/inspections -> {show(r)} (ERP roles do not reach ADR-007's)")
        r = self.client.put(f"/v1/inspections/{iid}", json=CLOSE, headers=h_qe)
        expect(r.status_code == 200 and r.json().get("status") == CLOSE["status"] and r.json().get("closed_at"),
               f"the quality engineer closes the inspection: {show(r)}")
        say(f"{qe['username']:<5} PUT /v1/inspections/{iid} {json.dumps(CLOSE)} -> 200 status "
            f"{r.json()['status']}, closed_at {r.json()['closed_at']}")
        r = self.client.put(f"/v1/inspections/{iid}", json={"defect_count": 0}, headers=h_qe)
        expect(r.status_code == 409, f"editing a closed inspection: {show(r)}")
        say(f"{qe['username']:<5} PUT /v1/inspections/{iid} {{\"defect_count\": 0}} -> {show(r)}")
        raw = b"".join(p.read_bytes() for p in sorted(self.data_dir.glob("service.db*")))
        expect(INSPECTION["findings"].encode() not in raw and INSPECTION["lot_id"].encode() in raw,
               "the inspection's findings are in clear in the database file")
        say("the findings are a bitsec field token in service.db (the lot id is clear)")

    def adr007_records(self) -> None:
        ada = self.user("inspection.admin")
        h = bearer(self.tokens[ada["username"]]["access_token"])
        step(f"ADR-007 defects, reports, artifacts, inference: {ada['username']} (inspection.admin)")
        r = self.client.post("/v1/inspections", json={"lot_id": "LOT-2026-0042", "station": "AOI-3"}, headers=h)
        expect(r.status_code == 201, f"POST /v1/inspections: {show(r)}")
        iid = r.json()["id"]
        r = self.client.post("/v1/defects", json={"inspection_id": iid, "defect_type": "solder_bridge",
                                                  "severity": "high", "description": "U7 pins 3-4"}, headers=h)
        expect(r.status_code == 201, f"POST /v1/defects: {show(r)}")
        say(f"POST /v1/defects (inspection {iid}) -> 201 {body(r, 90)}")
        r = self.client.post("/v1/reports", json={"title": "Lot 42", "inspection_ids": [iid]}, headers=h)
        expect(r.status_code == 201 and r.json()["summary"]["defects_by_severity"] == {"high": 1}, f"report: {show(r)}")
        say(f"POST /v1/reports -> 201 summary {body_of(r.json()['summary'], 100)}")
        png = b"\x89PNG\r\n\x1a\n" + bytes(64)
        r = self.client.post("/v1/artifacts", files={"file": ("../../die 7.png", png, "image/png")},
                             data={"inspection_id": str(iid)}, headers=h)
        expect(r.status_code == 201, f"upload: {show(r)}")
        art = r.json()
        stored = [p.name for p in (self.data_dir / "artifacts").iterdir() if not p.name.startswith(".")]
        say(f"POST /v1/artifacts (multipart, 'die 7.png') -> 201 size {art['size']}, stored as artifacts/{stored[0]}")
        d = self.client.get(art["download"], headers=h)
        expect(d.status_code == 200 and d.content == png, f"download: {show(d)}")
        say(f"GET {art['download']} -> 200 {d.headers['content-type']}, {d.headers['content-disposition']}")
        r = self.client.post("/v1/artifacts", files={"file": ("x.png", b"<svg onload=alert(1)>", "image/png")},
                             headers=h)
        expect(r.status_code == 415, f"a disguised upload: {show(r)}")
        say(f"an SVG declared image/png -> {show(r)}")
        viewer = self.bearer_of("viewer")
        r = self.client.get(art["download"], headers=viewer)
        expect(r.status_code == 403, f"download as a viewer: {show(r)}")
        say(f"the same download as a viewer (no artifacts:read) -> {show(r)}")
        a = self.client.post("/v1/infer", json={"features": [0.12, 3.4, 0.7]}, headers=h)
        b = self.client.post("/v1/infer", json={"features": [0.12, 3.4, 0.7]}, headers=h)
        expect(a.status_code == 200 and a.json() == b.json(), f"/v1/infer: {show(a)} / {show(b)}")
        say(f"POST /v1/infer twice -> {body(a)} (deterministic; rate category inference: "
            f"X-RateLimit-Limit {a.headers.get('X-RateLimit-Limit')})")

    def input_rules(self) -> None:
        h = self.bearer_of("manager")
        step("input rules: the ERP guide's validation, unknown members refused (422, the value not echoed)")
        for doc in ({"name": "<script>alert(1)</script>"}, {"name": "Lathe", "serial_number": "sn-123"},
                    {"name": "Lathe", "cost": -5}, {"name": "Lathe", "tenant_id": OTHER_TENANT}):
            r = self.client.post(f"{API}/equipment", json=doc, headers=h)
            expect(r.status_code == 422 and "<script>" not in r.text, f"POST {doc}: {show(r)}")
            say(f"POST {API}/equipment {body_of(doc, 50):<52} -> 422 {r.json()['detail'][0]['type']}")

    def cors(self) -> None:
        step("CORS: the allow-list of config.json (service.cors)")
        for origin in ("https://erp.bitcorp.example", "https://evil.example"):
            r = self.client.options(f"{API}/equipment", headers={"Origin": origin,
                                                                 "Access-Control-Request-Method": "POST"})
            allowed = r.headers.get("access-control-allow-origin")
            expect((r.status_code, allowed) == ((200, origin) if "bitcorp" in origin else (400, None)),
                   f"preflight from {origin}: {show(r)}")
            say(f"preflight from {origin:<28} -> {r.status_code} Access-Control-Allow-Origin: {allowed or '(none)'}"
                f", credentials: {r.headers.get('access-control-allow-credentials', '(none)')}")

    def web_ui(self) -> None:
        u = self.user("manager")
        step("the web UI at /ui/: a server-side session in a cookie, CSRF tokens, no inline script")
        r = self.client.get("/ui/")
        expect(r.status_code == 200 and '<script src="/ui/static/app.js"' in r.text and "<script>" not in r.text,
               f"GET /ui/: {show(r)}")
        say(f"GET /ui/ -> 200, one script file and no inline script under CSP "
            f"{r.headers['content-security-policy'].split(';')[0]}; ...")
        creds = {"username": u["username"], "password": u["password"]}
        r = self.client.post("/ui/login", json=creds, headers={"Origin": "https://evil.example"})
        expect(r.status_code == 403 and r.json()["detail"] == "origin_not_allowed", f"UI login from another origin: {show(r)}")
        say(f"POST /ui/login from Origin https://evil.example -> {show(r)}")
        same = {"Sec-Fetch-Site": "same-origin"}  # what a browser sends for the page's own requests
        r = self.client.post("/ui/login", json=creds, headers=same)
        expect(r.status_code == 200 and r.json().get("csrf_token"), f"UI login: {show(r)}")
        token = r.json()["csrf_token"]
        set_cookie = r.headers["set-cookie"]
        flags = [f for f in ("HttpOnly", "Secure", "SameSite=strict", "Path=/") if f.lower() in set_cookie.lower()]
        expect(set_cookie.startswith("__Host-session=") and len(flags) == 4, f"the session cookie: {set_cookie}")
        say(f"POST /ui/login -> 200; Set-Cookie: __Host-session=...; {'; '.join(flags)}")
        cookie = {"Cookie": set_cookie.split(";", 1)[0]}
        self.client.cookies.clear()  # sent by hand: the client keeps Secure cookies for https only
        doc = {"name": "Walkthrough press", "notes": "<script>alert(1)</script> stays text in the page"}
        r = self.client.post("/ui/equipment", json=doc, headers={**same, **cookie})
        expect(r.status_code == 403 and r.json()["detail"] == "csrf_token_missing", f"UI create without CSRF: {show(r)}")
        say(f"POST /ui/equipment with the cookie, without X-CSRF-Token -> {show(r)}")
        r = self.client.post("/ui/equipment", json=doc, headers={**same, **cookie, "X-CSRF-Token": token})
        expect(r.status_code == 201, f"UI create: {show(r)}")
        say(f"... with the session's X-CSRF-Token -> 201 (notes stored as written; the page inserts them as text)")
        r = self.client.post("/ui/logout", headers={**same, **cookie, "X-CSRF-Token": token})
        expect(r.status_code == 204, f"UI logout: {show(r)}")
        r = self.client.get("/ui/equipment", headers=cookie)
        expect(r.status_code == 401, f"the cookie after logout: {show(r)}")
        say(f"POST /ui/logout -> 204; the same cookie afterwards -> {r.status_code} (the session ended on the server)")

    def signing_keys(self) -> None:
        step("tokens: RS256, public keys at /.well-known/jwks.json (two keys: rotation)")
        r = self.client.get("/.well-known/jwks.json")
        expect(r.status_code == 200 and len(r.json()["keys"]) == 2, f"JWKS: {show(r)}")
        keys = r.json()["keys"]
        expect(all("d" not in k for k in keys), "a private member in the JWKS")
        token = self.tokens[self.user("viewer")["username"]]["access_token"]
        head = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=" * (-len(token.split(".")[0]) % 4)))
        expect(head.get("alg") == "RS256" and head.get("kid") in {k["kid"] for k in keys}, f"token header {head}")
        say(f"token header {body_of(head)}; JWKS: " + ", ".join(f"{k['kid']} ({k['kty']} {k['alg']}, "
                                                                f"n {len(k['n']) * 6 // 8 * 8} bits)" for k in keys))

    def refresh_and_logout(self) -> None:
        u = self.user("operator")
        name = u["username"]
        step(f"refresh and logout ({name})")
        old = self.tokens[name]
        r = self.client.post(f"{API}/auth/refresh", json={"refresh_token": old["refresh_token"]})
        expect(r.status_code == 200 and r.json()["access_token"] != old["access_token"], f"refresh: {show(r)}")
        new = r.json()
        say(f"POST {API}/auth/refresh -> 200 new pair, access {short(new['access_token'], 16)}")
        h = bearer(new["access_token"])
        expect(self.client.get(f"{API}/equipment", headers=h).status_code == 200, "the refreshed access token")
        r = self.client.post(f"{API}/auth/refresh", json={"refresh_token": old["refresh_token"]})
        expect(r.status_code == 401, f"the same refresh token a second time: {show(r)}")
        say(f"the same refresh token again -> {show(r)} (a replay)")
        r = self.client.get(f"{API}/equipment", headers=h)
        expect(r.status_code == 401, f"the refreshed pair after a replay: {show(r)}")
        say(f"a replay ends the whole session: the refreshed access token -> {r.status_code} "
            "(and a RefreshTokenReplay alert, when a webhook is configured)")
        r = self.login(u)
        expect(r.status_code == 200, f"login of {name} again: {show(r)}")
        new = r.json()
        self.tokens[name] = new
        h = bearer(new["access_token"])
        r = self.client.post(f"{API}/auth/logout", json={"refresh_token": new["refresh_token"]}, headers=h)
        expect(r.status_code == 204, f"logout: {show(r)}")
        say(f"POST {API}/auth/logout (access + refresh token) -> 204; the session revoked (all its tokens)")
        r = self.client.get(f"{API}/equipment", headers=h)
        expect(r.status_code == 401 and r.json().get("detail") == "Invalid token"
               and 'error="invalid_token"' in r.headers.get("WWW-Authenticate", ""),
               f"the logged-out access token: {show(r)}")
        say(f"GET {API}/equipment with the old access token -> {show(r, 'WWW-Authenticate')}")

    def gdpr(self, eid: int) -> None:
        subject = self.user("manager")
        admin = self.user("admin")
        name = subject["username"]
        step(f"GDPR: {name} exports her own data; {admin['username']} (admin) anonymises {name}; "
             "authority over other users")
        h = self.bearer_of("manager")
        r = self.client.get(f"{API}/privacy/export", headers=h)
        expect(r.status_code == 200 and r.headers.get("Cache-Control") == "no-store"
               and r.headers.get("Content-Disposition", "").startswith("attachment"), f"GET /privacy/export: {show(r)}")
        doc = r.json()
        expect(doc.get("format") == "bitsec-reference-service/gdpr-export/1", f"the export's format: {doc.get('format')}")
        person = doc["user"]
        expect(person["username"] == name and person["email"] == subject.get("email")
               and person["roles"] == roles_of(subject) and person["full_name"],
               f"the export's user part: {person}")
        mine = {e["id"]: e for e in doc["equipment"]}
        expect(eid in mine and mine[eid].get("serial_number") == RECORD["serial_number"],
               f"equipment {eid} (created by {name}) missing or not decrypted in the export: {doc['equipment']}")
        expect(any(i.get("findings") == INSPECTION["findings"] for i in doc["inspections"]),
               f"the inspection created by {name} missing from the export: {doc['inspections']}")
        expect(doc["sessions"] and doc["audit_events"], "the export has no sessions or no audit events")
        text = r.text
        leaked = sorted(all_keys(doc) & {"password", "password_hash", "totp_sealed", "totp_pending", "jti",
                                         "access_token", "refresh_token"})
        leaked += [what for what, value in (("the password", subject["password"]), ("a password hash", "scrypt$"),
                                             ("the access token", self.tokens[name]["access_token"]),
                                             ("the refresh token", self.tokens[name]["refresh_token"]))
                   if value in text]
        expect(not leaked, f"the export contains {leaked}")
        say(f"GET {API}/privacy/export -> 200 attachment ({r.headers['Content-Disposition'].split('filename=')[1]}), "
            f"no-store, {len(r.content)} bytes:")
        say(f'  "user": {body_of({k: person[k] for k in ("id", "username", "email", "full_name", "phone")}, 130)}')
        say(f'          roles {person["roles"]}, tenant {person["tenant_id"]}, mfa_enabled {person["mfa_enabled"]}')
        say(f'  "equipment": {len(doc["equipment"])} records she created (serial number, cost, notes decrypted), '
            f'"inspections": {len(doc["inspections"])}')
        say(f'  "sessions": {len(doc["sessions"])} (start, expiry, IP, user agent), "audit_events": '
            f'{len(doc["audit_events"])} (her own, e.g. {doc["audit_events"][0].get("type")}/'
            f'{doc["audit_events"][0].get("subtype")})')
        say("  never exported: password hash, TOTP secret, tokens and their jti")
        uid = int(person["id"])
        # Authority: an action on another user needs the target's effective permissions (and,
        # for a role change, the new roles') to be a strict subset of the actor's.
        vera = self.user("viewer")
        vera_id = int(token_payload(self.tokens[vera["username"]]["access_token"])["sub"])
        r = self.client.put(f"{API}/users/{vera_id}/roles", json={"roles": ["super_admin"]},
                            headers=self.bearer_of("admin"))
        expect(r.status_code == 403 and "Insufficient authority" in r.json().get("detail", ""),
               f"the admin makes a viewer super_admin: {show(r)}")
        say(f"{admin['username']}: PUT {API}/users/{vera_id}/roles {{\"roles\": [\"super_admin\"]}} -> {show(r)}")
        say(f"(refused and audited: nobody grants more than they hold; {name}'s roles, "
            f"{' + '.join(roles_of(subject))}, are below {admin['username']}'s, {' + '.join(roles_of(admin))})")
        r = self.client.post(f"{API}/users/{uid}/anonymize", headers=self.bearer_of("admin"))
        expect(r.status_code == 200 and r.json().get("anonymized") is True and r.json().get("tokens_revoked", 0) >= 2,
               f"the admin anonymises user {uid}: {show(r)}")
        say(f"{admin['username']}: POST {API}/users/{uid}/anonymize -> {show(r)}")
        # Not an /auth/ path: a refused token is keyed by the client address, and 127.0.0.1's
        # auth budget is kept for the burst at the end.
        r = self.client.get("/v1/inspections", headers=h)
        expect(r.status_code == 401 and r.json().get("detail") == "Invalid token", f"{name}'s token afterwards: {show(r)}")
        say(f"{name}'s access token, valid a moment ago: GET /v1/inspections -> {show(r)}")
        r = self.client.get(f"{API}/users/{uid}/export", headers=self.bearer_of("admin"))
        expect(r.status_code == 410, f"the export of an anonymised user: {show(r)}")
        say(f"{admin['username']}: GET {API}/users/{uid}/export -> {show(r)}")
        db = self.data_dir / "service.db"
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT username, password_hash, role FROM users WHERE id = ?", (uid,)).fetchone()
            kept = conn.execute("SELECT count(*) FROM equipment WHERE created_by = ?", (uid,)).fetchone()[0]
        finally:
            conn.close()
        expect(row is not None and row[0].startswith("deleted-user-") and row[1] == "!" and row[2] == "",
               f"user {uid} in the raw database: {row}")
        expect(kept == len(mine), f"{name}'s equipment records: {kept} left of {len(mine)}")
        say(f"users row {uid} in service.db: username {short(row[0], 21)}, password hash {row[1]!r} (disabled), "
            f"no roles; her {kept} equipment records kept")

    def brute_force(self) -> None:
        victim = self.user("viewer")
        step(f"brute force: 5 wrong passwords for {victim['username']} from another client ({ATTACKER_IP})")
        if not can_bind(ATTACKER_IP):
            say(f"skipped: this system does not route {ATTACKER_IP} to loopback, and a one-hour block of "
                f"{CLIENT_IP} would stop the rest of the walkthrough")
            return
        with self._client(ATTACKER_IP) as attacker:
            codes = []
            for i in range(5):
                r = self.login(victim, attacker, password=f"guess-{i}")
                codes.append(r.status_code)
            expect(codes[:4] == [401] * 4 and codes[4] == 429,
                   f"5 failed logins: statuses {codes}, last {show(r)}")
            expect(r.json().get("detail") == "Too many failed login attempts" and "Retry-After" in r.headers,
                   f"the block: {show(r)}")
            say(f"statuses {' '.join(map(str, codes))}: the 5th failure blocks the address -> "
                f"{show(r, 'Retry-After')}")
            r = self.login(victim, attacker)
            expect(r.status_code == 429, f"the right password while blocked: {show(r)}")
            say(f"the right password from {ATTACKER_IP}, while blocked -> {r.status_code} (no password check at all)")
        r = self.client.get(f"{API}/auth/me", headers=bearer(self.tokens[victim["username"]]["access_token"]))
        expect(r.status_code == 200, f"{victim['username']}'s session from {CLIENT_IP}: {show(r)}")
        say(f"{victim['username']}'s session at {CLIENT_IP} is unaffected: GET {API}/auth/me -> 200")

    def login_burst(self) -> None:
        u = self.user("viewer")
        step(f"rate limit: a burst of logins from {CLIENT_IP} (ADR-007 auth category: 10 a minute per client)")
        statuses: list[int] = []
        for _ in range(30):
            r = self.login(u)
            statuses.append(r.status_code)
            if r.status_code == 429:
                break
        expect(statuses[-1] == 429, f"30 rapid logins and no 429: {statuses}")
        expect(all(s == 200 for s in statuses[:-1]), f"the burst's statuses: {statuses}")
        expect(r.json().get("detail") == "Rate limit exceeded" and int(r.headers.get("Retry-After", "0")) >= 1
               and r.headers.get("X-RateLimit-Limit") == "10" and r.headers.get("X-RateLimit-Remaining") == "0",
               f"the 429: {show(r, 'Retry-After', 'X-RateLimit-Limit', 'X-RateLimit-Remaining')}")
        n = len(statuses) - 1
        say(f"{n} more login{'' if n == 1 else 's'} allowed (the budget left after the steps above), then "
            f"{show(r, 'Retry-After', 'X-RateLimit-Limit', 'X-RateLimit-Remaining', 'X-RateLimit-Reset')}")

    def metrics(self) -> None:
        step("metrics: GET /metrics (bitsec's Prometheus counters; excerpt)")
        r = self.client.get("/metrics")
        expect(r.status_code == 200 and "_events_total" in r.text, f"GET /metrics: {show(r)}")
        lines = [ln for ln in r.text.splitlines() if ln and not ln.startswith("#")]
        picked = [ln for ln in lines if ln.startswith(("authentication_events_total", "authorization_events_total",
                                                       "rate_limit_events_total", "security_incident_events_total",
                                                       "bitsec_audit_records_written_total"))]
        expect(any(ln.startswith("authorization_events_total") and 'result="denied"' in ln for ln in picked),
               "no authorization denial counted in /metrics")
        for ln in picked[:14]:
            say(ln)
        if len(picked) > 14:
            say(f"… {len(picked) - 14} more of these, {len(lines)} series in all")


def verify_audit(data_dir: Path) -> None:
    import bitsec

    # the trail's files (rotated ones included), not the shared file's sidecar (audit.jsonl.shm)
    files = sorted(p for p in data_dir.glob("audit.jsonl*") if p.suffix != ".shm")
    step(f"audit chain: bitsec.audit_verify over {', '.join(p.name for p in files) or 'no file'} (service stopped)")
    expect(bool(files), f"no audit file in {data_dir}")
    report = bitsec.audit_verify(files)
    expect(report.intact, f"the audit chain does not verify: {report.problem}")
    say(f"intact: {report.records} records, seq {report.first_seq}-{report.last_seq}, chain {report.chain}")
    say(f"last hash {report.last_hash}")
    kinds: Counter[str] = Counter()
    for p in files:
        for line in p.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            kinds[f"{rec.get('type')}/{rec.get('subtype', rec.get('action', '-'))}"] += 1
    expect(kinds["authorization/permission_denied"] >= sum(
        1 for r in EXPECTED_MATRIX.values() for s in r.values() if s == 403),
        f"the RBAC matrix's denials are not all in the trail: {dict(kinds)}")
    expect(kinds["data_access/gdpr_export"] >= 1 and kinds["data_access/data_anonymization"] >= 1,
           f"the GDPR export and anonymisation are not in the trail: {dict(kinds)}")
    summary = "records by type/subtype: " + ", ".join(f"{k} {n}" for k, n in kinds.most_common())
    for line in textwrap.wrap(summary, 96, subsequent_indent="  "):
        say(line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Walk through the reference service's security controls over HTTP.")
    ap.add_argument("--url", help="the running service, e.g. http://127.0.0.1:8000")
    ap.add_argument("--data-dir", required=True, help="the service's data directory (serve.py --data-dir)")
    ap.add_argument("--audit", action="store_true", help="only verify the audit chain (after the service stopped)")
    args = ap.parse_args(argv)
    data_dir = Path(args.data_dir).resolve()
    try:
        if args.audit:
            verify_audit(data_dir)
            return 0
        if not args.url:
            ap.error("--url is required (or --audit)")
        w = Walkthrough(args.url, data_dir)
        with w.client:
            w.run()
    except StepFailed as e:
        failure = str(e)
    except httpx.HTTPError as e:
        failure = f"HTTP error: {type(e).__name__}: {e}"
    except (ValueError, KeyError, TypeError) as e:  # e.g. a body that is not the JSON expected
        failure = f"unexpected response: {type(e).__name__}: {e}"
    else:
        print("\nwalkthrough: every step behaved as expected", flush=True)
        return 0
    print(f"\nwalkthrough: FAILED: {failure}\n   (in the step: {_current_step})", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
