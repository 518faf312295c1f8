"""Account changes in the reference service that an attacker with a stolen access token cannot
make (examples/fastapi_service/account.py): step-up (a password entered within 5 minutes,
``auth_time``) for MFA enrolment and removal, backup codes and password change; recovery with
a backup code ending every other session; logout refusing someone else's refresh token;
``Cache-Control: no-store`` on token and secret responses. Over HTTP, once with the embedded
default and once with Redis (refsvc_support.svc)."""
from __future__ import annotations

import base64
import json
import time
import urllib.parse
from typing import Any

from refsvc_support import API, PASSWORD, Service, bearer, svc  # noqa: F401 (svc is a fixture)

STEP_UP = 'error="insufficient_user_authentication"'


def _payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # type: ignore[no-any-return]


def _events(svc: Service, subtype: str) -> list[dict[str, Any]]:
    svc.rt.audit_flush()
    return [e for e in map(json.loads, svc.audit_path.read_text().splitlines()) if e.get("subtype") == subtype]


def _token_with(svc: Service, user: str, **extra: Any) -> str:
    """An access token of the service's issuer for ``user``, as login issues it but with
    ``extra`` claims (an old ``auth_time``, or none): what a stolen token would be."""
    now = int(time.time())
    claims = {"sub": str(svc.ids[user]), "roles": ["manager"], "tenant_id": "fab-1", "jti": f"t-{user}-{now}",
              "iss": "https://auth.bitcorp.example", "aud": "erp-api", "iat": now, "exp": now + 600, **extra}
    return svc.rt.sign_token(claims)


def _secret(uri: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["secret"][0]


def _enrol(svc: Service, access: str) -> str:
    r = svc.client.post(f"{API}/auth/mfa/enroll", headers=bearer(access))
    assert r.status_code == 200, r.text
    secret = _secret(r.json()["provisioning_uri"])
    r = svc.client.post(f"{API}/auth/mfa/confirm", json={"code": svc.rt.totp_now(secret)}, headers=bearer(access))
    assert r.status_code == 200, r.text
    return secret


def _step_up_calls(user: str) -> list[tuple[str, str, dict[str, str] | None]]:
    return [("POST", "/auth/mfa/enroll", None), ("DELETE", "/auth/mfa", None), ("POST", "/auth/mfa/backup-codes", None),
            ("POST", "/auth/password", {"current_password": PASSWORD.format(user), "new_password": "a-new-password-2"})]


def test_stale_or_missing_auth_time_is_refused_by_every_account_change(svc: Service) -> None:
    now = int(time.time())
    # one user per kind of token (each user's /auth/ requests have a budget of 10 a minute)
    cases = {"mia": {"auth_time": now - 301}, "otto": {}, "victor": {"auth_time": now + 3600},
             "alice": {"auth_time": str(now)}}
    for user, extra in cases.items():
        token = _token_with(svc, user, **extra)
        assert svc.client.get(f"{API}/auth/me", headers=bearer(token)).status_code == 200  # a valid token
        for method, path, body in _step_up_calls(user):
            r = svc.client.request(method, API + path, json=body, headers=bearer(token))
            assert r.status_code == 401, (user, path, r.text)
            assert r.json()["detail"].startswith("Re-authentication required")
            assert STEP_UP in r.headers["WWW-Authenticate"] and "max_age=300" in r.headers["WWW-Authenticate"]
    # nothing changed: no pending enrolment, the passwords are the old ones
    with svc.app.state.sessions() as db:
        assert all(db.get(svc.app.state.models.User, svc.ids[u]).totp_pending is None for u in cases)
    assert all(svc.login(u).status_code == 200 for u in cases)
    denied = _events(svc, "step_up_required")
    assert len(denied) == 16 and all(e["type"] == "authentication" and e["result"] == "denied" for e in denied)
    assert sorted({e["actor"] for e in denied}) == sorted(str(svc.ids[u]) for u in cases)
    assert {e["reason"] for e in denied} == {"auth_time_missing", "auth_time_too_old", "auth_time_invalid"}


def test_fresh_auth_time_is_accepted_and_refresh_keeps_it(svc: Service) -> None:
    pair = svc.pair("mia")
    at = _payload(pair["access_token"])["auth_time"]
    assert isinstance(at, int) and abs(at - time.time()) < 3600
    r = svc.client.post(f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    new = r.json()
    assert _payload(new["access_token"])["auth_time"] == at and _payload(new["refresh_token"])["auth_time"] == at
    assert svc.client.post(f"{API}/auth/mfa/enroll", headers=bearer(new["access_token"])).status_code == 200
    # a refresh does not renew auth_time: a pair whose password entry is old stays old
    old = svc.rt.issue_token_pair({"sub": str(svc.ids["otto"]), "roles": ["operator"], "tenant_id": "fab-1",
                                   "auth_time": int(time.time()) - 3600})
    r = svc.client.post(f"{API}/auth/refresh", json={"refresh_token": old["refresh_token"]})
    assert r.status_code == 200
    refreshed = r.json()["access_token"]
    assert _payload(refreshed)["auth_time"] == _payload(old["access_token"])["auth_time"]
    r = svc.client.post(f"{API}/auth/mfa/enroll", headers=bearer(refreshed))
    assert r.status_code == 401 and STEP_UP in r.headers["WWW-Authenticate"]


def test_mfa_removal_with_step_up(svc: Service) -> None:
    access = svc.token("mia")
    assert svc.client.delete(f"{API}/auth/mfa", headers=bearer(access)).status_code == 409  # nothing enrolled
    secret = _enrol(svc, access)
    assert svc.login("mia").json()["detail"] == "MFA code required"
    r = svc.client.delete(f"{API}/auth/mfa", headers=bearer(access))
    assert r.status_code == 200 and r.json() == {"mfa_enabled": False}
    assert svc.login("mia").status_code == 200  # the password alone again
    assert svc.client.get(f"{API}/auth/me", headers=bearer(access)).json()["mfa_enabled"] is False
    assert secret  # enrolment can start over
    assert svc.client.post(f"{API}/auth/mfa/enroll", headers=bearer(access)).status_code == 200
    assert [e["type"] for e in _events(svc, "mfa_removed")] == ["mfa"]


def test_backup_code_recovery_ends_every_other_session(svc: Service) -> None:
    here, phone = svc.client_at("10.30.0.1"), svc.client_at("10.30.0.2")
    first = svc.pair("mia", client=here)
    _enrol(svc, first["access_token"])
    assert svc.client.post(f"{API}/auth/mfa/backup-codes", headers=bearer(svc.token("otto"))).status_code == 409
    r = svc.client.post(f"{API}/auth/mfa/backup-codes", headers=bearer(first["access_token"]))
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store" and r.headers["Pragma"] == "no-cache"
    codes = r.json()["backup_codes"]
    assert len(codes) >= 5 and len(set(codes)) == len(codes)
    with svc.app.state.sessions() as db:  # only their hashes are stored
        stored = db.get(svc.app.state.models.User, svc.ids["mia"]).backup_codes
    assert stored and not any(c in stored for c in codes)
    # a second session (the thief's, say) with a valid refresh token
    other = svc.rt.issue_token_pair({"sub": str(svc.ids["mia"]), "roles": ["manager"], "tenant_id": "fab-1",
                                     "auth_time": int(time.time())})
    # (recorded by the service through its refresh, as a client of the thief's would)
    second = phone.post(f"{API}/auth/refresh", json={"refresh_token": other["refresh_token"]}).json()
    for p in (first, second):
        assert svc.client.get(f"{API}/equipment", headers=bearer(p["access_token"])).status_code == 200
    # wrong code, wrong password, unknown user: 401 alike
    for body in ({"backup_code": "0000-0000"}, {"password": "wrong", "backup_code": codes[0]},
                 {"username": "nobody", "backup_code": codes[0]}):
        r = here.post(f"{API}/auth/mfa/recover", json={"username": "mia", "password": PASSWORD.format("mia"), **body})
        assert r.status_code == 401, body
    r = svc.client_at("10.30.0.3").post(f"{API}/auth/mfa/recover", json={
        "username": "mia", "password": PASSWORD.format("mia"), "backup_code": codes[0]})
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store" and r.headers["Pragma"] == "no-cache"
    body = r.json()
    assert body["backup_codes_left"] == len(codes) - 1 and body["tokens_revoked"] == 4
    assert _payload(body["access_token"])["auth_time"] >= _payload(first["access_token"])["auth_time"]
    for p in (first, second):
        assert svc.client.get(f"{API}/equipment", headers=bearer(p["access_token"])).status_code == 401
        assert phone.post(f"{API}/auth/refresh", json={"refresh_token": p["refresh_token"]}).status_code == 401
    assert svc.client.get(f"{API}/equipment", headers=bearer(body["access_token"])).status_code == 200
    # a code works once; the new session may remove MFA at once (its password entry is fresh)
    r = svc.client_at("10.30.0.4").post(f"{API}/auth/mfa/recover", json={
        "username": "mia", "password": PASSWORD.format("mia"), "backup_code": codes[0]})
    assert r.status_code == 401
    assert svc.client.delete(f"{API}/auth/mfa", headers=bearer(body["access_token"])).status_code == 200
    events = _events(svc, "mfa_recovery")
    assert len(events) == 1 and events[0]["type"] == "mfa" and events[0]["details"]["tokens_revoked"] == 4


def test_password_change_needs_step_up_and_the_current_password(svc: Service) -> None:
    mine, other = svc.pair("mia", client=svc.client_at("10.31.0.1")), svc.pair("mia", client=svc.client_at("10.31.0.2"))
    h = bearer(mine["access_token"])
    r = svc.client.post(f"{API}/auth/password", json={"current_password": "wrong", "new_password": "a-new-password-2"},
                        headers=h)
    assert r.status_code == 403
    for new in ("short", "mia-password-1"):  # too short; the same as before
        r = svc.client.post(f"{API}/auth/password", json={"current_password": "mia-password-1", "new_password": new},
                            headers=h)
        assert r.status_code == 422, new
    r = svc.client.post(f"{API}/auth/password", json={"current_password": "mia-password-1",
                                                      "new_password": "a-new-password-2"}, headers=h)
    assert r.status_code == 200 and r.json() == {"password_changed": True, "tokens_revoked": 2}
    assert svc.client.get(f"{API}/equipment", headers=h).status_code == 200  # this session stays
    assert svc.client.get(f"{API}/equipment", headers=bearer(other["access_token"])).status_code == 401
    assert svc.login("mia", client=svc.client_at("10.31.0.3")).status_code == 401
    assert svc.login("mia", "a-new-password-2", client=svc.client_at("10.31.0.3")).status_code == 200
    assert [e["details"]["tokens_revoked"] for e in _events(svc, "password_change")] == [2]


def test_logout_refuses_another_users_refresh_token(svc: Service) -> None:
    alice, victor = svc.pair("alice"), svc.pair("victor")
    for token in (victor["refresh_token"], "not-a-token", victor["access_token"]):
        r = svc.client.post(f"{API}/auth/logout", json={"refresh_token": token}, headers=bearer(alice["access_token"]))
        assert r.status_code == 403 and r.json()["detail"] == "The refresh token is not one of your sessions"
    # nothing was revoked: victor refreshes, alice is still logged in
    assert svc.client.get(f"{API}/auth/me", headers=bearer(alice["access_token"])).status_code == 200
    r = svc.client.post(f"{API}/auth/refresh", json={"refresh_token": victor["refresh_token"]})
    assert r.status_code == 200
    events = _events(svc, "foreign_token")
    assert len(events) == 3 and all(e["type"] == "authorization" and e["result"] == "denied"
                                    and e["actor"] == str(svc.ids["alice"]) for e in events)
    # one's own refresh token, of another session too, is still fine
    own = svc.pair("alice")
    r = svc.client.post(f"{API}/auth/logout", json={"refresh_token": own["refresh_token"]},
                        headers=bearer(alice["access_token"]))
    assert r.status_code == 204
    assert svc.client.post(f"{API}/auth/refresh", json={"refresh_token": own["refresh_token"]}).status_code == 401


def test_token_and_secret_responses_are_not_cached(svc: Service) -> None:
    r = svc.login("mia")
    responses = {"login": r}
    pair = r.json()
    responses["refresh"] = svc.client.post(f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    access = responses["refresh"].json()["access_token"]
    responses["mfa_enroll"] = svc.client.post(f"{API}/auth/mfa/enroll", headers=bearer(access))
    for name, resp in responses.items():
        assert resp.status_code == 200, name
        assert resp.headers.get("Cache-Control") == "no-store", name
        assert resp.headers.get("Pragma") == "no-cache", name
