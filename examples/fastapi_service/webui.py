"""The service's small web UI: log in with password (and TOTP when the account has MFA), list
and add the tenant's equipment, log out.

How the browser is protected, all by bitsec:

- **Cookie session** (``CookieSession``): a server-side session in a ``__Host-session``
  cookie, ``Secure``, ``HttpOnly`` (no script can read it), ``SameSite=Strict``; created at
  login with a new identifier (a session identifier from before the login is never reused),
  bound to the client's address prefix, ended at logout.
- **One guard** (the service's ``GuardMiddleware``, ``@guard(..., cookies=True)``): before
  the handler it validates the session cookie, checks CSRF on every unsafe request (an
  allowed origin by ``Origin`` / ``Sec-Fetch-Site``, and the session's synchronizer token in
  ``X-CSRF-Token``; the page gets the token from ``/ui/login`` or ``/ui/me``), decides the
  route's permission for the session's user (``ui_principal``: the roles from the users
  table) and takes from that user's rate-limit bucket; the audit record names the user.
- **No inline scripts**: ``/ui/`` is a static page with one script file from the service's
  origin; the service's Content-Security-Policy blocks any other script, and the page inserts
  data with ``textContent`` (a stored ``<script>`` shows as text).

The UI's JSON routes (``/ui/...``) take the same input models and permissions as the
bearer-token API (``/api/v1/equipment``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

import bitsec
from bitsec.fastapi import CookieSession, LoginAttempts, LoginGuard, get_runtime, guard, public
from bitsec.permissions import Principal

WEB = Path(__file__).resolve().parent / "web"

#: The UI's session cookie: SameSite=Strict (the UI is never entered from another site's
#: link with an action pending; Lax would be the choice for an application that is).
ui_session = CookieSession(same_site="strict")


def ui_principal(app: FastAPI) -> Callable[[bitsec.Session], Principal | None]:
    """The guard's ``session_principal`` for the UI's cookie routes: the session's user with
    the roles of the users table, None when the user is gone or anonymised or the session's
    tenant is not the user's (the guard then answers 401). It queries the database, so the guard runs it in the thread pool."""

    def principal_of(session: bitsec.Session) -> Principal | None:
        if not session.user.isdigit():
            return None
        with app.state.sessions() as db:
            user = db.get(app.state.models.User, int(session.user))
            if user is None or user.anonymized_at is not None or user.tenant_id != session.tenant:
                return None
            return Principal(str(user.id), user.roles, tenant=user.tenant_id)

    return principal_of


class UILogin(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    totp_code: str | None = Field(default=None, max_length=10)


def install_web_ui(app: FastAPI, *, db_session: Callable[..., Any], models: Any, equipment_in: type[BaseModel],
                   login_guard: LoginGuard, authenticate: Callable[..., Any],
                   new_equipment: Callable[[Session, str, str, Any], Any],
                   equipment_out: Callable[[Any], dict[str, Any]]) -> None:
    """Adds ``/ui/`` (the page), ``/ui/static/*`` and the UI's JSON routes to ``app``.

    ``authenticate(request, db, attempts, username, password, totp_code)`` returns the user or
    raises the same HTTPException as the API's login (401, 429), with the same login guard and
    audit events; ``new_equipment(db, tenant, subject, body)`` adds a row the way the API's
    create does."""
    User, Equipment = models.User, models.Equipment
    app.mount("/ui/static", StaticFiles(directory=str(WEB)), name="ui-static")

    @app.get("/ui/", include_in_schema=False)
    @public
    def page() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html", headers={"Cache-Control": "no-store"})

    def user_of_session(request: Request, db: Session) -> Any:
        s = ui_session.validate(request)  # the guard's validation, not a second one
        assert s is not None  # a missing or refused session is the guard's 401 already
        user = db.get(User, int(s.user)) if s.user.isdigit() else None
        if user is None or user.anonymized_at is not None:
            raise HTTPException(status_code=401, detail="Session is not valid: log in again")
        return user

    @app.post("/ui/login", include_in_schema=False)
    @public
    def login(body: UILogin, request: Request, response: Response, db: Session = Depends(db_session),
              attempts: LoginAttempts = Depends(login_guard)) -> dict[str, Any]:
        rt = get_runtime(request)
        # Login itself is a state change: only from the service's own pages.
        d = rt.csrf_origin_check("POST", request.headers.get("origin"), request.headers.get("sec-fetch-site"))
        if not d:
            raise HTTPException(status_code=403, detail=d.reason)
        user = authenticate(request, db, attempts, body.username, body.password, body.totp_code)
        created = ui_session.login(request, response, str(user.id), user.tenant_id)
        response.headers["Cache-Control"] = "no-store"
        return {"username": user.username, "csrf_token": rt.csrf_token_issue(created.session_id)}

    @app.get("/ui/me", include_in_schema=False)
    @guard(cookies=True)
    def me(request: Request, response: Response, db: Session = Depends(db_session)) -> dict[str, Any]:
        user = user_of_session(request, db)
        s = ui_session.validate(request)
        assert s is not None
        response.headers["Cache-Control"] = "no-store"
        return {"username": user.username, "csrf_token": get_runtime(request).csrf_token_issue(s.session_id)}

    @app.get("/ui/equipment", include_in_schema=False)
    @guard("equipment", "read", cookies=True)
    def list_equipment(request: Request, db: Session = Depends(db_session)) -> dict[str, Any]:
        user = user_of_session(request, db)
        rows = db.scalars(select(Equipment).where(Equipment.tenant_id == user.tenant_id)
                          .order_by(Equipment.id).limit(1000))
        return {"items": [equipment_out(e) for e in rows]}

    def _create(request: Request, body: Any,
                db: Session = Depends(db_session)) -> dict[str, Any]:
        user = user_of_session(request, db)
        return equipment_out(new_equipment(db, user.tenant_id, str(user.id), body))

    guard("equipment", "create", cookies=True)(_create)  # session, CSRF, permission, rate limit
    _create.__annotations__["body"] = equipment_in  # the API's model (a local: resolved here, not by name)
    app.add_api_route("/ui/equipment", _create, methods=["POST"], status_code=201, include_in_schema=False)

    @app.post("/ui/logout", status_code=204, include_in_schema=False)
    @guard(cookies=True)  # a valid session and the CSRF check: no cross-site logout
    def logout(request: Request, response: Response) -> None:
        ui_session.logout(request, response)
