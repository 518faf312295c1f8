"""The reference service: ``create_app(config_path, database_url)`` (see README.md).

Every native bitsec call runs in FastAPI's thread pool (plain ``def`` endpoints and
dependencies); SQLAlchemy is used synchronously on a real SQLite file.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterator

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

import bitsec
from bitsec.fastapi import (
    AuditMiddleware, BearerAuth, RateLimitMiddleware, SecurityHeadersMiddleware, bitsec_lifespan, get_runtime,
    require_permission,
)

from .models import Models, build_models

API = "/api/v1"

# ---- passwords (hashlib.scrypt, RFC 7914) -------------------------------------------------

SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2 ** 14, 8, 1, 32


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=SCRYPT_LEN)
    return "scrypt${}${}${}${}${}".format(SCRYPT_N, SCRYPT_R, SCRYPT_P, base64.b64encode(salt).decode(),
                                          base64.b64encode(digest).decode())


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
        digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=int(n), r=int(r), p=int(p),
                                dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


# A hash to check unknown usernames against, so that they cost the same time as known ones.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


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
    data_dir.mkdir(parents=True, exist_ok=True)

    def under_data(p: str) -> str:
        return p if os.path.isabs(p) else str(data_dir / p)

    for sink in cfg.get("audit", {}).get("sinks", []):
        if sink.get("type") == "file":
            sink["path"] = under_data(sink["path"])
    secret_refs = [k.get("secret") for k in cfg.get("fields", {}).get("keys", [])]
    secret_refs += [k.get("secret") for k in cfg.get("tokens", {}).get("keys", [])]
    for ref in secret_refs:
        if isinstance(ref, dict) and "file" in ref:
            ref["file"] = under_data(ref["file"])
            _ensure_key_file(Path(ref["file"]))
    perms = cfg.get("permissions", {})
    if "policy_file" in perms and not os.path.isabs(perms["policy_file"]):
        perms["policy_file"] = str((config_path.parent / perms["policy_file"]).resolve())
    return cfg


# ---- request and response bodies ----------------------------------------------------------

class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    totp_code: str | None = Field(default=None, max_length=16)


class RefreshIn(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=8192)


class LogoutIn(BaseModel):
    refresh_token: str | None = Field(default=None, max_length=8192)


class EquipmentIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    serial_number: str | None = Field(default=None, max_length=200)
    cost: Decimal | None = None
    notes: str | None = Field(default=None, max_length=10000)


class EquipmentPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    serial_number: str | None = Field(default=None, max_length=200)
    cost: Decimal | None = None
    notes: str | None = Field(default=None, max_length=10000)


def _equipment_out(e: Any) -> dict[str, Any]:
    return {"id": e.id, "name": e.name, "tenant_id": e.tenant_id, "serial_number": e.serial_number,
            "cost": e.cost, "notes": e.notes}


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

def create_user(app: FastAPI, username: str, password: str, role: str, tenant_id: str) -> int:
    """Adds a user (scrypt hash of ``password``); returns its id."""
    models: Models = app.state.models
    with app.state.sessions() as db, db.begin():
        u = models.User(username=username, password_hash=hash_password(password), role=role, tenant_id=tenant_id)
        db.add(u)
        db.flush()
        return int(u.id)


# ---- the application ----------------------------------------------------------------------

def create_app(config_path: str | os.PathLike[str], database_url: str, *,
               data_dir: str | os.PathLike[str] | None = None, redis: dict[str, Any] | None = None) -> FastAPI:
    """The reference service. ``data_dir`` holds the audit log and the generated key files;
    by default the directory of the SQLite database file. ``redis``: a ``redis`` section
    (docs/configuration.md) that replaces the configuration file's, if any: rate limits,
    brute-force windows, revocations and TOTP replay state then live in Redis."""
    url = make_url(database_url)
    if data_dir is None:
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            raise ValueError("data_dir is required unless database_url is a SQLite file")
        data_dir = Path(url.database).resolve().parent
    data = Path(data_dir)
    cfg = load_config(config_path, data)
    if redis is not None:
        cfg["redis"] = dict(redis)

    app = FastAPI(title="bitsec reference service", lifespan=bitsec_lifespan(cfg))
    app.state.data_dir = data
    app.state.audit_path = next((Path(s["path"]) for s in cfg.get("audit", {}).get("sinks", [])
                                 if s.get("type") == "file"), None)
    models = build_models(lambda: app.state.bitsec)
    engine = create_engine(database_url, connect_args={"check_same_thread": False}
                           if url.get_backend_name() == "sqlite" else {})
    models.Base.metadata.create_all(engine)
    app.state.engine = engine
    app.state.models = models
    app.state.sessions = sessionmaker(engine, expire_on_commit=False)
    User, Equipment = models.User, models.Equipment

    # Outermost first: security headers on everything (429s included), the audit trail
    # around the rate limiter so that refusals are recorded too.
    app.add_middleware(RateLimitMiddleware, exempt=["/health", "/metrics"])
    app.add_middleware(AuditMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)

    auth = BearerAuth(realm="erp-api")

    def db_session() -> Iterator[Session]:
        with app.state.sessions() as db:
            yield db

    def client_key(request: Request) -> str:
        return f"ip:{request.client.host if request.client else 'unknown'}"

    def blocked(status: bitsec.BruteForceStatus) -> HTTPException:
        return HTTPException(status_code=429, detail="Too many failed login attempts",
                             headers={"Retry-After": str(max(1, status.retry_after))})

    # ---- health and metrics ----

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics(request: Request) -> PlainTextResponse:
        return PlainTextResponse(get_runtime(request).metrics_text(), media_type="text/plain; version=0.0.4")

    # ---- authentication ----

    @app.post(f"{API}/auth/login")
    def login(body: LoginIn, request: Request, db: Session = Depends(db_session)) -> dict[str, Any]:
        rt = get_runtime(request)
        key = client_key(request)
        status = rt.bruteforce_check(key)
        if status.blocked:
            raise blocked(status)
        user = db.scalar(select(User).where(User.username == body.username))
        ok = verify_password(body.password, user.password_hash if user else _DUMMY_HASH) and user is not None
        if ok and user.totp_sealed:
            if not body.totp_code:
                # The password was right: not a failure yet, but no token without the code.
                raise HTTPException(status_code=401, detail="MFA code required",
                                    headers={"WWW-Authenticate": 'Bearer realm="erp-api"'})
            try:
                ok = bool(rt.totp_verify_sealed(user.totp_sealed, body.totp_code, user.username))
            except bitsec.BitsecError:
                ok = False
        if not ok:
            status = rt.bruteforce_record_failure(key)
            if status.blocked:
                raise blocked(status)
            raise HTTPException(status_code=401, detail="Invalid credentials",
                                headers={"WWW-Authenticate": 'Bearer realm="erp-api"'})
        rt.bruteforce_record_success(key)
        return rt.issue_token_pair({"sub": user.username, "roles": [user.role], "tenant_id": user.tenant_id})

    @app.post(f"{API}/auth/refresh")
    def refresh(body: RefreshIn, request: Request) -> dict[str, Any]:
        try:
            return get_runtime(request).refresh_token_pair(body.refresh_token)
        except bitsec.TokenError:
            raise HTTPException(status_code=401, detail="Invalid refresh token",
                                headers={"WWW-Authenticate": 'Bearer realm="erp-api", error="invalid_token"'}) from None

    @app.post(f"{API}/auth/logout", status_code=204)
    def logout(request: Request, body: LogoutIn | None = None, claims: Any = Depends(auth)) -> None:
        rt = get_runtime(request)
        rt.revoke_token(jti=claims.jti, exp=claims.expires_at)
        if body is not None and body.refresh_token:
            try:
                refresh_claims = rt.verify_token(body.refresh_token)
                same_user = refresh_claims.subject == claims.subject
            except bitsec.WrongTokenTypeError:
                same_user = True  # revoke_token checks the signature and claims itself
            except bitsec.TokenError:
                same_user = False
            if same_user:
                try:
                    rt.revoke_token(body.refresh_token)
                except bitsec.TokenError:
                    pass

    @app.get(f"{API}/auth/me")
    def me(claims: Any = Depends(auth), db: Session = Depends(db_session)) -> dict[str, Any]:
        user = db.scalar(select(User).where(User.username == claims.subject))
        return {"username": claims.subject, "roles": list(claims.roles), "tenant_id": claims.tenant_id,
                "mfa_enabled": bool(user and user.totp_sealed)}

    @app.post(f"{API}/auth/mfa/enroll")
    def mfa_enroll(request: Request, claims: Any = Depends(auth), db: Session = Depends(db_session)) -> dict[str, str]:
        user = db.scalar(select(User).where(User.username == claims.subject))
        if user is None:
            raise HTTPException(status_code=404, detail="User not found")
        if user.totp_sealed:
            # A stolen access token must not be enough to replace the second factor.
            raise HTTPException(status_code=409, detail="MFA already enrolled")
        enrolment = get_runtime(request).totp_enroll(user.username)
        user.totp_sealed = enrolment.sealed
        db.commit()
        return {"provisioning_uri": enrolment.uri}

    # ---- equipment (ERP roles, tenant-scoped) ----

    def _get_equipment(db: Session, claims: Any, eid: int) -> Any:
        e = db.scalar(select(Equipment).where(Equipment.id == eid, Equipment.tenant_id == claims.tenant_id))
        if e is None:
            raise HTTPException(status_code=404, detail="Equipment not found")
        return e

    @app.get(f"{API}/equipment/search")
    def search_equipment(q: str = Query(min_length=1, max_length=100),
                         claims: Any = Depends(require_permission("equipment", "read", bearer=auth)),
                         db: Session = Depends(db_session)) -> dict[str, Any]:
        # A bound parameter, LIKE wildcards escaped: q is data, never SQL.
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = db.scalars(select(Equipment).where(Equipment.tenant_id == claims.tenant_id,
                                                  Equipment.name.like(pattern, escape="\\"))
                          .order_by(Equipment.id).limit(100))
        return {"items": [_equipment_out(e) for e in rows]}

    @app.get(f"{API}/equipment")
    def list_equipment(claims: Any = Depends(require_permission("equipment", "read", bearer=auth)),
                       db: Session = Depends(db_session)) -> dict[str, Any]:
        rows = db.scalars(select(Equipment).where(Equipment.tenant_id == claims.tenant_id)
                          .order_by(Equipment.id).limit(1000))
        return {"items": [_equipment_out(e) for e in rows]}

    @app.post(f"{API}/equipment", status_code=201)
    def create_equipment(body: EquipmentIn,
                         claims: Any = Depends(require_permission("equipment", "create", bearer=auth)),
                         db: Session = Depends(db_session)) -> dict[str, Any]:
        e = Equipment(tenant_id=claims.tenant_id, name=body.name, serial_number=body.serial_number,
                      cost=_cost_text(body.cost), notes=body.notes)
        db.add(e)
        db.commit()
        return _equipment_out(e)

    @app.get(f"{API}/equipment/{{eid}}")
    def get_equipment(eid: int, claims: Any = Depends(require_permission("equipment", "read", bearer=auth)),
                      db: Session = Depends(db_session)) -> dict[str, Any]:
        return _equipment_out(_get_equipment(db, claims, eid))

    @app.put(f"{API}/equipment/{{eid}}")
    def update_equipment(eid: int, body: EquipmentPatch,
                         claims: Any = Depends(require_permission("equipment", "update", bearer=auth)),
                         db: Session = Depends(db_session)) -> dict[str, Any]:
        e = _get_equipment(db, claims, eid)
        fields = body.model_dump(exclude_unset=True)
        if "cost" in fields:
            fields["cost"] = _cost_text(body.cost)
        for k, v in fields.items():
            setattr(e, k, v)
        db.commit()
        return _equipment_out(e)

    @app.delete(f"{API}/equipment/{{eid}}", status_code=204)
    def delete_equipment(eid: int, claims: Any = Depends(require_permission("equipment", "delete", bearer=auth)),
                         db: Session = Depends(db_session)) -> None:
        db.delete(_get_equipment(db, claims, eid))
        db.commit()

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
