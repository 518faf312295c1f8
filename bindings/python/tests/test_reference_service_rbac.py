"""The full RBAC matrix of the reference service through HTTP: every role of its policy x
every guarded endpoint, once with the embedded default and once with Redis.

The expected table below is data written from the policy documents (examples/policies/erp.json:
the ERP guide's hierarchy; examples/policies/adr007.json: ADR-007's role table), not computed
by bitsec. test_combined_policy_decides_as_each_document checks the service's one policy file
(examples/fastapi_service/policy.json) against the two documents' files."""
from __future__ import annotations

import itertools
import json
import re
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

import bitsec
from refsvc_support import API, ROOT, Service, bearer, redis_section

ERP = ["viewer", "operator", "manager", "admin", "super_admin"]
ADR = ["inspection.operator", "inspection.quality_engineer", "inspection.manager", "inspection.admin"]
ROLES = ERP + ADR
EVERYONE = set(ROLES)

# endpoint -> (method, path, the permission its guard checks, the roles that hold it)
MATRIX: dict[str, tuple[str, str, str | None, set[str]]] = {
    # erp.json: viewer has equipment:read, every ERP role inherits it; super_admin *:*
    "equipment.list":   ("GET",    f"{API}/equipment",             "equipment:read",   set(ERP)),
    "equipment.search": ("GET",    f"{API}/equipment/search?q=La", "equipment:read",   set(ERP)),
    "equipment.get":    ("GET",    f"{API}/equipment/{{eid}}",     "equipment:read",   set(ERP)),
    # operator: equipment:update; manager: equipment:create; admin: equipment:*
    "equipment.update": ("PUT",    f"{API}/equipment/{{eid}}",     "equipment:update", {"operator", "manager", "admin",
                                                                                         "super_admin"}),
    "equipment.create": ("POST",   f"{API}/equipment",             "equipment:create", {"manager", "admin", "super_admin"}),
    "equipment.delete": ("DELETE", f"{API}/equipment/{{eid}}",     "equipment:delete", {"admin", "super_admin"}),
    # adr007.json: every ADR-007 role reads inspections; operator and quality_engineer create,
    # quality_engineer updates, admin (*:*) does everything; super_admin (*:*) too
    "inspections.list":   ("GET",    "/v1/inspections",         "inspections:read",   set(ADR) | {"super_admin"}),
    "inspections.get":    ("GET",    "/v1/inspections/{iid}",   "inspections:read",   set(ADR) | {"super_admin"}),
    "inspections.create": ("POST",   "/v1/inspections",         "inspections:create", {"inspection.operator",
                                                                                       "inspection.quality_engineer",
                                                                                       "inspection.admin", "super_admin"}),
    "inspections.update": ("PUT",    "/v1/inspections/{iid}",   "inspections:update", {"inspection.quality_engineer",
                                                                                       "inspection.admin", "super_admin"}),
    "inspections.delete": ("DELETE", "/v1/inspections/{iid}",   "inspections:delete", {"inspection.admin", "super_admin"}),
    # GDPR: the ERP admin has users:* (export among its actions); ADR-007 has no export action;
    # users:delete: ERP admin (users:*) and ADR-007's admin (*:*)
    "users.export":    ("GET",  f"{API}/users/{{uid}}/export",    "users:export", {"admin", "super_admin"}),
    "users.anonymize": ("POST", f"{API}/users/{{uid}}/anonymize", "users:delete", {"admin", "super_admin",
                                                                                  "inspection.admin"}),
    # users:update: ERP admin (users:*), ADR-007's admin (*:*) and super_admin
    "users.roles":     ("PUT",  f"{API}/users/{{uid}}/roles",     "users:update", {"admin", "super_admin",
                                                                                  "inspection.admin"}),
    "users.revoke":    ("POST", f"{API}/users/{{uid}}/revoke-sessions", "users:update", {"admin", "super_admin",
                                                                                        "inspection.admin"}),
    # the policy reload: system:update, which ADR-007's admin (*:* over its resources, system
    # among them) and super_admin hold; the ERP admin has no grant on system
    "policy.reload":   ("POST", f"{API}/admin/policy/reload",      "system:update", {"super_admin", "inspection.admin"}),
    # adr007.json: every ADR-007 role reads defects and artifacts; only its admin (*:*) creates
    # and deletes defects, the quality engineer updates them; artifacts:create and
    # inspections:execute (the inference endpoint) are the admin's alone
    "defects.list":   ("GET",    "/v1/defects",         "defects:read",   set(ADR) | {"super_admin"}),
    "defects.get":    ("GET",    "/v1/defects/{did}",   "defects:read",   set(ADR) | {"super_admin"}),
    "defects.create": ("POST",   "/v1/defects",         "defects:create", {"inspection.admin", "super_admin"}),
    "defects.update": ("PUT",    "/v1/defects/{did}",   "defects:update", {"inspection.quality_engineer",
                                                                           "inspection.admin", "super_admin"}),
    "defects.delete": ("DELETE", "/v1/defects/{did}",   "defects:delete", {"inspection.admin", "super_admin"}),
    # reports: both documents grant them: every ERP role reads (viewer up), the ERP manager up
    # creates; ADR-007's quality engineer, manager and admin read and create
    "reports.create": ("POST",   "/v1/reports",         "reports:create", {"manager", "admin", "super_admin",
                                                                           "inspection.quality_engineer",
                                                                           "inspection.manager", "inspection.admin"}),
    "reports.list":   ("GET",    "/v1/reports",         "reports:read",   set(ERP) | {"inspection.quality_engineer",
                                                                                      "inspection.manager", "inspection.admin"}),
    "reports.get":    ("GET",    "/v1/reports/{rid}",   "reports:read",   set(ERP) | {"inspection.quality_engineer",
                                                                                      "inspection.manager", "inspection.admin"}),
    "artifacts.create":   ("POST", "/v1/artifacts",             "artifacts:create", {"inspection.admin", "super_admin"}),
    "artifacts.get":      ("GET",  "/v1/artifacts/{aid}",         "artifacts:read", set(ADR) | {"super_admin"}),
    "artifacts.download": ("GET",  "/v1/artifacts/{aid}/content", "artifacts:read", set(ADR) | {"super_admin"}),
    "infer":              ("POST", "/v1/infer",                 "inspections:execute", {"inspection.admin", "super_admin"}),
    # one's own data: any authenticated user, no permission
    "privacy.export":  ("GET",  f"{API}/privacy/export",           None,           EVERYONE),
}
BODIES = {"equipment.update": {"notes": "checked"}, "equipment.create": {"name": "Lathe", "cost": "10.5"},
          "inspections.create": {"lot_id": "L-1", "station": "AOI-1"},
          "inspections.update": {"defect_count": 1},
          "defects.update": {"status": "confirmed"}, "infer": {"features": [0.1, 0.2, 0.3]}}
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
OK = {"GET": 200, "PUT": 200, "POST": 200, "DELETE": 204}
# The user endpoints act on a user below the caller (authority.py: effective permissions a
# strict subset of the caller's): a viewer for the ERP roles, an inspection.operator for
# ADR-007's; test_reference_service_authority.py covers the other targets.
USER_ENDPOINTS = {"users.export", "users.anonymize", "users.roles", "users.revoke"}


def subordinate_role(role: str) -> str:
    return "inspection.operator" if role.startswith("inspection.") else "viewer"


def body_of(endpoint: str, role: str) -> dict[str, Any] | None:
    if endpoint == "users.roles":
        return {"roles": [subordinate_role(role)]}
    return BODIES.get(endpoint)


def request_of(endpoint: str, role: str, ids: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the request (a multipart upload for artifacts.create)."""
    if endpoint == "artifacts.create":
        return {"files": {"file": ("die.png", PNG, "image/png")}}
    if endpoint == "defects.create":
        return {"json": {"inspection_id": ids["iid"], "defect_type": "scratch", "severity": "low"}}
    if endpoint == "reports.create":
        return {"json": {"title": "Week 1", "inspection_ids": [ids["iid"]]}}
    return {"json": body_of(endpoint, role)}


OK_CREATED = {"equipment.create", "inspections.create", "defects.create", "reports.create", "artifacts.create"}


class Matrix:
    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.tokens: dict[str, str] = {}
        for i, role in enumerate(ROLES):
            name = "u-" + role.replace(".", "-")
            svc.add_user(name, role)
            # one client address per login: ADR-007's auth limit is 10 a minute per address
            self.tokens[role] = svc.token(name, client=svc.client_at(f"10.9.0.{i + 1}"))
        self.subject = svc.add_user("subject", "viewer", email="subject@example.com")

    def target(self, endpoint: str, role: str = "admin") -> dict[str, Any]:
        """A fresh record (or user, below ``role``) for the endpoint, so that deletions do not interfere."""
        models = self.svc.app.state.models
        with self.svc.app.state.sessions() as db, db.begin():
            e = models.Equipment(tenant_id="fab-1", name="Lathe", serial_number="SN-1")
            i = models.Inspection(tenant_id="fab-1", lot_id="L-0", station="AOI-0")
            db.add_all([e, i])
            db.flush()
            d = models.Defect(tenant_id="fab-1", inspection_id=i.id, defect_type="scratch", severity="low")
            r = models.Report(tenant_id="fab-1", title="R", summary="{}")
            stored = uuid.uuid4().hex
            (self.svc.app.state.data_dir / "artifacts" / stored).write_bytes(PNG)
            a = models.Artifact(tenant_id="fab-1", stored_name=stored, content_type="image/png", size=len(PNG),
                                sha256="0" * 64)
            db.add_all([d, r, a])
            db.flush()
            ids = {"eid": e.id, "iid": i.id, "uid": self.subject, "did": d.id, "rid": r.id, "aid": a.id}
        if endpoint in USER_ENDPOINTS:
            ids["uid"] = self.svc.add_user(f"victim-{ids['eid']}", subordinate_role(role))
        return ids


@pytest.fixture(scope="module", params=["embedded", "redis"])
def matrix(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    redis = redis_section(request) if request.param == "redis" else None
    s = Service(tmp_path_factory.mktemp("rbac"), redis)
    with s.client:
        yield Matrix(s)


def guard_of(app: Any) -> Any:
    """The service's GuardMiddleware instance (in the built middleware stack)."""
    from bitsec.fastapi import GuardMiddleware

    layer = app.middleware_stack
    while layer is not None and not isinstance(layer, GuardMiddleware):
        layer = getattr(layer, "app", None)
    assert layer is not None, "the service runs without a GuardMiddleware"
    return layer


def test_matrix_covers_every_role_and_guarded_route(matrix: Matrix) -> None:
    # every route of the service whose guard decides a permission is in MATRIX with that very
    # permission (a new guarded route without a row, or a row naming another permission, fails
    # here); the table is the one GuardMiddleware compiled at startup (strict: every route
    # declares @guard or @public)
    def shape(path: str) -> str:  # parameter names do not matter
        return re.sub(r"\{[^}]*\}", "{}", path.split("?")[0])

    guard = guard_of(matrix.svc.app)
    assert guard.strict and guard.table is not None
    def declared(cookies: bool) -> set[tuple[str, str, str | None]]:
        return {(m, shape(e.template), e.requirement.permission) for e in guard.table.entries
                if (e.requirement.permission is not None or cookies) and e.requirement.cookies == cookies
                for m in (getattr(e.route, "methods", None) or ()) if m != "HEAD"}

    assert declared(False) == {(m, shape(p), perm) for m, p, perm, _ in MATRIX.values() if perm is not None}
    # the web UI's cookie routes: a session (and CSRF on POST) on each, the permissions decided
    # for the session's user (COOKIE_MATRIX)
    assert declared(True) == {(m, p, perm) for m, p, perm, _ in COOKIE_MATRIX.values()} | {
        ("GET", "/ui/me", None), ("POST", "/ui/logout", None)}
    roles = json.loads((ROOT / "examples/fastapi_service/policy.json").read_text())["roles"]
    assert sorted(roles) == sorted(ROLES)


@pytest.mark.parametrize("endpoint,role", list(itertools.product(MATRIX, ROLES)))
def test_rbac_matrix(matrix: Matrix, endpoint: str, role: str) -> None:
    method, path, permission, allowed = MATRIX[endpoint]
    ids = matrix.target(endpoint, role)
    r = matrix.svc.client.request(method, path.format(**ids), **request_of(endpoint, role, ids),
                                  headers=bearer(matrix.tokens[role]))
    if role in allowed:
        expected = 201 if endpoint in OK_CREATED else OK[method]
        assert r.status_code == expected, (r.status_code, r.text)
    else:
        assert r.status_code == 403, (r.status_code, r.text)
        assert r.json() == {"detail": f"Insufficient permissions: {permission}"}


# The web UI's cookie routes (webui.py): the guard decides their permission for the session's
# user, whose roles the service reads from its users table (ui_principal).
COOKIE_MATRIX: dict[str, tuple[str, str, str, set[str]]] = {
    "ui.equipment.list":   ("GET",  "/ui/equipment", "equipment:read",   set(ERP)),
    "ui.equipment.create": ("POST", "/ui/equipment", "equipment:create", {"manager", "admin", "super_admin"}),
}
UI_ORIGIN = "https://erp.bitcorp.example"


@pytest.mark.parametrize("endpoint,role", list(itertools.product(COOKIE_MATRIX, ROLES)))
def test_rbac_matrix_of_the_cookie_routes(matrix: Matrix, endpoint: str, role: str) -> None:
    from examples.fastapi_service.webui import ui_session

    method, path, permission, allowed = COOKIE_MATRIX[endpoint]
    svc = matrix.svc
    user = svc.ids["u-" + role.replace(".", "-")]
    client = svc.client_at("10.9.2.1")
    session = svc.rt.session_create(str(user), "fab-1", "10.9.2.1")
    client.cookies.set(ui_session.cookie_name, session.token)
    headers = {"Origin": UI_ORIGIN, "X-CSRF-Token": svc.rt.csrf_token_issue(session.session_id)}
    body = {"name": "Lathe", "serial_number": f"SN-{uuid.uuid4().hex[:8].upper()}"} if method == "POST" else None
    r = client.request(method, "https://testserver" + path, json=body, headers=headers)
    if role in allowed:
        assert r.status_code == (201 if method == "POST" else 200), (r.status_code, r.text)
    else:
        assert (r.status_code, r.json()) == (403, {"detail": f"Insufficient permissions: {permission}"})


def test_a_user_with_roles_of_both_families(matrix: Matrix) -> None:
    svc = matrix.svc
    svc.add_user("both", ["viewer", "inspection.quality_engineer"])
    t = svc.token("both", client=svc.client_at("10.9.1.1"))
    ids = matrix.target("inspections.update")
    assert svc.client.get(f"{API}/equipment", headers=bearer(t)).status_code == 200
    assert svc.client.put(f"/v1/inspections/{ids['iid']}", json={"status": "passed"}, headers=bearer(t)).status_code == 200
    assert svc.client.put(f"{API}/equipment/{ids['eid']}", json={"notes": "x"}, headers=bearer(t)).status_code == 403
    assert svc.client.get(f"{API}/auth/me", headers=bearer(t)).json()["roles"] == ["viewer", "inspection.quality_engineer"]


def test_audit_chain_verifies_after_the_matrix(matrix: Matrix) -> None:
    # one denial of its own, so the test means something when run alone
    svc = matrix.svc
    assert svc.client.delete(f"/v1/inspections/{matrix.target('inspections.delete')['iid']}",
                             headers=bearer(matrix.tokens["viewer"])).status_code == 403
    svc.rt.audit_flush()
    report = bitsec.audit_verify([svc.audit_path])
    assert report.intact, report
    assert '"reason":"no_grant"' in svc.audit_path.read_text()


# ---- the service's policy file against the two documents' ------------------------------------

POLICIES = ROOT / "examples" / "policies"


def _runtime(path: Path) -> bitsec.Runtime:
    return bitsec.Runtime({"permissions": {"policy_file": str(path)}})


def _contexts() -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """(principal fields, resource context) pairs that exercise tenant, owner and
    department conditions."""
    out: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    for dept in ("sales", "quality"):
        p = {"id": "u1", "tenant": "t1", "department": dept}
        out.append((p, None))
        for ctx in ({"tenant_id": "t1"}, {"tenant_id": "t2"}, {"tenant_id": "t1", "owner_id": "u1"},
                    {"tenant_id": "t1", "owner_id": "u2"}, {"tenant_id": "t1", "department": dept},
                    {"tenant_id": "t1", "department": "other"}):
            out.append((p, ctx))
    return out


def test_combined_policy_decides_as_each_document() -> None:
    combined, erp, adr = (_runtime(p) for p in (ROOT / "examples/fastapi_service/policy.json",
                                                  POLICIES / "erp.json", POLICIES / "adr007.json"))
    try:
        erp_doc = json.loads((POLICIES / "erp.json").read_text())
        adr_doc = json.loads((POLICIES / "adr007.json").read_text())
        checked = 0
        for family, prefix, rt, doc in (("erp", "", erp, erp_doc), ("adr007", "inspection.", adr, adr_doc)):
            for role in doc["roles"]:
                for (pf, ctx), res, act in itertools.product(_contexts(), doc["resources"], doc["actions"]):
                    mine = combined.check_permission(bitsec.Principal(roles=[prefix + role], **pf), res, act, ctx)
                    theirs = rt.check_permission(bitsec.Principal(roles=[role], **pf), res, act, ctx)
                    assert (mine.allowed, mine.reason) == (theirs.allowed, theirs.reason), (family, role, res, act, ctx)
                    checked += 1
        assert checked > 1000
        # neither family reaches the other's resources (super_admin's *:* excepted)
        only_erp = set(erp_doc["resources"]) - set(adr_doc["resources"])
        only_adr = set(adr_doc["resources"]) - set(erp_doc["resources"])
        p = {"id": "u1", "tenant": "t1"}
        for role, res, act in itertools.product(ADR, only_erp, erp_doc["actions"] + adr_doc["actions"]):
            assert not combined.check_permission(bitsec.Principal(roles=[role], **p), res, act), (role, res, act)
        for role, res, act in itertools.product(ERP[:-1], only_adr, adr_doc["actions"]):
            assert not combined.check_permission(bitsec.Principal(roles=[role], **p), res, act), (role, res, act)
        for role, res in itertools.product(ADR, adr_doc["resources"]):
            for act in set(erp_doc["actions"]) - set(adr_doc["actions"]):  # approve, export
                assert not combined.check_permission(bitsec.Principal(roles=[role], **p), res, act), (role, res, act)
    finally:
        for rt in (combined, erp, adr):
            rt.close()
