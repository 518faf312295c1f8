"""Changes to one's own account that a stolen access token must not be enough for.

Step-up: MFA enrolment, MFA removal, new backup codes and a password change need a password
entered within the last ``STEP_UP_MAX_AGE`` seconds (5 minutes). Login puts that instant in
the tokens as ``auth_time`` (OpenID Connect's claim); a refresh keeps it (the library copies
every claim but ``exp``, ``iat``, ``nbf``, ``jti`` and ``type`` into the new pair), so a token
stays able to change the account only for 5 minutes after the password was typed, however
often it is refreshed. Older: 401 with ``WWW-Authenticate: Bearer error=
"insufficient_user_authentication", max_age=300`` (RFC 9470): log in again.

- ``DELETE /api/v1/auth/mfa``               removes TOTP and the backup codes (step-up)
- ``POST   /api/v1/auth/mfa/backup-codes``  new single-use backup codes, shown once (step-up)
- ``POST   /api/v1/auth/mfa/recover``       password + a backup code instead of a TOTP code:
  a new session, and every other session of the user ends (their tokens are revoked)
- ``POST   /api/v1/auth/password``          the current password again and a new one (step-up);
  every other session of the user ends

Each is an audit event (``mfa`` / ``mfa_removed``, ``backup_codes_generated``,
``mfa_recovery``; ``authentication`` / ``password_change``); refusals too
(``authentication`` / ``step_up_required``).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from bitsec.fastapi import LoginAttempts, LoginGuard, get_runtime, guard, public

from .common import (StrictModel, Deps, audit, confirm_password, end_server_sessions, no_store, record_pair,
                     revoke_other_sessions, user_of)
from .passwords import check_password, hash_password, policy_problem

#: How long after a password entry a token may change the account (seconds).
STEP_UP_MAX_AGE = 300
#: A token's auth_time may be this far ahead of the clock (skew between workers).
_CLOCK_SKEW = 30
REALM = 'Bearer realm="erp-api"'


def auth_time_claim() -> dict[str, int]:
    """The claim login (and MFA recovery) add to a new pair: the password was entered now."""
    return {"auth_time": int(time.time())}


def step_up(auth: Any) -> Callable[..., Any]:
    """A dependency: the verified claims of a token whose ``auth_time`` is at most
    ``STEP_UP_MAX_AGE`` seconds old; otherwise 401 (audited) asking for a new login."""

    def dependency(request: Request, claims: Any = Depends(auth)) -> Any:
        at = claims.get("auth_time")
        now = int(time.time())
        fresh = type(at) is int and now - STEP_UP_MAX_AGE <= at <= now + _CLOCK_SKEW
        if not fresh:
            audit(request, {"type": "authentication", "subtype": "step_up_required", "result": "denied",
                            "reason": "auth_time_missing" if at is None else "auth_time_too_old"
                            if type(at) is int and at < now - STEP_UP_MAX_AGE else "auth_time_invalid",
                            "actor": claims.subject, "tenant": claims.tenant_id,
                            "action": request.method.lower(), "resource": request.url.path[:1024]})
            raise HTTPException(status_code=401, detail="Re-authentication required: log in again with your password",
                                headers={"WWW-Authenticate": f'{REALM}, error="insufficient_user_authentication", '
                                                             f'error_description="password entered too long ago", '
                                                             f'max_age={STEP_UP_MAX_AGE}'})
        return claims

    return dependency


class RecoverIn(StrictModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    backup_code: str = Field(min_length=1, max_length=64)


class PasswordIn(StrictModel):
    current_password: str = Field(min_length=1, max_length=1024)
    # Length rules are the policy's (bitsec password_check, in characters after NFKC
    # normalisation); this bound only caps the request size.
    new_password: str = Field(min_length=1, max_length=1024)


def _hashes(user: Any) -> list[str]:
    return [h for h in (user.backup_codes or "").split("\n") if h]


def account_router(deps: Deps, token_claims: Callable[[Any], dict[str, Any]]) -> APIRouter:
    """``token_claims(user)``: the claims of a new pair for the user (app.py's, without ``auth_time``)."""
    router = APIRouter(prefix="/api/v1/auth", tags=["account"])
    models, auth, db_session = deps.models, deps.auth, deps.db_session
    fresh = step_up(auth)
    # Every password check here goes through the login guard, like the login itself: the
    # attempt is counted before the check (per client address group and per account).
    login_guard = LoginGuard()

    def event(request: Request, claims_or_user: Any, type_: str, subtype: str, **details: Any) -> None:
        actor = getattr(claims_or_user, "subject", None) or str(getattr(claims_or_user, "id", ""))
        tenant = getattr(claims_or_user, "tenant_id", None)
        audit(request, {"type": type_, "subtype": subtype, "result": "success", "actor": actor,
                        "tenant": tenant, "details": details})

    @router.delete("/mfa")
    @guard()
    def mfa_remove(request: Request, claims: Any = Depends(fresh), db: Session = Depends(db_session)) -> dict[str, Any]:
        user = user_of(db, models, claims)
        if not (user.totp_sealed or user.totp_pending):
            raise HTTPException(status_code=409, detail="MFA not enrolled")
        user.totp_sealed = user.totp_pending = user.backup_codes = None
        db.commit()
        event(request, claims, "mfa", "mfa_removed")
        return {"mfa_enabled": False}

    @router.post("/mfa/backup-codes")
    @guard()
    def backup_codes(request: Request, response: Response, claims: Any = Depends(fresh),
                     db: Session = Depends(db_session)) -> dict[str, Any]:
        user = user_of(db, models, claims)
        if not user.totp_sealed:
            raise HTTPException(status_code=409, detail="MFA not enrolled")
        codes = get_runtime(request).backup_codes_generate()
        user.backup_codes = "\n".join(codes.hashes)  # the hashes only; the codes are shown once
        db.commit()
        no_store(response)
        event(request, claims, "mfa", "backup_codes_generated", count=len(codes.codes))
        return {"backup_codes": list(codes.codes)}

    @router.post("/mfa/recover")
    @public
    def mfa_recover(body: RecoverIn, request: Request, response: Response, db: Session = Depends(db_session),
                    attempts: LoginAttempts = Depends(login_guard)) -> dict[str, Any]:
        """Login with a backup code instead of a TOTP code (a lost authenticator). Every
        other session of the user ends: whoever holds one of its tokens is out."""
        rt = get_runtime(request)
        attempt = attempts.begin(body.username)
        user = db.scalar(select(models.User).where(models.User.username == body.username))
        ok = check_password(rt, body.password, user) and user is not None
        decision = None
        if ok and user.totp_sealed and _hashes(user):
            decision = rt.backup_code_verify(str(user.id), body.backup_code, _hashes(user))
            ok = bool(decision)
        else:
            ok = False
        if not ok:  # already counted
            raise attempt.failed("Invalid credentials or backup code", realm=REALM)
        attempt.succeeded()
        hashes = _hashes(user)
        del hashes[decision.index]  # single use
        user.backup_codes = "\n".join(hashes) or None
        revoked = revoke_other_sessions(rt, db, models, user.id)  # the new pair below stays valid
        pair = rt.issue_token_pair({**token_claims(user), **auth_time_claim()})
        record_pair(db, models, pair, user.id, request)
        db.commit()
        no_store(response)
        event(request, user, "mfa", "mfa_recovery", tokens_revoked=revoked, backup_codes_left=len(hashes))
        return {**pair, "tokens_revoked": revoked, "backup_codes_left": len(hashes)}

    @router.post("/password")
    @guard()
    def change_password(body: PasswordIn, request: Request, claims: Any = Depends(fresh),
                        db: Session = Depends(db_session),
                        attempts: LoginAttempts = Depends(login_guard)) -> dict[str, Any]:
        rt = get_runtime(request)
        user = user_of(db, models, claims)
        confirm_password(attempts, user, body.current_password)
        if body.new_password == body.current_password:
            raise HTTPException(status_code=422, detail="The new password must differ from the current one")
        problem = policy_problem(rt, body.new_password, mfa=user.totp_sealed is not None)
        if problem:
            raise HTTPException(status_code=422, detail=problem)
        user.password_hash = hash_password(rt, body.new_password)
        # Every other session ends; the caller's own stays.
        revoked = revoke_other_sessions(rt, db, models, user.id, keep_session=claims.get("session_id"))
        end_server_sessions(rt, user)
        db.commit()
        event(request, claims, "authentication", "password_change", tokens_revoked=revoked)
        return {"password_changed": True, "tokens_revoked": revoked}

    return router
