"""The reference service and server-side sessions (the runtime's sessions section): a user's
sessions are in the GDPR export, and end at a password change and at an anonymisation. Over
HTTP, embedded and with Redis (refsvc_support.svc)."""
from __future__ import annotations

from refsvc_support import API, PASSWORD, Service, bearer, svc  # noqa: F401 (svc is a fixture)

ADDR = "10.1.2.3"


def test_sessions_are_exported_and_end_at_a_password_change(svc: Service) -> None:
    uid = svc.ids["mia"]
    cookie = svc.rt.session_create(str(uid), "fab-1", ADDR)
    other = svc.rt.session_create(str(svc.ids["otto"]), "fab-1", ADDR)
    t = svc.token("mia")
    r = svc.client.get(f"{API}/privacy/export", headers=bearer(t))
    assert r.status_code == 200
    assert [s["session_id"] for s in r.json()["server_sessions"]] == [cookie.session_id]
    assert cookie.token not in r.text  # the session id, never the secret
    r = svc.client.post(f"{API}/auth/password", headers=bearer(t),
                        json={"current_password": PASSWORD.format("mia"), "new_password": "a-new-password-for-mia"})
    assert r.status_code == 200, r.text
    assert svc.rt.session_validate(cookie.token, ADDR).reason == "unknown"
    assert svc.rt.session_list(str(uid), "fab-1") == []
    assert svc.rt.session_validate(other.token, ADDR)  # another user's session stays


def test_anonymisation_ends_the_sessions(svc: Service) -> None:
    uid = svc.ids["mia"]
    cookies = [svc.rt.session_create(str(uid), "fab-1", ADDR) for _ in range(2)]
    t = svc.token("mia")
    r = svc.client.post(f"{API}/privacy/anonymize", headers=bearer(t), json={"password": PASSWORD.format("mia")})
    assert r.status_code == 200, r.text
    for c in cookies:
        assert svc.rt.session_validate(c.token, ADDR).reason == "unknown"
    assert svc.rt.session_list(str(uid), "fab-1") == []
