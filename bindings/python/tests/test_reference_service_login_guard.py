"""The reference service's login against the login guard, over real HTTP (TestClient), once
embedded and once with the real redis-server: an attacker who logs in to their own account
between guesses, who rotates addresses inside an IPv6 /64, who sends guesses concurrently,
and many clients attacking one account whose owner must still get in."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

import refsvc_support
from refsvc_support import ROOT, Service, redis_section, svc  # noqa: F401 (svc is a fixture)

TOO_MANY = "Too many failed login attempts"


def test_own_account_logins_between_guesses_do_not_reset_the_count(svc: Service) -> None:
    svc.add_user("mallory", "viewer", tenant="fab-2")  # the attacker's own account, another tenant
    attacker = svc.client_at("198.51.100.7")
    statuses = []
    for i in range(5):
        statuses.append(svc.login("victor", f"guess-{i}", client=attacker).status_code)
        if i < 4:  # the auth category allows 10 requests a minute per client: 5 guesses + 4 logins
            assert svc.login("mallory", client=attacker).status_code == 200
    assert statuses == [401, 401, 401, 401, 429], statuses  # the 5th failure starts the block
    r = svc.login("victor", client=attacker)  # even the right password: the client is blocked
    assert r.status_code == 429 and r.json()["detail"] == TOO_MANY
    assert 1 <= int(r.headers["Retry-After"]) <= 3600
    # victor, from his own address, is not affected (5 failures are within his free ones).
    assert svc.login("victor").status_code == 200


def test_ipv6_rotation_inside_one_64_is_one_client(svc: Service) -> None:
    statuses = []
    for i in range(5):
        c = svc.client_at(f"2001:db8:77:1:{i + 1:x}::{i + 3:x}")
        statuses.append(svc.login("victor", f"guess-{i}", client=c).status_code)
    assert statuses == [401, 401, 401, 401, 429], statuses
    r = svc.login("victor", client=svc.client_at("2001:db8:77:1:ffff:ffff:ffff:1"))
    assert r.status_code == 429 and r.json()["detail"] == TOO_MANY
    # Another /64 is another client.
    assert svc.login("victor", client=svc.client_at("2001:db8:77:2::1")).status_code == 200
    assert svc.rt.client_key("2001:db8:77:1:abcd::1") == "2001:db8:77:1::/64"


def test_concurrent_guesses_check_at_most_five_passwords(svc: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    import examples.fastapi_service.app as app_module

    checks = []
    lock = threading.Lock()
    real = app_module.check_password

    def slow_check(rt: Any, password: str, user: Any) -> bool:
        with lock:
            checks.append(password)
        time.sleep(0.05)  # widen the window between the limit check and the password check
        return real(rt, password, user)

    monkeypatch.setattr(app_module, "check_password", slow_check)
    attacker = svc.client_at("203.0.113.50")
    results: list[Any] = []

    def guess(i: int) -> None:
        r = svc.login("alice", f"guess-{i}", client=attacker)
        with lock:
            results.append((r.status_code, r.json().get("detail")))

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 10
    assert len(checks) <= 5, f"{len(checks)} passwords checked: {results}"
    assert all(s in (401, 429) for s, _ in results), results
    # The client is blocked now, the right password included.
    assert svc.login("alice", client=attacker).status_code == 429


# ---- many clients against one account: the back-off, with a short cap -----------------------

def _config_with_short_backoff(tmp_path: Path) -> Path:
    cfg = json.loads((ROOT / "examples" / "fastapi_service" / "config.json").read_text())
    cfg["rate_limits"]["login_guard"] = {
        "account": {"free_failures": 3, "base_delay_seconds": 1, "max_delay_seconds": 2},
    }
    cfg["permissions"]["policy_file"] = str(ROOT / "examples" / "fastapi_service" / "policy.json")
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    return p


@pytest.fixture(params=["embedded", "redis"])
def short_backoff_svc(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    monkeypatch.setattr(refsvc_support, "CONFIG", _config_with_short_backoff(tmp_path))
    redis = redis_section(request) if request.param == "redis" else None
    s = Service(tmp_path, redis)
    with s.client:
        yield s


def test_account_under_attack_from_many_clients_backs_off_and_the_owner_gets_in(short_backoff_svc: Service) -> None:
    svc = short_backoff_svc
    refused = []
    for i in range(12):  # twelve clients, one guess each
        r = svc.login("victor", f"guess-{i}", client=svc.client_at(f"192.0.2.{10 + i}"))
        assert r.status_code in (401, 429), r.text
        if r.status_code == 429:
            assert r.json()["detail"] == TOO_MANY
            refused.append(int(r.headers["Retry-After"]))
    assert refused, "the account never backed off"
    assert all(1 <= s <= 2 for s in refused), refused  # never more than max_delay_seconds
    # The owner, from his own address, is at most asked to wait the cap; then he gets in.
    owner = svc.client_at("192.0.2.200")
    r = svc.login("victor", client=owner)
    if r.status_code == 429:
        wait = int(r.headers["Retry-After"])
        assert 1 <= wait <= 2
        time.sleep(wait)
        r = svc.login("victor", client=owner)
    assert r.status_code == 200, r.text
    # His success cleared the account: the next wrong guesses are free (401, not 429).
    assert svc.login("victor", "again", client=svc.client_at("192.0.2.201")).status_code == 401


# ---- every password check of the service counts in the same guard ------------------------------

def test_password_confirmations_count_with_logins_in_one_guard(svc: Service) -> None:
    """Password re-entry (self-anonymisation, password change) is a password check like the
    login: a thief holding victor's access token who guesses his password there and at the login
    is blocked after 5 failures in all, not 5 per endpoint."""
    from refsvc_support import API, bearer

    stolen = svc.token("victor")  # taken from victor's own address
    thief = svc.client_at("198.51.100.99")
    statuses = [svc.login("victor", "guess-0", client=thief).status_code,
                svc.login("victor", "guess-1", client=thief).status_code]
    for i in range(2):
        statuses.append(thief.post(f"{API}/privacy/anonymize", json={"password": f"guess-a{i}"},
                                   headers=bearer(stolen)).status_code)
    statuses.append(thief.post(f"{API}/auth/password", headers=bearer(stolen), json={
        "current_password": "guess-p0", "new_password": "a-new-password-1"}).status_code)
    assert statuses == [401, 401, 403, 403, 429], statuses  # the 5th failure starts the block
    r = svc.login("victor", client=thief)  # the right password, from the blocked client
    assert r.status_code == 429 and r.json()["detail"] == TOO_MANY
    r = thief.post(f"{API}/privacy/anonymize", json={"password": "victor-password-1"}, headers=bearer(stolen))
    assert r.status_code == 429, r.text  # no password check while blocked: victor is not anonymised
    assert svc.login("victor").status_code == 200  # his own address is another client
