"""GuardMiddleware: one pure ASGI middleware deciding token, permission and rate limit from a
route table compiled at startup, the result typed on the scope, the audit record when the
response starts. Real runtime, real HTTP through TestClient."""
from __future__ import annotations

import itertools
import json
import re
import time
import warnings
from http import HTTPStatus
from pathlib import Path
from typing import Any, Iterator

import anyio
import pytest
from fastapi import Depends, FastAPI

with warnings.catch_warnings():  # starlette's TestClient announces a move to httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from redis_modes import REDIS_MODES, redis_section

import bitsec
from bitsec.fastapi import (GUARD_SCOPE_KEY, BearerAuth, GuardMiddleware, GuardResult, RateLimit, Requirement,
                            RequirePermission, bitsec_lifespan, compile_routes, guard, guard_claims,
                            guard_result, public)

ROOT = Path(__file__).resolve().parents[3]
ERP_POLICY = ROOT / "examples" / "policies" / "erp.json"
REF_POLICY = ROOT / "examples" / "fastapi_service" / "policy.json"
ISS = "https://auth.bitcorp.example"
AUD = "erp-api"
SECRET = "s3cr3t-for-tests-only-0123456789abcdef"
NATIVE = ("guard_check", "verify_token", "check_permission", "rate_limit_take", "audit_emit", "audit_submit")


def config(tmp_path: Path, policy: Path = ERP_POLICY, capacity: int = 1000) -> dict:
    return {
        "allow_inline_secrets": True,
        "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": SECRET}}],
                   "issuer": ISS, "audience": [AUD], "required_claims": ["sub"]},
        "permissions": {"policy_file": str(policy)},
        "rate_limits": {"store": "local", "categories": {
            "default": {"capacity": capacity, "period_seconds": 60},
            "auth": {"capacity": 2, "period_seconds": 60},
        }},
        "audit": {"sinks": [{"type": "file", "path": str(tmp_path / "audit.log")}], "durability": "none",
                  "service": "erp-api"},
    }


class Counting(bitsec.Runtime):
    """A runtime counting the integration's native calls."""

    def __init__(self, cfg: dict) -> None:
        super().__init__(cfg)
        self.calls = dict.fromkeys(NATIVE, 0)
        self.submitted = 0  #: events handed over through audit_submit

    def reset(self) -> None:
        self.calls = dict.fromkeys(NATIVE, 0)
        self.submitted = 0

    def guard_check(self, *a: Any, **k: Any) -> Any:
        self.calls["guard_check"] += 1
        return super().guard_check(*a, **k)

    def verify_token(self, *a: Any, **k: Any) -> Any:
        self.calls["verify_token"] += 1
        return super().verify_token(*a, **k)

    def check_permission(self, *a: Any, **k: Any) -> Any:
        self.calls["check_permission"] += 1
        return super().check_permission(*a, **k)

    def rate_limit_take(self, *a: Any, **k: Any) -> Any:
        self.calls["rate_limit_take"] += 1
        return super().rate_limit_take(*a, **k)

    def audit_emit(self, *a: Any, **k: Any) -> Any:
        self.calls["audit_emit"] += 1
        return super().audit_emit(*a, **k)

    def audit_submit(self, events: Any) -> Any:
        events = list(events)
        self.calls["audit_submit"] += 1
        self.submitted += len(events)
        return super().audit_submit(events)


def token(rt: bitsec.Runtime, sub: str = "u1", roles: Any = ("viewer",), exp_in: int = 600, **claims: Any) -> str:
    now = int(time.time())
    return rt.sign_token({"sub": sub, "roles": list(roles), "iss": ISS, "aud": AUD, "iat": now, "exp": now + exp_in,
                          "tenant_id": "t1", **claims})


def bearer(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


def make_app(rt: bitsec.Runtime, middleware: type = GuardMiddleware, **options: Any) -> FastAPI:
    app = FastAPI(lifespan=bitsec_lifespan(rt))

    @app.get("/equipment")
    @guard("equipment", "read")
    def list_equipment(result: GuardResult = Depends(guard_result)) -> dict:
        return {"sub": result.subject, "tenant": result.tenant, "roles": list(result.roles)}

    @app.delete("/equipment/{eid}")
    @guard("equipment", "delete", rate="auth")
    def delete_equipment(eid: str) -> dict:
        return {"deleted": eid}

    @app.get("/me")
    @guard(audit=True)
    def me(claims: Any = Depends(guard_claims), again: Any = Depends(BearerAuth())) -> dict:
        assert again is claims  # the dependency reads the guard's claims, no second verify
        return {"sub": claims.subject}

    @app.get("/records/{owner}")
    @guard("maintenance_records", "read")
    def records(owner: str, claims: Any = Depends(RequirePermission("maintenance_records", "update",
                                                                      owner_param="owner"))) -> dict:
        return {"owner": owner}

    @app.get("/health")
    @public
    def health() -> dict:
        return {"ok": True}

    @app.get("/optional")
    @guard(auth="optional")
    def optional(result: GuardResult = Depends(guard_result)) -> dict:
        return {"sub": result.subject}

    app.add_middleware(middleware, **options)
    return app


@pytest.fixture()
def rt(tmp_path: Path) -> Iterator[Counting]:
    r = Counting(config(tmp_path))
    yield r
    r.close()


def audit_records(tmp_path: Path, rt: bitsec.Runtime) -> list[dict]:
    """The records of the HTTP layer (the runtime's own records, such as automatic denial
    records, have no request id)."""
    rt.audit_flush()
    events = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines() if line.strip()]
    return [e for e in events if "request_id" in (e.get("details") or {})]


def test_allowed_request_gets_typed_result_and_rate_headers(rt: Counting) -> None:
    with TestClient(make_app(rt)) as c:
        r = c.get("/equipment", headers=bearer(token(rt, "alice", ["viewer"])))
        assert r.status_code == 200, r.text
        assert r.json() == {"sub": "alice", "tenant": "t1", "roles": ["viewer"]}
        assert r.headers["x-ratelimit-limit"] == "1000"
        assert int(r.headers["x-ratelimit-remaining"]) == 999
        assert r.headers["x-request-id"]


def test_an_empty_bearer_token_is_recorded(tmp_path: Path, rt: Counting) -> None:
    # Answered 400 (invalid_request), it left no record on a GET route, while no header (401
    # missing) and a garbage token (401 malformed) did: an authentication refusal the trail
    # never saw.
    with TestClient(make_app(rt)) as c:
        for i, value in enumerate(("Bearer ", "Bearer \t", "Bearer")):
            r = c.get("/equipment", headers={"Authorization": value, "X-Request-ID": f"empty-{i}"})
            assert r.status_code == 400, value
    recs = {e["details"]["request_id"]: e for e in audit_records(tmp_path, rt)}
    for i in range(3):
        e = recs[f"empty-{i}"]
        assert (e["type"], e["subtype"], e["result"], e["reason"]) == (
            "authentication", "unauthorized", "failure", "malformed")
        assert e["details"]["status"] == 400


def test_refusals_answer_as_the_dependencies_do(rt: Counting) -> None:
    with TestClient(make_app(rt)) as c:
        r = c.get("/equipment")
        assert r.status_code == 401 and r.json() == {"detail": "Not authenticated"}
        assert r.headers["www-authenticate"] == "Bearer"
        r = c.get("/equipment", headers={"Authorization": "Basic dTpw"})
        assert r.status_code == 401
        r = c.get("/equipment", headers={"Authorization": "Bearer "})
        assert r.status_code == 400 and 'error="invalid_request"' in r.headers["www-authenticate"]
        r = c.get("/equipment", headers=bearer("not.a.jwt"))
        assert r.status_code == 401 and r.json() == {"detail": "Invalid token"}
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        r = c.get("/equipment", headers=bearer(token(rt, exp_in=-120)))
        assert r.status_code == 401 and r.json() == {"detail": "Token has expired"}
        r = c.delete("/equipment/7", headers=bearer(token(rt, "bob", ["operator"])))
        assert r.status_code == 403 and r.json() == {"detail": "Insufficient permissions: equipment:delete"}
        assert r.headers["x-request-id"]
        # public and optional routes
        assert c.get("/health").status_code == 200
        assert c.get("/optional").json() == {"sub": None}
        assert c.get("/optional", headers=bearer(token(rt, "carol"))).json() == {"sub": "carol"}
        assert c.get("/optional", headers=bearer("forged")).status_code == 401  # optional is not "may be forged"


def test_rate_limit_of_the_declared_category(rt: Counting) -> None:
    with TestClient(make_app(rt)) as c:
        h = bearer(token(rt, "root", ["admin"]))
        assert [c.delete(f"/equipment/{i}", headers=h).status_code for i in range(2)] == [200, 200]
        r = c.delete("/equipment/3", headers=h)
        assert r.status_code == 429 and r.json() == {"detail": "Rate limit exceeded"}
        assert int(r.headers["retry-after"]) >= 1 and r.headers["x-ratelimit-remaining"] == "0"
        # another user has its own bucket (the key is the verified subject)
        assert c.delete("/equipment/4", headers=bearer(token(rt, "root2", ["admin"]))).status_code == 200


def test_namesakes_in_two_tenants_have_two_buckets(tmp_path: Path) -> None:
    """Where user names are only unique within a tenant, the owner of an account in one
    tenant must not spend the budget of the same name in another: before, both took from
    ``user:alice``, and one tenant's alice held every other tenant's alice at 429. The guard
    and the ``RateLimit`` dependency key the same user alike (``tenant:<n>:<tenant>:user:<sub>``)."""
    with Counting(config(tmp_path, capacity=3)) as rt:
        app = make_app(rt)

        @app.get("/limited")
        @guard(auth="none", rate="")  # (the dependency alone takes)
        def limited(_: Any = Depends(RateLimit())) -> dict:
            return {}

        with TestClient(app) as c:
            mine = bearer(token(rt, "alice", ["viewer"], tenant_id="evil"))
            assert [c.get("/equipment", headers=mine).status_code for _ in range(4)] == [200, 200, 200, 429]
            theirs = bearer(token(rt, "alice", ["viewer"], tenant_id="t1"))
            r = c.get("/equipment", headers=theirs)
            assert r.status_code == 200 and r.headers["x-ratelimit-remaining"] == "2"
            # the dependency's key is the guard's: the same two buckets
            assert c.get("/limited", headers=mine).status_code == 429
            assert c.get("/limited", headers=theirs).status_code == 200
        assert not rt.rate_limit_take("tenant:4:evil:user:alice", "default")
        assert rt.rate_limit_take("tenant:2:t1:user:alice", "default").remaining == 0  # its last one


def test_refused_requests_count_against_the_callers_bucket(tmp_path: Path) -> None:
    """Every request to a limited route takes from a bucket, refused ones included. The owner
    of a valid account whose requests the permission refuses meets 429 (its own bucket); a
    client without a token, or with an invalid one, too (its address's bucket). Before, a
    refused request took nothing: forbidden requests, each leaving an audit record, had no
    limit."""
    with Counting(config(tmp_path, capacity=3)) as rt, TestClient(make_app(rt)) as c:
        h = bearer(token(rt, "mallory", ["viewer"]))
        # mallory's own requests, refused by the permission (delete; the auth bucket of 2)
        r = c.delete("/equipment/1", headers=h)
        assert r.status_code == 403 and r.headers["x-ratelimit-remaining"] == "1"
        assert c.delete("/equipment/2", headers=h).status_code == 403
        r = c.delete("/equipment/3", headers=h)
        assert r.status_code == 429 and r.json() == {"detail": "Rate limit exceeded"}
        assert int(r.headers["retry-after"]) >= 1
        # her bucket of the default category is her own, and counts her reads
        assert [c.get("/equipment", headers=h).status_code for _ in range(4)] == [200, 200, 200, 429]
        # no token, an empty one, an invalid one: the client address's bucket (default: 3)
        statuses = [c.get("/equipment").status_code, c.get("/equipment", headers=bearer("not.a.jwt")).status_code,
                    c.get("/equipment", headers={"Authorization": "Bearer "}).status_code]
        assert statuses == [401, 401, 400]
        r = c.get("/equipment", headers=bearer("not.a.jwt"))
        assert r.status_code == 429 and r.json() == {"detail": "Rate limit exceeded"}
        assert c.get("/equipment").status_code == 429
        # another user is not affected
        assert c.get("/equipment", headers=bearer(token(rt, "alice", ["viewer"]))).status_code == 200
        # the records (401, 403, the empty token's 400 and writes; a refused write's 429 too)
        assert [e["details"]["status"] for e in audit_records(tmp_path, rt)] == [403, 403, 429, 401, 401, 400]


def test_a_token_over_the_librarys_argument_limit_is_counted_too(tmp_path: Path) -> None:
    """A token the library refuses to read at all (over ``BITSEC_MAX_ARGUMENT_BYTES``) is a 401
    counted against the client's address like any invalid token, not a way around the limit."""
    huge = "a" * (bitsec._abi.BITSEC_MAX_ARGUMENT_BYTES + 1)
    with Counting(config(tmp_path, capacity=2)) as rt, TestClient(make_app(rt)) as c:
        assert [c.get("/equipment", headers=bearer(huge)).status_code for _ in range(3)] == [401, 401, 429]


def test_a_path_parameter_refused_as_context_is_a_counted_403(tmp_path: Path) -> None:
    """A path parameter the library refuses as the resource's context (a NUL byte) is a 403
    ``invalid_argument`` recorded and counted against the client's address, whatever the token.
    Before, it was a 401 "Invalid token" (also for a valid token) and took nothing."""
    with Counting(config(tmp_path, capacity=3)) as rt:
        app = FastAPI(lifespan=bitsec_lifespan(rt))

        @app.get("/owned/{owner}")
        @guard("maintenance_records", "update", owner_param="owner")
        def owned(owner: str) -> dict:
            return {"owner": owner}

        app.add_middleware(GuardMiddleware)
        with TestClient(app) as c:
            h = bearer(token(rt, "op", ["operator"]))
            assert c.get("/owned/op", headers=h).status_code == 200  # (op's own bucket)
            r = c.get("/owned/a%00b", headers=h)
            assert r.status_code == 403 and r.json() == {"detail": "Insufficient permissions: maintenance_records:update"}
            # over the context limit (a path longer than httpx sends: through the ASGI callable)
            tok = h["Authorization"].split()[1]
            assert anyio.run(_request, app, "/owned/" + "o" * 70_000, tok, "rid-ctx") == 403
            assert [c.get("/owned/a%00b", headers=bearer("x.y.z")).status_code for _ in range(3)] == [403, 403, 429]
            assert c.get("/owned/op", headers=h).status_code == 200  # op's bucket was not spent
        last = [e for e in audit_records(tmp_path, rt) if e["details"]["status"] == 403][-1]
        assert (last["type"], last["reason"]) == ("authorization", "invalid_argument")


def test_a_principal_the_library_cannot_read_is_refused_and_counted_once(tmp_path: Path) -> None:
    """Verified claims the library cannot read as a principal (a NUL in the tenant: only the
    token's issuer can do that) are a 401 counted once, against the address: the native guard
    reads the principal before it takes, so the refusal never charges ``user:<sub>`` and then
    the address as well."""
    with Counting(config(tmp_path, capacity=3)) as rt, TestClient(make_app(rt)) as c:
        odd = bearer(token(rt, "eve", ["viewer"], tenant_id="t\x00x"))
        assert [c.get("/equipment", headers=odd).status_code for _ in range(3)] == [401, 401, 401]
        r = c.get("/equipment", headers=bearer(token(rt, "eve", ["viewer"])))
        assert r.status_code == 200 and r.headers["x-ratelimit-remaining"] == "2"  # eve's bucket: one take
        assert c.get("/equipment").status_code == 429  # the address's: the three refusals


def test_native_calls_per_protected_request(rt: Counting) -> None:
    # One protected request: one guard check (token, permission and rate-limit take in one
    # native call) and one audit record, handed over at the end of the loop's turn with the
    # turn's others (here the only one) -- the Authorization header is read and verified
    # once, also when the handler asks for the claims through dependencies.
    with TestClient(make_app(rt, methods=("GET",))) as c:
        h = bearer(token(rt, "alice", ["viewer"]))
        rt.reset()
        assert c.get("/equipment", headers=h).status_code == 200
        assert rt.calls == {"guard_check": 1, "verify_token": 0, "check_permission": 0, "rate_limit_take": 0,
                            "audit_emit": 0, "audit_submit": 1}
        assert rt.submitted == 1
        rt.reset()
        assert c.get("/me", headers=h).status_code == 200  # guard_claims + BearerAuth: no second verify
        assert rt.calls == {"guard_check": 1, "verify_token": 0, "check_permission": 0, "rate_limit_take": 0,
                            "audit_emit": 0, "audit_submit": 1}


def abi_calls(rt: bitsec.Runtime) -> int:
    """The runtime's count of calls through the C ABI (``bitsec_abi_calls_total`` of the
    metrics text), not counting the metrics call that reads it."""
    for line in rt.metrics_text().splitlines():
        if line.startswith("bitsec_abi_calls_total{"):
            return int(line.split()[1]) - 1
    raise AssertionError("bitsec_abi_calls_total is missing from the metrics text")


def test_runtime_counts_native_crossings_per_protected_request(rt: Counting) -> None:
    # The runtime itself counts every call that crosses the C ABI on it: what a protected
    # request costs in crossings, whatever Python layer made them.
    with TestClient(make_app(rt, methods=("GET",))) as c:
        h = bearer(token(rt, "alice", ["viewer"]))
        # warm: the route table, the offload plan, the client-address grouping (once per runtime)
        assert c.get("/equipment", headers=h).status_code == 200
        assert c.get("/health").status_code == 200
        counts = []
        for _ in range(3):
            before = abi_calls(rt)
            assert c.get("/equipment", headers=h).status_code == 200
            counts.append(abi_calls(rt) - before - 1)  # - 1: the metrics call of `before`
        assert counts == [2, 2, 2]  # the guard check (token, permission, take), the audit record
        before = abi_calls(rt)
        assert c.get("/me", headers=h).status_code == 200  # the claims through dependencies: no more
        assert abi_calls(rt) - before - 1 == 2
        before = abi_calls(rt)
        assert c.get("/health").status_code == 200  # public: the rate-limit take and the audit record
        assert abi_calls(rt) - before - 1 == 2


def test_database_permission_stays_a_dependency_reading_the_guard(rt: Counting, tmp_path: Path) -> None:
    with TestClient(make_app(rt)) as c:
        h = bearer(token(rt, "op", ["operator"]))
        rt.reset()
        assert c.get("/records/op", headers=h).status_code == 200  # owner_only update: own record
        # the guard (token, route permission, take) and the owner check of the dependency
        assert rt.calls["guard_check"] == 1 and rt.calls["verify_token"] == 0 and rt.calls["check_permission"] == 1
        r = c.get("/records/someone-else", headers=h)
        assert r.status_code == 403 and r.json() == {"detail": "Insufficient permissions: maintenance_records:update"}
    denied = [e for e in audit_records(tmp_path, rt) if e.get("type") == "authorization"]
    assert denied and "owner_only" in denied[-1]["reason"] and denied[-1]["actor"] == "op"


def test_audit_record_per_request_with_status(rt: Counting, tmp_path: Path) -> None:
    with TestClient(make_app(rt)) as c:
        c.get("/equipment")
        c.delete("/equipment/9", headers=bearer(token(rt, "bob", ["operator"])))
        c.delete("/equipment/9", headers=bearer(token(rt, "root", ["admin"])))
        c.get("/me", headers=bearer(token(rt, "eve")))
        c.get("/equipment", headers=bearer(token(rt, "v")))  # a read without audit flag: no record
    events = audit_records(tmp_path, rt)
    kinds = [(e["type"], e.get("result"), e["details"]["status"]) for e in events]
    assert kinds == [("authentication", "failure", 401), ("authorization", "denied", 403),
                     ("data_access", "success", 200), ("data_access", "success", 200)]
    auth, denied, delete, read = [e for e in events]
    assert auth["reason"] == "missing" and auth["details"]["path"] == "/equipment"
    assert denied["resource"] == "equipment" and denied["action"] == "delete" and denied["actor"] == "bob"
    assert delete["action"] == "delete" and delete["resource"] == "/equipment/{eid}" and delete["resource_id"] == "9"
    assert read["action"] == "read" and read["resource"] == "/me" and read["actor"] == "eve"


@pytest.mark.parametrize("declaration,message", [
    (Requirement("equipment", "frobnicate"), "unknown_action"),
    (Requirement("warp_drives", "read"), "unknown_resource"),
    (Requirement(rate="uploads"), "unknown rate category 'uploads'"),
    (Requirement(cookies=True), "needs sessions, and the runtime has no sessions section"),
])
def test_wrong_declaration_fails_at_startup(rt: Counting, declaration: Requirement, message: str) -> None:
    app = FastAPI(lifespan=bitsec_lifespan(rt))

    @app.get("/x")
    def x() -> dict:
        return {}

    app.add_middleware(GuardMiddleware, requirements={"GET /x": declaration})
    with pytest.raises(Exception) as info:
        with TestClient(app):
            pass
    assert message in str(info.value)
    with pytest.raises(ValueError, match=message.split(" '")[0]):
        compile_routes(app, rt, requirements={"GET /x": declaration})


def test_strict_guard_refuses_undeclared_routes_and_unknown_requirement_keys(rt: Counting) -> None:
    app = FastAPI()

    @app.get("/undeclared")
    def undeclared() -> dict:
        return {}

    with pytest.raises(ValueError, match="declares no requirement"):
        compile_routes(app, rt, strict=True)
    with pytest.raises(ValueError, match="routes the application does not have"):
        compile_routes(app, rt, requirements={"GET /nope": Requirement()})
    with pytest.raises(ValueError):
        Requirement("equipment")  # resource without action
    with pytest.raises(ValueError):
        Requirement("equipment", "read", auth="none")


def test_route_table_matches_in_the_application_order(rt: Counting) -> None:
    app = FastAPI()

    @app.get("/items/{item_id}")
    @guard("equipment", "read")
    def item(item_id: str) -> dict:
        return {}

    @app.get("/items/special")
    @public
    def special() -> dict:  # shadowed by the route above, as in Starlette
        return {}

    @app.get("/other/special")
    @public
    def other_special() -> dict:
        return {}

    @app.get("/other/{oid}")
    @guard("equipment", "update")
    def other(oid: str) -> dict:
        return {}

    table = compile_routes(app, rt)
    entry, params = table.match("GET", "/items/special")
    assert entry is not None and entry.template == "/items/{item_id}" and params == {"item_id": "special"}
    entry, params = table.match("GET", "/other/special")
    assert entry is not None and entry.template == "/other/special" and params == {}
    entry, params = table.match("GET", "/other/42")
    assert entry is not None and entry.requirement.permission == "equipment:update" and params == {"oid": "42"}
    assert table.match("POST", "/other/42") == (None, {})
    assert table.match("GET", "/nothing") == (None, {})


def test_scope_holds_the_typed_result(rt: Counting) -> None:
    app = make_app(rt)
    seen: list[Any] = []

    @app.get("/peek")
    @guard()
    def peek(result: GuardResult = Depends(guard_result)) -> dict:
        seen.append(result)
        return {}

    with TestClient(app) as c:
        assert c.get("/peek", headers=bearer(token(rt, "zed"))).status_code == 200
    assert isinstance(seen[0], GuardResult) and seen[0].allowed and seen[0].subject == "zed"
    assert GUARD_SCOPE_KEY == "bitsec.guard"


# ---- the full RBAC matrix: identical decisions through the guard and the dependency ---------

def test_rbac_matrix_identical_through_guard_and_dependency(tmp_path: Path) -> None:
    policy = json.loads(REF_POLICY.read_text())
    roles = sorted(policy["roles"])
    perms = list(itertools.product(policy["resources"], policy["actions"]))
    with bitsec.Runtime(config(tmp_path, REF_POLICY, capacity=1_000_000)) as rt:
        app = FastAPI(lifespan=bitsec_lifespan(rt))
        for res, act in perms:
            def ok() -> dict:
                return {}
            guarded = guard(res, act, owner_param="owner")(lambda owner: {})
            app.add_api_route(f"/g/{res}/{act}/{{owner}}", guarded, methods=["GET"])
            app.add_api_route(f"/d/{res}/{act}/{{owner}}", ok, methods=["GET"],
                              dependencies=[Depends(RequirePermission(res, act, owner_param="owner"))])
        app.add_middleware(GuardMiddleware)
        compared = 0
        allowed = 0
        with TestClient(app) as c:
            for role in roles:
                h = bearer(token(rt, "me", [role]))
                for (res, act), owner in itertools.product(perms, ("me", "other")):
                    via_guard = c.get(f"/g/{res}/{act}/{owner}", headers=h)
                    via_dep = c.get(f"/d/{res}/{act}/{owner}", headers=h)
                    assert via_guard.status_code == via_dep.status_code, (role, res, act, owner)
                    assert via_guard.json() == via_dep.json() or via_guard.status_code == 200
                    compared += 1
                    allowed += via_guard.status_code == 200
    assert compared == len(roles) * len(perms) * 2
    assert 0 < allowed < compared  # the matrix has both answers


# ---- bounded tables --------------------------------------------------------------------------

def test_claims_memo_is_bounded_under_a_flood_of_tokens_through_the_guard(rt: Counting) -> None:
    # The guard reuses the tokens' parsed-claims memo (the permission's principal is built in
    # the library from the verified claims, no Python-side table): a flood of distinct
    # tokens through guard_check keeps it within its bound.
    now = int(time.time())
    bound = None
    for i in range(6000):
        t = rt.sign_token({"sub": f"flood-{i}", "roles": ["viewer"], "iss": ISS, "aud": AUD, "iat": now,
                           "exp": now + 600, "tenant_id": "t1"})
        g = rt.guard_check(t, permission="equipment:read")
        assert g and g.claims is not None and g.claims.subject == f"flood-{i}"
        assert rt.guard_check(t, permission="equipment:read").claims is g.claims  # parsed once
        bound = rt.__dict__["_tokens_memo_max"]
        assert len(rt.__dict__["_tokens_memo"]) <= bound
    assert bound is not None and bound < 6000


def test_address_cache_is_bounded_under_a_flood_of_addresses() -> None:
    from bitsec.fastapi._common import _canonical_ip, _valid_ip

    for i in range(10_000):
        addr = f"2001:db8::{i + 1:x}"
        assert _valid_ip(addr) == addr
        assert _canonical_ip.cache_info().currsize <= 4096
    assert _valid_ip("2001:DB8:0:0::1") == "2001:db8::1"
    assert _valid_ip("not an address") is None and _valid_ip("") is None


# ---- where the decision runs -----------------------------------------------------------------

class Threads(Counting):
    """Records the thread of every native call."""

    def __init__(self, cfg: dict) -> None:
        super().__init__(cfg)
        self.threads: dict[str, set[int]] = {n: set() for n in NATIVE}

    def guard_check(self, *a: Any, **k: Any) -> Any:
        import threading
        self.threads["guard_check"].add(threading.get_ident())
        return super().guard_check(*a, **k)

    def verify_token(self, *a: Any, **k: Any) -> Any:
        import threading
        self.threads["verify_token"].add(threading.get_ident())
        return super().verify_token(*a, **k)

    def rate_limit_take(self, *a: Any, **k: Any) -> Any:
        import threading
        self.threads["rate_limit_take"].add(threading.get_ident())
        return super().rate_limit_take(*a, **k)


def _app_recording_the_loop(rt: bitsec.Runtime, **options: Any) -> tuple[FastAPI, set[int]]:
    """``make_app`` plus ``/where``, a guarded ``async`` endpoint that records the thread it
    runs on (the event loop's)."""
    import threading

    app = make_app(rt, **options)
    loop_threads: set[int] = set()

    @app.get("/where")
    @guard()
    async def where() -> dict:
        loop_threads.add(threading.get_ident())
        return {}

    return app, loop_threads


@pytest.mark.parametrize("offload", ["auto", "always"])
def test_decision_inline_when_nothing_can_wait_else_once_in_the_thread_pool(tmp_path: Path, offload: str) -> None:
    rt = Threads(config(tmp_path))
    try:
        app, loop_threads = _app_recording_the_loop(rt, offload=offload)
        with TestClient(app) as c:
            h = bearer(token(rt, "w"))
            for _ in range(3):
                assert c.get("/where", headers=h).status_code == 200
        used = rt.threads["guard_check"] | rt.threads["verify_token"] | rt.threads["rate_limit_take"]
        assert used and len(loop_threads) == 1
        if offload == "auto":  # embedded configuration: every call inline, on the event loop
            assert used == loop_threads
        else:  # token and take in one call in a worker thread, never on the loop
            assert not (used & loop_threads)
    finally:
        rt.close()


@pytest.mark.parametrize("mode", REDIS_MODES)
def test_guard_with_redis_stores_in_every_mode(tmp_path: Path, request: pytest.FixtureRequest, mode: str) -> None:
    # Rate limits and revocation in Redis (standalone, cluster, TLS, sentinel): the decision
    # runs once per request in a worker thread, never on the event loop; the bucket counts
    # in Redis; a revoked token is refused at the next request; one record per request.
    cfg = config(tmp_path)
    cfg["redis"] = redis_section(request, mode)
    cfg["rate_limits"]["store"] = "redis"
    cfg["tokens"]["revocation"] = {"backend": "redis"}
    rt = Threads(cfg)
    try:
        app, loop_threads = _app_recording_the_loop(rt, methods=("GET",))
        with TestClient(app) as c:
            t = token(rt, f"redis-{mode}")
            remaining = []
            for _ in range(3):
                r = c.get("/where", headers=bearer(t))
                assert r.status_code == 200, r.text
                remaining.append(int(r.headers["X-RateLimit-Remaining"]))
            assert remaining == [999, 998, 997]
            assert rt.calls["guard_check"] == 3  # one decision per request
            assert rt.revoke_token(t)
            r = c.get("/where", headers=bearer(t))
            assert r.status_code == 401 and r.json() == {"detail": "Invalid token"}
        used = rt.threads["guard_check"] | rt.threads["verify_token"] | rt.threads["rate_limit_take"]
        assert used and len(loop_threads) == 1 and not (used & loop_threads)
        records = audit_records(tmp_path, rt)
        assert [e["details"]["status"] for e in records] == [200, 200, 200, 401]
        assert records[-1]["type"] == "authentication" and records[-1]["reason"] == "revoked"
    finally:
        rt.close()


def test_a_runtime_that_cannot_decide_answers_503_never_500(tmp_path: Path) -> None:
    class Broken(Counting):
        broken = False

        def guard_check(self, *a: Any, **k: Any) -> Any:
            prepared = k.get("prepared")  # the guard passes each route's requirement prepared
            if self.broken and (k.get("permission") or (prepared is not None and prepared.permission)):
                # the permission step cannot decide
                raise bitsec.BackendUnavailableError("permission store unreachable")
            return super().guard_check(*a, **k)

    rt = Broken(config(tmp_path))
    try:
        with TestClient(make_app(rt), raise_server_exceptions=False) as c:
            rt.broken = True  # after the startup checks
            r = c.get("/equipment", headers=bearer(token(rt, "alice")))
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json() == {"detail": "Service temporarily unavailable"}
            assert c.get("/health").status_code == 200
    finally:
        rt.close()


def test_token_memo_holds_a_rotation_that_fits_the_configured_cache(tmp_path: Path) -> None:
    # 6000 distinct tokens in rotation, a verified-token cache of 8000: the second pass finds
    # every token's parsed claims (the same objects), none is parsed again.
    cfg = config(tmp_path)
    cfg["tokens"]["cache_size"] = 8000
    with bitsec.Runtime(cfg) as rt:
        toks = [token(rt, f"rot-{i}") for i in range(6000)]
        first = [rt.verify_token(t) for t in toks]
        again = [rt.verify_token(t) for t in toks]
        assert all(a is b for a, b in zip(first, again))
        assert len(rt.__dict__["_tokens_memo"]) == 6000
        # bounded: a flood beyond the memo's size clears it, never grows past it
        for i in range(3000):
            rt.verify_token(token(rt, f"flood-{i}"))
            assert len(rt.__dict__["_tokens_memo"]) <= 8000


def test_new_request_ids_are_uuid4_and_differ_across_forked_workers() -> None:
    import os
    import uuid

    from bitsec.fastapi._common import new_request_id

    ids = [new_request_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for r in ids:
        u = uuid.UUID(r)
        assert str(u) == r and u.version == 4 and u.variant == uuid.RFC_4122
    # An application seeding Python's random (a fixed seed, the same in every worker) does
    # not make the ids repeat: they come from a generator of their own.
    import random

    state = random.getstate()
    try:
        random.seed(7)
        first = new_request_id()
        random.seed(7)
        assert new_request_id() != first
    finally:
        random.setstate(state)
    # A forked worker does not repeat its parent's sequence (the generator is reseeded in the child).
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write its next ids and leave at once
        os.close(rfd)
        os.write(wfd, ",".join(new_request_id() for _ in range(8)).encode())
        os._exit(0)
    os.close(wfd)
    child = b""
    while chunk := os.read(rfd, 4096):
        child += chunk
    os.close(rfd)
    os.waitpid(pid, 0)
    mine = [new_request_id() for _ in range(8)]
    theirs = child.decode().split(",")
    assert len(theirs) == 8 and not set(theirs) & set(mine)


def test_event_text_carries_any_claim_path_and_header_text(tmp_path: Path) -> None:
    # The guard writes the audit record's JSON itself: quotes, backslashes, control
    # characters and non-ASCII text in the claims, the path parameters and the headers come
    # back unchanged, and each token's actor/tenant/session part is its own (kept per token).
    with bitsec.Runtime(config(tmp_path)) as plain:  # no wrapper: the guard's direct call
        app = make_app(plain)

        @app.get("/items/{item}")
        @guard(audit=True)
        def item(item: str) -> dict:
            return {"item": item}

        odd = 'q"u\\o\tte\u00e9\u65e5\U0001f389'
        people = [(odd, 't"1\\', 's\nid'), ("plain", "t2", "sid-2")]
        with TestClient(app) as c:
            for sub, tenant, sid in people * 2:
                h = {**bearer(token(plain, sub, tenant_id=tenant, session_id=sid)), "User-Agent": 'ua "x" \\ \x7f',
                     "X-Request-ID": f"r-{sub.isascii()}-{len(sid)}"}
                assert c.get("/items/" + "%22%5C%C3%A9", headers=h).status_code == 200
        recs = [r for r in audit_records(tmp_path, plain) if r.get("resource") == "/items/{item}"]
        assert len(recs) == 4
        for r, (sub, tenant, sid) in zip(recs, people * 2):
            assert (r["actor"], r["tenant"], r["session_id"]) == (sub, tenant, sid)
            assert r["user_agent"] == 'ua "x" \\ \x7f' and r["resource_id"] == '"\\\u00e9'
            assert r["details"]["path"] == '/items/"\\\u00e9' and r["details"]["path_params"] == {"item": '"\\\u00e9'}
            assert r["type"] == "data_access" and r["action"] == "read" and r["result"] == "success"
            assert r["details"]["status"] == 200 and r["details"]["method"] == "GET"


def _asgi_app(rt: bitsec.Runtime) -> FastAPI:
    """An application whose requests never suspend: ``async`` endpoints only, so a request
    driven through its ASGI callable runs to the end within one turn of the event loop."""
    app = FastAPI()

    @app.get("/items/{item}")
    @guard("equipment", "read", audit=True)
    async def item(item: str) -> dict:
        return {"item": item}

    @app.get("/boom")
    @guard(audit=True)
    async def boom() -> dict:
        raise RuntimeError("boom")

    app.state.bitsec = rt
    app.add_middleware(GuardMiddleware)
    return app


async def _request(app: FastAPI, path: str, auth: str, rid: str) -> int:
    """One request through the ASGI callable, with a ``send`` that never suspends (as a
    server's writing into its transport buffer); its status."""
    return await _asgi_get(app, path, [(b"host", b"t"), (b"authorization", b"Bearer " + auth.encode()),
                                       (b"x-request-id", rid.encode())])


async def _asgi_get(app: FastAPI, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    """A GET of ``path`` with these raw headers through the ASGI callable; its status."""
    status = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": headers,
             "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 80), "app": app}
    try:
        await app(scope, receive, send)
    except RuntimeError:
        pass  # /boom: the application's exception, re-raised after its 500 is recorded
    return status[0]


def test_request_records_are_handed_over_in_one_batch_at_the_end_of_the_loop_turn(rt: Counting,
                                                                                      tmp_path: Path) -> None:
    # The responses that start in one turn of the event loop have their records handed to
    # bitsec together at the end of that turn: in the order the responses started, none
    # lost, an application's 500 included, before anything of the next turn.
    import asyncio

    app = _asgi_app(rt)
    h = token(rt, "alice", ["viewer"])

    async def main() -> tuple[int, int, list[int]]:
        rt.reset()
        statuses = [await _request(app, f"/items/{i}", h, f"rid-{i}") for i in range(5)]
        statuses.append(await _request(app, "/boom", h, "rid-boom"))
        waiting = rt.submitted  # nothing suspended yet: the turn is not over
        await asyncio.sleep(0)  # one turn
        return waiting, rt.submitted, statuses

    waiting, after_turn, statuses = asyncio.run(main())
    assert statuses == [200] * 5 + [500]
    assert waiting == 0 and after_turn == 6
    assert rt.calls["audit_submit"] == 1 and rt.calls["audit_emit"] == 0  # the six in one native call
    records = audit_records(tmp_path, rt)
    assert [e["details"]["request_id"] for e in records] == [f"rid-{i}" for i in range(5)] + ["rid-boom"]
    assert [e["details"]["status"] for e in records] == [200] * 5 + [500]
    assert records[0]["actor"] == "alice" and records[0]["resource_id"] == "0"
    assert records[-1]["resource"] == "/boom" and records[-1]["result"] == "failure"


@pytest.mark.parametrize("hand_over", ["audit_flush", "audit_stats", "metrics_text", "close"])
def test_waiting_records_are_handed_over_by_flush_stats_metrics_and_close(tmp_path: Path, hand_over: str) -> None:
    # A caller that reads the trail, its counters or closes the runtime right after the
    # responses, before the loop's turn ended (a handler, a test), never misses a record.
    import asyncio

    rt = Counting(config(tmp_path))
    app = _asgi_app(rt)
    h = token(rt, "bob", ["viewer"])
    seen: dict[str, Any] = {}

    async def main() -> None:
        for i in range(3):
            assert await _request(app, f"/items/{i}", h, f"r{i}") == 200
        assert rt.submitted == 0
        # the call, made while the turn has not ended (as a thread reading the trail would)
        seen["value"] = getattr(rt, hand_over)()
        seen["emitted"] = rt.submitted

    try:
        asyncio.run(main())
    finally:
        rt.close()
    assert seen["emitted"] == 3
    if hand_over == "audit_stats":
        assert seen["value"]["last_seq"] >= 3
    events = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines() if line.strip()]
    assert [e["details"]["request_id"] for e in events if "request_id" in (e.get("details") or {})] == ["r0", "r1", "r2"]


def test_a_forked_child_never_hands_over_its_parents_waiting_records(rt: Counting, tmp_path: Path) -> None:
    import asyncio
    import os

    app = _asgi_app(rt)
    h = token(rt, "carol", ["viewer"])

    async def main() -> int:
        assert await _request(app, "/items/1", h, "parent-1") == 200
        pid = os.fork()  # with the record waiting for the end of the turn
        if pid == 0:
            # The child's own deferred work, on an event loop of its own (a worker process),
            # is handed over; the parent's never is.
            ran: list[str] = []

            async def child() -> None:
                rt._audit_soon(ran.append, "child-1")
                await asyncio.sleep(0)
                rt._audit_soon(ran.append, "child-2")
                await asyncio.sleep(0)

            asyncio.run(child())
            os._exit(10 + rt.submitted + rt.calls["audit_emit"] if ran == ["child-1", "child-2"] else 99)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    assert asyncio.run(main()) == 10  # the child emitted nothing
    assert [e["details"]["request_id"] for e in audit_records(tmp_path, rt)] == ["parent-1"]  # the parent did


def test_flush_waits_for_a_hand_over_in_progress_on_another_thread(rt: Counting, tmp_path: Path) -> None:
    # The event loop's thread has taken the waiting records and is still handing them over
    # when another thread calls audit_flush: the flush returns only after they are handed
    # over, so what it promises (every record handed over before it is durable) holds.
    import asyncio
    import threading

    started, go = threading.Event(), threading.Event()

    def slow(tag: str) -> None:
        started.set()
        go.wait(10)
        rt.audit_emit({"type": "session", "subtype": tag})

    async def loop_side() -> None:
        rt._audit_soon(slow, "first")  # the only one: taken, nothing waits any more
        await asyncio.sleep(0)  # the run starts on this thread and blocks in `slow`

    loop_thread = threading.Thread(target=asyncio.run, args=(loop_side(),))
    loop_thread.start()
    assert started.wait(10)
    seen: list[str] = []

    def flush_and_read() -> None:
        rt.audit_flush()
        seen.extend(json.loads(line).get("subtype", "") for line in (tmp_path / "audit.log").read_text().splitlines())

    flusher = threading.Thread(target=flush_and_read)
    flusher.start()
    flusher.join(0.3)  # a flush that did not wait would have returned by now
    assert flusher.is_alive()  # waiting for the hand-over in progress
    go.set()
    flusher.join(10)
    loop_thread.join(10)
    assert not flusher.is_alive() and not loop_thread.is_alive()
    assert "first" in seen


def test_a_run_that_finds_the_queue_emptied_by_another_thread_still_lets_later_records_schedule(
        rt: Counting) -> None:
    # A flush on another thread takes the waiting work while the run scheduled for the end of
    # the turn is pending; that run finds nothing -- and the records of later turns are still
    # handed over at the end of their turns, not left waiting for the next flush.
    import asyncio
    import threading

    ran: list[str] = []
    inside, go = threading.Event(), threading.Event()

    def blocking(tag: str) -> None:
        inside.set()
        go.wait(10)
        ran.append(tag)

    async def main() -> list[str]:
        rt._audit_soon(blocking, "a")  # schedules the run of this turn
        flusher = threading.Thread(target=rt._audit_run_soon, kwargs={"wait": True})
        flusher.start()
        assert inside.wait(10)          # the flusher took "a" and is inside it
        rt._audit_soon(ran.append, "b")  # appended during the flusher's run: it takes "b" too
        go.set()
        flusher.join(10)
        await asyncio.sleep(0)          # the scheduled runs: nothing left for them
        rt._audit_soon(ran.append, "c")  # a later turn's record
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return list(ran)

    assert asyncio.run(main()) == ["a", "b", "c"]


def test_records_still_waiting_at_interpreter_exit_are_handed_over(tmp_path: Path) -> None:
    # A loop that stops with the turn's hand-over still scheduled, and a runtime nobody
    # closes: the record is handed over when the interpreter exits, before the runtime's own
    # finalizer closes it.
    import subprocess
    import sys
    import textwrap

    log_path = tmp_path / "exit.log"
    script = textwrap.dedent("""
        import asyncio, sys, bitsec
        rt = bitsec.Runtime({"audit": {"sinks": [{"type": "file", "path": sys.argv[1]}], "durability": "none"}})
        loop = asyncio.new_event_loop()
        async def main():
            rt._audit_soon(rt.audit_emit, {"type": "session", "subtype": "stranded"})
            loop.stop()  # the loop stops after this turn: the hand-over scheduled for its end never runs
        loop.create_task(main())
        loop.run_forever()
        loop.close()
        assert len(rt._soon.items) == 1, "the record should still be waiting here"
    """)
    r = subprocess.run([sys.executable, "-c", script, str(log_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    subtypes = [json.loads(line).get("subtype") for line in log_path.read_text().splitlines()]
    assert "stranded" in subtypes


@pytest.mark.parametrize("middleware", ["guard", "audit"])
def test_a_sensitive_callable_that_raises_keeps_the_record_as_sensitive(tmp_path: Path, middleware: str) -> None:
    # The application's `sensitive` callable fails: the request is answered, its record is
    # kept (counted as sensitive: erring on the side of the data), the failure is logged.
    from bitsec.fastapi import AuditMiddleware

    def sensitive(path: str) -> bool:
        raise ValueError(f"cannot classify {path}")

    rt = Counting(config(tmp_path))
    try:
        app = FastAPI(lifespan=bitsec_lifespan(rt))

        @app.post("/payroll/{pid}")
        @guard(audit=True)
        def payroll(pid: str) -> dict:
            return {"pid": pid}

        if middleware == "guard":
            app.add_middleware(GuardMiddleware, sensitive=sensitive)
        else:
            app.add_middleware(AuditMiddleware, sensitive=sensitive)
        with TestClient(app) as c:
            h = bearer(token(rt, "pat", ["admin"]))
            assert c.post("/payroll/7", headers=h).status_code == 200
        records = [e for e in audit_records(tmp_path, rt) if e.get("type") == "data_access"]
        assert len(records) == 1 and records[0]["sensitive_data_accessed"] is True
        assert records[0]["resource"] == "/payroll/{pid}"
    finally:
        rt.close()


@pytest.mark.parametrize("categories", [None, {"api": {"capacity": 5, "period_seconds": 60}}])
def test_path_categories_without_their_bucket(tmp_path: Path, categories: Any) -> None:
    """Without a rate_limits section, a route whose category comes from its path is not
    limited (before: 503 on every request, public routes included); with buckets but none for
    the path's category and no ``default`` one, the application does not start."""
    cfg = config(tmp_path)
    if categories is None:
        del cfg["rate_limits"]
    else:
        cfg["rate_limits"]["categories"] = categories
    with bitsec.Runtime(cfg) as rt:
        app = FastAPI(lifespan=bitsec_lifespan(rt))

        @app.get("/equipment")
        @guard("equipment", "read")
        def list_equipment() -> dict:
            return {}

        @app.get("/health")
        @public
        def health() -> dict:
            return {"ok": True}

        app.add_middleware(GuardMiddleware)
        if categories is not None:
            with pytest.raises(ValueError, match="rate category 'default' is not configured, and there is no 'default'"):
                compile_routes(app, rt)
            return
        with TestClient(app) as c:
            r = c.get("/equipment", headers=bearer(token(rt)))
            assert r.status_code == 200 and "X-RateLimit-Limit" not in r.headers
            assert c.get("/health").status_code == 200
            assert c.get("/equipment").status_code == 401


def test_address_key_cache_stays_bounded_under_a_flood_of_addresses(tmp_path: Path) -> None:
    # The guard keeps each client address's rate-limit key encoded, per runtime: a flood of
    # distinct addresses (one request each) only evicts, and every request still gets its own
    # address's key, also right after an eviction and for another runtime.
    (tmp_path / "other").mkdir()
    with Counting(config(tmp_path)) as rt, Counting(config(tmp_path / "other")) as other:
        app = make_app(rt)
        mw = GuardMiddleware(app)
        seen = 0
        for i in range(10_000):
            ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
            key = mw._address_key_bytes(rt, {"type": "http", "client": (ip, 1234), "headers": [], "state": {}})
            assert key == f"ip:{ip}".encode()
            assert len(mw._keys[1]) <= 4096
            seen = max(seen, len(mw._keys[1]))
        assert seen == 4096
        # another runtime: its own cache, never the first one's keys
        assert mw._address_key_bytes(other, {"type": "http", "client": ("10.0.0.1", 1), "headers": [],
                                             "state": {}}) == b"ip:10.0.0.1"
        assert mw._keys[0] is other and len(mw._keys[1]) == 1


# ---- the route's record text -------------------------------------------------------------------

def test_route_record_text_is_the_generic_event_text(tmp_path: Path) -> None:
    # ``_record_text`` writes a compiled route's record from parts kept per route, method,
    # address and user agent: byte for byte the text ``_event`` writes, for every kind of
    # record, method, status, parameter, principal, address, user agent and path; twice each
    # (the second time from the kept parts).
    with bitsec.Runtime(config(tmp_path)) as plain:
        app = make_app(plain)

        @app.api_route("/items/{a}/{b}", methods=["GET", "POST", "PATCH"])
        def two(a: str, b: str) -> dict:
            return {}

        @app.post("/quiet/{q}")
        @guard(audit=False)
        def quiet(q: str) -> dict:
            return {}

        for sensitive in (None, lambda p: "secret" in p, lambda p: 1 / 0):
            mw = GuardMiddleware(app, sensitive=sensitive, trusted_proxies=["10.0.0.0/8"])
            table = mw.compile(app, plain)
            assert mw._own_event
            claims = plain.verify_token(token(plain, 'o"dd\u00e9', tenant_id="t\\1", session_id="s1"))
            session = bitsec.Session("sid-1", 'us"er', "t9", 0, 0, 0, 0)
            states = [{}, {"bitsec_claims": claims}, {"bitsec_session": session}]
            n = 0
            for entry in table.entries:
                names = re.findall(r"{(\w+)", entry.template or "")
                for method, status, state, ua, client, path in itertools.product(
                        ("GET", "POST", "DELETE", "PURGE"), (200, 302, 404, 422, 500, 503, HTTPStatus.CREATED), states,
                        (None, b'ua "x" \\ \x7f\xe9', bytearray(b"ba")), (("10.1.2.3", 1), ("2001:DB8::1", 2), ("bad", 3), None),
                        ("/items/x/y", "/secret/\u00e9", "/s\udc80")):
                    params = {k: v for k, v in zip(names, ('v"1\u00e9', "2", "\udc80"))}
                    for _ in range(2):
                        scope = {"type": "http", "method": method, "path": path, "headers": [], "client": client,
                                 "state": dict(state)}
                        st = scope["state"]
                        want = mw._event(scope, st, status, "rid-1", entry.requirement.audit, ua, (entry.template, params))
                        scope["state"] = st = {k: v for k, v in st.items() if k != "bitsec_client_ip"}
                        got = mw._record_text(entry, scope, st, status, "rid-1", ua, params)
                        assert got == want, (entry.template, method, status, state, ua, client, path)
                        n += want is not None
            assert n > 1000


def test_record_parts_are_bounded_under_a_flood_of_addresses_and_user_agents(tmp_path: Path) -> None:
    # The kept ``ip`` and ``user_agent`` members are bounded tables: a flood of distinct
    # client addresses or user agents only evicts; a user agent over 256 bytes is never kept.
    with bitsec.Runtime(config(tmp_path)) as plain:
        app = make_app(plain)
        mw = GuardMiddleware(app)
        table = mw.compile(app, plain)
        entry = next(e for e in table.entries if e.template == "/me")
        for i in range(10_000):
            ua = b"agent-%d" % i
            scope = {"type": "http", "method": "GET", "path": "/me", "headers": [],
                     "client": (f"2001:db8::{i + 1:x}", 1), "state": {}}
            text = mw._record_text(entry, scope, scope["state"], 200, "r", ua, {})
            rec = json.loads(text)
            assert rec["ip"] == f"2001:db8::{i + 1:x}" and rec["user_agent"] == ua.decode()
            assert len(mw._ip_members) <= 4096 and len(mw._ua_members) <= 1024
        long_ua = b"x" * 257
        scope = {"type": "http", "method": "GET", "path": "/me", "headers": [], "client": ("127.0.0.1", 1), "state": {}}
        assert json.loads(mw._record_text(entry, scope, scope["state"], 200, "r", long_ua, {}))["user_agent"] == "x" * 257
        assert long_ua not in mw._ua_members
        for i in range(100):  # methods a client makes up: a bounded table per route too
            scope = {"type": "http", "method": f"M{i}", "path": "/me", "headers": [], "client": None, "state": {}}
            mw._record_text(entry, scope, scope["state"], 500, "r", None, {})
        assert len(entry.heads) <= 16


def test_a_method_a_client_makes_up_is_the_action_other(tmp_path: Path) -> None:
    # A record's action is its method's for HTTP's own methods, ``other`` for any other (the
    # method as sent stays in ``details.method``): a ``data_access`` record's action is its
    # subtype, a label of the metrics, whose label sets are capped at 2048 -- a client sending
    # that many made-up methods pushed every later subtype (``unauthorized``,
    # ``failed_login``...) into ``_other``, where the alerts never look.
    with bitsec.Runtime(config(tmp_path)) as plain:
        app = make_app(plain, default=Requirement(auth="none", audit=True, rate=""))
        with TestClient(app) as c:
            methods = [f"X{i:05d}" for i in range(60)] + ["PURGE", "OPTIONS"]
            assert {c.request(m, "/nowhere").status_code for m in methods} == {404}
        records = [r for r in audit_records(tmp_path, plain) if r["details"]["path"] == "/nowhere"]
        assert [r["details"]["method"] for r in records] == methods
        assert [(r["type"], r["subtype"], r["action"]) for r in records] == (
            [("data_access", "other", "other")] * 61 + [("data_access", "options", "options")])
        series = [line for line in plain.metrics_text().splitlines() if line.startswith("data_access_events_total{")]
        assert len(series) == 2, series  # other and options, not one per method
        # a compiled route's record (its parts kept per method), and a 403's and a 500's action
        mw = GuardMiddleware(app)
        entry = next(e for e in mw.compile(app, plain).entries if e.template == "/me")
        for status in (200, 403, 500):
            scope = {"type": "http", "method": "X1", "path": "/me", "headers": [], "client": None, "state": {}}
            text = mw._record_text(entry, scope, scope["state"], status, "r", None, {})
            assert text is not None and json.loads(text)["action"] == "other", text


@pytest.mark.parametrize("value,status", [
    ("Bearer {t}", 200), ("Bearer   {t}  ", 200), ("Bearer \t{t}", 200), ("bearer {t}", 200),
    ("BEARER\t{t}", 401), ("Bearer ", 400), ("Bearer", 400), ("Basic {t}", 401), ("Bearer x\u00e9", 401)])
def test_bearer_header_forms(tmp_path: Path, value: str, status: int) -> None:
    # The guard reads ``Authorization`` as the dependencies do (``_bearer_value``), its
    # shortcut for ``Bearer <token>`` included: the scheme in any case, spaces around the token.
    with bitsec.Runtime(config(tmp_path)) as plain:
        app = make_app(plain)
        app.state.bitsec = plain
        header = value.format(t=token(plain)).encode("latin-1")
        assert anyio.run(_asgi_get, app, "/equipment", [(b"authorization", header)]) == status


# ---- the common route's path through __call__ ----------------------------------------------------

class _ThroughDecide(GuardMiddleware):
    """Every request through ``decide`` (the fused path of ``__call__`` off)."""

    def _fast_route(self, rt: Any, req: Requirement) -> bool:
        return False


@pytest.mark.parametrize("proxies", [(), ("10.0.0.0/8",)])
def test_the_fused_path_answers_and_records_as_decide(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      proxies: tuple[str, ...]) -> None:
    # ``__call__`` decides a bearer request on a common route (``_fast_route``) without
    # ``decide``: the same answers (status, body, headers, the remaining budget), the same
    # audit records, for allowed, refused, limited and malformed tokens, on routes whose rate
    # category is declared, is the path's, or is none, and on an optional-token route.
    def run(mw_class: type, where: Path) -> tuple[list[Any], list[dict[str, Any]]]:
        where.mkdir()
        cfg = config(where)
        # a bucket that refills one token a minute: the remaining budget on the answers is the
        # same in both runs however long a run takes (1000 a minute would refill mid-run)
        cfg["rate_limits"]["categories"]["default"]["refill"] = 1
        rt = bitsec.Runtime(cfg)
        app = make_app(rt, mw_class, realm="erp", trusted_proxies=proxies)

        @app.get("/free")
        @guard(rate="")
        def free() -> dict:
            return {}

        ok = token(rt)
        admin = token(rt, "a1", ("admin",))
        cases: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", "/equipment", bearer(ok)), ("GET", "/equipment", bearer(ok)),
            ("GET", "/equipment", bearer(token(rt, exp_in=-60))),
            ("GET", "/equipment", bearer(ok[:-2] + ("AA" if not ok.endswith("AA") else "BB"))),
            ("GET", "/equipment", bearer("x" * 20000)),
            ("GET", "/equipment", {"Authorization": "Bearer \u00e9t\u00e9".encode("latin-1")}),
            ("DELETE", "/equipment/e1", bearer(ok)),  # viewer: no grant (and taken from "auth")
            ("DELETE", "/equipment/e1", bearer(admin)),
            ("DELETE", "/equipment/e2", bearer(admin)),
            ("DELETE", "/equipment/e3", bearer(admin)),  # over the "auth" capacity of 2: 429
            ("GET", "/me", bearer(admin)), ("GET", "/health", bearer(ok)), ("GET", "/free", bearer(ok)),
            ("GET", "/optional", bearer(ok)), ("GET", "/optional", bearer(token(rt, exp_in=-60))), ("GET", "/optional", {}),
            ("GET", "/equipment", {"Authorization": "Bearer "}), ("GET", "/equipment", {}),
        ]
        answers = []
        with TestClient(app) as client:
            for method, path, headers in cases:
                r = client.request(method, path, headers={**headers, "X-Request-ID": f"req-{len(answers)}",
                                                          "X-Forwarded-For": "10.9.8.7"})
                # (the times to wait are read from the clock: a slower run may round them down)
                answers.append((method, path, r.status_code, r.text, sorted(
                    (k, v) for k, v in r.headers.items() if k not in ("date", "x-ratelimit-reset", "retry-after"))))
        rt.close()
        records = [json.loads(line) for line in (where / "audit.log").read_text().splitlines() if line.strip()]
        for e in records:  # what differs between two runs: the clock, ids and the chain
            for k in ("time", "id", "seq", "prev", "hash"):
                e.pop(k, None)
            if isinstance(e.get("details"), dict):
                e["details"].pop("retry_after", None)
        return answers, records

    decided: list[str] = []
    plain_decide = GuardMiddleware.decide

    def counting(self: GuardMiddleware, rt: Any, scope: Any, *a: Any, **k: Any) -> Any:
        decided.append(scope["path"])
        return plain_decide(self, rt, scope, *a, **k)

    with monkeypatch.context() as m:  # (the class's own decide, counted: the fused path stays on)
        m.setattr(GuardMiddleware, "decide", counting)
        fused = run(GuardMiddleware, tmp_path / "fused")
    through = run(_ThroughDecide, tmp_path / "decide")
    assert len(fused[0]) == len(through[0]) == 18
    for a, b in zip(fused[0], through[0]):
        assert a == b
    assert fused[1] == through[1] and len(fused[1]) > 18
    statuses = [a[2] for a in fused[0]]
    assert statuses.count(200) >= 6 and 401 in statuses and 403 in statuses and 429 in statuses and 400 in statuses
    remaining = [dict(a[4]).get("x-ratelimit-remaining") for a in fused[0]]
    assert remaining[0] is not None and remaining[8] == "0"  # (the headers compared are the guard's own)
    # decide ran only for what the fused path leaves to it: the token that is not ASCII, the
    # public route, the optional route without a token, the empty and the missing token
    assert decided == ["/equipment", "/health", "/optional", "/equipment", "/equipment"]


def test_a_subclass_that_overrides_decide_decides_every_request(tmp_path: Path) -> None:
    # A subclass that adds its own rule in ``decide`` (here: a subject it refuses) sees every
    # bearer request on every route; the fused path of ``__call__`` is only for the class's
    # own steps.
    class DenyList(GuardMiddleware):
        def decide(self, rt: Any, scope: Any, state: Any, entry: Any, req: Any, params: Any,
                   token: Any = None) -> GuardResult:
            result = super().decide(rt, scope, state, entry, req, params, token)
            if result.claims is not None and result.claims.subject == "banned":
                return GuardResult(False, 403, "banned", req, result.route_template)
            return result

    with bitsec.Runtime(config(tmp_path)) as rt, TestClient(make_app(rt, DenyList)) as c:
        for _ in range(3):
            assert c.get("/equipment", headers=bearer(token(rt, "banned"))).status_code == 403
            assert c.get("/me", headers=bearer(token(rt, "banned"))).status_code == 403
            assert c.get("/equipment", headers=bearer(token(rt, "fine"))).status_code == 200
