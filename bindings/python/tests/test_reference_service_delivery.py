"""The reference service posts its security violations (a brute-force block, a suspected
session hijack, a refresh-token replay, a rejected audit event) to a webhook in Alertmanager's
format, and keeps them through a receiver outage (a local receiver that fails, then recovers)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from starlette.requests import Request

from refsvc_support import API, CONFIG, PASSWORD, Service
from test_alerting import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail=2)  # the first two POSTs fail: the alerts wait and are retried
    yield r
    r.stop()


@pytest.fixture
def service(tmp_path: Path, receiver: Receiver) -> Iterator[Service]:
    cfg = json.loads(CONFIG.read_text())
    cfg["permissions"]["policy_file"] = str(CONFIG.parent / "policy.json")
    cfg["service"]["alerting"] = {"webhook_url": receiver.url, "receiver": "security", "timeout_seconds": 2}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    s = Service(tmp_path, config=path)
    s.app.state.alerter.backoff = s.app.state.alerter.max_backoff = 0.05  # quick retries in the test
    with s.client:
        yield s


def names(receiver: Receiver) -> list[str]:
    return [a["labels"]["alertname"] for a in receiver.alerts()]


def test_violations_reach_the_webhook_through_an_outage(service: Service, receiver: Receiver) -> None:
    s = service
    # a brute-force block: the fifth failure from one address
    c = s.client_at("10.5.0.1")
    assert [s.login("alice", "wrong", client=c).status_code for _ in range(5)] == [401] * 4 + [429]
    # a refresh-token replay: the spent token again ends the session (the new pair too)
    pair = s.pair("otto", client=s.client_at("10.5.0.2"))
    c2 = s.client_at("10.5.0.2")
    second = c2.post(f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert second.status_code == 200
    replay = c2.post(f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert replay.status_code == 401
    assert c2.post(f"{API}/auth/refresh", json={"refresh_token": second.json()["refresh_token"]}).status_code == 401
    # a suspected hijack: the refresh token comes from another address AND another user agent
    home = s.client_at("10.5.0.3")
    r = home.post(f"{API}/auth/login", json={"username": "mia", "password": PASSWORD.format("mia")},
                  headers={"User-Agent": "Firefox/140"})
    assert r.status_code == 200
    thief = s.client_at("192.0.2.66")
    r2 = thief.post(f"{API}/auth/refresh", json={"refresh_token": r.json()["refresh_token"]},
                    headers={"User-Agent": "curl/8.0"})
    assert r2.status_code == 401
    assert home.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}).status_code == 401
    # a rejected audit event (an event type bitsec does not know)
    from examples.fastapi_service.common import audit
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "headers": [], "app": s.app, "state": {}}
    audit(Request(scope), {"type": "no_such_type", "result": "success"})

    assert s.app.state.alerter.flush(30)
    # the replay, and the revoked session's newer token used after it: both revoked tokens
    assert sorted(names(receiver)) == sorted(["BruteForceBlock", "RefreshTokenReplay", "RefreshTokenReplay",
                                              "SessionHijackSuspected", "AuditEventRejected"])
    stats = s.app.state.alerter.stats()
    assert stats["failures"] == 2 and stats["dropped"] == 0 and stats["sent"] == 5
    for doc in receiver.received:
        assert doc["version"] == "4" and doc["receiver"] == "security"
    by_name = {a["labels"]["alertname"]: a for a in receiver.alerts()}
    assert by_name["SessionHijackSuspected"]["labels"]["severity"] == "critical"
    assert by_name["SessionHijackSuspected"]["annotations"]["actor"] == str(s.ids["mia"])
    assert by_name["BruteForceBlock"]["labels"]["service"] == "bitsec-reference-service"
    text = json.dumps(receiver.received)
    for secret in ("wrong", pair["refresh_token"], r.json()["refresh_token"], "alice-password-1"):
        assert secret not in text


def test_a_changed_address_alone_is_not_a_hijack(service: Service, receiver: Receiver) -> None:
    s = service
    home = s.client_at("10.6.0.1")
    r = home.post(f"{API}/auth/login", json={"username": "mia", "password": PASSWORD.format("mia")},
                  headers={"User-Agent": "Firefox/140"})
    moved = s.client_at("10.6.0.99")  # the same browser on another network
    assert moved.post(f"{API}/auth/refresh", json={"refresh_token": r.json()["refresh_token"]},
                      headers={"User-Agent": "Firefox/140"}).status_code == 200
    assert s.app.state.alerter.flush(10)
    assert names(receiver) == []
