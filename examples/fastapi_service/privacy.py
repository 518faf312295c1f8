"""The ERP guide's GDPR endpoints: export of a user's personal data, and anonymisation.

- ``GET  /api/v1/privacy/export``             the caller's own data (any authenticated user)
- ``POST /api/v1/privacy/anonymize``          the caller erases themself (password re-entered)
- ``GET  /api/v1/users/{user_id}/export``     for an administrator: ``users:export``
- ``POST /api/v1/users/{user_id}/anonymize``  for an administrator: ``users:delete``

An administrator acts only on users of the same tenant whose effective permissions are a
strict subset of their own (``authority.py``): not on peers, not on anyone above.

What is exported and what is anonymised is listed in README.md ("GDPR").
"""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

import bitsec
from bitsec.fastapi import LoginAttempts, LoginGuard, get_runtime, guard, guard_claims

from .authority import require_authority
from .common import (StrictModel, Deps, RowId, audit, confirm_password, end_server_sessions, equipment_out,
                     revoke_user_tokens, server_sessions, user_of)
from .inspections import inspection_out
from .models import Models, iso, utcnow
from .passwords import UNUSABLE

EXPORT_FORMAT = "bitsec-reference-service/gdpr-export/1"
DELETED = "[DELETED]"
# The audit members a data subject gets back about their own events (not the chain fields).
_AUDIT_MEMBERS = ("seq", "time", "type", "subtype", "result", "reason", "resource", "resource_id", "action", "ip",
                  "user_agent", "session_id")


class AnonymizeSelfIn(StrictModel):
    password: str = Field(min_length=1, max_length=1024)


def _audit_files(path: Path | None) -> list[Path]:
    if path is None:
        return []
    rotated = sorted(p for p in path.parent.glob(path.name + ".*") if p.is_file())
    return rotated + ([path] if path.exists() else [])


def _audit_events_of(rt: bitsec.Runtime, audit_path: Path | None, user_id: int) -> list[dict[str, Any]]:
    """The audit records whose actor is the user (the files of the trail, rotated ones first)."""
    try:
        rt.audit_flush()
    except bitsec.BitsecError:
        pass  # no audit section, or a slow sink: export what is on disk
    actor = str(user_id)
    out: list[dict[str, Any]] = []
    for path in _audit_files(audit_path):
        with path.open("rb") as f:
            for line in f:
                if b'"actor":"' + actor.encode() + b'"' not in line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("actor") == actor:
                    out.append({k: rec[k] for k in _AUDIT_MEMBERS if k in rec})
    return out


def export_user(rt: bitsec.Runtime, db: Session, models: Models, user: Any, requester: Any,
                audit_path: Path | None) -> dict[str, Any]:
    """The export document (README.md, "GDPR"). Encrypted fields of business records are
    decrypted only where the requester's roles may read that resource; otherwise they are
    listed under ``withheld``."""
    principal = bitsec.Principal.from_claims(requester)
    ctx = {"tenant_id": user.tenant_id}
    may_read = {r: bool(rt.check_permission(principal, r, "read", ctx)) for r in ("equipment", "inspections")}

    def records(rows: Any, resource: str, out: Any, secret: tuple[str, ...]) -> list[Any]:
        result = []
        for row in rows:
            doc = out(row)
            if not may_read[resource]:
                doc = {k: v for k, v in doc.items() if k not in secret}
                doc["withheld"] = list(secret)
            result.append(doc)
        return result

    E, I, T = models.Equipment, models.Inspection, models.IssuedToken
    equipment = db.scalars(select(E).where(E.created_by == user.id, E.tenant_id == user.tenant_id).order_by(E.id))
    inspections = db.scalars(select(I).where(I.created_by == user.id, I.tenant_id == user.tenant_id).order_by(I.id))
    sessions: dict[str, dict[str, Any]] = {}
    now = int(time.time())
    for t in db.scalars(select(T).where(T.user_id == user.id, T.expires_at >= now).order_by(T.issued_at)):
        s = sessions.setdefault(t.session_id or t.jti, {"session_id": t.session_id, "started_at": iso(t.issued_at),
                                                        "ip": t.ip, "user_agent": t.user_agent, "expires_at": 0})
        s["expires_at"] = max(s["expires_at"], t.expires_at)
    return {
        "format": EXPORT_FORMAT,
        "generated_at": iso(utcnow()),
        "user": {"id": user.id, "username": user.username, "email": user.email, "full_name": user.full_name,
                 "phone": user.phone, "roles": user.roles, "tenant_id": user.tenant_id,
                 "created_at": iso(user.created_at), "mfa_enabled": bool(user.totp_sealed)},
        "equipment": records(equipment, "equipment", equipment_out, ("serial_number", "cost", "notes")),
        "inspections": records(inspections, "inspections", inspection_out, ("findings",)),
        "sessions": list(sessions.values()),
        "server_sessions": server_sessions(rt, user),
        "audit_events": _audit_events_of(rt, audit_path, user.id),
    }


def anonymize_user(rt: bitsec.Runtime, db: Session, models: Models, user: Any) -> int:
    """Replaces the user's personal data with placeholders that carry nothing of the
    original, disables the account and revokes its live tokens; returns how many tokens
    were revoked. Business records and the audit trail are kept as they are."""
    tag = uuid.uuid4().hex
    user.username = f"deleted-user-{tag}"
    user.email = f"deleted_user_{tag}@anonymized.invalid"
    user.full_name = DELETED
    user.phone = DELETED
    user.password_hash = UNUSABLE
    user.role = ""
    user.totp_sealed = None
    user.totp_pending = None
    user.anonymized_at = utcnow()
    revoked = revoke_user_tokens(rt, db, models, user.id)
    end_server_sessions(rt, user)
    db.commit()
    return revoked


def _attachment(doc: dict[str, Any], user_id: int) -> JSONResponse:
    return JSONResponse(doc, headers={"Content-Disposition": f'attachment; filename="gdpr-export-user-{user_id}.json"',
                                      "Cache-Control": "no-store"})


def privacy_router(deps: Deps, audit_path: Path | None) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["privacy"])
    models, auth, db_session = deps.models, deps.auth, deps.db_session
    login_guard = LoginGuard()

    def target(request: Request, db: Session, claims: Any, user_id: int, action: str) -> Any:
        """The user, if the caller has authority over them (404 / 403 otherwise, audited)."""
        u = db.get(models.User, user_id)
        if u is None:
            raise HTTPException(status_code=404, detail="User not found")
        require_authority(request, get_runtime(request), request.app.state.policy_shape,
                          user_of(db, models, claims), u, action)
        return u

    def export_event(request: Request, claims: Any, user: Any) -> None:
        audit(request, {"type": "data_access", "subtype": "gdpr_export", "action": "read", "result": "success",
                        "actor": claims.subject, "tenant": claims.tenant_id, "resource": "users",
                        "resource_id": str(user.id), "sensitive_data_accessed": True,
                        "data_classification": "personal"})

    def anonymize_event(request: Request, claims: Any, user: Any, reason: str, revoked: int) -> None:
        # The ERP guide's DATA_MODIFICATION / data_anonymization event.
        audit(request, {"type": "data_access", "subtype": "data_anonymization", "action": "update",
                        "result": "success", "actor": claims.subject, "tenant": claims.tenant_id,
                        "resource": "users", "resource_id": str(user.id), "sensitive_data_accessed": True,
                        "data_classification": "personal",
                        "details": {"reason": reason, "tokens_revoked": revoked}})

    @router.get("/privacy/export")
    @guard()
    def export_me(request: Request, claims: Any = Depends(auth), db: Session = Depends(db_session)) -> JSONResponse:
        user = user_of(db, models, claims)
        doc = export_user(get_runtime(request), db, models, user, claims, audit_path)
        export_event(request, claims, user)
        return _attachment(doc, user.id)

    @router.post("/privacy/anonymize")
    @guard()
    def anonymize_me(body: AnonymizeSelfIn, request: Request, claims: Any = Depends(auth),
                     db: Session = Depends(db_session),
                     attempts: LoginAttempts = Depends(login_guard)) -> dict[str, Any]:
        rt = get_runtime(request)
        user = user_of(db, models, claims)
        # Erasure is irreversible: the password again, not only a (possibly stolen) token.
        # The check goes through the login guard (counted first, per client and account).
        confirm_password(attempts, user, body.password)
        revoked = anonymize_user(rt, db, models, user)
        anonymize_event(request, claims, user, "user_request", revoked)
        return {"id": user.id, "anonymized": True, "tokens_revoked": revoked}

    @router.get("/users/{user_id}/export")
    @guard("users", "export")
    def export_user_admin(user_id: RowId, request: Request,
                          claims: Any = Depends(guard_claims),
                          db: Session = Depends(db_session)) -> JSONResponse:
        user = target(request, db, claims, user_id, "export")
        if user.anonymized_at is not None:
            raise HTTPException(status_code=410, detail="User was anonymised")
        doc = export_user(get_runtime(request), db, models, user, claims, audit_path)
        export_event(request, claims, user)
        return _attachment(doc, user.id)

    @router.post("/users/{user_id}/anonymize")
    @guard("users", "delete")
    def anonymize_user_admin(user_id: RowId, request: Request,
                             claims: Any = Depends(guard_claims),
                             db: Session = Depends(db_session)) -> dict[str, Any]:
        user = target(request, db, claims, user_id, "anonymize")
        if user.anonymized_at is not None:
            raise HTTPException(status_code=409, detail="User already anonymised")
        revoked = anonymize_user(get_runtime(request), db, models, user)
        anonymize_event(request, claims, user, "admin_request", revoked)
        return {"id": user.id, "anonymized": True, "tokens_revoked": revoked}

    return router
