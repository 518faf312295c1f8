"""Authority over other users in the reference service (examples/fastapi_service/authority.py):
an export, anonymisation, role change or session revocation of another user needs the
target's effective permissions to be a strict subset of the caller's, in the same tenant.
Over HTTP, once with the embedded default and once with Redis (refsvc_support.svc).

The expected table is data written from policy.json (the ERP hierarchy and ADR-007's roles),
not computed by the code under test."""
from __future__ import annotations

import json
from typing import Any

from refsvc_support import API, Service, bearer, svc  # noqa: F401 (svc is a fixture)

ACTORS = ["admin", "super_admin", "inspection.admin", "admin inspection.admin"]
TARGETS = ["viewer", "operator", "manager", "admin", "super_admin",
           "inspection.operator", "inspection.quality_engineer", "inspection.manager", "inspection.admin",
           "manager inspection.quality_engineer", "viewer inspection.operator", "admin inspection.admin"]
ERP_BELOW_ADMIN = {"viewer", "operator", "manager"}
ADR_BELOW_ADMIN = {"inspection.operator", "inspection.quality_engineer", "inspection.manager"}
MIXED_BELOW = {"manager inspection.quality_engineer", "viewer inspection.operator"}
# Who each actor may act on. An ERP admin: only the ERP roles below it. inspection.admin:
# only ADR-007's roles below it (every ERP role reads equipment, which it cannot).
# super_admin: everything of the ERP family (admin included) and of ADR-007 but
# inspection.admin, whose system:delete super_admin does not hold (admin's deny "system:delete",
# inherited). admin's deny also holds for a user with the roles admin and inspection.admin
# (a deny of any of one's roles wins): that user lacks system:delete too, so super_admin is
# above them, and they are not above inspection.admin; they are above both families' lower
# roles and the ERP admin, not above super_admin (grants in every tenant) nor their equal.
ALLOWED: dict[str, set[str]] = {
    "admin": ERP_BELOW_ADMIN,
    "super_admin": ERP_BELOW_ADMIN | {"admin"} | ADR_BELOW_ADMIN | MIXED_BELOW | {"admin inspection.admin"},
    "inspection.admin": ADR_BELOW_ADMIN,
    "admin inspection.admin": ERP_BELOW_ADMIN | {"admin"} | ADR_BELOW_ADMIN | MIXED_BELOW,
}
REFUSED = "Insufficient authority: the user holds permissions you do not"


def _name(roles: str) -> str:
    return roles.replace(" ", "+").replace(".", "-")


def _events(svc: Service, subtype: str) -> list[dict[str, Any]]:
    svc.rt.audit_flush()
    return [e for e in map(json.loads, svc.audit_path.read_text().splitlines()) if e.get("subtype") == subtype]


def _actors(svc: Service) -> dict[str, str]:
    tokens = {}
    for i, roles in enumerate(ACTORS):
        svc.add_user("actor-" + _name(roles), roles)
        tokens[roles] = svc.token("actor-" + _name(roles), client=svc.client_at(f"10.7.0.{i + 1}"))
    return tokens


def test_authority_matrix_over_session_revocation(svc: Service) -> None:
    """Every actor x every target (single roles, several roles, both families): 200 or 403,
    each refusal audited; the target of a refusal keeps its session."""
    tokens = _actors(svc)
    refusals = 0
    for a, actor in enumerate(ACTORS):
        for t, roles in enumerate(TARGETS):
            name = f"t{a}-{t}-{_name(roles)}"
            uid = svc.add_user(name, roles)
            # an address per target: refused tokens count against the client address's auth budget
            there = svc.client_at(f"10.8.{a}.{t + 1}")
            target_token = svc.token(name, client=there)
            r = svc.client.post(f"{API}/users/{uid}/revoke-sessions", headers=bearer(tokens[actor]))
            alive = there.get(f"{API}/auth/me", headers=bearer(target_token)).status_code
            if roles in ALLOWED[actor]:
                assert r.status_code == 200, (actor, roles, r.text)
                assert r.json() == {"id": uid, "tokens_revoked": 2}
                assert alive == 401, (actor, roles)
            else:
                refusals += 1
                assert (r.status_code, r.json()) == (403, {"detail": REFUSED}), (actor, roles)
                assert alive == 200, (actor, roles)
    denied = _events(svc, "user_authority_denied")
    assert refusals == sum(len(set(TARGETS) - ALLOWED[a]) for a in ACTORS) and len(denied) == refusals
    assert all(e["type"] == "authorization" and e["result"] == "denied" and e["reason"] == "target_not_subordinate"
               and e["resource"] == "users" and e["action"] == "revoke_sessions" for e in denied)


def test_erp_admin_cannot_export_or_anonymise_a_super_admin_or_a_peer(svc: Service) -> None:
    admin = svc.token("alice")
    boss = svc.add_user("sam", "super_admin", email="sam@example.com")
    peer = svc.add_user("ann", "admin")
    both = svc.add_user("qe", ["manager", "inspection.quality_engineer"])
    for uid in (boss, peer, both):
        r = svc.client.get(f"{API}/users/{uid}/export", headers=bearer(admin))
        assert (r.status_code, r.json()) == (403, {"detail": REFUSED}), uid
        r = svc.client.post(f"{API}/users/{uid}/anonymize", headers=bearer(admin))
        assert (r.status_code, r.json()) == (403, {"detail": REFUSED}), uid
    # nothing happened to them: they still log in
    for name in ("sam", "ann", "qe"):
        assert svc.login(name, client=svc.client_at("10.7.1.1")).status_code == 200
    # ...while a manager below the admin is exported
    assert svc.client.get(f"{API}/users/{svc.ids['mia']}/export", headers=bearer(admin)).status_code == 200
    denied = _events(svc, "user_authority_denied")
    assert sorted((e["action"], e["resource_id"]) for e in denied) == sorted(
        (a, str(u)) for a in ("export", "anonymize") for u in (boss, peer, both))
    assert all(e["actor"] == str(svc.ids["alice"]) and e["tenant"] == "fab-1" for e in denied)


def test_inspection_admin_cannot_anonymise_an_erp_admin(svc: Service) -> None:
    svc.add_user("iris", "inspection.admin")
    iris = svc.token("iris")
    r = svc.client.post(f"{API}/users/{svc.ids['alice']}/anonymize", headers=bearer(iris))
    assert (r.status_code, r.json()) == (403, {"detail": REFUSED})
    r = svc.client.post(f"{API}/users/{svc.ids['victor']}/anonymize", headers=bearer(iris))  # a viewer: equipment:read
    assert r.status_code == 403
    assert svc.login("alice").status_code == 200
    op = svc.add_user("ivan", "inspection.operator")
    r = svc.client.post(f"{API}/users/{op}/anonymize", headers=bearer(iris))
    assert r.status_code == 200 and r.json()["anonymized"] is True


def test_no_action_on_oneself_or_another_tenant(svc: Service) -> None:
    admin = svc.token("alice")
    svc.add_user("fred", "viewer", "fab-2")
    r = svc.client.post(f"{API}/users/{svc.ids['alice']}/revoke-sessions", headers=bearer(admin))
    assert r.status_code == 403
    r = svc.client.put(f"{API}/users/{svc.ids['alice']}/roles", json={"roles": ["super_admin"]}, headers=bearer(admin))
    assert r.status_code == 403
    for method, path, body in (("GET", "export", None), ("POST", "anonymize", None), ("POST", "revoke-sessions", None),
                               ("PUT", "roles", {"roles": ["viewer"]})):
        r = svc.client.request(method, f"{API}/users/{svc.ids['fred']}/{path}", json=body, headers=bearer(admin))
        assert (r.status_code, r.json()) == (404, {"detail": "User not found"}), path
    reasons = sorted(e["reason"] for e in _events(svc, "user_authority_denied"))
    assert reasons == ["other_tenant"] * 4 + ["self"] * 2
    assert svc.client.get(f"{API}/auth/me", headers=bearer(admin)).status_code == 200


def test_role_change_within_the_actors_authority(svc: Service) -> None:
    admin = svc.token("alice")
    victor = svc.pair("victor")
    uid = svc.ids["victor"]
    # promotion to a role below the admin: done, the old tokens are revoked
    r = svc.client.put(f"{API}/users/{uid}/roles", json={"roles": ["manager"]}, headers=bearer(admin))
    assert r.status_code == 200 and r.json() == {"id": uid, "roles": ["manager"], "tokens_revoked": 2}
    assert svc.client.get(f"{API}/auth/me", headers=bearer(victor["access_token"])).status_code == 401
    me = svc.client.get(f"{API}/auth/me", headers=bearer(svc.token("victor"))).json()
    assert me["roles"] == ["manager"]
    # not to the admin's own level or above, not into the other family
    for roles in (["admin"], ["super_admin"], ["manager", "inspection.operator"], ["inspection.admin"]):
        r = svc.client.put(f"{API}/users/{uid}/roles", json={"roles": roles}, headers=bearer(admin))
        assert r.status_code == 403 and r.json()["detail"].startswith("Insufficient authority: the new roles"), roles
    # names the policy does not know, malformed bodies
    for body in ({"roles": ["root"]}, {"roles": []}, {"roles": ["a b"]}, {"roles": "manager"}, {"roles": [1]},
                 {"roles": ["viewer"] * 17}, {}):
        assert svc.client.put(f"{API}/users/{uid}/roles", json=body, headers=bearer(admin)).status_code == 422, body
    # an inspection admin manages ADR-007 roles only
    svc.add_user("iris", "inspection.admin")
    op = svc.add_user("ivan", "inspection.operator")
    iris = svc.token("iris")
    r = svc.client.put(f"{API}/users/{op}/roles", json={"roles": ["inspection.quality_engineer"]}, headers=bearer(iris))
    assert r.status_code == 200
    r = svc.client.put(f"{API}/users/{op}/roles", json={"roles": ["viewer"]}, headers=bearer(iris))
    assert r.status_code == 403
    assert svc.client.get(f"{API}/auth/me", headers=bearer(svc.token("victor"))).json()["roles"] == ["manager"]
    events = _events(svc, "user_authority_denied")
    assert [e["reason"] for e in events] == ["roles_not_subordinate"] * 5
    changes = _events(svc, "role_change")
    assert [(e["resource_id"], e["details"]["roles_after"]) for e in changes] == [
        (str(uid), ["manager"]), (str(op), ["inspection.quality_engineer"])]
