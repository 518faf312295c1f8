"""Administration of other users, under the rule of ``authority.py`` (the target's effective
permissions a strict subset of the actor's, same tenant):

- ``PUT  /api/v1/users/{user_id}/roles``            ``users:update``: replaces the user's roles
  (the new roles a strict subset of the actor's too); the user's tokens are revoked, so the
  new roles apply from the next login
- ``POST /api/v1/users/{user_id}/revoke-sessions``  ``users:update``: revokes every live token
  of the user

The export and anonymisation of another user (``privacy.py``) follow the same rule.
"""
from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import Field, field_validator
from sqlalchemy.orm import Session

from bitsec.fastapi import get_runtime, guard, guard_claims

from .authority import require_authority
from .common import StrictModel, Deps, RowId, audit, revoke_other_sessions, user_of

_ROLE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class RolesIn(StrictModel):
    roles: list[str] = Field(min_length=1, max_length=16)

    @field_validator("roles")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        if any(not _ROLE_NAME.fullmatch(r) for r in v):
            raise ValueError("role names: 1 to 64 of A-Z a-z 0-9 _ . : -")
        return list(dict.fromkeys(v))  # without repeats, in order


def users_admin_router(deps: Deps) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["users"])
    models, auth, db_session = deps.models, deps.auth, deps.db_session

    def target(db: Session, user_id: int) -> Any:
        u = db.get(models.User, user_id)
        if u is None:
            raise HTTPException(status_code=404, detail="User not found")
        return u

    @router.put("/users/{user_id}/roles")
    @guard("users", "update")
    def set_roles(user_id: RowId, body: RolesIn, request: Request,
                  claims: Any = Depends(guard_claims),
                  db: Session = Depends(db_session)) -> dict[str, Any]:
        shape = request.app.state.policy_shape
        unknown = [r for r in body.roles if r not in shape.roles]
        if unknown:
            raise HTTPException(status_code=422, detail=f"Unknown roles: {' '.join(unknown)}")
        actor, user = user_of(db, models, claims), target(db, user_id)
        rt = get_runtime(request)
        require_authority(request, rt, shape, actor, user, "update", new_roles=body.roles)
        if user.anonymized_at is not None:
            raise HTTPException(status_code=409, detail="User was anonymised")
        before = user.roles
        user.role = " ".join(body.roles)
        # Every session of the user ends (one revocation per session): the next login gets
        # the new roles, also when it comes within the same second.
        revoked = revoke_other_sessions(rt, db, models, user.id)
        db.commit()
        audit(request, {"type": "authorization", "subtype": "role_change", "result": "success",
                        "actor": claims.subject, "tenant": claims.tenant_id, "resource": "users",
                        "resource_id": str(user.id), "action": "update",
                        "details": {"roles_before": before, "roles_after": body.roles, "tokens_revoked": revoked}})
        return {"id": user.id, "roles": body.roles, "tokens_revoked": revoked}

    @router.post("/users/{user_id}/revoke-sessions")
    @guard("users", "update")
    def revoke_sessions(user_id: RowId, request: Request,
                        claims: Any = Depends(guard_claims),
                        db: Session = Depends(db_session)) -> dict[str, Any]:
        actor, user = user_of(db, models, claims), target(db, user_id)
        rt = get_runtime(request)
        require_authority(request, rt, request.app.state.policy_shape, actor, user, "revoke_sessions")
        revoked = revoke_other_sessions(rt, db, models, user.id)
        db.commit()
        audit(request, {"type": "session", "subtype": "sessions_revoked", "result": "success",
                        "actor": claims.subject, "tenant": claims.tenant_id, "resource": "users",
                        "resource_id": str(user.id), "action": "revoke_sessions",
                        "details": {"tokens_revoked": revoked}})
        return {"id": user.id, "tokens_revoked": revoked}

    return router
