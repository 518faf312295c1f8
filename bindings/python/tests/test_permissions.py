"""bitsec permissions through the Python binding: decisions, explanations, claims,
conditions, batch, reload, shadow mode, threads."""
from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest

import bitsec
from bitsec import Decision, PermissionDeniedError, Principal
from bitsec.permissions import REASONS

ROOT = Path(__file__).resolve().parents[3]
ADR = ROOT / "examples" / "policies" / "adr007.json"
ERP = ROOT / "examples" / "policies" / "erp.json"

ADR_TABLE = {
    "operator": {"inspections:read", "inspections:create", "defects:read", "artifacts:read"},
    "quality_engineer": {"inspections:read", "inspections:create", "inspections:update", "defects:read",
                         "defects:update", "reports:read", "reports:create", "artifacts:read"},
    "manager": {"inspections:read", "defects:read", "reports:read", "reports:create", "users:read", "artifacts:read"},
}
RESOURCES = ["inspections", "defects", "reports", "artifacts", "users", "system"]
ACTIONS = ["create", "read", "update", "delete", "execute"]


@pytest.fixture()
def adr() -> bitsec.Runtime:
    with bitsec.Runtime({"permissions": {"policy_file": str(ADR)}}) as rt:
        yield rt


def test_adr007_every_role_resource_action(adr: bitsec.Runtime) -> None:
    n = 0
    for role in ["operator", "quality_engineer", "manager", "admin"]:
        p = Principal("u1", [role], tenant="acme")
        for r in RESOURCES:
            for a in ACTIONS:
                d = adr.check_permission(p, r, a)
                expected = role == "admin" or f"{r}:{a}" in ADR_TABLE[role]
                assert bool(d) is expected and d.allowed is expected, (role, r, a)
                assert d.reason == ("granted" if expected else "no_grant")
                assert (d.rule is not None) is expected
                assert adr.check_permission(p, f"{r}:{a}") is d  # same decision object
                n += 1
    assert n == 120


def test_decision_explains_itself(adr: bitsec.Runtime) -> None:
    p = Principal("u1", "operator")
    d = adr.check_permission(p, "inspections", "create")
    assert d and d.reason == "granted" and d.rule == "operator: allow inspections:create"
    d = adr.check_permission(p, "inspections", "delete")
    assert not d and d.reason == "no_grant" and d.rule is None
    assert repr(d) == "Decision(allowed=False, reason='no_grant', rule=None)"
    with pytest.raises(PermissionDeniedError) as e:
        adr.require_permission(p, "inspections", "delete")
    assert str(e.value) == "Insufficient permissions: inspections:delete"  # ADR-007's 403 detail
    assert isinstance(e.value, PermissionError) and isinstance(e.value, bitsec.BitsecError)
    assert e.value.decision.reason == "no_grant"
    assert adr.require_permission(p, "inspections:read").allowed
    assert adr.check_permission(p, "widgets", "read").reason == "unknown_resource"
    assert adr.check_permission(p, "inspections", "fly").reason == "unknown_action"


def test_adr007_claims_with_scopes_and_tenant(adr: bitsec.Runtime) -> None:
    # The access token claims of ADR-007.
    claims = {"sub": "user_12345", "iss": "https://auth.example", "scope": "inspections:read inspections:write defects:read reports:write",
              "user_id": "user_12345", "tenant_id": "acme_manufacturing", "role": "quality_engineer",
              "permissions": ["view_inspections", "create_inspections", "view_defects"]}
    assert adr.check_permission(claims, "inspections", "create")  # write scope covers create
    assert adr.check_permission(claims, "inspections", "update")
    assert adr.check_permission(claims, "reports", "create")
    # The role grants reports:read, the scopes do not.
    d = adr.check_permission(claims, "reports", "read")
    assert not d and d.reason == "scope_missing" and d.rule == "quality_engineer: allow reports:read"
    # The scopes say defects:read only; the role grants defects:update.
    assert adr.check_permission(claims, "defects", "update").reason == "scope_missing"
    # Tenant isolation: the resource of another tenant.
    assert adr.check_permission(claims, "inspections", "read", {"tenant_id": "acme_manufacturing"})
    assert adr.check_permission(claims, "inspections", "read", {"tenant_id": "globex"}).reason == "tenant_mismatch"
    # Without any scope claim, the roles alone decide.
    assert adr.check_permission({"sub": "u", "role": "quality_engineer"}, "reports", "read")
    # A present but empty scope allows nothing.
    assert adr.check_permission({"sub": "u", "role": "admin", "scope": ""}, "reports", "read").reason == "scope_missing"


def test_principal_from_claims_shapes() -> None:
    p = Principal.from_claims({"sub": "a", "roles": ["x", "y"], "role": "z", "scp": ["s1", "s2"], "tenant": "t", "department": "d"})
    assert (p.id, p.roles, p.scopes, p.tenant, p.department) == ("a", "x y z", "s1 s2", "t", "d")
    p = Principal.from_claims({"user_id": "b", "role": "viewer admin", "roles": "ops"})
    assert p.roles == "ops" and p.scopes is None  # a role value with a separator names no role
    with pytest.raises(bitsec.InvalidArgumentError):
        Principal("a\0b", ["x"])
    with pytest.raises(bitsec.InvalidArgumentError):
        Principal("a", ["x y"])
    with pytest.raises(TypeError):
        Principal("a", [1])  # type: ignore[list-item]


def test_erp_hierarchy_and_conditions() -> None:
    with bitsec.Runtime({"permissions": {"policy_file": str(ERP)}}) as rt:
        viewer = Principal("v", ["viewer"], tenant="t1")
        op = Principal("alice", ["operator"], tenant="t1", department="plant")
        mgr = Principal("m", ["manager"], tenant="t1", department="sales")
        admin = Principal("ad", ["admin"], tenant="t1")
        root = Principal("root", ["super_admin"], tenant="platform")
        assert rt.check_permission(viewer, "equipment:read")
        assert rt.check_permission(viewer, "equipment:update").reason == "no_grant"
        assert rt.check_permission(op, "equipment:read")  # inherited from viewer
        assert rt.check_permission(op, "maintenance_records:update").reason == "condition_failed:owner_only"
        assert rt.check_permission(op, "maintenance_records:update", {"owner_id": "bob"}).reason == "condition_failed:owner_only"
        d = rt.check_permission(op, "maintenance_records:update", {"owner_id": "alice", "tenant_id": "t1"})
        assert d and d.rule == "operator: allow maintenance_records:update if owner_only"
        assert rt.check_permission(mgr, "maintenance_records:update", {"owner_id": "bob"})  # manager's own grant
        assert rt.check_permission(mgr, "maintenance_records:approve", {"department": "sales"})
        assert rt.check_permission(mgr, "maintenance_records:approve", {"department": "plant"}).reason == "condition_failed:department"
        assert rt.check_permission(mgr, "customers:update")  # department=sales
        assert rt.check_permission(Principal("m2", ["manager"], department="plant"), "customers:update").reason == "condition_failed:department"
        assert rt.check_permission(admin, "users:delete")
        assert rt.check_permission(admin, "system:delete").reason == "denied_by_rule"
        assert rt.check_permission(root, "system:read", {"tenant_id": "t1"})  # cross_tenant
        assert rt.check_permission(root, "system:delete").reason == "denied_by_rule"  # inherited deny
        d = rt.check_permission(root, "audit_logs:delete")
        assert d.reason == "denied_by_rule" and d.rule == "deny audit_logs:delete for every role"
        assert rt.check_permission(admin, "equipment:read", {"tenant_id": "t2"}).reason == "tenant_mismatch"


def test_context_validation(adr: bitsec.Runtime) -> None:
    p = Principal("u", ["admin"])
    with pytest.raises(bitsec.InvalidArgumentError, match="unknown context keys"):
        adr.check_permission(p, "inspections:read", {"owner": "u"})
    with pytest.raises(bitsec.InvalidArgumentError):
        adr.check_permission(p, "inspections:read", {"owner_id": "a\0b"})
    with pytest.raises(bitsec.InvalidArgumentError, match="resource:action"):
        adr.check_permission(p, "inspections")
    with pytest.raises(TypeError):
        adr.check_permission(42, "inspections:read")  # type: ignore[arg-type]


def test_batch(adr: bitsec.Runtime) -> None:
    p = Principal("u", ["manager"])
    ds = adr.check_permissions(p, ["inspections:read", ("users", "read"), ("users", "delete"), "nope:read"])
    assert [d.reason for d in ds] == ["granted", "granted", "no_grant", "unknown_resource"]
    assert ds[0] is adr.check_permission(p, "inspections:read")
    assert adr.check_permissions(p, []) == []
    every = [f"{r}:{a}" for r in RESOURCES for a in ACTIONS]
    assert [d.allowed for d in adr.check_permissions(p, every)] == [f in ADR_TABLE["manager"] for f in every]
    with pytest.raises(bitsec.InvalidArgumentError):
        adr.check_permissions(p, ["inspections:read users:read"])
    with pytest.raises(bitsec.InvalidArgumentError):
        adr.check_permissions(p, ["a:b"] * 4097)


def test_unknown_roles_are_ignored_and_counted(adr: bitsec.Runtime) -> None:
    p = Principal("u", ["ghost", "operator", "wizard"])
    assert adr.check_permission(p, "inspections:create")
    assert adr.permission_stats()["unknown_roles"] == 2


def test_reload_shadow_and_stats(adr: bitsec.Runtime, tmp_path: Path) -> None:
    p = Principal("u", ["operator"])
    assert not adr.check_permission(p, "reports:read")
    candidate = json.loads(ADR.read_text())
    candidate["roles"]["operator"]["allow"].append("reports:read")
    adr.load_shadow_policy(candidate)
    assert not adr.check_permission(p, "reports:read")  # shadow changes no decision
    assert adr.check_permission(p, "inspections:read")
    stats = adr.permission_stats()
    assert stats["shadow_decisions"] == 2 and stats["shadow_disagreements"] == 1
    assert stats["shadow"]["rules"] == stats["policy"]["rules"] + 1
    # Promote it: from a file path this time.
    path = tmp_path / "p.json"
    path.write_text(json.dumps(candidate))
    adr.load_policy(path)
    d = adr.check_permission(p, "reports:read")
    assert d and d.rule == "operator: allow reports:read"
    adr.load_shadow_policy(None)
    stats = adr.permission_stats()
    assert stats["shadow"] is None and stats["reloads"] == 1 and stats["policy"]["generation"] == 2
    # A bad policy is refused and the active one stays.
    with pytest.raises(bitsec.ConfigError, match="role inheritance cycle: a -> b -> a"):
        adr.load_policy({"resources": ["d"], "actions": ["r"], "roles": {"a": {"inherits": ["b"]}, "b": {"inherits": ["a"]}}})
    assert adr.check_permission(p, "reports:read")
    with pytest.raises(bitsec.ConfigError, match="unknown action"):
        adr.load_policy('{"resources": ["d"], "actions": ["r"], "roles": {"a": {"allow": ["d:w"]}}}')


def test_atomic_reload_under_eight_threads(adr: bitsec.Runtime) -> None:
    v1 = json.loads(ADR.read_text())
    v2 = json.loads(ADR.read_text())
    v2["roles"]["operator"]["allow"].append("system:execute")
    p = Principal("u", ["operator"])
    errors: list[str] = []
    stop = threading.Event()

    def decide() -> None:
        while not stop.is_set():
            a = adr.check_permission(p, "inspections:read")
            b = adr.check_permission(p, "system:execute")
            batch = adr.check_permissions(p, ["system:execute", "inspections:read", "system:execute"])
            if not a or b.reason not in ("granted", "no_grant"):
                errors.append(f"{a} {b}")
            if batch[0].raw != batch[2].raw or not batch[1]:
                errors.append(f"mixed batch {batch}")

    threads = [threading.Thread(target=decide) for _ in range(8)]
    for t in threads:
        t.start()
    for i in range(60):
        adr.load_policy(v2 if i % 2 == 0 else v1)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []


def test_not_configured_and_closed() -> None:
    with bitsec.Runtime({}) as rt:
        with pytest.raises(bitsec.NotConfiguredError):
            rt.check_permission(Principal("u", ["x"]), "a:b")
    with pytest.raises(bitsec.ClosedError):
        rt.check_permission(Principal("u", ["x"]), "a:b")


def test_reason_codes_match_header_and_library(repo_root: Path) -> None:
    text = (repo_root / "include" / "bitsec.h").read_text()
    block = text[text.index("/* ---- permissions ---- */"):text.index('#include "bitsec_api.h"')]
    codes = {int(m[2]): m[3] for m in re.finditer(r"#define BITSEC_PERM_(\w+) (\d+)\s+/\* \"([^\"]+)\"", block)}
    assert codes == REASONS
    for code, name in REASONS.items():
        assert bitsec.permission_reason(code) == name
    assert bitsec.permission_reason(0) == "unknown"
    assert Decision(0x0101, None).reason == "granted"


def test_claims_as_json_bytes(adr: bitsec.Runtime) -> None:
    claims = json.dumps({"sub": "u", "role": "quality_engineer", "scope": "inspections:write", "tenant_id": "acme"}).encode()
    assert adr.check_permission(claims, "inspections", "create")
    assert adr.check_permission(claims, "inspections:read").reason == "scope_missing"
    assert adr.check_permission(claims, "inspections:create", {"tenant_id": "globex"}).reason == "tenant_mismatch"
    with pytest.raises(bitsec.MalformedError):
        adr.check_permission(b"[1]", "inspections:read")
    # The same reading as Principal.from_claims.
    d = {"user_id": "7", "roles": ["manager", "x y"], "scp": ["users:read"], "tenant": "t"}
    assert adr.check_permission(json.dumps(d).encode(), "users:read") is adr.check_permission(d, "users:read")
