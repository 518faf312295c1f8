"""What the routers of the reference service share: the bearer scheme, database sessions,
the user behind a token, token bookkeeping and explicit audit events."""
from __future__ import annotations

import base64
import ipaddress
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from fastapi import HTTPException, Request
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

import bitsec
from bitsec.fastapi import BearerAuth, get_runtime, request_id

from .models import Models

log = logging.getLogger("examples.fastapi_service")


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
    host = request.client.host if request.client else None
    try:
        return str(ipaddress.ip_address(host)) if host else None
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


def audit(request: Request, event: dict[str, Any]) -> None:
    """An explicit audit event of an endpoint (sync: endpoints run in the thread pool), with
    the request id, client IP and user agent the middleware's events carry. A refused event
    is logged, never fails the request (the middleware's rule)."""
    event = dict(event)
    ip = client_ip(request)
    if ip:
        event.setdefault("ip", ip)
    ua = request.headers.get("user-agent")
    if ua:
        event.setdefault("user_agent", ua[:1024])
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


def equipment_out(e: Any) -> dict[str, Any]:
    return {"id": e.id, "name": e.name, "tenant_id": e.tenant_id, "serial_number": e.serial_number,
            "cost": e.cost, "notes": e.notes, "created_by": e.created_by}
