"""Revocation by session and by subject, and revocations that never run out of room
(in process, and in a real redis-server)."""
from __future__ import annotations

import time
from typing import Any, Iterator

import pytest

import bitsec
from bitsec import RevokedTokenError
from redis_modes import REDIS_MODES, redis_section

SECRET = "0123456789abcdef0123456789abcdef"


def config(**revocation: Any) -> dict:
    return {"allow_inline_secrets": True,
            "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": SECRET}}],
                       "issuer": "iss", "audience": "aud", "revocation": revocation}}


@pytest.fixture(params=["memory", *(f"redis-{m}" for m in REDIS_MODES)])
def rt(request: pytest.FixtureRequest) -> Iterator[bitsec.Runtime]:
    """A runtime whose revocations are in process, or in Redis in each mode (standalone,
    cluster, TLS, sentinel)."""
    cfg = config(max_entries=64)
    if request.param.startswith("redis-"):
        cfg["redis"] = redis_section(request, request.param.removeprefix("redis-"))
    with bitsec.Runtime(cfg) as r:
        assert r.describe()["sections"]["tokens"]["revocation"] == ("process" if request.param == "memory" else "redis")
        yield r


def revoked(rt: bitsec.Runtime, token: str, at: int) -> bool:
    try:
        rt.verify_token(token, at=at)
        return False
    except RevokedTokenError:
        return True


def test_session_and_subject(rt: bitsec.Runtime) -> None:
    now = int(time.time())
    a = rt.issue_token_pair({"sub": "u1"}, at=now)
    b = rt.issue_token_pair({"sub": "u1"}, at=now)
    c = rt.issue_token_pair({"sub": "u2"}, at=now)
    assert rt.revoke_session(a["session_id"], "u1", at=now + 1) is True
    assert rt.revoke_session(a["session_id"], "u1", at=now + 1) is False
    assert revoked(rt, a["access_token"], now + 2)
    with pytest.raises(RevokedTokenError):
        rt.refresh_token_pair(a["refresh_token"], at=now + 2)
    assert not revoked(rt, b["access_token"], now + 2)
    assert rt.revoke_subject("u1", at=now + 3) is True
    assert revoked(rt, b["access_token"], now + 4)
    assert not revoked(rt, c["access_token"], now + 4)
    later = rt.issue_token_pair({"sub": "u1"}, at=now + 4)
    assert not revoked(rt, later["access_token"], now + 5)
    # An explicit not-before in the past moves nothing back.
    assert rt.revoke_subject("u1", not_before=now, at=now + 5) is False
    with pytest.raises(bitsec.InvalidArgumentError):
        rt.revoke_subject("", at=now)


def test_a_subject_is_revoked_in_its_own_tenant(rt: bitsec.Runtime) -> None:
    """Where user names are only unique within a tenant, revoking one tenant's alice must not
    end another tenant's alice's tokens. Revoking a token without ``jti`` or session revokes
    its subject, now in the token's tenant (``tenant_id``, else ``tenant``) only; before, in
    every tenant: a user who logged out of their own account logged every namesake out.
    ``revoke_subject(tenant=...)`` revokes one tenant's; without a tenant, every tenant's."""
    now = int(time.time())

    def tok(**claims: Any) -> str:
        return rt.sign_token({"sub": "alice", "iss": "iss", "aud": "aud", "iat": now, "exp": now + 600, **claims})

    evil, t1, t2, untenanted = tok(tenant_id="evil"), tok(tenant_id="t1"), tok(tenant="t2"), tok()
    assert rt.revoke_token(evil, at=now + 1) is True  # (no jti: its subject, in its tenant)
    assert revoked(rt, evil, now + 2)
    assert [revoked(rt, t, now + 2) for t in (t1, t2, untenanted)] == [False, False, False]
    assert rt.revoke_subject("alice", at=now + 3, tenant="t2") is True
    assert rt.revoke_subject("alice", at=now + 3, tenant="t2") is False
    assert [revoked(rt, t, now + 4) for t in (t1, t2, untenanted)] == [False, True, False]
    assert rt.revoke_subject("alice", at=now + 5) is True  # every tenant's, and the untenanted
    assert [revoked(rt, t, now + 6) for t in (t1, t2, untenanted)] == [True, True, True]
    later = tok(tenant_id="t1", iat=now + 7)
    assert not revoked(rt, later, now + 8)
    with pytest.raises(bitsec.InvalidArgumentError):
        rt.revoke_subject("alice", tenant="")


def test_a_widened_revocation_stays_in_its_tenant() -> None:
    """In process, a revocation that finds its table full widens to the subject, in the
    token's tenant. Review of the first version: a refresh-token replay (and the end of a
    server-side session) widened to the subject in every tenant, and a subject starting with
    NUL could be keyed like another tenant's subject."""
    now = int(time.time())
    with bitsec.Runtime(config(max_entries=64, max_sessions=1)) as rt:
        t1 = rt.issue_token_pair({"sub": "alice", "tenant_id": "t1"}, at=now)
        t2 = rt.issue_token_pair({"sub": "alice", "tenant_id": "t2"}, at=now)
        assert rt.revoke_session("elsewhere", "bob", at=now)  # the session table's one entry
        rt.refresh_token_pair(t1["refresh_token"], at=now + 1)
        with pytest.raises(RevokedTokenError):  # a replay: its family is revoked, widened (table full)
            rt.refresh_token_pair(t1["refresh_token"], at=now + 2)
        assert revoked(rt, t1["access_token"], now + 3)
        assert not revoked(rt, t2["access_token"], now + 3)  # was revoked: the subject in every tenant
        # a subject that starts with NUL is its own, not t2's alice's
        assert rt.revoke_subject("\x002:t2\x00alice", at=now + 4) is True
        assert not revoked(rt, t2["access_token"], now + 5)


def test_a_fractional_iat_is_covered_by_a_revocation_in_its_second(rt: bitsec.Runtime) -> None:
    # An IdP that writes time.time() as iat: the token is issued at now+0.25, the account is
    # disabled (or the session ended) later in that same second. Epochs are whole seconds
    # and cover "that whole second included": the fraction must not let the token survive.
    now = int(time.time())

    def token(sid: str, iat: float) -> str:
        return rt.sign_token({"iss": "iss", "aud": "aud", "sub": "frac", "session_id": sid,
                              "iat": iat, "exp": now + 3600, "jti": f"{sid}-{iat}"})

    in_second = token("s1", now + 0.25)
    next_second = token("s1", now + 1.25)
    assert not revoked(rt, in_second, now + 2)
    assert rt.revoke_session("s1", "frac", at=now) is True
    assert revoked(rt, in_second, now + 2)
    assert not revoked(rt, next_second, now + 2)
    disabled = token("s2", now + 10.5)
    assert rt.revoke_subject("frac", at=now + 10) is True
    assert revoked(rt, disabled, now + 12)
    assert not revoked(rt, token("s2", now + 11.5), now + 12)


def test_a_flood_past_max_entries_still_revokes(rt: bitsec.Runtime) -> None:
    now = int(time.time())
    pairs = [rt.issue_token_pair({"sub": f"user-{i % 20}"}, at=now) for i in range(600)]
    for p in pairs:
        assert rt.revoke_token(p["access_token"], at=now + 1) is True
    for p in pairs:
        assert revoked(rt, p["access_token"], now + 2)


def test_refresh_chain_past_max_entries_never_errors(rt: bitsec.Runtime) -> None:
    now = int(time.time())
    p = rt.issue_token_pair({"sub": "chain"}, at=now)
    for k in range(1, 200):
        old = p
        p = rt.refresh_token_pair(old["refresh_token"], at=now + k)
        # Spent: revoking it again records nothing (not presented again: a replay would
        # revoke the whole family).
        assert rt.revoke_token(old["refresh_token"], at=now + k) is False
        assert not revoked(rt, p["access_token"], now + k)
