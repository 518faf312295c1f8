"""What the routers of the reference service share: the bearer scheme, database sessions,
the user behind a token, token bookkeeping and explicit audit events."""
from __future__ import annotations

import base64
import ipaddress
import json
import logging
import time
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Iterator

from fastapi import HTTPException, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

import bitsec
from bitsec.fastapi import BearerAuth, LoginAttempts, get_runtime, request_id

from .auditing import mark_recorded
from .models import Models
from .passwords import check_password

log = logging.getLogger("examples.fastapi_service")


#: The largest row id (SQLite's INTEGER, a signed 64-bit number): ids outside 1..MAX_ID are a 422.
MAX_ID = 2 ** 63 - 1
#: A path parameter that is a row id: 422 for 0, negatives, floats, exponents and numbers
#: beyond a 64-bit integer, before the database is asked.
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]


def no_store(response: Response) -> None:
    """Marks a response that carries tokens or secrets as not cacheable (RFC 6749 section
    5.1: ``Cache-Control: no-store`` and ``Pragma: no-cache``)."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"


def validation_error_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    """The 422 of a request that does not validate: where and why (``loc``, ``msg``,
    ``type``), never the rejected value itself. FastAPI's default echoes it, which puts a
    too-long password into the response and turns a JSON number such as ``1e400`` (an
    infinite float) into a 500 because the answer cannot be encoded."""
    errors = [{"type": str(e.get("type", "")), "loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
               "msg": str(e.get("msg", ""))} for e in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": errors})


class StrictModel(BaseModel):
    """The base of every request body: a member the model does not name is a 422 (a client
    cannot set ``tenant_id``, ``created_by`` or ``role`` by adding it to a body), and so is a
    value of the wrong type (Pydantic's coercions stay: ``"12.50"`` is a cost)."""
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Deps:
    auth: BearerAuth
    db_session: Callable[[], Iterator[Session]]
    models: Models


def user_of(db: Session, models: Models, claims: Any) -> Any:
    """The user a verified token speaks for (``sub`` is the user's id); 401 when the account
    no longer exists or was anonymised (its tokens are revoked then, so this is a backstop)."""
    try:
        uid = int(claims.subject)
    except (TypeError, ValueError):
        uid = -1
    user = db.get(models.User, uid)
    if user is None or user.anonymized_at is not None:
        raise HTTPException(status_code=401, detail="Invalid token",
                            headers={"WWW-Authenticate": 'Bearer realm="erp-api", error="invalid_token"'})
    return user


def client_ip(request: Request) -> str | None:
    """The peer's address, without an IPv6 zone (``fe80::1%eth0``: bitsec refuses an event
    whose ``ip`` has one)."""
    host = request.client.host if request.client else None
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0])) if host else None
    except ValueError:
        return None  # e.g. TestClient's "testclient"


def _payload(token: str) -> dict[str, Any]:
    """The payload of a token this service has just been given by bitsec (never of a token
    received from a client: those go through rt.verify_token)."""
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # type: ignore[no-any-return]


def record_pair(db: Session, models: Models, pair: dict[str, Any], user_id: int, request: Request) -> None:
    """Remembers the ``jti`` and expiry of a new token pair (not the tokens), so that
    anonymisation can revoke every live token of the user and the export can list sessions.
    Expired rows are pruned on the way."""
    now = int(time.time())
    db.execute(delete(models.IssuedToken).where(models.IssuedToken.expires_at < now))
    ua = request.headers.get("user-agent")
    for kind in ("access", "refresh"):
        claims = _payload(pair[f"{kind}_token"])
        db.add(models.IssuedToken(jti=str(claims["jti"]), user_id=user_id, session_id=pair.get("session_id"),
                                  kind=kind, expires_at=int(claims["exp"]), ip=client_ip(request),
                                  user_agent=ua[:512] if ua else None))


def forget_tokens(db: Session, models: Models, jtis: list[str]) -> None:
    if jtis:
        db.execute(delete(models.IssuedToken).where(models.IssuedToken.jti.in_(jtis)))


def revoke_user_tokens(rt: bitsec.Runtime, db: Session, models: Models, user_id: int) -> int:
    """Revokes every token of the user issued up to now with one subject revocation (the
    recorded ones and any other: the library keeps one not-before epoch per subject, not
    one entry per token) and forgets the recorded tokens; returns how many recorded tokens
    were still live (the ``tokens_revoked`` of the anonymisation response)."""
    now = int(time.time())
    rows = list(db.scalars(select(models.IssuedToken).where(models.IssuedToken.user_id == user_id)))
    rt.revoke_subject(str(user_id))
    forget_tokens(db, models, [r.jti for r in rows])
    return sum(1 for row in rows if row.expires_at >= now)


def revoke_other_sessions(rt: bitsec.Runtime, db: Session, models: Models, user_id: int,
                          keep_session: str | None = None) -> int:
    """Revokes every recorded session of the user but ``keep_session`` (one ``revoke_session``
    call per session, whatever the number of refreshes in it) and forgets their recorded
    tokens; returns how many of those tokens were still live. Unlike ``revoke_user_tokens``
    (a subject epoch at "now"), a pair issued in the same second stays valid: for the
    endpoints that end the other sessions and hand out, or keep, one of their own."""
    now = int(time.time())
    rows = [r for r in db.scalars(select(models.IssuedToken).where(models.IssuedToken.user_id == user_id))
            if r.session_id != keep_session or keep_session is None]
    for sid in {r.session_id for r in rows if r.session_id and r.expires_at >= now}:
        rt.revoke_session(sid, str(user_id))
    for r in rows:
        if not r.session_id and r.expires_at >= now:  # recorded without a session: its jti alone
            rt.revoke_token(jti=r.jti, exp=r.expires_at)
    forget_tokens(db, models, [r.jti for r in rows])
    return sum(1 for r in rows if r.expires_at >= now)


def end_server_sessions(rt: bitsec.Runtime, user: Any) -> int:
    """Ends every server-side (cookie) session of the user (``sessions`` section; their
    tokens are revoked with them): at a password change and an anonymisation. Returns how
    many ended; 0 when the runtime has no ``sessions`` section."""
    try:
        return rt.session_revoke_user(str(user.id), user.tenant_id)
    except bitsec.NotConfiguredError:
        return 0


def server_sessions(rt: bitsec.Runtime, user: Any) -> list[dict[str, Any]]:
    """The user's live server-side sessions for the GDPR export (never their tokens); empty
    when the runtime has no ``sessions`` section."""
    try:
        listed = rt.session_list(str(user.id), user.tenant_id)
    except bitsec.NotConfiguredError:
        return []
    return [{"session_id": s.session_id, "created_at": s.created_at, "last_seen_at": s.last_seen_at,
             "expires_at": s.expires_at} for s in listed]


def confirm_password(attempts: LoginAttempts, user: Any, password: str) -> None:
    """The user's password again (an account change or an irreversible action), checked
    through the login guard like a login: the attempt is counted before the check. Raises 403
    "Password confirmation failed" when it is wrong, 429 when the guard refuses the attempt or
    this failure starts a block."""
    attempt = attempts.begin(user.username)
    if not check_password(attempts.rt, password, user):
        failed = attempt.failed()
        raise failed if failed.status_code == 429 else HTTPException(status_code=403, detail="Password confirmation failed")
    attempt.succeeded()


def audit(request: Request, event: dict[str, Any], *, final: bool | None = None) -> None:
    """An explicit audit event of an endpoint (sync: endpoints run in the thread pool), with
    the request id, client IP and user agent the middleware's events carry. A refused event
    is logged, never fails the request (the middleware's rule).

    ``final``: this event is the record of the request's outcome, and the guard (its audit trail)
    adds none of its own (auditing.py: one record per outcome). By default true for an
    ``authentication`` or ``authorization`` event whose result is ``denied`` or ``failure``
    (the refusal the response reports), false otherwise."""
    if final is None:
        final = event.get("type") in ("authentication", "authorization") and event.get("result") in ("denied", "failure")
    if final:
        mark_recorded(request)
    event = dict(event)
    ip = client_ip(request)
    if ip:
        event.setdefault("ip", ip)
    ua = request.headers.get("user-agent")
    if ua:
        event.setdefault("user_agent", ua)  # bitsec cuts it (by bytes) if it is too long
    details = dict(event.get("details") or {})
    rid = request_id(request)
    if rid:
        details.setdefault("request_id", rid)
    event["details"] = details
    try:
        get_runtime(request).audit_emit(event)
    except bitsec.NotConfiguredError:
        pass  # a runtime without an audit section
    except bitsec.BitsecError as e:
        log.warning("audit event not recorded: %s", e)
        from .violations import violation  # (a cycle at import time otherwise)
        violation(request.app, "AuditEventRejected", request_id=rid, actor=event.get("actor"),
                  tenant=event.get("tenant"), description=f"{event.get('type')}/{event.get('subtype')}: {e}"[:1024])


def equipment_out(e: Any) -> dict[str, Any]:
    return {"id": e.id, "name": e.name, "tenant_id": e.tenant_id, "serial_number": e.serial_number,
            "cost": e.cost, "notes": e.notes, "created_by": e.created_by}
