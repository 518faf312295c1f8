"""The reference service's web UI in a real browser (headless chromium, the service as it is
deployed: serve.py with two uvicorn workers over real HTTP on loopback).

A browser is the user here, so these tests show what only a browser can: the session cookie's
flags as the browser stored them, a script the CSP blocks, a stored ``<script>`` rendered as
text, and a form on another origin whose POST the service refuses although the browser
attaches the session cookie to it.
"""
from __future__ import annotations

import http.server
import json
import socket
import threading
from http import HTTPStatus
import time
from typing import Any, Iterator

import pytest

from browser_support import browser, csp_violations, wait_for  # noqa: F401  (fixture)
from workers_support import API, WorkerService

SESSION_COOKIE = "__Host-session"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerService]:
    svc = WorkerService(tmp_path_factory.mktemp("browser-ui"), "uvicorn", workers=2)
    try:
        yield svc
    finally:
        svc.stop()


def _login(driver: Any, svc: WorkerService, username: str) -> None:
    driver.delete_all_cookies()
    driver.get(svc.url + "/ui/")
    wait_for(lambda: driver.find_element("id", "login-view").is_displayed(), "the login form")
    driver.find_element("id", "username").send_keys(username)
    driver.find_element("id", "password").send_keys(svc.users[username]["password"])
    driver.find_element("id", "login-submit").click()
    wait_for(lambda: driver.find_element("id", "app-view").is_displayed(), f"{username}'s equipment view",
             driver=driver)


def _rows(driver: Any) -> list[list[str]]:
    return [[td.text for td in tr.find_elements("css selector", "td")]
            for tr in driver.find_elements("css selector", "#equipment tbody tr")]


def _add(driver: Any, name: str, notes: str = "") -> None:
    driver.find_element("id", "eq-name").send_keys(name)
    if notes:
        driver.find_element("id", "eq-notes").send_keys(notes)
    driver.find_element("id", "create-submit").click()
    wait_for(lambda: any(r and r[0] == name for r in _rows(driver)), f"the new row {name!r}", driver=driver)


def _admin(svc: WorkerService) -> str:
    return next(u for u, d in svc.users.items() if "admin" in d["roles"])


def test_login_list_create_logout(service: WorkerService, browser: Any) -> None:
    _login(browser, service, _admin(service))
    assert browser.find_element("id", "who").text == _admin(service)
    _add(browser, "Furnace A-1")
    browser.find_element("id", "logout").click()
    wait_for(lambda: browser.find_element("id", "login-view").is_displayed(), "the login form after logout")
    assert SESSION_COOKIE not in {c["name"] for c in browser.get_cookies()}
    # the session is gone on the server too: the page's data route answers 401
    assert browser.execute_script(
        "return fetch('/ui/equipment', {credentials: 'same-origin'}).then(r => r.status)") == 401


def test_login_with_password_and_totp(service: WorkerService, browser: Any) -> None:
    """An account with MFA: the password alone gets "MFA code required"; password and a fresh
    code from the authenticator log in."""
    import urllib.parse

    import pyotp

    user = "vera"
    token = service.token(user)
    enrol = service.request("POST", f"{API}/auth/mfa/enroll", token=token)
    assert enrol.status == HTTPStatus.OK, enrol.body
    secret = urllib.parse.parse_qs(urllib.parse.urlparse(enrol.json()["provisioning_uri"]).query)["secret"][0]
    totp = pyotp.TOTP(secret)
    confirm = service.request("POST", f"{API}/auth/mfa/confirm", token=token, json_body={"code": totp.now()})
    assert confirm.status == HTTPStatus.OK, confirm.body

    browser.delete_all_cookies()
    browser.get(service.url + "/ui/")
    wait_for(lambda: browser.find_element("id", "login-view").is_displayed(), "the login form")
    browser.find_element("id", "username").send_keys(user)
    browser.find_element("id", "password").send_keys(service.users[user]["password"])
    browser.find_element("id", "login-submit").click()
    assert "MFA code required" in wait_for(lambda: browser.find_element("id", "message").text, "the MFA prompt")
    assert SESSION_COOKIE not in {c["name"] for c in browser.get_cookies()}
    # the confirmation used this time step's code: the next step's is fresh (within the window)
    browser.find_element("id", "password").send_keys(service.users[user]["password"])
    browser.find_element("id", "totp").send_keys(totp.at(time.time() + 30))
    browser.find_element("id", "login-submit").click()
    wait_for(lambda: browser.find_element("id", "app-view").is_displayed(), f"{user}'s equipment view",
             driver=browser)
    assert browser.find_element("id", "who").text == user


def test_a_wrong_password_is_refused(service: WorkerService, browser: Any) -> None:
    browser.delete_all_cookies()
    browser.get(service.url + "/ui/")
    wait_for(lambda: browser.find_element("id", "login-view").is_displayed(), "the login form")
    browser.find_element("id", "username").send_keys(_admin(service))
    browser.find_element("id", "password").send_keys("not the password at all")
    browser.find_element("id", "login-submit").click()
    wait_for(lambda: browser.find_element("id", "message").text, "the refusal message")
    assert not browser.find_element("id", "app-view").is_displayed()
    assert SESSION_COOKIE not in {c["name"] for c in browser.get_cookies()}


def test_session_cookie_is_httponly_secure_samesite(service: WorkerService, browser: Any) -> None:
    _login(browser, service, _admin(service))
    cookie = next(c for c in browser.get_cookies() if c["name"] == SESSION_COOKIE)
    assert cookie["httpOnly"] is True
    assert cookie["secure"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/"
    assert "domain" not in cookie or cookie["domain"].lstrip(".") == "127.0.0.1"
    # HttpOnly as the page sees it: no script can read the session
    assert SESSION_COOKIE not in browser.execute_script("return document.cookie")


def test_a_stored_script_renders_as_text(service: WorkerService, browser: Any) -> None:
    _login(browser, service, _admin(service))
    # names refuse markup (the ERP guide's input rules); free-text notes keep it as written
    payload = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
    _add(browser, "Etcher B-2", notes=payload)
    browser.get(service.url + "/ui/")  # a fresh page renders the stored row from the server
    row = wait_for(lambda: next((r for r in _rows(browser) if r and r[0] == "Etcher B-2"), None),
                   "the stored row", driver=browser)
    assert row[3] == payload  # the markup shows as text
    assert browser.execute_script("return window.__xss === undefined") is True
    assert browser.find_elements("css selector", "#equipment img") == []


def test_an_injected_inline_script_is_blocked(service: WorkerService, browser: Any) -> None:
    _login(browser, service, _admin(service))
    csp_violations(browser)
    ran = browser.execute_script("""
        window.__injected = false;
        const s = document.createElement('script');
        s.textContent = 'window.__injected = true';
        document.body.appendChild(s);
        return window.__injected;""")
    assert ran is False
    wait_for(lambda: csp_violations(browser), "the CSP violation report")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def attacker(service: WorkerService) -> Iterator[str]:
    """Another origin (same host, another port: the same *site*, so SameSite alone would let
    the session cookie through) serving a page whose form posts to the service on load."""
    target = service.url + "/ui/equipment"
    page = (f'<!DOCTYPE html><html><body><form id="f" method="POST" action="{target}">'
            '<input name="name" value="Planted by another origin"><input name="csrf_token" value="guess">'
            '</form><script>document.getElementById("f").submit()</script></body></html>').encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", _free_port()), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join()


def test_a_cross_site_form_post_is_refused(service: WorkerService, browser: Any, attacker: str) -> None:
    _login(browser, service, _admin(service))
    _add(browser, "Marker C-3")
    browser.get(attacker)  # the form submits itself to the service, with the session cookie
    body = wait_for(lambda: browser.find_element("tag name", "body").text if browser.current_url.startswith(
        service.url) else None, "the service's answer to the cross-origin POST", driver=browser)
    answer = json.loads(body)
    assert answer["detail"] in ("origin_not_allowed", "cross_site_request"), answer
    # nothing was created: the list, read through the UI, has no such row
    browser.get(service.url + "/ui/")
    wait_for(lambda: any(r and r[0] == "Marker C-3" for r in _rows(browser)), "the list", driver=browser)
    assert all(r[0] != "Planted by another origin" for r in _rows(browser) if r)
