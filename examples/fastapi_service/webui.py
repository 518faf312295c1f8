"""The service's small web UI: log in with password (and TOTP when the account has MFA), list
and add the tenant's equipment, log out.

How the browser is protected, all by bitsec:

- **Cookie session** (``CookieSession``): a server-side session in a ``__Host-session``
  cookie, ``Secure``, ``HttpOnly`` (no script can read it), ``SameSite=Strict``; created at
  login with a new identifier (a session identifier from before the login is never reused),
  bound to the client's address prefix, ended at logout.
- **CSRF** (``CSRFProtect``): every unsafe request must come from an allowed origin
  (``Origin`` / ``Sec-Fetch-Site``) and carry the session's synchronizer token in
  ``X-CSRF-Token``; the page gets the token from ``/ui/login`` or ``/ui/me``.
- **No inline scripts**: ``/ui/`` is a static page with one script file from the service's
  origin; the service's Content-Security-Policy blocks any other script, and the page inserts
  data with ``textContent`` (a stored ``<script>`` shows as text).

The UI's JSON routes (``/ui/...``) take the same input models and permission checks as the
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

from bitsec.fastapi import CookieSession, CSRFProtect, LoginAttempts, LoginGuard, get_runtime, public
from bitsec.permissions import Principal

WEB = Path(__file__).resolve().parent / "web"

#: The UI's session cookie: SameSite=Strict (the UI is never entered from another site's
#: link with an action pending; Lax would be the choice for an application that is).
ui_session = CookieSession(same_site="strict")


def _session_id(request: Request) -> str | None:
    s = ui_session.validate(request)
    return None if s is None else s.session_id


csrf = CSRFProtect(session_id=_session_id)


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
        s = ui_session.validate(request)
        assert s is not None  # auto_error: a missing or refused session is a 401 already
        user = db.get(User, int(s.user)) if s.user.isdigit() else None
        if user is None or user.username is None:
            raise HTTPException(status_code=401, detail="Session is not valid: log in again")
        return user

    def principal(user: Any) -> Principal:
        return Principal(str(user.id), user.roles, tenant=user.tenant_id)

    def allowed(request: Request, user: Any, action: str) -> None:
        d = get_runtime(request).check_permission(principal(user), "equipment", action)
        if not d:
            raise HTTPException(status_code=403, detail=f"Insufficient permissions: equipment:{action}")

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
    @public
    def me(request: Request, response: Response, db: Session = Depends(db_session)) -> dict[str, Any]:
        user = user_of_session(request, db)
        s = ui_session.validate(request)
        assert s is not None
        response.headers["Cache-Control"] = "no-store"
        return {"username": user.username, "csrf_token": get_runtime(request).csrf_token_issue(s.session_id)}

    @app.get("/ui/equipment", include_in_schema=False)
    @public
    def list_equipment(request: Request, db: Session = Depends(db_session)) -> dict[str, Any]:
        user = user_of_session(request, db)
        allowed(request, user, "read")
        rows = db.scalars(select(Equipment).where(Equipment.tenant_id == user.tenant_id)
                          .order_by(Equipment.id).limit(1000))
        return {"items": [equipment_out(e) for e in rows]}

    def _create(request: Request, body: Any,
                db: Session = Depends(db_session)) -> dict[str, Any]:
        user = user_of_session(request, db)
        allowed(request, user, "create")
        return equipment_out(new_equipment(db, user.tenant_id, str(user.id), body))

    public(_create)  # cookie-authenticated: its own dependencies decide (ui_session, csrf, allowed)
    _create.__annotations__["body"] = equipment_in  # the API's model (a local: resolved here, not by name)
    app.add_api_route("/ui/equipment", _create, methods=["POST"], status_code=201, include_in_schema=False,
                      dependencies=[Depends(csrf), Depends(ui_session)])

    @app.post("/ui/logout", status_code=204, include_in_schema=False,
              dependencies=[Depends(csrf), Depends(ui_session)])
    @public
    def logout(request: Request, response: Response) -> None:
        ui_session.logout(request, response)
