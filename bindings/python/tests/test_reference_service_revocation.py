"""The reference service with a tiny in-process revocation table
(tokens.revocation.max_entries = 8): many refreshes, logout and anonymisation over HTTP
never answer 500 and never leave a revoked token working. Once embedded, once with the real
redis-server."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from refsvc_support import API, CONFIG, Service, bearer, redis_section


@pytest.fixture(params=["embedded", "redis"])
def small(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    cfg = json.loads(CONFIG.read_text())
    cfg["tokens"]["revocation"] = {"max_entries": 8}
    cfg["rate_limits"]["categories"]["auth"]["capacity"] = 10_000
    cfg["rate_limits"]["categories"]["default"]["capacity"] = 10_000
    cfg["permissions"]["policy_file"] = str((CONFIG.parent / cfg["permissions"]["policy_file"]).resolve())
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    redis = redis_section(request) if request.param == "redis" else None
    s = Service(tmp_path, redis, config=path)
    with s.client:
        yield s


def me(s: Service, token: str) -> int:
    return s.client.get(f"{API}/auth/me", headers=bearer(token)).status_code  # type: ignore[no-any-return]


def refresh(s: Service, token: str) -> Any:
    return s.client.post(f"{API}/auth/refresh", json={"refresh_token": token})


def test_many_refreshes_then_logout(small: Service) -> None:
    s = small
    pair = s.pair("alice")
    session_access = [pair["access_token"]]
    for _ in range(40):
        r = refresh(s, pair["refresh_token"])
        assert r.status_code in (200, 401), r.text
        if r.status_code == 401:
            # Failed closed: the refresh token and its session no longer work.
            assert refresh(s, pair["refresh_token"]).status_code == 401
            assert me(s, pair["access_token"]) == 401
            pair = s.pair("alice")
            session_access = [pair["access_token"]]
            continue
        old, pair = pair, r.json()
        # (a spent refresh token used again is a replay: it ends the whole session, see
        # test_a_replayed_refresh_token_ends_the_session)
        assert me(s, pair["access_token"]) == 200
        session_access.append(pair["access_token"])
    r = s.client.post(f"{API}/auth/logout", json={"refresh_token": pair["refresh_token"]},
                      headers=bearer(pair["access_token"]))
    assert r.status_code == 204, r.text
    for t in session_access:
        assert me(s, t) == 401
    assert refresh(s, pair["refresh_token"]).status_code == 401
    # Another login of the same user is another session: it works.
    assert me(s, s.token("alice")) == 200


def test_a_replayed_refresh_token_revokes_its_session(small: Service) -> None:
    """RFC 9700 section 4.14.2: a refresh token presented again after its exchange was
    copied; the whole session goes, the pair the exchange issued included."""
    s = small
    pair = s.pair("alice")
    r = refresh(s, pair["refresh_token"])
    assert r.status_code == 200, r.text
    new = r.json()
    assert me(s, new["access_token"]) == 200
    assert refresh(s, pair["refresh_token"]).status_code == 401  # the replay
    assert me(s, new["access_token"]) == 401
    assert refresh(s, new["refresh_token"]).status_code == 401
    assert me(s, s.token("alice")) == 200  # a new login is a new session


def test_logouts_past_the_table_bound(small: Service) -> None:
    s = small
    pairs = [s.pair("victor") for _ in range(30)]
    for p in pairs:
        r = s.client.post(f"{API}/auth/logout", headers=bearer(p["access_token"]))
        assert r.status_code == 204, r.text
    for p in pairs:
        assert me(s, p["access_token"]) == 401
        assert refresh(s, p["refresh_token"]).status_code == 401


def test_anonymisation_revokes_every_token(small: Service) -> None:
    s = small
    uid = s.add_user("mrossi", "viewer")
    pairs = [s.pair("mrossi") for _ in range(12)]
    refreshed = []
    for p in pairs[:6]:
        r = refresh(s, p["refresh_token"])
        assert r.status_code in (200, 401), r.text
        if r.status_code == 200:
            refreshed.append(r.json())
    t = pairs[-1]["access_token"]
    r = s.client.post(f"{API}/privacy/anonymize", json={"password": "mrossi-password-1"}, headers=bearer(t))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == uid and body["anonymized"] is True
    assert body["tokens_revoked"] >= 2 * len(pairs)
    for p in pairs + refreshed:
        assert me(s, p["access_token"]) == 401
        assert refresh(s, p["refresh_token"]).status_code == 401
