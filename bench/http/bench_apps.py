"""The two FastAPI apps of the HTTP benchmark (bench/http_bench.py), same endpoints, same policy.

- ``bitsec``: ``bitsec.fastapi`` as docs/fastapi.md writes a service: ``bitsec_lifespan``,
  ``RateLimitMiddleware``, ``AuditMiddleware``, ``require_permission(..., bearer=BearerAuth())``.
- ``guard``: ``bitsec.fastapi.GuardMiddleware`` with ``@guard`` declarations (one ASGI
  middleware, the route table compiled at startup).
- ``incumbent``: what the design documents' services use today, written as FastAPI's docs and
  the seeds write it: PyJWT ``jwt.decode`` (signature, exp, iat, iss, aud) in an ``async``
  dependency, casbin's ``Enforcer`` (RBAC model with role inheritance, the same table),
  slowapi's ``Limiter`` keyed by the verified user (X-RateLimit headers on), and ADR-007's
  ``SecurityAuditLogger`` over ``logging.FileHandler``, one JSON line per event, written from
  an ``@app.middleware("http")`` as ADR-007 does (``audit_asgi``: the same logger from a plain
  ASGI middleware, the faster way to write it).

Both: ``GET /api/v1/equipment/{eid}`` needs ``equipment:read``, ``POST
/api/v1/equipment/{eid}`` needs ``equipment:update``; operator inherits from viewer;
every request takes a token from the user's bucket; every request leaves one audit record
(401 and 403 included).

``create_app()`` (a uvicorn ``--factory``) reads its settings from the JSON file named by
``HTTPBENCH_SETTINGS``: ``stack`` (``bare``, ``bitsec``, ``guard``, ``incumbent``), ``layers`` (the
controls, cumulative, to measure each one's cost), ``alg`` (HS256 or RS256), the key
material, ``audit_path``, optionally ``offload`` (bitsec.fastapi's ``offload=``: ``auto``, the
default, or ``always``, every native call through the thread pool as before) and
``rate_capacity`` (tests: a bucket small enough to empty).
"""
from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime, timezone
from typing import Any

from fastapi import Body, Depends, FastAPI, HTTPException, Request, Response

ISS = "https://auth.bitcorp.example"
AUD = "erp-api"
LAYERS = ("token", "permission", "ratelimit", "audit")
#: Far above what one worker serves in a benchmark run, but a real bucket taken on every request.
RATE_CAPACITY = 10_000_000
RATE_PERIOD = 60  # a minute: slowapi's "N/minute"

# The ERP guide's hierarchy, unconditional permissions only (so casbin expresses the same table).
ROLES: dict[str, dict[str, list[str]]] = {
    "viewer": {"inherits": [], "allow": ["equipment:read", "maintenance_records:read", "reports:read"]},
    "operator": {"inherits": ["viewer"], "allow": ["equipment:update", "maintenance_records:create"]},
    "manager": {"inherits": ["operator"], "allow": ["equipment:create", "maintenance_records:update",
                                                    "reports:create", "customers:read"]},
    "admin": {"inherits": ["manager"], "allow": ["equipment:delete", "customers:update", "users:read"]},
}
BITSEC_POLICY: dict[str, Any] = {
    "resources": ["equipment", "maintenance_records", "customers", "reports", "users"],
    "actions": ["create", "read", "update", "delete"],
    "roles": {name: ({"inherits": spec["inherits"]} if spec["inherits"] else {}) | {"allow": spec["allow"]}
              for name, spec in ROLES.items()},
}
CASBIN_MODEL = """
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub) && r.obj == p.obj && r.act == p.act
"""


def casbin_policy_lines() -> list[str]:
    """The same table as casbin CSV: ``p, role, obj, act`` and ``g, role, parent``."""
    lines = []
    for role, spec in ROLES.items():
        for perm in spec["allow"]:
            obj, act = perm.split(":")
            lines.append(f"p, {role}, {obj}, {act}")
        for parent in spec["inherits"]:
            lines.append(f"g, {role}, {parent}")
    return lines


def casbin_enforcer() -> Any:
    """casbin's ``Enforcer`` over the RBAC model and the same table (model from text, policy
    rules added as its adapter would load them)."""
    import casbin

    model = casbin.model.Model()
    model.load_model_from_text(CASBIN_MODEL)
    enforcer = casbin.Enforcer(model)
    for line in casbin_policy_lines():
        kind, *rule = [f.strip() for f in line.split(",")]
        if kind == "p":
            enforcer.add_policy(*rule)
        else:
            enforcer.add_grouping_policy(*rule)
    return enforcer


def item(eid: int) -> dict[str, Any]:
    return {"id": eid, "name": f"excavator-{eid}", "status": "active", "department": "ops"}


def _bare_routes(app: FastAPI) -> None:
    @app.get("/api/v1/equipment/{eid}")
    async def read(eid: int) -> dict[str, Any]:
        return item(eid)

    @app.post("/api/v1/equipment/{eid}")
    async def update(eid: int, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return item(eid) | {"updated": sorted(body)}


# ---- bitsec --------------------------------------------------------------------------------

def bitsec_config(settings: dict[str, Any]) -> dict[str, Any]:
    if settings["alg"] == "HS256":
        key = {"kid": "bench", "alg": "HS256", "secret": {"value": settings["secret"]}}
    else:
        key = {"kid": "bench", "alg": settings["alg"], "pem": {"value": settings["public_pem"]}}
    cfg: dict[str, Any] = {
        "allow_inline_secrets": True,
        "tokens": {"keys": [key], "issuer": ISS, "audience": [AUD], "required_claims": ["sub"]},
        "permissions": {"policy": BITSEC_POLICY},
        "rate_limits": {"store": "local", "categories": {
            # A bucket that barely refills, so X-RateLimit-Remaining visibly counts every take.
            "default": {"capacity": settings.get("rate_capacity", RATE_CAPACITY), "refill": 1,
                        "period_seconds": RATE_PERIOD}}},
    }
    if "audit" in settings["layers"]:
        cfg["audit"] = {"sinks": [{"type": "file", "path": settings["audit_path"]}], "durability": "batched",
                        "service": "erp-api"}
    return cfg


def bitsec_app(settings: dict[str, Any]) -> FastAPI:
    from bitsec.fastapi import (AuditMiddleware, BearerAuth, RateLimitMiddleware, bitsec_lifespan,
                                require_permission)

    layers = settings["layers"]
    offload = settings.get("offload") or "auto"
    app = FastAPI(lifespan=bitsec_lifespan(bitsec_config(settings)))
    if "ratelimit" in layers:
        app.add_middleware(RateLimitMiddleware, offload=offload)
    if "audit" in layers:
        # Every request is audited here (GET included), as the incumbent's middleware does.
        app.add_middleware(AuditMiddleware, methods=("GET", "POST", "PUT", "PATCH", "DELETE"), offload=offload)
    auth = BearerAuth(realm="erp", offload=offload)

    if "permission" in layers:
        can_read = Depends(require_permission("equipment", "read", bearer=auth))
        can_update = Depends(require_permission("equipment", "update", bearer=auth))
    else:
        can_read = can_update = Depends(auth)

    @app.get("/api/v1/equipment/{eid}")
    async def read(eid: int, claims: Any = can_read) -> dict[str, Any]:
        return item(eid)

    @app.post("/api/v1/equipment/{eid}")
    async def update(eid: int, body: dict[str, Any] = Body(...), claims: Any = can_update) -> dict[str, Any]:
        return item(eid) | {"updated": sorted(body)}

    return app


def guard_app(settings: dict[str, Any]) -> FastAPI:
    """bitsec's ``GuardMiddleware``: one pure ASGI middleware, the route table compiled at
    startup from ``@guard`` declarations; token, permission, rate-limit take before the
    handler, the audit record (every request, reads too) when the response starts."""
    from bitsec.fastapi import GuardMiddleware, bitsec_lifespan, guard

    layers = settings["layers"]
    offload = settings.get("offload") or "auto"
    app = FastAPI(lifespan=bitsec_lifespan(bitsec_config(settings)))
    rate = "default" if "ratelimit" in layers else ""
    audit = True if "audit" in layers else False
    read_perm = ("equipment", "read") if "permission" in layers else (None, None)
    update_perm = ("equipment", "update") if "permission" in layers else (None, None)

    @app.get("/api/v1/equipment/{eid}")
    @guard(*read_perm, rate=rate, audit=audit)
    async def read(eid: int) -> dict[str, Any]:
        return item(eid)

    @app.post("/api/v1/equipment/{eid}")
    @guard(*update_perm, rate=rate, audit=audit)
    async def update(eid: int, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return item(eid) | {"updated": sorted(body)}

    app.add_middleware(GuardMiddleware, realm="erp", offload=offload)
    return app


# ---- incumbent: PyJWT + casbin + slowapi + logging -----------------------------------------

class SecurityAuditLogger:
    """ADR-007's audit logger over Python logging: one JSON line per event (its structlog
    renders the same), a ``FileHandler``."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def _log(self, event: dict[str, Any]) -> None:
        event["timestamp"] = datetime.now(timezone.utc).isoformat()
        self.logger.info(json.dumps(event))

    def log_authentication_event(self, user_id: str, event_type: str, ip_address: str, user_agent: str,
                                 success: bool, failure_reason: str | None = None) -> None:
        self._log({"event_type": "authentication", "event_subtype": event_type, "user_id": user_id,
                   "ip_address": ip_address, "user_agent": user_agent, "success": success,
                   "failure_reason": failure_reason})

    def log_authorization_event(self, user_id: str, resource: str, action: str, result: str,
                                context: dict[str, Any] | None = None) -> None:
        self._log({"event_type": "authorization", "user_id": user_id, "resource": resource, "action": action,
                   "result": result, "context": context})

    def log_data_access_event(self, user_id: str, operation: str, table_name: str, record_id: str,
                              sensitive_data_accessed: bool = False, data_classification: str = "internal",
                              context: dict[str, Any] | None = None) -> None:
        self._log({"event_type": "data_access", "user_id": user_id, "operation": operation,
                   "table_name": table_name, "record_id": record_id,
                   "sensitive_data_accessed": sensitive_data_accessed,
                   "data_classification": data_classification, "context": context})


_OPERATIONS = {"GET": "read", "POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}


def _audit_request(audit: SecurityAuditLogger, request_state: Any, method: str, path: str, status: int,
                   ip: str, user_agent: str, request_id: str) -> None:
    user_id = getattr(request_state, "user_id", "anonymous")
    context = {"request_id": request_id, "method": method, "path": path, "status": status}
    if status == 401:
        audit.log_authentication_event(user_id, "unauthorized", ip, user_agent, False,
                                       getattr(request_state, "auth_failure", "unauthorized"))
    elif status == 403:
        resource, action = getattr(request_state, "denied", (path, method.lower()))
        audit.log_authorization_event(user_id, resource, action, "denied", context)
    else:
        parts = [p for p in path.split("/") if p]
        audit.log_data_access_event(user_id, _OPERATIONS.get(method, method.lower()),
                                    parts[2] if len(parts) > 2 else path, parts[3] if len(parts) > 3 else "",
                                    context=context)


def incumbent_verify_key(settings: dict[str, Any]) -> Any:
    """The HMAC secret, or the public key loaded once (as the ERP guide's ``TokenManager``
    keeps it): handing PyJWT the PEM text would parse it again on every request."""
    if settings["alg"] == "HS256":
        return settings["secret"]
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    return load_pem_public_key(settings["public_pem"].encode())


def incumbent_app(settings: dict[str, Any]) -> FastAPI:
    import uuid

    import jwt
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded

    layers = settings["layers"]
    app = FastAPI()
    alg = settings["alg"]
    verify_key = incumbent_verify_key(settings)

    bearer = HTTPBearer(auto_error=False)

    async def current_user(request: Request,
                           creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> dict[str, Any]:
        if creds is None:
            request.state.auth_failure = "missing"
            raise HTTPException(401, "Not authenticated", headers={"WWW-Authenticate": "Bearer"})
        try:
            payload = jwt.decode(creds.credentials, verify_key, algorithms=[alg], issuer=ISS, audience=AUD,
                                 leeway=30, options={"require": ["exp", "iat", "sub"]})
        except jwt.ExpiredSignatureError:
            request.state.auth_failure = "expired"
            raise HTTPException(401, "Token has expired", headers={"WWW-Authenticate": "Bearer"}) from None
        except jwt.InvalidTokenError:
            request.state.auth_failure = "invalid"
            raise HTTPException(401, "Invalid token", headers={"WWW-Authenticate": "Bearer"}) from None
        request.state.user_id = payload["sub"]
        return payload

    if "permission" in layers:
        enforcer = casbin_enforcer()

        def require_permission(resource: str, action: str) -> Any:
            async def check(request: Request, user: dict[str, Any] = Depends(current_user)) -> dict[str, Any]:
                roles = user.get("roles") or [user.get("role")]
                if not any(enforcer.enforce(role, resource, action) for role in roles if isinstance(role, str)):
                    request.state.denied = (resource, action)
                    raise HTTPException(403, f"Insufficient permissions: {resource}:{action}")
                return user
            return check

        can_read = Depends(require_permission("equipment", "read"))
        can_update = Depends(require_permission("equipment", "update"))
    else:
        can_read = can_update = Depends(current_user)

    if "ratelimit" in layers:
        def user_key(request: Request) -> str:
            # Runs inside the decorated endpoint, after the auth dependency verified the token.
            user = getattr(request.state, "user_id", None)
            return f"user:{user}" if user else f"ip:{request.client.host if request.client else 'unknown'}"

        limiter = Limiter(key_func=user_key, headers_enabled=True)
        app.state.limiter = limiter
        app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
        limit = limiter.limit(f"{settings.get('rate_capacity', RATE_CAPACITY)}/minute")
    else:
        def limit(fn: Any) -> Any:
            return fn

    if "audit" in layers or "audit_asgi" in layers:
        logger = logging.getLogger(f"security.audit.{id(app)}")  # one per app: tests build several
        logger.propagate = False
        logger.setLevel(logging.INFO)
        handler = logging.FileHandler(settings["audit_path"])
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        audit = SecurityAuditLogger(logger)

    if "audit" in layers:
        @app.middleware("http")
        async def audit_middleware(request: Request, call_next: Any) -> Response:
            request_id = request.headers.get("x-request-id") or str(uuid.uuid4())
            response = await call_next(request)
            _audit_request(audit, request.state, request.method, request.url.path, response.status_code,
                           request.client.host if request.client else "", request.headers.get("user-agent", ""),
                           request_id)
            response.headers["X-Request-ID"] = request_id
            return response
    elif "audit_asgi" in layers:
        from starlette.datastructures import MutableHeaders
        from starlette.requests import HTTPConnection

        class AuditASGIMiddleware:
            def __init__(self, asgi: Any) -> None:
                self.asgi = asgi

            async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] != "http":
                    await self.asgi(scope, receive, send)
                    return
                conn = HTTPConnection(scope)
                request_id = conn.headers.get("x-request-id") or str(uuid.uuid4())
                status = 500

                async def send_wrapper(message: Any) -> None:
                    nonlocal status
                    if message["type"] == "http.response.start":
                        status = message["status"]
                        MutableHeaders(scope=message)["X-Request-ID"] = request_id
                    await send(message)

                try:
                    await self.asgi(scope, receive, send_wrapper)
                finally:
                    _audit_request(audit, conn.state, scope["method"], scope["path"], status,
                                   conn.client.host if conn.client else "", conn.headers.get("user-agent", ""),
                                   request_id)

        app.add_middleware(AuditASGIMiddleware)

    @app.get("/api/v1/equipment/{eid}")
    @limit
    async def read(request: Request, response: Response, eid: int, user: dict[str, Any] = can_read) -> dict[str, Any]:
        return item(eid)

    @app.post("/api/v1/equipment/{eid}")
    @limit
    async def update(request: Request, response: Response, eid: int, body: dict[str, Any] = Body(...),
                     user: dict[str, Any] = can_update) -> dict[str, Any]:
        return item(eid) | {"updated": sorted(body)}

    return app


# ---- entry point ---------------------------------------------------------------------------

def build_app(settings: dict[str, Any]) -> FastAPI:
    stack = settings["stack"]
    if stack == "bare" or not settings["layers"]:
        app = FastAPI()
        _bare_routes(app)
        return app
    if stack == "bitsec":
        return bitsec_app(settings)
    if stack == "guard":
        return guard_app(settings)
    if stack == "incumbent":
        return incumbent_app(settings)
    raise ValueError(f"unknown stack {stack!r}")


def create_app() -> FastAPI:
    """uvicorn ``--factory`` entry point: settings from the JSON file ``$HTTPBENCH_SETTINGS``."""
    with open(os.environ["HTTPBENCH_SETTINGS"]) as f:
        return build_app(json.load(f))


# ---- tokens and keys (shared by the benchmark and its test) --------------------------------

def make_keys(alg: str) -> dict[str, Any]:
    """Key material for ``alg``: ``secret`` (HS256) or ``private_pem``/``public_pem`` (RS256)."""
    if alg == "HS256":
        return {"alg": alg, "secret": os.urandom(32).hex(), "public_pem": None, "private_pem": None}
    if alg != "RS256":
        raise ValueError("alg must be HS256 or RS256")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "alg": alg, "secret": None,
        "private_pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode(),
        "public_pem": key.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
    }


def make_token(keys: dict[str, Any], sub: str, roles: list[str], exp_in: int = 1800, **claims: Any) -> str:
    """A token both stacks accept, signed with PyJWT (neutral ground)."""
    import jwt

    now = int(time.time())
    doc = {"sub": sub, "roles": roles, "iss": ISS, "aud": AUD, "iat": now, "exp": now + exp_in,
           "tenant_id": "t1", "jti": f"{sub}-{now}-{exp_in}", **claims}
    key = keys["secret"] if keys["alg"] == "HS256" else keys["private_pem"]
    return jwt.encode(doc, key, algorithm=keys["alg"], headers={"kid": "bench"})
