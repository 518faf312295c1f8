"""Runtime.guard_check (bitsec_guard_check): one native call deciding token, scopes,
permission and rate limit, with the same decisions as the separate calls."""
from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

import bitsec
from bitsec import BackendUnavailableError, InvalidArgumentError, NotFoundError, TokenError

ROOT = Path(__file__).resolve().parents[3]
ERP_POLICY = ROOT / "examples" / "policies" / "erp.json"
ISS = "https://auth.bitcorp.example"
AUD = "erp-api"
SECRET = "s3cr3t-for-tests-only-0123456789abcdef"
AT = 1_900_000_000


def config(capacity: int = 3) -> dict:
    return {
        "allow_inline_secrets": True,
        "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": SECRET}}],
                   "issuer": ISS, "audience": [AUD], "required_claims": ["sub"]},
        "permissions": {"policy_file": str(ERP_POLICY)},
        "rate_limits": {"store": "local", "categories": {
            "default": {"capacity": capacity, "period_seconds": 60},
        }},
    }


@pytest.fixture()
def pair() -> Iterator[tuple[bitsec.Runtime, bitsec.Runtime]]:
    a, b = bitsec.Runtime(config()), bitsec.Runtime(config())
    yield a, b
    a.close()
    b.close()


def abi_calls(rt: bitsec.Runtime) -> int:
    for line in rt.metrics_text().splitlines():
        if line.startswith("bitsec_abi_calls_total{"):
            return int(line.split()[1]) - 1
    raise AssertionError("no bitsec_abi_calls_total")


def tokens(rt: bitsec.Runtime) -> list[str]:
    out = ["", "not.a.jwt", "a.b", "x" * 5000]
    for sub, roles, extra in itertools.product(
            ("alice", "bob", ""), (["viewer"], ["operator"], ["admin"], ["auditor", "viewer"], []),
            ({}, {"scope": "read write"}, {"scope": ""}, {"exp": AT - 10}, {"nbf": AT + 1000},
             {"aud": "other"}, {"department": "maintenance"}, {"tenant_id": "t2"})):
        claims = {"sub": sub, "roles": roles, "iss": ISS, "aud": AUD, "iat": AT - 60, "exp": AT + 600,
                  "tenant_id": "t1", **extra}
        out.append(rt.sign_token(claims))
    forged = out[-1].rsplit(".", 1)[0] + ".AAAA"
    out.append(forged)
    return out


PERMISSIONS = [None, "equipment:read", "equipment:delete", "maintenance_records:update", "nosuch:read",
               "equipment:nosuch"]
CONTEXTS = [None, {"owner_id": "alice", "tenant_id": "t1"}, {"owner_id": "bob", "tenant_id": "t2"},
            {"department": "maintenance"}]
SCOPES: list[tuple[str, ...]] = [(), ("read",), ("read", "admin")]


def separate(rt: bitsec.Runtime, tok: str, permission: str | None, ctx: Any, scopes: tuple[str, ...],
             category: str | None, key: str) -> tuple[str, Any, Any, Any]:
    """The decision of the three separate calls, in the guard's order: the token, the take
    (every request, refused ones too: the user's key for a verified token, else ``key``), the
    scopes, the permission; rate limited first, then a refused token, then a 403."""
    claims = None
    refused = None
    if tok:
        try:
            claims = rt.verify_token(tok, at=AT)
        except TokenError as e:
            refused = e.reason
    rate = None
    if category is not None:
        k = key
        if claims is not None and claims.subject:  # the user's key (docs/fastapi.md, "Rate limits")
            t = claims.tenant_id
            k = f"tenant:{len(t.encode())}:{t}:user:{claims.subject}" if t else "user:" + claims.subject
        d = rt.rate_limit_take(k, category, 1, at=AT)
        rate = (d.allowed, d.limit, d.remaining, d.reset_after, d.retry_after)
        if not d:
            return ("rate_limited", refused or ("valid" if tok else None), None, rate)
    if refused is not None:
        return ("token_refused", refused, None, rate)
    if scopes and any(s not in set(claims.scopes) for s in scopes):  # type: ignore[union-attr]
        return ("scope_missing", "valid", None, rate)
    perm = None
    if permission is not None:
        d = rt.check_permission(claims, permission, ctx)  # type: ignore[arg-type]
        perm = (d.reason, d.raw >> 32)
        if not d:
            return ("permission_denied", "valid", perm, rate)
    return ("allowed", "valid" if tok else None, perm, rate)


def combined(rt: bitsec.Runtime, tok: str, permission: str | None, ctx: Any, scopes: tuple[str, ...],
             category: str | None, key: str) -> tuple[str, Any, Any, Any]:
    g = rt.guard_check(tok or None, permission=permission, context=ctx, scopes=scopes, category=category, key=key,
                       at=AT, key_by_subject=True)
    perm = None if g.permission_reason is None else (g.permission_reason, g.permission_rule + 1)
    rate = None if not g.rate_checked else (g.decision != "rate_limited", g.rate_limit, g.rate_remaining,
                                            g.rate_reset_after, g.rate_retry_after)
    if g.decision == "allowed" and tok:
        assert g.claims is not None and g.claims == rt.verify_token(tok, at=AT)
    return (g.decision, g.token_reason, perm, rate)


def test_same_decisions_as_the_separate_calls(pair: tuple[bitsec.Runtime, bitsec.Runtime]) -> None:
    a, b = pair
    toks = tokens(a)
    cases = 0
    for tok in toks:
        for permission, ctx, scopes in itertools.product(PERMISSIONS, CONTEXTS, SCOPES):
            if not tok and (permission is not None or scopes):
                continue  # a permission or scopes need a token (an invalid argument, below)
            for category in (None, "default"):
                want = separate(b, tok, permission, ctx, scopes, category, "ip:10.0.0.1")
                got = combined(a, tok, permission, ctx, scopes, category, "ip:10.0.0.1")
                assert got == want, (tok[:40], permission, ctx, scopes, category)
                cases += 1
    assert cases > 3000
    # both runtimes took the same tokens from the same buckets, and some were refused
    assert a.guard_check(category="default", key="ip:10.0.0.1", at=AT).decision == "rate_limited"


def test_scopes_are_compared_byte_for_byte() -> None:
    # A required scope matches a token's scope only with the same bytes: the NFD
    # "cafe\u0301:read" is not the NFC "caf\u00e9:read" (it was, by canonical equivalence).
    with bitsec.Runtime(config()) as rt:
        nfc, nfd = "caf\u00e9:read", "cafe\u0301:read"
        t = rt.sign_token({"sub": "op", "iss": ISS, "aud": AUD, "exp": AT + 600, "scope": f"other {nfc}"})
        assert rt.guard_check(t, scopes=(nfc,), at=AT).decision == "allowed"
        assert rt.guard_check(t, scopes=("other", nfc), at=AT).decision == "allowed"
        assert rt.guard_check(t, scopes=(nfd,), at=AT).decision == "scope_missing"
        assert rt.guard_check(t, scopes=("other", nfd), at=AT).decision == "scope_missing"
        u = rt.sign_token({"sub": "op", "iss": ISS, "aud": AUD, "exp": AT + 600, "scope": nfd})
        assert rt.guard_check(u, scopes=(nfc,), at=AT).decision == "scope_missing"


def test_role_and_roles_are_merged_by_bytes() -> None:
    # The verified claims merged `role` into `roles` with String == (canonical equivalence):
    # "re\u0301viseur" in `roles` was dropped as a copy of the `role` "r\u00e9viseur", so the
    # guard, which decides from the verified claims, never applied a deny rule on it, while
    # check_permission on the raw claims did.
    nfd, nfc = "re\u0301viseur", "r\u00e9viseur"
    cfg = config()
    cfg["permissions"] = {"policy": {"resources": ["docs"], "actions": ["read", "delete"],
                                     "roles": {"editor": {"allow": ["docs:*"]}, nfd: {"allow": ["docs:read"]}},
                                     "deny": [{"permission": "docs:delete", "roles": [nfd]}]}}
    with bitsec.Runtime(cfg) as rt:
        claims = {"sub": "u1", "iss": ISS, "aud": AUD, "exp": AT + 600, "role": nfc, "roles": [nfd, "editor"]}
        assert not rt.check_permission(claims, "docs", "delete")
        assert sorted(rt.verify_token(rt.sign_token(claims), at=AT).roles) == sorted([nfc, nfd, "editor"])
        assert rt.guard_check(rt.sign_token(claims), permission="docs:delete", at=AT).decision == "permission_denied"


def test_refused_requests_take_from_the_bucket() -> None:
    """A refused request counts against its bucket: a valid token's (its subject's bucket)
    refused by the permission or a scope, an invalid token (the caller's key). Before, a
    refused request took nothing: the owner of any valid account could send forbidden requests,
    each leaving an audit record, without limit."""
    with bitsec.Runtime(config(capacity=4)) as rt:
        t = rt.sign_token({"sub": "op", "roles": ["operator"], "iss": ISS, "aud": AUD, "exp": AT + 600})
        for left in (3, 2):
            g = rt.guard_check(t, permission="equipment:delete", category="default", key="k", at=AT,
                               key_by_subject=True)
            assert g.decision == "permission_denied" and g.rate_checked and g.rate_remaining == left
        g = rt.guard_check(t, permission="equipment:read", scopes=("admin",), category="default", key="k", at=AT,
                           key_by_subject=True)
        assert g.decision == "scope_missing" and g.rate_remaining == 1
        g = rt.guard_check(t, permission="equipment:read", category="default", key="k", at=AT, key_by_subject=True)
        assert g and g.rate_remaining == 0 and g.rate_headers()["X-RateLimit-Remaining"] == "0"
        # the subject's bucket is empty: 429 before the permission is decided, allowed or not
        for perm in ("equipment:read", "equipment:delete"):
            g = rt.guard_check(t, permission=perm, category="default", key="k", at=AT, key_by_subject=True)
            assert g.decision == "rate_limited" and g.http_status == 429 and g.permission_reason is None
        # invalid tokens: the caller's key ("k" untouched so far), then 429
        for left in (3, 2, 1, 0):
            g = rt.guard_check("forged.token.x", category="default", key="k", at=AT, key_by_subject=True)
            assert g.decision == "token_refused" and g.http_status == 401 and g.rate_remaining == left
        g = rt.guard_check("forged.token.x", category="default", key="k", at=AT, key_by_subject=True)
        assert g.decision == "rate_limited" and g.http_status == 429 and g.token_reason == "malformed"
        assert rt.rate_limit_take("k2", "default", 1, at=AT).remaining == 3  # another caller: untouched


def test_advisory_token_only_keys_the_rate_limit() -> None:
    with bitsec.Runtime(config(capacity=1)) as rt:
        t = rt.sign_token({"sub": "u9", "iss": ISS, "aud": AUD, "exp": AT + 600})
        g = rt.guard_check("forged.token.x", category="default", key="ip:1", at=AT, key_by_subject=True,
                           token_advisory=True)
        assert g and g.token_reason == "malformed" and g.claims is None
        g = rt.guard_check(t, category="default", key="ip:1", at=AT, key_by_subject=True, token_advisory=True)
        assert g and g.claims is not None and g.claims.subject == "u9"  # its own bucket, not ip:1's
        assert rt.guard_check(None, category="default", key="ip:1", at=AT).decision == "rate_limited"
        with pytest.raises(InvalidArgumentError):
            rt.guard_check(t, permission="equipment:read", token_advisory=True)


def test_namesakes_in_two_tenants_have_two_buckets() -> None:
    """The user's bucket is keyed by the token's tenant too: where user names are only unique
    within a tenant, a user of one tenant must not spend the budget of the same name in
    another (before, both took from ``user:<sub>``: one tenant's alice could hold every other
    tenant's alice at 429). A tenant that looks like the rest of a key cannot meet another
    user's key: its length is part of it. The Python layer derives the same keys."""
    from bitsec.fastapi.ratelimit import _user_key
    with bitsec.Runtime(config(capacity=1)) as rt:
        def tok(sub: str, **c: Any) -> str:
            return rt.sign_token({"sub": sub, "iss": ISS, "aud": AUD, "exp": AT + 600, **c})
        users = [(tok("alice", tenant_id="t1"), "alice", "t1"), (tok("alice", tenant="t2"), "alice", "t2"),
                 (tok("alice"), "alice", None), (tok("alice", tenant_id="\u00e9"), "alice", "\u00e9"),
                 (tok("b:user:c", tenant_id="a"), "b:user:c", "a"), (tok("c", tenant_id="a:user:b"), "c", "a:user:b")]
        for t, _, _ in users:  # six buckets of one: each served once
            assert rt.guard_check(t, category="default", key="ip:1", at=AT, key_by_subject=True)
        for t, _, _ in users:
            assert rt.guard_check(t, category="default", key="ip:1", at=AT, key_by_subject=True).decision == "rate_limited"
        keys = ["tenant:2:t1:user:alice", "tenant:2:t2:user:alice", "user:alice", "tenant:2:\u00e9:user:alice",
                "tenant:1:a:user:b:user:c", "tenant:8:a:user:b:user:c"]
        assert [_user_key(sub, tenant) for _, sub, tenant in users] == keys
        for k in keys:  # the same buckets, spent
            assert not rt.rate_limit_take(k, "default", 1, at=AT), k
        assert rt.rate_limit_take("ip:1", "default", 1, at=AT)  # (none of them took from the address)


def test_long_subject_keys_by_its_hash() -> None:
    with bitsec.Runtime(config(capacity=1)) as rt:
        sub = "s" * 600  # "user:" + sub is longer than a key may be (512 bytes)
        t = rt.sign_token({"sub": sub, "iss": ISS, "aud": AUD, "exp": AT + 600})
        assert rt.guard_check(t, category="default", key="ip:1", at=AT, key_by_subject=True)
        import hashlib
        key = "sha256:" + hashlib.sha256(("user:" + sub).encode()).hexdigest()
        assert rt.rate_limit_take(key, "default", 1, at=AT).allowed is False  # the same bucket


def test_invalid_arguments_are_errors_not_decisions() -> None:
    with bitsec.Runtime(config()) as rt:
        t = rt.sign_token({"sub": "u1", "iss": ISS, "aud": AUD, "exp": AT + 600})
        with pytest.raises(InvalidArgumentError):
            rt.guard_check(None, permission="equipment:read")
        with pytest.raises(InvalidArgumentError):
            rt.guard_check(None, scopes=("read",))
        with pytest.raises(InvalidArgumentError):
            rt.guard_check(t, category="default", key="")
        with pytest.raises(InvalidArgumentError):
            rt.guard_check(t, category="default", key="k", cost=0)
        with pytest.raises(InvalidArgumentError):
            rt.guard_check(t, at=-1)
        with pytest.raises(InvalidArgumentError):
            rt.guard_check(t, permission="no-colon")
        with pytest.raises(NotFoundError):
            rt.guard_check(t, category="nosuch", key="k")
        with pytest.raises(InvalidArgumentError):
            _raw_scopes(rt, t)


def _raw_scopes(rt: bitsec.Runtime, t: str) -> None:
    """Scopes that are not UTF-8, through the C function itself."""
    import ctypes

    from bitsec import _native as N
    from bitsec.guardcheck import _guard
    res = ctypes.create_string_buffer(64)
    n = ctypes.c_size_t(0)
    data = t.encode()
    rc = _guard(rt.handle, data, len(data), b"\xff\xfe", 2, b"", 0, b"", 0, b"", 0, b"", 0, 1, AT, 0, res, None, 0,
                ctypes.byref(n))
    N.check(rc)


def test_one_crossing_and_claims_reused() -> None:
    with bitsec.Runtime(config(capacity=1000)) as rt:
        t = rt.sign_token({"sub": "u1", "roles": ["viewer"], "iss": ISS, "aud": AUD, "exp": int(time.time()) + 600})
        first = rt.guard_check(t, permission="equipment:read", category="default", key="ip:1", key_by_subject=True)
        before = abi_calls(rt)
        again = rt.guard_check(t, permission="equipment:read", category="default", key="ip:1", key_by_subject=True)
        assert abi_calls(rt) - before - 1 == 1
        assert first and again and again.claims is first.claims  # parsed once, then the memo


def test_closed_runtime_and_revocation_store_down(fresh_redis: Any) -> None:
    cfg = config()  # with a redis section, revocations live in Redis (rate limits stay local)
    cfg["redis"] = {"host": "127.0.0.1", "port": fresh_redis.port, "command_timeout_ms": 200}
    rt = bitsec.Runtime(cfg)
    t = rt.sign_token({"sub": "u1", "iss": ISS, "aud": AUD, "exp": AT + 600, "jti": "j1"})
    assert rt.guard_check(t, at=AT)
    fresh_redis.stop()
    with pytest.raises(BackendUnavailableError):
        rt.guard_check(t, category="default", key="k", at=AT)
    # advisory: an undecidable token is no user, the request is keyed by its address
    g = rt.guard_check(t, category="default", key="k", at=AT, token_advisory=True, key_by_subject=True)
    assert g and g.token_reason is None
    rt.close()
    with pytest.raises(bitsec.ClosedError):
        rt.guard_check(t)



def test_the_struct_call_decides_as_the_argument_call(pair: tuple[bitsec.Runtime, bitsec.Runtime]) -> None:
    # The binding's call passes its inputs in two structs (bitsec_guard_check_request) when
    # they fit its thread's buffers, else as nineteen arguments (bitsec_guard_check): the
    # same decisions, claims and buckets either way, also when the claims document does not fit
    # the thread's buffer (decided once, the document read through the verify call).
    from bitsec import guardcheck
    a, b = pair
    big = a.sign_token({"sub": "carol", "roles": ["viewer"], "iss": ISS, "aud": AUD, "iat": AT - 60, "exp": AT + 600,
                        "note": "n" * 4000})
    toks = tokens(a)[:60] + ["y" * (guardcheck._TOKEN_ROOM + 1), big]
    room = guardcheck._TOKEN_ROOM
    cases = 0
    try:
        for tok in toks:
            for permission, ctx in itertools.product(("equipment:read", "maintenance_records:update", None),
                                                     (None, {"owner_id": "alice"}, {"owner_id": "o" * 5000})):
                prepared = bitsec.GuardArgs(permission=permission, category="default", key_by_subject=True)
                out = []
                for rt, limit in ((a, room), (b, 0)):  # b: every call through the arguments
                    guardcheck._TOKEN_ROOM = limit
                    guardcheck._tls.grow(100 if cases % 2 else 16383)  # every other case: too small a buffer
                    try:
                        g = rt.guard_check(tok or None, context=ctx, key="ip:10.0.0.2", at=AT, prepared=prepared)
                        out.append((g.fields, g.claims))
                    except bitsec.BitsecError as e:
                        out.append((type(e), None))
                assert out[0] == out[1], (tok[:30], permission, ctx and len(ctx["owner_id"]))
                cases += 1
    finally:
        guardcheck._TOKEN_ROOM = room
    assert cases == len(toks) * 9
    guardcheck._tls.grow(100)
    assert a.guard_check(big, at=AT).claims["note"] == "n" * 4000


def test_guard_args_copies_are_their_own_and_immutable(pair: tuple[bitsec.Runtime, bitsec.Runtime]) -> None:
    # The route struct points into the GuardArgs' own buffers: a copy or an unpickled one is
    # built again (never pointing into another object's memory), and no field can change
    # under one of the two forms only.
    import copy
    import gc
    import pickle

    a, b = pair
    tok = a.sign_token({"sub": "alice", "roles": ["operator"], "iss": ISS, "aud": AUD, "iat": AT - 60,
                        "exp": AT + 600})
    original = bitsec.GuardArgs(permission="equipment:read", category="default", key_by_subject=True)
    copies = [copy.copy(original), copy.deepcopy(original), pickle.loads(pickle.dumps(original))]
    assert all(c.route.raw != original.route.raw for c in copies)  # their own pointers
    del original
    gc.collect()
    for c in copies:
        assert a.guard_check(tok, key="ip:1", at=AT, prepared=c).fields == \
            b.guard_check(tok, permission="equipment:read", category="default", key="ip:1", at=AT,
                          key_by_subject=True).fields
    with pytest.raises(AttributeError, match="immutable"):
        copies[0].cost = 5  # type: ignore[misc]
    # scopes given as an iterator are read once, for both forms
    once = bitsec.GuardArgs(permission="equipment:read", scopes=iter(["admin"]), category="default")
    assert once.scopes == b"admin" and copy.copy(once).scopes == b"admin"
    assert a.guard_check(tok, key="ip:1", at=AT, prepared=once).decision == "scope_missing"

def test_prepared_requirement_decides_as_the_keywords(pair: tuple[bitsec.Runtime, bitsec.Runtime]) -> None:
    # The same requirement given once as GuardArgs (what the FastAPI guard keeps per route)
    # and as keywords on every call: the same decisions, the same buckets.
    a, b = pair
    for token in tokens(a)[:40]:
        for perm, scopes, advisory in (("equipment:read", (), False), ("equipment:delete", ("write",), False),
                                       (None, (), True)):
            if advisory:
                scopes, perm = (), None
            prepared = bitsec.GuardArgs(permission=perm, scopes=scopes, category="default", cost=1,
                                        key_by_subject=True, token_advisory=advisory)
            try:
                x = a.guard_check(token, key="ip:1", at=AT, prepared=prepared)
            except bitsec.BitsecError as e:
                with pytest.raises(type(e)):
                    b.guard_check(token, permission=perm, scopes=scopes, category="default", key="ip:1", at=AT,
                                  key_by_subject=True, token_advisory=advisory)
                continue
            y = b.guard_check(token, permission=perm, scopes=scopes, category="default", key="ip:1", at=AT,
                              key_by_subject=True, token_advisory=advisory)
            assert x.fields == y.fields and repr(x) == repr(y)
            assert (x.claims is None) == (y.claims is None)
    prepared = bitsec.GuardArgs(permission="equipment:read")
    with pytest.raises(InvalidArgumentError, match="prepared"):
        a.guard_check("t", permission="equipment:read", prepared=prepared)
    with pytest.raises(InvalidArgumentError):
        bitsec.GuardArgs(cost=1 << 64)
