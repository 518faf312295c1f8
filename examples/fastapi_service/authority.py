"""Authority over other users: who may act on whom.

An action on another user (export, anonymisation, role change, session revocation) needs
more than the permission of the endpoint (``users:export``, ``users:delete``,
``users:update``): the target's *effective permissions* must be a strict subset of the
actor's, in the same tenant. So an ERP ``admin`` cannot export or anonymise a
``super_admin`` (whose grants reach every tenant), nor another ``admin`` (equal, not less),
nor a user who also holds an ``inspection.*`` role (grants the ERP admin does not have); an
``inspection.admin`` cannot anonymise an ERP ``admin``. A role change also needs the *new*
roles to be a strict subset of the actor's: nobody grants what they do not hold, or as much
as they hold.

Effective permissions come from the policy through the library, never from role names: every
``resource:action`` of the policy file is decided for the roles (``rt.check_permissions``,
one batch per probe context), so inheritance, wildcards, denies and the conditions
(``owner_only``, ``cross_tenant``, ``department``) count. A permission under a condition is
a permission of its own (``maintenance_records:update`` for one's own records is less than
``maintenance_records:update``). Every refusal is an audit event (``authorization`` /
``user_authority_denied``, reason ``target_not_subordinate``, ``roles_not_subordinate``,
``self`` or ``other_tenant``).
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from fastapi import HTTPException, Request

import bitsec

from .common import audit

_PROBE_ID = "probe"


@dataclass(frozen=True)
class PolicyShape:
    """The names a policy file speaks of: what effective permissions are probed over."""
    resources: tuple[str, ...]
    actions: tuple[str, ...]
    roles: frozenset[str]
    departments: tuple[str, ...]

    @classmethod
    def from_config(cls, permissions: dict[str, Any]) -> "PolicyShape":
        """From the configuration's ``permissions`` section: its ``policy`` or ``policy_file``."""
        if isinstance(permissions.get("policy"), dict):
            return cls.from_document(permissions["policy"])
        return cls.from_file(permissions["policy_file"])

    @classmethod
    def from_file(cls, path: str | Path) -> "PolicyShape":
        return cls.from_document(json.loads(Path(path).read_text()))

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> "PolicyShape":
        departments: set[str] = set()

        def grants(role: dict[str, Any]) -> Iterable[Any]:
            yield from role.get("allow", [])
            yield from role.get("deny", [])

        for role in doc.get("roles", {}).values():
            for g in grants(role):
                if isinstance(g, dict) and isinstance(g.get("department"), str):
                    departments.add(g["department"])
        return cls(tuple(doc.get("resources", [])), tuple(doc.get("actions", [])),
                   frozenset(doc.get("roles", {})), tuple(sorted(departments)))


def _contexts(shape: PolicyShape, tenant: str) -> list[tuple[str, dict[str, Any]]]:
    """The probes (label, resource context): a grant that holds in more of them is more."""
    out: list[tuple[str, dict[str, Any]]] = [
        ("tenant", {"tenant_id": tenant}),
        ("other_tenant", {"tenant_id": tenant + "-other"}),
        ("own", {"tenant_id": tenant, "owner_id": _PROBE_ID}),
        ("others", {"tenant_id": tenant, "owner_id": _PROBE_ID + "-other"}),
        ("no_department", {"tenant_id": tenant, "department": "-".join(shape.departments) + "-none"}),
    ]
    out += [(f"department={d}", {"tenant_id": tenant, "department": d}) for d in shape.departments]
    return out


def effective_permissions(rt: bitsec.Runtime, shape: PolicyShape, roles: Iterable[str],
                          tenant: str) -> frozenset[tuple[str, str, str]]:
    """``(resource, action, context label)`` for every decision the roles win in the tenant.
    No roles (an anonymised account): the empty set."""
    names = [r for r in roles if r]
    if not names:
        return frozenset()
    principal = bitsec.Principal(id=_PROBE_ID, roles=names, tenant=tenant)
    pairs = [(r, a) for r in shape.resources for a in shape.actions]
    out: set[tuple[str, str, str]] = set()
    for label, ctx in _contexts(shape, tenant):
        for (res, act), d in zip(pairs, rt.check_permissions(principal, pairs, ctx)):
            if d.allowed:
                out.add((res, act, label))
    return frozenset(out)


def _refuse(request: Request, actor: Any, target_id: int, action: str, reason: str, status: int,
            detail: str) -> HTTPException:
    audit(request, {"type": "authorization", "subtype": "user_authority_denied", "result": "denied",
                    "reason": reason, "actor": str(actor.id), "tenant": actor.tenant_id, "resource": "users",
                    "resource_id": str(target_id), "action": action})
    return HTTPException(status_code=status, detail=detail)


def require_authority(request: Request, rt: bitsec.Runtime, shape: PolicyShape, actor: Any, target: Any,
                      action: str, new_roles: list[str] | None = None) -> None:
    """Raises (after auditing) unless ``actor`` may ``action`` the ``target`` user: same
    tenant (404 otherwise, as for a user that does not exist), not oneself, and the target's
    effective permissions (and ``new_roles``' for a role change) a strict subset of the
    actor's (403). Both sides are the users' roles as stored, not as a token claims them."""
    if target.tenant_id != actor.tenant_id:
        raise _refuse(request, actor, target.id, action, "other_tenant", 404, "User not found")
    if target.id == actor.id:
        raise _refuse(request, actor, target.id, action, "self", 403,
                      "Not on your own account: use the /auth and /privacy endpoints")
    mine = effective_permissions(rt, shape, actor.roles, actor.tenant_id)
    theirs = effective_permissions(rt, shape, target.roles, target.tenant_id)
    if not theirs < mine:
        raise _refuse(request, actor, target.id, action, "target_not_subordinate", 403,
                      "Insufficient authority: the user holds permissions you do not")
    if new_roles is not None and not effective_permissions(rt, shape, new_roles, target.tenant_id) < mine:
        raise _refuse(request, actor, target.id, action, "roles_not_subordinate", 403,
                      "Insufficient authority: the new roles grant permissions you do not hold")


def token_subject(token: str) -> tuple[str | None, str | None]:
    """``(sub, jti)`` from a token's payload, unverified, or ``(None, None)`` when it does not
    parse: only to tell whose token a client sent (the library verifies it before revoking)."""
    try:
        part = token.split(".")[1]
        doc = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(doc, dict):
        return None, None
    sub, jti = doc.get("sub"), doc.get("jti")
    return (sub if isinstance(sub, str) else None), (jti if isinstance(jti, str) else None)


def refuse_foreign_refresh_token(request: Request, db: Any, models: Any, claims: Any, token: str) -> None:
    """Logout's ownership check: a refresh token of another user (by its ``sub``, and by the
    service's record of its ``jti``), or one whose owner cannot be told, is refused with 403
    and audited (``authorization`` / ``foreign_token``); nothing is revoked then."""
    sub, jti = token_subject(token)
    owner_ok = sub is not None and sub == claims.subject
    if owner_ok and jti is not None:
        row = db.get(models.IssuedToken, jti)
        owner_ok = row is None or str(row.user_id) == claims.subject
    if not owner_ok:
        audit(request, {"type": "authorization", "subtype": "foreign_token", "result": "denied",
                        "reason": "refresh_token_of_another_user" if sub else "refresh_token_unreadable",
                        "actor": claims.subject, "tenant": claims.tenant_id, "resource": "tokens",
                        "action": "revoke"})
        raise HTTPException(status_code=403, detail="The refresh token is not one of your sessions")
