"""The reference service: ``create_app(config_path, database_url)`` (see README.md).

Every native bitsec call runs in FastAPI's thread pool (plain ``def`` endpoints and
dependencies); SQLAlchemy is used synchronously on a real SQLite file. The routers of
ADR-007's inspections (``inspections.py``) and of the GDPR endpoints (``privacy.py``) are
mounted beside the authentication and equipment endpoints defined here.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import secrets
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterator, Sequence

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import Field
from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

import bitsec
from bitsec.fastapi import (
    PUBLIC, BearerAuth, LoginAttempts, LoginGuard, RequestLimitsMiddleware, SecurityHeadersMiddleware,
    bitsec_lifespan, get_runtime, guard, guard_claims, metrics_router, mfa_enroll, public, request_id,
    verify_mfa_code,
)

from .account import account_router, auth_time_claim, step_up
from .adr007 import DEFAULT_MAX_BYTES, adr007_router
from .auditing import ServiceGuardMiddleware, service_categories
from .authority import PolicyShape, refuse_foreign_refresh_token, token_subject
from .common import (StrictModel, Deps, RowId, audit, client_ip, equipment_out, forget_tokens, no_store, record_pair, user_of,
                     validation_error_response)
from .cors import add_cors
from .datadir import secure_data_dir
from .webdocs import install_docs
from .webui import install_web_ui, ui_principal, ui_session
from .inspections import inspections_router
from .keys import jwks, prepare_keys
from .migrations import upgrade as migrate
from .models import Models, build_models
from .passwords import check_password, hash_password
from .privacy import privacy_router
from .users_admin import users_admin_router
from .violations import alerter_lifespan, make_alerter, violation

__all__ = ["create_app", "create_user", "hash_password", "check_password", "load_config"]

log = logging.getLogger("examples.fastapi_service")
API = "/api/v1"
REALM = 'Bearer realm="erp-api"'


# ---- configuration ------------------------------------------------------------------------

def _ensure_key_file(path: Path) -> None:
    """32 random bytes, base64, mode 0600; created once, never overwritten."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(secrets.token_bytes(32)).decode())


def load_config(config_path: str | os.PathLike[str], data_dir: Path) -> dict[str, Any]:
    """The configuration with relative paths resolved: audit file sinks and secret files
    under ``data_dir`` (missing key files are generated), ``policy_file`` next to the
    configuration file."""
    config_path = Path(config_path).resolve()
    cfg = json.loads(config_path.read_text())
    cfg.pop("$schema", None)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def under_data(p: str) -> str:
        return p if os.path.isabs(p) else str(data_dir / p)

    for sink in cfg.get("audit", {}).get("sinks", []):
        if sink.get("type") == "file":
            sink["path"] = under_data(sink["path"])
    secret_refs = [k.get("secret") for k in cfg.get("fields", {}).get("keys", [])]
    secret_refs += [k.get("secret") for k in cfg.get("tokens", {}).get("keys", [])]
    secret_refs.append(cfg.get("csrf", {}).get("key"))  # the web UI's CSRF tokens (webui.py)
    for ref in secret_refs:
        if isinstance(ref, dict) and "file" in ref:
            ref["file"] = under_data(ref["file"])
            _ensure_key_file(Path(ref["file"]))
    # RS256 signing keys (keys.py): PEM files in the data directory, generated once
    for k in cfg.get("tokens", {}).get("keys", []):
        if isinstance(k.get("pem"), dict) and "file" in k["pem"]:
            k["pem"]["file"] = under_data(k["pem"]["file"])
    if "tokens" in cfg:
        prepare_keys(cfg["tokens"], data_dir)
    perms = cfg.get("permissions", {})
    if "policy_file" in perms and not os.path.isabs(perms["policy_file"]):
        perms["policy_file"] = str((config_path.parent / perms["policy_file"]).resolve())
    return cfg


# ---- which worker answered (tests only) ----------------------------------------------------

#: Set to ``1`` (tests of the multi-worker deployment only) to have every response name the
#: worker process that served it in ``X-Bitsec-Worker``; unset in production: the header
#: would tell clients how many processes serve them.
TEST_WORKER_ENV = "BITSEC_REFSVC_TEST_WORKER"


class WorkerHeaderMiddleware:
    """Adds ``X-Bitsec-Worker: <pid of the serving process>`` to every response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_worker(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-bitsec-worker", str(os.getpid()).encode())]}
            await send(message)

        await self.app(scope, receive, send_with_worker)


# ---- request and response bodies ----------------------------------------------------------

class LoginIn(StrictModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    totp_code: str | None = Field(default=None, max_length=16)


class RefreshIn(StrictModel):
    refresh_token: str = Field(min_length=1, max_length=8192)


class LogoutIn(StrictModel):
    refresh_token: str | None = Field(default=None, max_length=8192)


class MFAConfirmIn(StrictModel):
    code: str = Field(min_length=1, max_length=16)


def _cost_field() -> Any:
    """A cost: 0 to 10^12 with at most 4 decimal places (anything else is a 422)."""
    return Field(default=None, ge=0, le=10 ** 12, max_digits=17, decimal_places=4)


#: The ERP guide's rules: a name without the characters of markup and quoting (its
#: ``[<>"';&]`` refused, not stripped), a serial number of upper-case letters, digits and
#: dashes (a lower-case serial is a 422, not silently upper-cased). Notes are free text,
#: stored as written: whoever renders them in HTML escapes them (no tag stripping, which
#: mangles text and misses what a regex does not foresee).
NAME = r"^[^<>\"';&]*$"
SERIAL = r"^[A-Z0-9-]+$"


class EquipmentIn(StrictModel):
    name: str = Field(min_length=1, max_length=200, pattern=NAME)
    serial_number: str | None = Field(default=None, max_length=200, pattern=SERIAL)
    cost: Decimal | None = _cost_field()
    notes: str | None = Field(default=None, max_length=10000)


class EquipmentPatch(StrictModel):
    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=NAME)
    serial_number: str | None = Field(default=None, max_length=200, pattern=SERIAL)
    cost: Decimal | None = _cost_field()
    notes: str | None = Field(default=None, max_length=10000)


def _cost_text(cost: Decimal | None) -> str | None:
    if cost is None:
        return None
    try:
        if not cost.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        raise HTTPException(status_code=422, detail="cost must be a finite number") from None
    return str(cost)


# ---- users --------------------------------------------------------------------------------

def create_user(app: FastAPI, username: str, password: str, role: str | Sequence[str], tenant_id: str, *,
                email: str | None = None, full_name: str | None = None, phone: str | None = None) -> int:
    """Adds a user (scrypt hash of ``password``); returns its id. ``role``: one role name, or
    several (a sequence, or names separated by spaces) from either family of the service's
    policy (ERP roles, ADR-007's ``inspection.*`` roles). ``email``, ``full_name`` and
    ``phone`` are the personal data of the GDPR endpoints (encrypted at rest)."""
    roles = role.split() if isinstance(role, str) else [r for r in role]
    if not roles or any(not r or any(c.isspace() for c in r) for r in roles):
        raise ValueError("role: one or more role names without spaces")
    models: Models = app.state.models
    with app.state.sessions() as db, db.begin():
        u = models.User(username=username, password_hash=hash_password(app.state.password_runtime, password), role=" ".join(roles),
                        tenant_id=tenant_id, email=email, full_name=full_name, phone=phone)
        db.add(u)
        db.flush()
        return int(u.id)


def _revoke_caller(rt: bitsec.Runtime, request: Request, claims: Any) -> None:
    """Logout's revocations: the caller's session (every token of it issued so far, the
    refreshed pairs included: one call, whatever the number of refreshes) and the access
    token itself. Neither can fail for lack of room: the library widens a revocation it
    cannot record instead of refusing it."""
    session_id = claims.get("session_id")
    if session_id and claims.subject:
        rt.revoke_session(session_id, claims.subject)
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    if token:
        rt.revoke_token(token)


def _revocation_unavailable() -> HTTPException:
    # The revocation store (Redis) is unreachable: no token was handed out or kept alive.
    return HTTPException(status_code=503, detail="Service temporarily unavailable", headers={"Retry-After": "1"})


def _end_session_of(rt: bitsec.Runtime, refresh_token: str) -> None:
    """Revokes the session of a refresh token the library refused as revoked (authentic: its
    signature verified before the revocation was looked up)."""
    sub, _ = token_subject(refresh_token)
    try:
        part = refresh_token.split(".")[1]
        doc = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        session_id = doc.get("session_id") if isinstance(doc, dict) else None
    except (IndexError, ValueError, UnicodeDecodeError):
        session_id = None
    if isinstance(session_id, str) and session_id and sub:
        try:
            rt.revoke_session(session_id, sub)
        except bitsec.BitsecError as e:
            log.warning("session of a replayed refresh token not revoked: %s", e)


def _looks_hijacked(db: Session, models: Models, refresh_token: str, request: Request) -> bool:
    """The refresh token was issued to another client address AND another user agent (either
    alone changes innocently: a phone changing networks, a browser update)."""
    _, jti = token_subject(refresh_token)
    row = db.get(models.IssuedToken, jti) if jti else None
    if row is None or not row.ip or not row.user_agent:
        return False
    ua = request.headers.get("user-agent")
    ip = client_ip(request)
    return ip is not None and ip != row.ip and (ua or "")[:512] != row.user_agent


def _token_claims(user: Any) -> dict[str, Any]:
    # sub is the user's id, not the username: tokens, rate-limit keys and audit actors carry
    # a pseudonym that anonymisation cuts off from the person (README.md, "GDPR").
    return {"sub": str(user.id), "roles": user.roles, "tenant_id": user.tenant_id}


# ---- the application ----------------------------------------------------------------------

def create_app(config_path: str | os.PathLike[str], database_url: str, *,
               data_dir: str | os.PathLike[str] | None = None, redis: dict[str, Any] | None = None,
               store: dict[str, Any] | None = None, audit_durability: str | None = None, max_body_bytes: int = 1 << 20, auth_body_bytes: int = 16 << 10,
               body_timeout: float = 30.0, passwords: dict[str, Any] | None = None) -> FastAPI:
    """The reference service. ``data_dir`` holds the audit log and the generated key files;
    by default the directory of the SQLite database file. ``redis``: a ``redis`` section
    (docs/configuration.md) that replaces the configuration file's, if any: rate limits,
    brute-force windows, revocations and TOTP replay state then live in Redis. ``store``: a
    ``store`` section (``store.py``: the ``host`` store of a service with several worker
    processes) used when there is no ``redis``. ``audit_durability``: replaces the audit
    section's ``durability`` (the multi-worker entry point, asgi.py, asks ``every_event``).
    ``passwords``: fields that replace the ``passwords`` section's (tests use a cheaper scrypt
    cost than the production default N = 2^17). ``max_body_bytes`` / ``auth_body_bytes`` (the ``/auth/*`` endpoints, which take only
    small JSON) / ``body_timeout``: the request limits (``RequestLimitsMiddleware``)."""
    url = make_url(database_url)
    if data_dir is None:
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            raise ValueError("data_dir is required unless database_url is a SQLite file")
        data_dir = Path(url.database).resolve().parent
    data = Path(data_dir)
    # 0700 directory, 0600 files, the SQLite file created 0600 before SQLite opens it (datadir.py)
    sqlite_file = (Path(url.database).resolve() if url.get_backend_name() == "sqlite" and url.database
                   and url.database != ":memory:" else None)
    secure_data_dir(data, sqlite_file)
    cfg = load_config(config_path, data)
    # the service's own settings (CORS, artifacts, retention, alert delivery): not bitsec's
    service_cfg: dict[str, Any] = cfg.pop("service", None) or {}
    artifacts_cfg: dict[str, Any] = service_cfg.get("artifacts") or {}
    if redis is not None:
        cfg["redis"] = dict(redis)
    elif store is not None:
        cfg["store"] = dict(store)
    if audit_durability is not None and "audit" in cfg:
        cfg["audit"]["durability"] = audit_durability

    if passwords is not None:
        cfg["passwords"] = {**cfg.get("passwords", {}), **passwords}

    # security violations posted to a webhook (violations.py), stopped after the runtime's last flush;
    # /docs is served from local assets under a hash-based CSP (webdocs.py); no ReDoc page.
    app = FastAPI(title="bitsec reference service",
                  lifespan=bitsec_lifespan(cfg, then=alerter_lifespan(lambda a: a.state.alerter)),
                  docs_url=None, redoc_url=None)
    install_docs(app)
    app.state.alerter = make_alerter(service_cfg.get("alerting"), str(cfg.get("audit", {}).get("service", "bitsec")))
    # Users can be created before the application starts (create_user): their hashes come from
    # a runtime with the same passwords section, open for the application's lifetime.
    app.state.password_runtime = bitsec.Runtime({"passwords": cfg.get("passwords", {})})
    app.state.data_dir = data
    app.state.service_config = service_cfg
    # the resources, actions and roles whose decisions make a user's effective permissions (authority.py)
    app.state.policy_shape = PolicyShape.from_config(cfg["permissions"])
    app.state.audit_path = next((Path(s["path"]) for s in cfg.get("audit", {}).get("sinks", [])
                                 if s.get("type") == "file"), None)
    models = build_models(lambda: app.state.bitsec)
    engine = create_engine(database_url, connect_args={"check_same_thread": False}
                           if url.get_backend_name() == "sqlite" else {})
    if url.get_backend_name() == "sqlite":
        # Deleted and overwritten content is zeroed in the file, not left in free pages:
        # an anonymised username must not survive in the raw database.
        event.listen(engine, "connect", lambda dbapi_con, _: dbapi_con.execute("PRAGMA secure_delete=ON"))
    # the schema by migration (migrations/): a database of an earlier version is upgraded in place
    migrate(engine)
    app.state.engine = engine
    app.state.models = models
    app.state.sessions = sessionmaker(engine, expire_on_commit=False)
    User, Equipment, IssuedToken = models.User, models.Equipment, models.IssuedToken

    # Outermost first: security headers on everything (the guard's refusals included), then
    # one GuardMiddleware: per request the token, the permission of the route's @guard, the
    # rate-limit take and the audit record, decided once before the handler (auditing.py).
    # strict=True: a route that declares neither @guard nor @public stops the startup.
    # Request bodies are bounded inside it (413 / 408 answers are recorded by it too).
    app.add_middleware(RequestLimitsMiddleware, max_body_bytes=max_body_bytes, body_timeout=body_timeout,
                       limits={f"{API}/auth/*": auth_body_bytes,
                               # an upload: the file's limit plus room for the multipart framing
                               "/v1/artifacts": int(artifacts_cfg.get("max_bytes", DEFAULT_MAX_BYTES)) + (64 << 10)})
    # One record per outcome (auditing.py): an outcome an endpoint recorded itself (a login, a
    # refused account change) is not recorded again; a 403 is the guard's record alone
    # (config.json turns the library's own denial events off: permissions.audit_denials).
    # Writes to the encrypted and personal records are flagged sensitive_data_accessed.
    # Rate categories by path (service_categories): /auth/ paths "auth", uploads "upload",
    # /infer "inference", the rest "default"; /health and /metrics are not limited.
    # The web UI's routes are cookie routes (webui.py): the guard validates their session
    # cookie, checks CSRF and decides their permission for the session's user.
    app.add_middleware(ServiceGuardMiddleware, strict=True, realm="erp-api", categorize=service_categories,
                       session=ui_session, session_principal=ui_principal(app),
                       # FastAPI's own schema route (the /docs page reads it) is public
                       requirements={"GET /openapi.json": PUBLIC, "GET /metrics": PUBLIC},
                       sensitive=lambda path: path.startswith(
                           (f"{API}/equipment", "/v1/inspections", "/v1/defects", "/v1/artifacts", "/v1/reports",
                            f"{API}/privacy", f"{API}/users")))
    # the allow-list of origins (cors.py), inside the security headers: preflights get them too
    add_cors(app, service_cfg.get("cors"))
    app.add_middleware(SecurityHeadersMiddleware)
    if os.environ.get(TEST_WORKER_ENV) == "1":
        app.add_middleware(WorkerHeaderMiddleware)

    # 422 without the rejected values (common.py): no echoed secrets, no 500 for 1e400
    app.add_exception_handler(RequestValidationError, validation_error_response)  # type: ignore[arg-type]

    auth = BearerAuth(realm="erp-api")

    def db_session() -> Iterator[Session]:
        with app.state.sessions() as db:
            yield db

    deps = Deps(auth=auth, db_session=db_session, models=models)

    # Login attempts per client (its IPv6 /64 or IPv4 address) and per account, each reserved
    # before the password check (rate_limits.login_guard).
    login_guard = LoginGuard()

    # ---- health and metrics ----

    @app.get("/health")
    @public
    def health() -> dict[str, str]:
        return {"status": "ok"}

    # the public keys of the token signing keys (keys.py): other services verify our tokens
    # with them; both keys of a rotation are published. Never a private member or an HMAC secret.
    public_keys = jwks(cfg.get("tokens", {}))

    @app.get("/.well-known/jwks.json")
    @public
    def jwks_endpoint(response: Response) -> dict[str, Any]:
        response.headers["Cache-Control"] = "public, max-age=300"
        return public_keys

    # bitsec's Prometheus text of this worker (counters, gauges, latency histograms), served
    # by the library's router; public as the health probe, outside every rate limit.
    app.include_router(metrics_router("/metrics"))

    # ---- authentication ----

    def authenticate(request: Request, db: Session, attempts: LoginAttempts, username: str, password: str,
                     totp_code: str | None) -> Any:
        """The user whose password (and TOTP code, when enrolled) is right, with the login
        guard's accounting and the login / failed-login audit events; else the HTTPException
        to answer (401, 429). The API's login and the web UI's both use it."""
        rt = get_runtime(request)
        # Reserved (counted as a failure) before the password is checked: concurrent guesses
        # cannot get past the limit; 429 + Retry-After when the client or account is refused.
        attempt = attempts.begin(username)
        user = db.scalar(select(User).where(User.username == username))
        ok = password_ok = check_password(rt, password, user) and user is not None
        if ok and user.totp_sealed:
            if not totp_code:
                # The password was right: not a failure, but no token without the code.
                attempt.cancel()
                raise HTTPException(status_code=401, detail="MFA code required", headers={"WWW-Authenticate": REALM})
            try:
                ok = bool(rt.totp_verify_sealed(user.totp_sealed, totp_code, str(user.id)))
            except bitsec.BitsecError:
                ok = False
        if not ok:  # a wrong password or MFA code: already counted by the guard
            # its own event (the failed-login alert counts these), never the password; the
            # actor only when the account exists (a username is personal data: not recorded)
            reason = "invalid_mfa_code" if password_ok else "invalid_credentials"
            audit(request, {"type": "authentication", "subtype": "failed_login", "result": "failure",
                            "reason": reason, **({"actor": str(user.id), "tenant": user.tenant_id} if user else {})})
            refusal = attempt.failed(realm=REALM)
            if refusal.status_code == 429:  # this failure started a block or back-off
                violation(request.app, "BruteForceBlock", request_id=request_id(request),
                          actor=str(user.id) if user else None, tenant=user.tenant_id if user else None,
                          description="The login guard blocks further attempts of this client or account for a while.")
            raise refusal
        attempt.succeeded()
        audit(request, {"type": "authentication", "subtype": "login", "result": "success", "actor": str(user.id),
                        "tenant": user.tenant_id, "details": {"mfa": bool(user.totp_sealed)}}, final=True)
        return user

    @app.post(f"{API}/auth/login")
    @public
    def login(body: LoginIn, request: Request, response: Response, db: Session = Depends(db_session),
              attempts: LoginAttempts = Depends(login_guard)) -> dict[str, Any]:
        rt = get_runtime(request)
        user = authenticate(request, db, attempts, body.username, body.password, body.totp_code)
        # auth_time: when the password was entered; step-up endpoints want it recent (account.py)
        pair = rt.issue_token_pair({**_token_claims(user), **auth_time_claim()})
        record_pair(db, models, pair, user.id, request)
        db.commit()
        no_store(response)
        return pair

    @app.post(f"{API}/auth/refresh")
    @public
    def refresh(body: RefreshIn, request: Request, response: Response,
                db: Session = Depends(db_session)) -> dict[str, Any]:
        rt = get_runtime(request)
        try:
            pair = rt.refresh_token_pair(body.refresh_token)
        except bitsec.RevokedTokenError:
            # An authentic refresh token that was spent or revoked: a replay. The session it
            # belongs to ends (a thief and the victim share it), then the usual 401.
            _end_session_of(rt, body.refresh_token)
            sub, _ = token_subject(body.refresh_token)
            violation(request.app, "RefreshTokenReplay", request_id=request_id(request), actor=sub,
                      description="A refresh token was presented after it had been used or revoked; its session is revoked.")
            raise HTTPException(status_code=401, detail="Invalid refresh token",
                                headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'}) from None
        except bitsec.TokenError:
            # Also when the old token could not be recorded as spent: the library then
            # revoked its session instead (fail closed), so a 401 is the honest answer.
            raise HTTPException(status_code=401, detail="Invalid refresh token",
                                headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'}) from None
        except bitsec.BackendUnavailableError:
            raise _revocation_unavailable() from None
        claims = rt.verify_token(pair["access_token"])
        user = db.get(User, int(claims.subject)) if claims.subject and claims.subject.isdigit() else None
        if user is None or user.anonymized_at is not None:  # tokens of a vanished account
            session_id = claims.get("session_id")
            if session_id and claims.subject:
                rt.revoke_session(session_id, claims.subject)
            else:
                rt.revoke_token(pair["access_token"])
                rt.revoke_token(pair["refresh_token"])
            raise HTTPException(status_code=401, detail="Invalid refresh token",
                                headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'})
        if _looks_hijacked(db, models, body.refresh_token, request):
            # issued to another address AND another user agent: the session ends (new pair included)
            session_id = claims.get("session_id")
            if session_id:
                rt.revoke_session(session_id, claims.subject)
            rt.revoke_token(pair["access_token"])
            rt.revoke_token(pair["refresh_token"])
            violation(request.app, "SessionHijackSuspected", request_id=request_id(request), actor=claims.subject,
                      tenant=claims.tenant_id,
                      description="A refresh token came from another client address and user agent than its session's.")
            audit(request, {"type": "security_incident", "subtype": "session_hijack_suspected", "result": "denied",
                            "actor": claims.subject, "tenant": claims.tenant_id, "reason": "client_changed"},
                  final=True)
            raise HTTPException(status_code=401, detail="Invalid refresh token",
                                headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'})
        record_pair(db, models, pair, user.id, request)
        db.commit()
        no_store(response)
        return pair

    @app.post(f"{API}/auth/logout", status_code=204)
    @guard()
    def logout(request: Request, body: LogoutIn | None = None, claims: Any = Depends(auth),
               db: Session = Depends(db_session)) -> None:
        """Ends the session: the access token, every live token the service issued in the
        same session (refreshed pairs included), and the given refresh token when it is the
        same user's."""
        rt = get_runtime(request)
        if body is not None and body.refresh_token:
            # someone else's refresh token: 403, audited, nothing revoked (authority.py)
            refuse_foreign_refresh_token(request, db, models, claims, body.refresh_token)
        try:
            _revoke_caller(rt, request, claims)
        except bitsec.BackendUnavailableError:
            raise _revocation_unavailable() from None
        if body is not None and body.refresh_token:
            try:
                refresh_claims = rt.verify_token(body.refresh_token)
                same_user = refresh_claims.subject == claims.subject
            except bitsec.WrongTokenTypeError:
                same_user = True  # a refresh token: revoke_token checks its signature and claims itself
            except bitsec.TokenError:
                same_user = False
            if same_user:
                try:
                    rt.revoke_token(body.refresh_token)
                except bitsec.TokenError:
                    pass
        session_id = claims.get("session_id")
        if session_id:
            # The session itself was revoked above (one call); its recorded tokens go.
            rows = list(db.scalars(select(IssuedToken).where(IssuedToken.session_id == session_id,
                                                             IssuedToken.user_id == user_of(db, models, claims).id)))
            forget_tokens(db, models, [r.jti for r in rows])
        forget_tokens(db, models, [claims.jti])
        db.commit()

    @app.get(f"{API}/auth/me")
    @guard()
    def me(claims: Any = Depends(auth), db: Session = Depends(db_session)) -> dict[str, Any]:
        user = user_of(db, models, claims)
        return {"username": user.username, "roles": list(claims.roles), "tenant_id": claims.tenant_id,
                "mfa_enabled": bool(user.totp_sealed)}

    @app.post(f"{API}/auth/mfa/enroll")
    @guard()
    def mfa_enroll_start(request: Request, response: Response, claims: Any = Depends(step_up(auth)),
                         db: Session = Depends(db_session)) -> dict[str, Any]:
        """Needs a password entered in the last 5 minutes (account.py): a stolen access token
        must not be enough to put a second factor of the thief's on the account."""
        user = user_of(db, models, claims)
        if user.totp_sealed:
            # A stolen access token must not be enough to replace the second factor.
            raise HTTPException(status_code=409, detail="MFA already enrolled")
        # Pending until /auth/mfa/confirm proves the authenticator holds the secret; a new
        # enrolment replaces a pending one (a lost QR code is not a dead end).
        enrolment = mfa_enroll(get_runtime(request), str(user.id), user.username)
        user.totp_pending = enrolment.sealed
        db.commit()
        no_store(response)  # the URI holds the secret
        audit(request, {"type": "mfa", "subtype": "mfa_enrolment_started", "result": "success",
                        "actor": claims.subject, "tenant": claims.tenant_id})
        return {"provisioning_uri": enrolment.uri, "qr_png": enrolment.qr_data_uri, "confirmed": False}

    @app.post(f"{API}/auth/mfa/confirm")
    @guard()
    def mfa_confirm(body: MFAConfirmIn, request: Request, claims: Any = Depends(auth),
                    db: Session = Depends(db_session)) -> dict[str, Any]:
        user = user_of(db, models, claims)
        if user.totp_sealed:
            raise HTTPException(status_code=409, detail="MFA already enrolled")
        if not user.totp_pending:
            raise HTTPException(status_code=409, detail="No MFA enrolment to confirm")
        # 401 wrong or used code, 429 throttled (bitsec's per-user TOTP throttle)
        verify_mfa_code(get_runtime(request), user.totp_pending, body.code, str(user.id))
        user.totp_sealed, user.totp_pending = user.totp_pending, None
        db.commit()
        audit(request, {"type": "mfa", "subtype": "mfa_enabled", "result": "success",
                        "actor": claims.subject, "tenant": claims.tenant_id})
        return {"mfa_enabled": True}

    # ---- equipment (ERP roles, tenant-scoped) ----

    def _get_equipment(db: Session, claims: Any, eid: int) -> Any:
        e = db.scalar(select(Equipment).where(Equipment.id == eid, Equipment.tenant_id == claims.tenant_id))
        if e is None:
            raise HTTPException(status_code=404, detail="Equipment not found")
        return e

    @app.get(f"{API}/equipment/search")
    @guard("equipment", "read")
    def search_equipment(q: str = Query(min_length=1, max_length=100),
                         claims: Any = Depends(guard_claims),
                         db: Session = Depends(db_session)) -> dict[str, Any]:
        # A bound parameter, LIKE wildcards escaped: q is data, never SQL.
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = db.scalars(select(Equipment).where(Equipment.tenant_id == claims.tenant_id,
                                                  Equipment.name.like(pattern, escape="\\"))
                          .order_by(Equipment.id).limit(100))
        return {"items": [equipment_out(e) for e in rows]}

    @app.get(f"{API}/equipment")
    @guard("equipment", "read")
    def list_equipment(claims: Any = Depends(guard_claims),
                       db: Session = Depends(db_session)) -> dict[str, Any]:
        rows = db.scalars(select(Equipment).where(Equipment.tenant_id == claims.tenant_id)
                          .order_by(Equipment.id).limit(1000))
        return {"items": [equipment_out(e) for e in rows]}

    def add_equipment(db: Session, tenant: str, subject: str | None, body: EquipmentIn) -> Any:
        e = Equipment(tenant_id=tenant, name=body.name, serial_number=body.serial_number,
                      cost=_cost_text(body.cost), notes=body.notes,
                      created_by=int(subject) if subject and subject.isdigit() else None)
        db.add(e)
        db.commit()
        return e

    @app.post(f"{API}/equipment", status_code=201)
    @guard("equipment", "create")
    def create_equipment(body: EquipmentIn,
                         claims: Any = Depends(guard_claims),
                         db: Session = Depends(db_session)) -> dict[str, Any]:
        return equipment_out(add_equipment(db, claims.tenant_id, claims.subject, body))

    @app.get(f"{API}/equipment/{{eid}}")
    @guard("equipment", "read")
    def get_equipment(eid: RowId, claims: Any = Depends(guard_claims),
                      db: Session = Depends(db_session)) -> dict[str, Any]:
        return equipment_out(_get_equipment(db, claims, eid))

    @app.put(f"{API}/equipment/{{eid}}")
    @guard("equipment", "update")
    def update_equipment(eid: RowId, body: EquipmentPatch,
                         claims: Any = Depends(guard_claims),
                         db: Session = Depends(db_session)) -> dict[str, Any]:
        e = _get_equipment(db, claims, eid)
        fields = body.model_dump(exclude_unset=True)
        if "cost" in fields:
            fields["cost"] = _cost_text(body.cost)
        if "name" in fields and fields["name"] is None:
            raise HTTPException(status_code=422, detail="name cannot be null")
        for k, v in fields.items():
            setattr(e, k, v)
        db.commit()
        return equipment_out(e)

    @app.delete(f"{API}/equipment/{{eid}}", status_code=204)
    @guard("equipment", "delete")
    def delete_equipment(eid: RowId, claims: Any = Depends(guard_claims),
                         db: Session = Depends(db_session)) -> None:
        db.delete(_get_equipment(db, claims, eid))
        db.commit()

    # ---- administration ----

    policy_file = cfg["permissions"].get("policy_file")

    @app.post(f"{API}/admin/policy/reload")
    @guard("system", "update")
    def reload_policy(request: Request,
                      claims: Any = Depends(guard_claims)) -> dict[str, Any]:
        """Reads the configured policy file again and makes it the active policy, atomically
        (the library records a ``policy_reloaded`` audit event). A file the library refuses
        leaves the active policy in place: 422 with the library's reason. Needs
        ``system:update`` (in the service's policy: ``inspection.admin``, ``super_admin``)."""
        if not policy_file:
            raise HTTPException(status_code=409, detail="The policy is inline in the configuration: nothing to reload")
        try:
            get_runtime(request).load_policy(Path(policy_file))
        except bitsec.ConfigError as e:
            raise HTTPException(status_code=422, detail=f"Policy file refused, the active policy stays: {e}") from None
        except OSError:
            raise HTTPException(status_code=422, detail="Policy file unreadable, the active policy stays") from None
        # what authority checks probe (authority.py) follows the policy now in force
        app.state.policy_shape = PolicyShape.from_file(policy_file)
        return {"reloaded": True}

    # ---- ADR-007 inspections and the GDPR endpoints ----

    app.include_router(inspections_router(deps))
    # ADR-007's defects, reports, artifacts and inference (adr007.py)
    app.include_router(adr007_router(deps, data, artifacts_cfg))
    app.include_router(privacy_router(deps, app.state.audit_path))
    # step-up account changes and the administration of other users (authority.py)
    app.include_router(account_router(deps, _token_claims))
    app.include_router(users_admin_router(deps))
    # the web UI (webui.py): cookie sessions and CSRF over the same checks as the API
    install_web_ui(app, db_session=db_session, models=models, equipment_in=EquipmentIn, login_guard=login_guard,
                   authenticate=authenticate, new_equipment=add_equipment, equipment_out=equipment_out)

    return app


def main() -> None:  # python -m examples.fastapi_service.app [config] [database_url]
    import sys

    import uvicorn

    here = Path(__file__).resolve().parent
    config = sys.argv[1] if len(sys.argv) > 1 else str(here / "config.json")
    database = sys.argv[2] if len(sys.argv) > 2 else "sqlite:///build/fastapi_service/service.db"
    uvicorn.run(create_app(config, database), host="127.0.0.1", port=8000, workers=1)


if __name__ == "__main__":
    main()
