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


UI_ORIGIN = "https://erp.bitcorp.example"


def test_the_web_ui_routes_need_a_session_and_csrf(svc: Service) -> None:
    from examples.fastapi_service.webui import ui_session

    c = svc.client_at(ADDR)
    assert c.get("https://testserver/ui/equipment").status_code == 401  # no cookie
    s = svc.rt.session_create(str(svc.ids["mia"]), "fab-1", ADDR)
    c.cookies.set(ui_session.cookie_name, s.token)
    assert c.get("https://testserver/ui/equipment").status_code == 200
    token = svc.rt.csrf_token_issue(s.session_id)
    for headers, reason in [({"Origin": UI_ORIGIN}, "csrf_token_missing"),
                            ({"Origin": "https://evil.example", "X-CSRF-Token": token}, "origin_not_allowed"),
                            ({"X-CSRF-Token": token}, "origin_missing")]:
        for path in ("/ui/equipment", "/ui/logout"):  # a cross-site logout is refused too
            r = c.post("https://testserver" + path, json={"name": "Lathe"}, headers=headers)
            assert (r.status_code, r.json()) == (403, {"detail": reason}), (path, headers)
    r = c.post("https://testserver/ui/logout", headers={"Origin": UI_ORIGIN, "X-CSRF-Token": token})
    assert r.status_code == 204
    assert not svc.rt.session_validate(s.token, ADDR)


def test_the_web_ui_refuses_the_session_of_an_anonymised_user(svc: Service) -> None:
    from examples.fastapi_service.webui import ui_session

    uid = svc.ids["mia"]
    t = svc.token("mia")
    r = svc.client.post(f"{API}/privacy/anonymize", headers=bearer(t), json={"password": PASSWORD.format("mia")})
    assert r.status_code == 200, r.text
    # the anonymisation ended the user's sessions; one created afterwards is still refused
    s = svc.rt.session_create(str(uid), "fab-1", ADDR)
    c = svc.client_at(ADDR)
    c.cookies.set(ui_session.cookie_name, s.token)
    for path in ("/ui/me", "/ui/equipment"):
        r = c.get("https://testserver" + path)
        assert r.status_code == 401 and "log in again" in r.json()["detail"], (path, r.text)
