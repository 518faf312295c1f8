"""The reference service's GDPR endpoints (ERP guide, "Data Privacy"): export of a user's
personal data, and anonymisation by the user or an administrator. Over HTTP, once with the
embedded default and once with Redis (refsvc_support.svc)."""
from __future__ import annotations

import json
import sqlite3

from sqlalchemy import select

import bitsec
from refsvc_support import API, Service, bearer, svc  # noqa: F401 (svc is a fixture)

PII = {"email": "mia.rossi@example.com", "full_name": "Mia Rossi", "phone": "+39 055 123 4567"}


def _with_pii(svc: Service) -> int:
    return svc.add_user("mrossi", "manager", **PII)


def test_export_of_ones_own_data(svc: Service) -> None:
    uid = _with_pii(svc)
    here = svc.client_at("10.20.30.40")
    pair = svc.pair("mrossi", client=here)
    t = pair["access_token"]
    eid = svc.client.post(f"{API}/equipment", json={"name": "Lathe", "serial_number": "SN-77", "cost": "12.50"},
                          headers=bearer(t)).json()["id"]
    svc.client.post(f"{API}/equipment", json={"name": "Not hers"}, headers=bearer(svc.token("alice")))
    r = svc.client.get(f"{API}/privacy/export", headers=bearer(t))
    assert r.status_code == 200
    assert r.headers["Content-Disposition"] == f'attachment; filename="gdpr-export-user-{uid}.json"'
    assert r.headers["Cache-Control"] == "no-store"
    doc = r.json()
    assert doc["format"] == "bitsec-reference-service/gdpr-export/1"
    assert doc["user"] == {"id": uid, "username": "mrossi", **PII, "roles": ["manager"], "tenant_id": "fab-1",
                           "created_at": doc["user"]["created_at"], "mfa_enabled": False}
    assert doc["equipment"] == [{"id": eid, "name": "Lathe", "tenant_id": "fab-1", "serial_number": "SN-77",
                                 "cost": "12.50", "notes": None, "created_by": uid}]
    assert doc["inspections"] == []
    assert [(s["session_id"], s["ip"]) for s in doc["sessions"]] == [(pair["session_id"], "10.20.30.40")]
    actions = [(e["type"], e.get("action"), e.get("resource")) for e in doc["audit_events"]]
    assert ("data_access", "create", f"{API}/equipment") in actions
    assert all(set(e) <= {"seq", "time", "type", "subtype", "result", "reason", "resource", "resource_id", "action",
                          "ip", "user_agent", "session_id"} for e in doc["audit_events"])
    # never credentials: no password hash, TOTP secret, token or jti
    text = r.text
    assert "scrypt$" not in text and pair["access_token"] not in text and pair["refresh_token"] not in text
    assert "password" not in text and "totp" not in text and "jti" not in text
    # the export itself is audited as a sensitive read of personal data
    svc.rt.audit_flush()
    events = [json.loads(line) for line in svc.audit_path.read_text().splitlines()]
    assert any(e.get("subtype") == "gdpr_export" and e.get("resource_id") == str(uid) and e.get("actor") == str(uid)
               and e.get("sensitive_data_accessed") is True for e in events)


def test_export_withholds_fields_the_user_may_no_longer_read(svc: Service) -> None:
    uid = _with_pii(svc)
    t = svc.token("mrossi")
    svc.client.post(f"{API}/equipment", json={"name": "Lathe", "serial_number": "SN-77"}, headers=bearer(t))
    with svc.app.state.sessions() as db, db.begin():  # moved to the inspection floor
        db.get(svc.app.state.models.User, uid).role = "inspection.operator"
    iid = svc.client.post("/v1/inspections", json={"lot_id": "L", "station": "S", "findings": "crack"},
                          headers=bearer(t2 := svc.token("mrossi"))).json()["id"]
    doc = svc.client.get(f"{API}/privacy/export", headers=bearer(t2)).json()
    assert doc["equipment"][0]["name"] == "Lathe"
    assert "serial_number" not in doc["equipment"][0] and "SN-77" not in json.dumps(doc)
    assert doc["equipment"][0]["withheld"] == ["serial_number", "cost", "notes"]
    assert [(i["id"], i["findings"]) for i in doc["inspections"]] == [(iid, "crack")]


def test_self_anonymisation(svc: Service) -> None:
    uid = _with_pii(svc)
    first, second = svc.pair("mrossi"), svc.pair("mrossi")
    t = second["access_token"]
    eid = svc.client.post(f"{API}/equipment", json={"name": "Lathe", "serial_number": "SN-77"},
                          headers=bearer(t)).json()["id"]
    r = svc.client.post(f"{API}/privacy/anonymize", json={"password": "wrong"}, headers=bearer(t))
    assert r.status_code == 403 and r.json()["detail"] == "Password confirmation failed"
    r = svc.client.post(f"{API}/privacy/anonymize", json={"password": "mrossi-password-1"}, headers=bearer(t))
    assert r.status_code == 200
    assert r.json() == {"id": uid, "anonymized": True, "tokens_revoked": 4}
    # every token of every session is refused, the account cannot log in
    for p in (first, second):
        # revoked in bitsec (so every endpoint refuses them, not only those that load the user)
        assert svc.client.get(f"{API}/equipment", headers=bearer(p["access_token"])).status_code == 401
        assert svc.client.get(f"{API}/auth/me", headers=bearer(p["access_token"])).status_code == 401
        # already revoked (by the subject's epoch): revoking it again records nothing
        assert svc.rt.revoke_token(p["refresh_token"]) is False
        assert svc.client.post(f"{API}/auth/refresh", json={"refresh_token": p["refresh_token"]}).status_code == 401
    assert svc.login("mrossi").status_code == 401
    # personal data replaced by placeholders; the business record stays, linked to the id
    with svc.app.state.sessions() as db:
        u = db.get(svc.app.state.models.User, uid)
        assert u.username.startswith("deleted-user-") and u.email.endswith("@anonymized.invalid")
        assert (u.full_name, u.phone, u.password_hash, u.role, u.totp_sealed) == ("[DELETED]", "[DELETED]", "!", "", None)
        assert u.anonymized_at is not None
        tokens = svc.app.state.models.IssuedToken
        assert db.scalars(select(tokens).where(tokens.user_id == uid)).all() == []  # revoked and forgotten
    raw = svc.db_path.read_bytes()
    assert all(v.encode() not in raw for v in PII.values()) and b"mrossi" not in raw
    got = svc.client.get(f"{API}/equipment/{eid}", headers=bearer(svc.token("alice"))).json()
    assert (got["serial_number"], got["created_by"]) == ("SN-77", uid)
    # the trail is not rewritten: it still verifies, and records the anonymisation
    svc.rt.audit_flush()
    assert bitsec.audit_verify([svc.audit_path]).intact
    events = [json.loads(line) for line in svc.audit_path.read_text().splitlines()]
    anon = [e for e in events if e.get("subtype") == "data_anonymization"]
    assert len(anon) == 1 and anon[0]["resource_id"] == str(uid) and anon[0]["actor"] == str(uid)
    assert anon[0]["details"]["reason"] == "user_request" and anon[0]["details"]["tokens_revoked"] == 4
    assert any(e.get("actor") == str(uid) and e.get("action") == "create" for e in events)
    assert "mrossi" not in svc.audit_path.read_text()  # actors are user ids: the trail never had the name


def test_admin_anonymisation_and_export(svc: Service) -> None:
    uid = _with_pii(svc)
    victim = svc.pair("mrossi")
    admin = svc.token("alice")
    svc.add_user("fred", "admin", "fab-2")
    other_tenant_admin = svc.token("fred")
    # export by the administrator of the same tenant only
    r = svc.client.get(f"{API}/users/{uid}/export", headers=bearer(admin))
    assert r.status_code == 200 and r.json()["user"]["email"] == PII["email"]
    assert svc.client.get(f"{API}/users/{uid}/export", headers=bearer(other_tenant_admin)).status_code == 404
    assert svc.client.get(f"{API}/users/999999/export", headers=bearer(admin)).status_code == 404
    assert svc.client.post(f"{API}/users/{uid}/anonymize", headers=bearer(other_tenant_admin)).status_code == 404
    r = svc.client.post(f"{API}/users/{uid}/anonymize", headers=bearer(victim["access_token"]))  # a manager
    assert r.status_code == 403 and r.json()["detail"] == "Insufficient permissions: users:delete"
    r = svc.client.post(f"{API}/users/{uid}/anonymize", headers=bearer(admin))
    assert r.status_code == 200 and r.json() == {"id": uid, "anonymized": True, "tokens_revoked": 2}
    assert svc.client.get(f"{API}/equipment", headers=bearer(victim["access_token"])).status_code == 401
    assert svc.rt.revoke_token(victim["access_token"]) is False and svc.rt.revoke_token(victim["refresh_token"]) is False
    assert svc.client.post(f"{API}/auth/refresh", json={"refresh_token": victim["refresh_token"]}).status_code == 401
    assert svc.client.post(f"{API}/users/{uid}/anonymize", headers=bearer(admin)).status_code == 409
    assert svc.client.get(f"{API}/users/{uid}/export", headers=bearer(admin)).status_code == 410
    assert svc.client.get(f"{API}/users/not-a-number/export", headers=bearer(admin)).status_code == 422
    svc.rt.audit_flush()
    events = [json.loads(line) for line in svc.audit_path.read_text().splitlines()]
    anon = [e for e in events if e.get("subtype") == "data_anonymization"]
    assert len(anon) == 1 and anon[0]["actor"] == str(svc.ids["alice"]) and anon[0]["details"]["reason"] == "admin_request"
    assert bitsec.audit_verify([svc.audit_path]).intact
    with sqlite3.connect(svc.db_path) as con:  # the login name is free again; nothing else changed
        assert con.execute("SELECT count(*) FROM users WHERE username='mrossi'").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM users").fetchone()[0] == 6


def test_self_anonymisation_password_failures_count_towards_the_block(svc: Service) -> None:
    _with_pii(svc)
    t = svc.token("mrossi")
    codes = [svc.client.post(f"{API}/privacy/anonymize", json={"password": "wrong"}, headers=bearer(t)).status_code
             for _ in range(6)]
    # The login guard: the 5th failure starts the client's block and already answers 429.
    assert codes[:4] == [403] * 4 and codes[4:] == [429, 429]
    r = svc.client.post(f"{API}/privacy/anonymize", json={"password": "mrossi-password-1"}, headers=bearer(t))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert svc.client.get(f"{API}/auth/me", headers=bearer(t)).status_code == 200  # nothing was erased
