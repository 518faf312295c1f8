"""``bitsec.fastapi``: FastAPI integration of a ``bitsec.Runtime`` (docs/fastapi.md).

In FastAPI's own idiom:

- ``bitsec_lifespan(config)`` opens the runtime when the app starts, keeps it on
  ``app.state.bitsec`` and closes it (after flushing the audit queue) when the app stops;
- ``BearerAuth`` verifies ``Authorization: Bearer`` tokens (``Depends``/``Security``), with
  RFC 6750 ``WWW-Authenticate`` answers, and an optional mode (``auto_error=False``);
- ``RequirePermission`` / ``require_permission(resource, action)`` decides through the
  runtime's policy, with owner/tenant/department context from path parameters or a
  callable and ``SecurityScopes`` support;
- ``RateLimit`` (a dependency) and ``RateLimitMiddleware`` (ASGI, ADR-007's categories by
  path) add ``X-RateLimit-*`` headers and answer 429 with ``Retry-After``;
- ``AuditMiddleware`` emits data-access, authentication and authorization events with the
  request id, client IP and user agent;
- ``SecurityHeadersMiddleware`` adds CSP, HSTS, X-Frame-Options, nosniff, Referrer-Policy and
  ``X-Request-ID`` to every response, and answers an unhandled exception with a generic 500
  that carries them;
- ``RequestLimitsMiddleware`` (ASGI) bounds request bodies (413 before buffering; default
  1 MiB, per route with ``body_limit`` or a dict) and the time to receive them (408);
- ``mfa_enroll`` / ``verify_mfa_code`` / ``MFACode`` are the MFA building blocks.

Native calls that can wait never run on the event loop; calls that cannot wait do (docs/
fastapi.md, "Which calls run on the event loop"): ``offload_plan(rt)`` decides once per
runtime, from its configuration, which operations may wait (a Redis round trip, an fsync, a
full audit queue under the ``block`` policy) and those go through ``anyio.to_thread.run_sync``;
the in-process ones (a permission check, a token verify without Redis revocation, a local
rate-limit bucket, a non-durable audit enqueue) run inline, because a trip through the thread
pool costs 15-100x the call. ``offload="always"`` on any entry point sends everything to the
thread pool (the behaviour before). No ``BitsecError`` of the runtime ever becomes a 500: a
backend outage is a 503 with ``Retry-After`` (or what the configured policy says), an
unconfigured audit section makes the audit middleware do nothing.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import json
import logging
import re
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterable, Mapping, Sequence, TypeVar, cast

import anyio
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase
from starlette.routing import Match

from . import _abi
from .errors import BackendUnavailableError, BitsecError, NotConfiguredError, NotFoundError
from .permissions import Principal
from .ratelimit import LoginGuardDecision
from .runtime import Runtime
from .tokens import ExpiredTokenError, TokenClaims, TokenError
from .totp import TOTPDecision, totp_qr_png

__all__ = [
    "STATE_ATTR", "bitsec_lifespan", "get_runtime", "BearerAuth", "RequirePermission", "require_permission",
    "ClientIP", "RateLimit", "RateLimitMiddleware", "adr007_category", "AuditMiddleware",
    "SecurityHeadersMiddleware", "DEFAULT_SECURITY_HEADERS", "MFAEnrollment", "mfa_enroll", "verify_mfa_code",
    "MFACode", "request_id", "OffloadPlan", "offload_plan", "run_native", "OFFLOAD_MODES",
    "RequestLimitsMiddleware", "body_limit", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_BODY_TIMEOUT",
    "LoginGuard", "LoginAttempts", "LoginAttempt",
]

log = logging.getLogger("bitsec.fastapi")

#: Where the runtime lives: ``app.state.bitsec``.
STATE_ATTR = "bitsec"
# Per-request values kept on ``request.state`` (shared with the ASGI middlewares through
# ``scope["state"]``).
_CLAIMS = "bitsec_claims"           # verified TokenClaims of this request
_AUTH_FAILURE = "bitsec_auth_failure"  # "missing" / reason name of a refused token
_DENIED = "bitsec_denied"           # (resource, action, reason) of a 403
_REQUEST_ID = "bitsec_request_id"
_CLIENT_IP = "bitsec_client_ip"
_NO_CLAIMS = object()


# ---- runtime lifecycle ---------------------------------------------------------------------

def bitsec_lifespan(config: Any, *, attr: str = STATE_ATTR,
                    then: Callable[[FastAPI], Any] | None = None) -> Callable[[FastAPI], Any]:
    """A FastAPI ``lifespan``: opens ``bitsec.Runtime(config)`` at startup (a dict, JSON
    text, a path, or an already open ``Runtime``, which is then not closed by us), keeps it
    on ``app.state.<attr>``, and at shutdown flushes the audit queue and closes it. ``then``
    is an optional inner lifespan of the application, entered once the runtime is open."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = not isinstance(config, Runtime)
        rt = Runtime(config) if owned else config
        setattr(app.state, attr, rt)
        plan = offload_plan(rt)  # decided once, at startup
        log.debug("bitsec calls inline: %s; in the thread pool: %s", ", ".join(plan.inline) or "none",
                  "; ".join(f"{k} ({v})" for k, v in plan.reasons.items()) or "none")
        try:
            if then is not None:
                async with then(app):
                    yield
            else:
                yield
        finally:
            if owned:
                with contextlib.suppress(BitsecError):
                    await anyio.to_thread.run_sync(rt.audit_flush)
                rt.close()
            with contextlib.suppress(AttributeError):
                delattr(app.state, attr)

    return lifespan


def get_runtime(request: Request, attr: str = STATE_ATTR) -> Runtime:
    """The runtime of the request's application (``app.state.bitsec``)."""
    try:
        return cast(Runtime, getattr(request.app.state, attr))
    except AttributeError:
        raise RuntimeError(f"no bitsec runtime on app.state.{attr}: use lifespan=bitsec_lifespan(config)") from None


def _runtime_of_scope(scope: Mapping[str, Any], attr: str) -> Runtime | None:
    app = scope.get("app")
    state = getattr(app, "state", None)
    return getattr(state, attr, None)


def _request_state(scope: Any) -> dict[str, Any]:
    return scope.setdefault("state", {})  # type: ignore[no-any-return]


def _unavailable(retry_after: int = 1) -> HTTPException:
    return HTTPException(status_code=503, detail="Service temporarily unavailable",
                         headers={"Retry-After": str(max(1, retry_after))})


# ---- where native calls run -----------------------------------------------------------------

#: ``offload=`` values: ``"auto"`` (the default) runs inline what cannot wait and sends to the
#: thread pool what can; ``"always"`` sends every native call to the thread pool.
OFFLOAD_MODES = ("auto", "always")

#: The operations an ``OffloadPlan`` decides.
OPERATIONS = ("tokens", "permissions", "rate_limits", "brute_force", "audit", "totp")

#: Token algorithms whose uncached verify costs more CPU than a trip through the thread pool
#: (~70 us idle, 70-115 us of CPU under load): a runtime with a key of one of them verifies in
#: the thread pool. Measured per algorithm in BENCHMARKS.md ("HTTP (issue 9)", "Which calls
#: run on the event loop"); HS*, RS*/PS* (2048-4096 bit), ES256 and EdDSA stay below it.
SLOW_VERIFY_ALGS = frozenset({"ES384", "ES512"})

_T = TypeVar("_T")


def _check_offload(offload: str) -> str:
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {OFFLOAD_MODES}")
    return offload


@dataclass(frozen=True)
class OffloadPlan:
    """Which of a runtime's operations go through the thread pool: ``reasons`` maps each
    such operation (``OPERATIONS``) to why it may wait; every other operation runs inline,
    on the event loop. ``offloads("rate_limits")`` asks for one."""

    reasons: Mapping[str, str]

    def offloads(self, operation: str) -> bool:
        return operation in self.reasons

    @property
    def inline(self) -> tuple[str, ...]:
        return tuple(op for op in OPERATIONS if op not in self.reasons)

    @classmethod
    def always(cls) -> "OffloadPlan":
        return cls({op: "offload='always'" for op in OPERATIONS})

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> "OffloadPlan":
        """The plan for a runtime whose ``rt.describe()`` is ``description``. A value this
        module does not know (a new backend) counts as one that may wait."""
        sections = description.get("sections") or {}
        why: dict[str, str] = {}
        tokens = sections.get("tokens")
        if tokens:
            revocation = tokens.get("revocation")
            slow = sorted({str(k.get("alg")) for k in tokens.get("keys") or () if k.get("alg") in SLOW_VERIFY_ALGS})
            if revocation not in _MEMORY_STORES:
                why["tokens"] = f"revocation in {revocation}"
            elif slow:
                why["tokens"] = "verify slower than a thread hop: " + ", ".join(slow)
        limits = sections.get("rate_limits")
        if limits and limits.get("store") not in _MEMORY_STORES:
            why["rate_limits"] = why["brute_force"] = f"store {limits.get('store')}"
        audit = sections.get("audit")
        if audit:
            if audit.get("durability") not in ("none", "batched"):
                why["audit"] = f"durability {audit.get('durability')}"
            elif audit.get("full_policy") != "drop":
                why["audit"] = f"full_policy {audit.get('full_policy')}"
        totp = sections.get("totp")
        if totp and totp.get("store", totp.get("state")) not in _MEMORY_STORES:
            why["totp"] = f"state in {totp.get('store', totp.get('state'))}"
        return cls(why)


#: Stores whose operations never wait on the network: tables in this process (``process``)
#: or in the host's shared memory (``host``); ``memory`` and ``local`` are what older
#: versions of the library reported for ``process``.
_MEMORY_STORES = frozenset({"process", "host", "memory", "local"})

_PLANS: "weakref.WeakKeyDictionary[Runtime, OffloadPlan]" = weakref.WeakKeyDictionary()


def offload_plan(rt: Runtime, offload: str = "auto") -> OffloadPlan:
    """The runtime's ``OffloadPlan``, decided once from ``rt.describe()`` and cached per
    runtime (``offload="always"``: everything in the thread pool). A runtime that cannot
    describe itself (closed, or a stand-in without ``describe``) gets the safe plan:
    everything in the thread pool."""
    if _check_offload(offload) == "always":
        return _ALWAYS
    plan = _PLANS.get(rt)
    if plan is None:
        try:
            plan = OffloadPlan.from_description(rt.describe())
        except Exception:  # noqa: BLE001 - whatever it is, the safe plan
            return _ALWAYS
        _PLANS[rt] = plan
    return plan


_ALWAYS = OffloadPlan.always()


async def run_native(rt: Runtime, operation: str, fn: Callable[..., _T], *args: Any,
                     offload: str = "auto", **kwargs: Any) -> _T:
    """``fn(*args, **kwargs)`` inline when ``offload_plan(rt, offload)`` says ``operation``
    cannot wait, else in the thread pool. For your own ``async def`` endpoints:
    ``d = await run_native(rt, "rate_limits", rt.rate_limit_take, key, "auth")``."""
    if operation not in OPERATIONS:
        raise ValueError(f"operation must be one of {OPERATIONS}")
    if offload_plan(rt, offload).offloads(operation):
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
    return fn(*args, **kwargs)


# ---- bearer tokens -------------------------------------------------------------------------

def _quote(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _bearer_challenge(realm: str | None, error: str | None = None, description: str | None = None,
                      scope: str | None = None) -> str:
    params = []
    if realm:
        params.append(f"realm={_quote(realm)}")
    if error:
        params.append(f"error={_quote(error)}")
    if description:
        params.append(f"error_description={_quote(description)}")
    if scope:
        params.append(f"scope={_quote(scope)}")
    return "Bearer" + (" " + ", ".join(params) if params else "")


def _bearer_credentials(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None when absent or another scheme;
    "" for a Bearer header without a token."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip()


class BearerAuth(SecurityBase):
    """Verifies ``Authorization: Bearer <JWT>`` through ``rt.verify_token``; returns the
    ``TokenClaims`` (also kept on ``request.state.bitsec_claims`` for the other
    dependencies and the middlewares).

    - no token (no header, or another scheme): 401 ``WWW-Authenticate: Bearer`` without an
      error code (RFC 6750 section 3.1), detail "Not authenticated"; with ``auto_error=False``
      the dependency returns None instead (optional authentication);
    - ``Bearer`` with an empty token: 400 ``error="invalid_request"``;
    - a refused token: 401 ``error="invalid_token"``, detail "Token has expired" for an
      expired token and "Invalid token" for every other reason (the reason name goes to the
      audit trail, never to the client). With ``auto_error=False`` a refused token is still
      a 401: optional means "may be absent", not "may be forged";
    - the token store unreachable (revocation in Redis): 503 with ``Retry-After``.

    The verify runs inline unless the runtime's tokens may wait (revocation in Redis, a slow
    algorithm: ``offload_plan``); ``offload="always"``: always in the thread pool.
    ``verify(request)`` is the same work as a plain sync method.
    """

    def __init__(self, *, auto_error: bool = True, realm: str | None = None, scheme_name: str | None = None,
                 description: str | None = None, attr: str = STATE_ATTR, offload: str = "auto") -> None:
        self.model = HTTPBearerModel(bearerFormat="JWT", description=description)
        self.scheme_name = scheme_name or "BearerAuth"
        self.auto_error = auto_error
        self.realm = realm
        self.attr = attr
        self.offload = _check_offload(offload)

    def _fail(self, request: Request, status: int, detail: str, failure: str, error: str | None,
              description: str | None = None) -> HTTPException:
        setattr(request.state, _AUTH_FAILURE, failure)
        return HTTPException(status_code=status, detail=detail,
                             headers={"WWW-Authenticate": _bearer_challenge(self.realm, error, description)})

    def verify(self, request: Request) -> TokenClaims | None:
        """The dependency's work, callable from other dependencies (sync: run it in a thread)."""
        cached = getattr(request.state, _CLAIMS, _NO_CLAIMS)
        if cached is not _NO_CLAIMS and cached is not None:
            return cached  # type: ignore[return-value]
        token = _bearer_credentials(request)
        if token is None:
            if not self.auto_error:
                return None
            raise self._fail(request, 401, "Not authenticated", "missing", None)
        if not token:
            raise self._fail(request, 400, "Invalid token", "malformed", "invalid_request",
                             "The Authorization header has no token")
        rt = get_runtime(request, self.attr)
        try:
            claims = rt.verify_token(token)
        except ExpiredTokenError:
            raise self._fail(request, 401, "Token has expired", "expired", "invalid_token",
                             "The access token expired") from None
        except TokenError as e:
            raise self._fail(request, 401, "Invalid token", e.reason, "invalid_token",
                             "The access token is invalid") from None
        except BackendUnavailableError:
            raise _unavailable() from None
        except BitsecError as e:  # e.g. a token the library refuses to read at all
            raise self._fail(request, 401, "Invalid token", type(e).__name__, "invalid_token",
                             "The access token is invalid") from None
        setattr(request.state, _CLAIMS, claims)
        return claims

    def _offloads(self, request: Request) -> bool:
        """Whether verifying this request's token may wait (no token, or claims already
        verified: nothing to wait for)."""
        if getattr(request.state, _CLAIMS, None) is not None or not _bearer_credentials(request):
            return False
        return offload_plan(get_runtime(request, self.attr), self.offload).offloads("tokens")

    async def __call__(self, request: Request) -> TokenClaims | None:
        if self._offloads(request):
            return await anyio.to_thread.run_sync(self.verify, request)
        return self.verify(request)


# ---- permissions ---------------------------------------------------------------------------

ContextFn = Callable[..., Mapping[str, Any] | None]


class RequirePermission(SecurityBase):
    """``Depends(RequirePermission("inspections", "read"))`` (or ``Security(...,
    scopes=[...])``): verifies the bearer token (as ``bearer``), then decides
    ``resource:action`` for its principal (``sub``, roles, scopes, tenant, department of the
    claims). Returns the claims.

    Context of the resource (owner_only, department and tenant conditions): ``owner_param``,
    ``tenant_param``, ``department_param`` name path parameters (``/users/{user_id}``:
    ``owner_param="user_id"``), and/or ``context`` is a callable ``(request, claims) ->
    {"owner_id", "tenant_id", "department"}`` (sync; with a ``context`` the whole dependency
    runs in the thread pool, so it may query a database); its values win over the path's.

    Where it runs: the permission check itself never waits (the policy is in memory), so
    without ``context`` the dependency runs inline unless the token verify may wait
    (``BearerAuth``); ``offload="always"`` (default: the bearer's) sends it to the thread
    pool. ``check(request, security_scopes)`` is the same work as a plain sync method.

    Scopes: the token's scopes are part of the principal (the policy's ``scope_missing``),
    and scopes required through ``Security(dep, scopes=[...])`` must all be in the token.
    A missing scope answers 403 with ``WWW-Authenticate: Bearer error="insufficient_scope"``
    (RFC 6750); any other denial 403 with detail ``Insufficient permissions: <resource>:<action>``.
    """

    def __init__(self, resource: str, action: str, *, bearer: BearerAuth | None = None,
                 owner_param: str | None = None, tenant_param: str | None = None,
                 department_param: str | None = None, context: ContextFn | None = None,
                 offload: str | None = None) -> None:
        self.resource = resource
        self.action = action
        self.permission = f"{resource}:{action}"
        self.bearer = bearer or BearerAuth(offload=offload or "auto")
        self.offload = _check_offload(offload or self.bearer.offload)
        self.model = self.bearer.model
        self.scheme_name = self.bearer.scheme_name
        self.owner_param = owner_param
        self.tenant_param = tenant_param
        self.department_param = department_param
        self.context = context

    def _context(self, request: Request, claims: TokenClaims) -> dict[str, Any] | None:
        ctx: dict[str, Any] = {}
        params = request.path_params
        for key, name in (("owner_id", self.owner_param), ("tenant_id", self.tenant_param),
                          ("department", self.department_param)):
            if name is not None and name in params:
                ctx[key] = str(params[name])
        if self.context is not None:
            extra = self.context(request, claims)
            if extra:
                ctx.update({k: (None if v is None else str(v)) for k, v in extra.items()})
        return ctx or None

    def _forbidden(self, request: Request, reason: str, scope: str | None = None) -> HTTPException:
        setattr(request.state, _DENIED, (self.resource, self.action, reason))
        headers = None
        if scope is not None:
            headers = {"WWW-Authenticate": _bearer_challenge(self.bearer.realm, "insufficient_scope",
                                                             "The access token lacks a required scope", scope)}
        return HTTPException(status_code=403, detail=f"Insufficient permissions: {self.permission}", headers=headers)

    async def __call__(self, request: Request, security_scopes: SecurityScopes) -> TokenClaims:
        if self.context is not None or self._offloads(request):
            return await anyio.to_thread.run_sync(self.check, request, security_scopes)
        return self.check(request, security_scopes)

    def _offloads(self, request: Request) -> bool:
        plan = offload_plan(get_runtime(request, self.bearer.attr), self.offload)
        if plan.offloads("permissions"):
            return True
        return getattr(request.state, _CLAIMS, None) is None and bool(_bearer_credentials(request)) \
            and plan.offloads("tokens")

    def check(self, request: Request, security_scopes: SecurityScopes) -> TokenClaims:
        """The dependency's work (sync)."""
        claims = self.bearer.verify(request)
        if claims is None:  # optional bearer and no token: no principal, no permission
            raise self.bearer._fail(request, 401, "Not authenticated", "missing", None)
        if security_scopes.scopes:
            have = set(claims.scopes)
            missing = [s for s in security_scopes.scopes if s not in have]
            if missing:
                raise self._forbidden(request, "scope_missing", " ".join(security_scopes.scopes))
        rt = get_runtime(request, self.bearer.attr)
        principal = _principal(request, claims)
        decision = rt.check_permission(principal, self.resource, self.action, self._context(request, claims))
        if not decision:
            raise self._forbidden(request, decision.reason,
                                  self.permission if decision.reason == "scope_missing" else None)
        return claims


def require_permission(resource: str, action: str, **options: Any) -> RequirePermission:
    """``RequirePermission(resource, action, **options)``: use with ``Depends``/``Security``."""
    return RequirePermission(resource, action, **options)


def _principal(request: Request, claims: TokenClaims) -> Principal:
    """One ``Principal`` per request (packed once, reused by every permission check)."""
    p = getattr(request.state, "bitsec_principal", None)
    if p is None or getattr(request.state, "bitsec_principal_of", None) is not claims:
        p = Principal.from_claims(claims)
        request.state.bitsec_principal = p
        request.state.bitsec_principal_of = claims
    return p


# ---- client address ------------------------------------------------------------------------

class ClientIP:
    """The client's address: the peer's, unless the peer is a trusted proxy; then
    ``X-Forwarded-For`` is read right to left and the first address that is not a trusted
    proxy is the client (so a client cannot forge its address by sending its own header).
    ``trusted_proxies``: addresses or networks (``"10.0.0.0/8"``); empty (the default):
    ``X-Forwarded-For`` is never trusted."""

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self.networks = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def _trusted(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in n for n in self.networks)

    def __call__(self, scope: Mapping[str, Any]) -> str:
        client = scope.get("client")
        peer = client[0] if client else ""
        if not self.networks or not self._trusted(peer):
            return peer
        forwarded: list[str] = []
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-for":
                forwarded.extend(v.strip() for v in value.decode("latin-1").split(","))
        for addr in reversed(forwarded):
            if not addr:
                continue
            if not self._trusted(addr):
                try:
                    return str(ipaddress.ip_address(addr))
                except ValueError:
                    return peer  # garbage from a trusted proxy's upstream: do not key on it
        return peer


def _client_ip(scope: Any, resolver: ClientIP) -> str:
    state = _request_state(scope)
    ip = state.get(_CLIENT_IP)
    if ip is None:
        ip = state[_CLIENT_IP] = resolver(scope)
    return ip


def _valid_ip(addr: str | None) -> str | None:
    if not addr:
        return None
    try:
        return str(ipaddress.ip_address(addr))
    except ValueError:
        return None


# ---- rate limits ---------------------------------------------------------------------------

def adr007_category(method: str, path: str) -> str:
    """ADR-007's categories by path: ``/auth/`` -> auth, POST under ``/artifacts/`` ->
    upload, ``/infer`` -> inference, everything else -> default."""
    segments = [s for s in path.split("/") if s]
    if "auth" in segments:
        return "auth"
    if method == "POST" and "artifacts" in segments:
        return "upload"
    if any(s == "infer" or s.startswith("infer") for s in segments):
        return "inference"
    return "default"


def _identity(rt: Runtime, scope: Any, resolver: ClientIP) -> str:
    """``user:<sub>`` for a request whose bearer token verifies (never an unverified
    claim), else ``ip:<client address>``."""
    state = _request_state(scope)
    claims = state.get(_CLAIMS)
    if claims is None:
        token = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, cred = value.decode("latin-1").strip().partition(" ")
                if scheme.lower() == "bearer" and cred.strip():
                    token = cred.strip()
                break
        if token is not None:
            try:
                claims = rt.verify_token(token)
                state[_CLAIMS] = claims
            except BitsecError:  # refused, or the revocation store is down: not a verified user
                claims = None
    if claims is not None and claims.subject:
        key = "user:" + claims.subject
    else:
        ip = _client_ip(scope, resolver)
        key = "ip:" + (_grouped_client(rt, ip) if ip else "unknown")
    if len(key) > 128 and len(key.encode("utf-8")) > _MAX_KEY_BYTES:
        key = "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return key


_MAX_KEY_BYTES: int = _abi.BITSEC_RATE_LIMIT_MAX_KEY_BYTES


def _grouped_client(rt: Runtime, ip: str) -> str:
    """The address as the login guard counts it (``rt.client_key``: IPv6 /64 and IPv4 /32 by
    default), so that a client rotating addresses inside its /64 shares one bucket. Cached
    per runtime (bounded): the hot path does a dict lookup, not a C call."""
    state = getattr(rt, "__dict__", None)
    if state is None:
        return ip
    cache = state.get("_client_keys")
    if cache is None:
        cache = state["_client_keys"] = {}
    k = cache.get(ip)
    if k is None:
        try:
            k = rt.client_key(ip)
        except (BitsecError, AttributeError):  # no rate_limits section; a stand-in runtime
            return ip
        if len(cache) >= 4096:
            cache.clear()
        cache[ip] = k
    return k  # type: ignore[no-any-return]


# ---- the login guard -----------------------------------------------------------------------

class LoginAttempt:
    """One login attempt reserved by ``LoginAttempts.begin`` (already counted as a failure).
    End it with ``succeeded()`` after a successful login, ``failed()`` (the exception to
    raise) after a wrong password or second factor, or ``cancel()`` when it was neither (the
    password was right and the second factor is still due)."""

    __slots__ = ("rt", "account", "client", "decision")

    def __init__(self, rt: Runtime, account: str, client: str, decision: LoginGuardDecision) -> None:
        self.rt = rt
        self.account = account
        self.client = client
        self.decision = decision

    def succeeded(self) -> None:
        """Refunds the attempt and clears the account's failures (the client's failures
        against other accounts stay)."""
        self.rt.login_guard_succeeded(self.account, self.client, self.decision)

    def cancel(self) -> None:
        """Refunds the attempt on both keys without clearing anything."""
        self.rt.login_guard_cancel(self.account, self.client, self.decision)

    def failed(self, detail: str = "Invalid credentials", realm: str = "Bearer") -> HTTPException:
        """The exception for a failed attempt (nothing to record: it is already counted):
        401 with ``WWW-Authenticate``, or, when this failure starts the client's block or the
        account's back-off, 429 "Too many failed login attempts" with ``Retry-After``."""
        wait = self.decision.failure_retry_after
        if wait > 0:
            return HTTPException(status_code=429, detail="Too many failed login attempts",
                                 headers={"Retry-After": str(wait)})
        return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": realm})


class LoginAttempts:
    """The login guard bound to one request (what ``Depends(LoginGuard())`` gives)."""

    __slots__ = ("rt", "client")

    def __init__(self, rt: Runtime, client: str) -> None:
        self.rt = rt
        self.client = client

    def begin(self, account: str) -> LoginAttempt:
        """Reserves the attempt BEFORE the password check; raises 429 "Too many failed login
        attempts" with ``Retry-After`` when the client or the account is refused."""
        d = self.rt.login_guard_begin(account, self.client)
        if not d.allowed:
            raise HTTPException(status_code=429, detail="Too many failed login attempts", headers=d.headers())
        return LoginAttempt(self.rt, account, self.client, d)


class LoginGuard:
    """A dependency for login endpoints: the library's login guard (``rate_limits.login_guard``:
    failures per client address group and per account, each attempt reserved before the
    password check)::

        guard = LoginGuard(trusted_proxies=["10.0.0.0/8"])

        @app.post("/login")
        def login(body: LoginIn, attempts: LoginAttempts = Depends(guard)):
            attempt = attempts.begin(body.username)   # 429 + Retry-After when refused
            if not password_ok(...):
                raise attempt.failed()                # 401 (or 429 when this failure blocks)
            attempt.succeeded()
            ...

    The client is the peer's address, or ``X-Forwarded-For`` behind ``trusted_proxies`` (as
    ``ClientIP``). Use a ``def`` endpoint: with Redis, the guard's calls wait on the network.
    """

    def __init__(self, *, trusted_proxies: Iterable[str] = (), attr: str = STATE_ATTR) -> None:
        self.client_ip = ClientIP(trusted_proxies)
        self.attr = attr

    def __call__(self, request: Request) -> LoginAttempts:
        rt = get_runtime(request, self.attr)
        return LoginAttempts(rt, _client_ip(request.scope, self.client_ip) or "unknown")


class _RateLimiting:
    """The decision shared by the dependency and the middleware."""

    def __init__(self, trusted_proxies: Iterable[str], on_backend_error: str, attr: str,
                 offload: str = "auto") -> None:
        if on_backend_error not in ("deny", "allow"):
            raise ValueError("on_backend_error must be 'deny' or 'allow'")
        self.client_ip = ClientIP(trusted_proxies)
        self.on_backend_error = on_backend_error
        self.attr = attr
        self.offload = _check_offload(offload)

    def _offloads(self, rt: Runtime, scope: Any) -> bool:
        """A take may wait when the store is remote, or when it must first verify the
        request's token and that verify may wait."""
        plan = offload_plan(rt, self.offload)
        if plan.offloads("rate_limits"):
            return True
        return plan.offloads("tokens") and _request_state(scope).get(_CLAIMS) is None

    async def take_async(self, rt: Runtime, scope: Any, category: str, cost: int) -> tuple[bool, dict[str, str]]:
        """``take`` inline or in the thread pool, as ``offload_plan`` says."""
        if self._offloads(rt, scope):
            return await anyio.to_thread.run_sync(self.take, rt, scope, category, cost)
        return self.take(rt, scope, category, cost)

    def take(self, rt: Runtime, scope: Any, category: str, cost: int) -> tuple[bool, dict[str, str]]:
        """(allowed, headers); allowed with no headers when the backend failed open."""
        key = _identity(rt, scope, self.client_ip)
        try:
            try:
                d = rt.rate_limit_take(key, category, cost)
            except NotFoundError:
                if category == "default":
                    raise
                # A category the configuration does not define: the default bucket limits it.
                d = rt.rate_limit_take(key, "default", cost)
        except BackendUnavailableError:
            log.warning("bitsec rate limit backend unavailable (category %s): %s", category, self.on_backend_error)
            if self.on_backend_error == "allow":
                return True, {}
            return False, {"Retry-After": "1"}
        return d.allowed, d.headers()


class RateLimit(_RateLimiting):
    """A rate-limit dependency: ``Depends(RateLimit("auth"))`` takes ``cost`` tokens from
    the caller's bucket in ``category`` (the caller: ``user:<sub>`` when a bearer token
    verifies, else ``ip:<client address>``). Allowed: ``X-RateLimit-Limit/Remaining/Reset``
    on the response; denied: 429 "Rate limit exceeded" with ``Retry-After`` and the same
    headers. A Redis outage is decided by the category's ``failure_policy`` (bitsec); should
    the library still report the backend unavailable, ``on_backend_error="deny"`` (default)
    answers 503 with ``Retry-After``, ``"allow"`` lets the request through. Inline with the
    local store, in the thread pool with Redis (``offload_plan``; ``offload="always"``)."""

    def __init__(self, category: str = "default", cost: int = 1, *, trusted_proxies: Iterable[str] = (),
                 on_backend_error: str = "deny", attr: str = STATE_ATTR, offload: str = "auto") -> None:
        super().__init__(trusted_proxies, on_backend_error, attr, offload)
        self.category = category
        self.cost = cost

    async def __call__(self, request: Request, response: Response) -> None:
        rt = get_runtime(request, self.attr)
        allowed, headers = await self.take_async(rt, request.scope, self.category, self.cost)
        if allowed:
            response.headers.update(headers)
            return
        if "X-RateLimit-Limit" not in headers:
            raise _unavailable(int(headers.get("Retry-After", "1")))
        raise HTTPException(status_code=429, detail="Rate limit exceeded", headers=headers)


class RateLimitMiddleware(_RateLimiting):
    """ASGI middleware: every HTTP request takes one token in the category
    ``categorize(method, path)`` gives (default ``adr007_category``); ``exempt`` paths
    (exact, or prefixes ending in ``*``) are not limited. Same headers, 429 and outage
    behaviour as ``RateLimit``. ``app.add_middleware(RateLimitMiddleware, trusted_proxies=[...])``."""

    def __init__(self, app: Any, *, categorize: Callable[[str, str], str | None] = adr007_category,
                 trusted_proxies: Iterable[str] = (), on_backend_error: str = "deny",
                 exempt: Sequence[str] = (), attr: str = STATE_ATTR, offload: str = "auto") -> None:
        super().__init__(trusted_proxies, on_backend_error, attr, offload)
        self.app = app
        self.categorize = categorize
        self.exact = {p for p in exempt if not p.endswith("*")}
        self.prefixes = tuple(p[:-1] for p in exempt if p.endswith("*"))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        rt = _runtime_of_scope(scope, self.attr)
        category = None if (path in self.exact or path.startswith(self.prefixes) or rt is None) \
            else self.categorize(scope["method"], path)
        if category is None or rt is None:
            await self.app(scope, receive, send)
            return
        allowed, headers = await self.take_async(rt, scope, category, 1)
        if not allowed:
            if "X-RateLimit-Limit" in headers:
                await _send_json(send, 429, {"detail": "Rate limit exceeded"}, headers)
            else:
                await _send_json(send, 503, {"detail": "Service temporarily unavailable"}, headers)
            return
        await self.app(scope, receive, _adding_headers(send, headers, replace=False))


async def _send_json(send: Any, status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def _adding_headers(send: Any, headers: Mapping[str, str], replace: bool) -> Any:
    """Wraps ``send`` to add ``headers`` to the response start (``replace=False``: a header
    the application set itself wins)."""
    if not headers:
        return send
    encoded = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def wrapped(message: Any) -> None:
        if message["type"] == "http.response.start":
            existing = list(message.get("headers", ()))
            names = {n.lower() for n, _ in existing}
            if replace:
                drop = {n for n, _ in encoded}
                existing = [(n, v) for n, v in existing if n.lower() not in drop]
                existing += encoded
            else:
                existing += [(n, v) for n, v in encoded if n not in names]
            message = dict(message)
            message["headers"] = existing
        await send(message)

    return wrapped


# ---- audit ---------------------------------------------------------------------------------

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_ACTIONS = {"POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}
#: The resource of an event whose path matches no route of the application.
UNMATCHED_RESOURCE = "(no route)"


def request_id(request: Request) -> str | None:
    """The request id ``AuditMiddleware`` (or ``SecurityHeadersMiddleware``) honoured or
    created (None without them)."""
    return _request_state(request.scope).get(_REQUEST_ID)


def _ensure_request_id(scope: Any) -> str:
    """The request's id, decided once per request by the outermost bitsec middleware: the
    client's ``X-Request-ID`` when it is a plain token (``[A-Za-z0-9._:-]{1,128}``), else a
    new UUID; kept in ``scope["state"]``."""
    state = _request_state(scope)
    rid = state.get(_REQUEST_ID)
    if rid:
        return rid  # type: ignore[no-any-return]
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1").strip()
            if _REQUEST_ID_RE.match(text):
                rid = text
            break
    rid = state[_REQUEST_ID] = rid or str(uuid.uuid4())
    return rid


def _route_of(scope: Any) -> tuple[Any, Mapping[str, Any]]:
    """The route that serves (or would serve) the request, and its parsed path parameters:
    ``scope["route"]``/``scope["path_params"]`` once the router ran, else the application's
    routes matched here (a request answered before routing: 413, 429, 401 of a middleware).
    (None, {}) when no route matches."""
    route = scope.get("route")
    if route is not None:
        return route, scope.get("path_params") or {}
    router = getattr(scope.get("app"), "router", None)
    partial: tuple[Any, Mapping[str, Any]] | None = None
    for r in getattr(router, "routes", ()):
        try:
            match, child = r.matches(scope)
        except Exception:  # noqa: BLE001 - a route that cannot judge this scope does not match it
            continue
        if match == Match.FULL:
            return r, child.get("path_params") or {}
        if match == Match.PARTIAL and partial is None:
            partial = (r, child.get("path_params") or {})
    return partial or (None, {})


def _route_template(route: Any) -> str | None:
    t = getattr(route, "path_format", None) or getattr(route, "path", None)
    return t if isinstance(t, str) and t else None


def _text(s: str) -> str:
    """A str that encodes to UTF-8 (lone surrogates replaced); bitsec cuts long text itself."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")


class AuditMiddleware:
    """ASGI middleware emitting, through ``rt.audit_emit``, for each HTTP request:

    - 401: ``authentication`` / ``unauthorized`` / failure, reason ``missing``, ``expired``,
      ``bad_signature``... (from ``BearerAuth``);
    - 403: ``authorization`` / ``permission_denied`` / denied, with the resource, action and
      the decision's reason when ``RequirePermission`` refused;
    - POST, PUT, PATCH, DELETE otherwise (``methods``): ``data_access`` with the action
      (create/update/delete), ``success`` below 400, else ``failure``; ``sensitive`` (a
      callable of the path) sets ``sensitive_data_accessed``;
    - any other request answered 500 (an unhandled exception): ``application`` /
      ``server_error`` / error.

    The resource is canonical: the matched route's template (``/api/v1/equipment/{eid}``),
    never the raw path (``(no route)`` when nothing matches); with one path parameter its
    value is the ``resource_id``. Every event carries the actor and tenant (verified claims
    only), the client IP (``trusted_proxies`` as for rate limits), the user agent, the token's
    ``session_id``, and ``details`` with ``request_id``, ``method``, the raw ``path``,
    ``path_params`` and ``status``. Values are passed as they are: bitsec cuts text over a
    member's limit by bytes (at a character boundary) and lists what it cut in the record's
    ``truncated``, so no request can make its event disappear. The request id is the
    client's ``X-Request-ID`` when it is a plain token (``[A-Za-z0-9._:-]{1,128}``), else a
    new UUID; it is echoed in the response's ``X-Request-ID``. An exception of the
    application is recorded as a 500 (and re-raised).

    The record is emitted when the response starts (its status is known then), before the
    client gets anything: with ``every_event`` durability a client never holds an answer whose
    record is not on disk, whichever worker process served it and even if that process is
    killed right after. It never fails a request. It runs inline
    when an emit cannot wait (durability ``none``/``batched`` and full policy ``drop``: it
    only enqueues), in the thread pool for ``every_event`` or ``block`` (``offload_plan``;
    ``offload="always"``). Never fails a request: without an ``audit`` section the middleware only sets request ids;
    a refused or dropped event is logged (``bitsec.fastapi`` logger), counted by bitsec and
    recorded in the trail (``audit``/``event_rejected``, ``audit``/``events_dropped``).
    """

    def __init__(self, app: Any, *, trusted_proxies: Iterable[str] = (),
                 methods: Iterable[str] = ("POST", "PUT", "PATCH", "DELETE"),
                 sensitive: Callable[[str], bool] | None = None, attr: str = STATE_ATTR,
                 offload: str = "auto") -> None:
        self.app = app
        self.offload = _check_offload(offload)
        self.client_ip = ClientIP(trusted_proxies)
        self.methods = frozenset(m.upper() for m in methods)
        self.sensitive = sensitive
        self.attr = attr
        self.disabled: set[int] = set()  # ids of runtimes without an audit section

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = _request_state(scope)
        rid = _ensure_request_id(scope)
        recorded = False

        async def record(status: int) -> None:
            nonlocal recorded
            recorded = True
            event = self._event(scope, state, status, rid)
            if event is not None:
                rt = _runtime_of_scope(scope, self.attr)
                if rt is not None and id(rt) not in self.disabled:
                    if offload_plan(rt, self.offload).offloads("audit"):
                        with anyio.CancelScope(shield=True):
                            await anyio.to_thread.run_sync(self._emit, rt, event)
                    else:
                        self._emit(rt, event)

        async def send_wrapper(message: Any) -> None:
            # The record is emitted before the response starts: a client never holds an
            # answer whose record was not handed to bitsec (with every_event: not durable).
            if message["type"] == "http.response.start" and not recorded:
                await record(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, _adding_headers(send_wrapper, {"X-Request-ID": rid}, replace=True))
        finally:
            if not recorded:
                await record(500)

    def _event(self, scope: Any, state: Mapping[str, Any], status: int, rid: str) -> dict[str, Any] | None:
        method = _text(str(scope["method"]))
        path = _text(scope.get("path", ""))
        route, params = _route_of(scope)
        resource = _route_template(route) or UNMATCHED_RESOURCE
        event: dict[str, Any]
        if status == 401:
            event = {"type": "authentication", "subtype": "unauthorized", "result": "failure",
                     "reason": str(state.get(_AUTH_FAILURE) or "unauthorized")}
        elif status == 403:
            denied = state.get(_DENIED)
            event = {"type": "authorization", "subtype": "permission_denied", "result": "denied"}
            if denied:
                event.update(resource=denied[0], action=denied[1], reason=denied[2])
            else:
                event.update(resource=resource, action=method.lower())
        elif method in self.methods:
            event = {"type": "data_access", "action": _ACTIONS.get(method, method.lower()), "resource": resource,
                     "result": "success" if status < 400 else "failure"}
            if self.sensitive is not None:
                event["sensitive_data_accessed"] = bool(self.sensitive(path))
        elif status == 500:
            event = {"type": "application", "subtype": "server_error", "result": "error", "resource": resource,
                     "action": method.lower()}
        else:
            return None
        path_params = {_text(str(k)): _text(str(v)) for k, v in params.items()}
        if len(path_params) == 1:
            event.setdefault("resource_id", next(iter(path_params.values())))
        claims = state.get(_CLAIMS)
        if claims is not None:
            if claims.subject:
                event["actor"] = claims.subject
            if claims.tenant_id:
                event["tenant"] = claims.tenant_id
            sid = claims.get("session_id") or claims.get("sid")
            if isinstance(sid, str) and sid:
                event["session_id"] = sid
        ip = _valid_ip(_client_ip(scope, self.client_ip))
        if ip:
            event["ip"] = ip
        for name, value in scope.get("headers", ()):
            if name == b"user-agent":
                event["user_agent"] = value.decode("latin-1")
                break
        details: dict[str, Any] = {"request_id": rid, "method": method, "path": path, "status": status}
        if path_params:
            details["path_params"] = path_params
        event["details"] = details
        return event

    def _emit(self, rt: Runtime, event: dict[str, Any]) -> None:
        try:
            rt.audit_emit(event)
        except NotConfiguredError:
            self.disabled.add(id(rt))
        except BitsecError as e:
            # bitsec recorded the refusal itself (audit/event_rejected) and counted it.
            log.warning("bitsec audit event refused: %s", e)


# ---- request limits ------------------------------------------------------------------------

#: ``RequestLimitsMiddleware``'s default largest request body: 1 MiB.
DEFAULT_MAX_BODY_BYTES = 1 << 20
#: ``RequestLimitsMiddleware``'s default time to receive a whole request body, in seconds.
DEFAULT_BODY_TIMEOUT = 30.0
_BODY_LIMIT_ATTR = "__bitsec_body_limit__"
_DEFAULT: Any = object()
_F = TypeVar("_F", bound=Callable[..., Any])


def body_limit(max_bytes: int | None, *, timeout: float | None = _DEFAULT) -> Callable[[_F], _F]:
    """Route marker for ``RequestLimitsMiddleware``: this endpoint accepts bodies up to
    ``max_bytes`` (None: no size limit) received within ``timeout`` seconds (None: no time
    limit; not given: the middleware's ``body_timeout``). Put it on the endpoint function,
    next to ``@app.post(...)``."""
    if max_bytes is not None and max_bytes < 0:
        raise ValueError("max_bytes must be >= 0 or None")

    def mark(fn: _F) -> _F:
        setattr(fn, _BODY_LIMIT_ATTR, (max_bytes, timeout))
        return fn

    return mark


class _BodyRefused(Exception):
    pass


class RequestLimitsMiddleware:
    """ASGI middleware bounding what a request may send before the application sees it.

    - Size: a body larger than the limit is answered 413 "Request body too large" before it
      is buffered: a ``Content-Length`` over the limit at once, without calling the
      application; a chunked body (or one longer than announced) as soon as the bytes read
      so far pass the limit. The limit is ``max_body_bytes`` (default 1 MiB), overridden per
      route by ``body_limit(n)`` on the endpoint, or by ``limits``: a dict of path or route
      template (``"/api/v1/files/{file_id}"``) or prefix ending in ``*`` (``"/upload/*"``)
      to a limit in bytes (None: no limit).
    - Time: a body not received within ``body_timeout`` seconds (default 30) of the request's
      start is answered 408 "Request body not received in time" (``body_limit(timeout=)``
      per route; None: no limit). Only requests whose body the application reads wait.

    Refusals carry ``Connection: close`` (the rest of the body is never read) and a JSON
    ``detail``; placed inside ``SecurityHeadersMiddleware`` and ``AuditMiddleware`` they get
    the security headers and the request id, and are recorded. What the application sends
    after a refusal is discarded."""

    def __init__(self, app: Any, *, max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES,
                 body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
                 limits: Mapping[str, int | None] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.exact: dict[str, int | None] = {}
        self.prefixes: list[tuple[str, int | None]] = []
        for k, v in (limits or {}).items():
            if k.endswith("*"):
                self.prefixes.append((k[:-1], v))
            else:
                self.exact[k] = v
        self.prefixes.sort(key=lambda kv: -len(kv[0]))  # the longest prefix wins
        # Per application: whether finding the request's route can change its limits (a
        # route with a marker, or a template among the keys), decided at its first request;
        # if not, requests are not matched against the routes here.
        self._route_matters: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()

    def _needs_route(self, scope: Any) -> bool:
        app = scope.get("app")
        if app is None:
            return True
        try:
            known = self._route_matters.get(app)
        except TypeError:  # not weakly referenceable: always match
            return True
        if known is None:
            routes = getattr(getattr(app, "router", None), "routes", None)
            known = routes is None or any("{" in k for k in self.exact) or any(
                hasattr(getattr(r, "endpoint", None), _BODY_LIMIT_ATTR) for r in routes)
            self._route_matters[app] = known
        return known

    def limits_for(self, scope: Any) -> tuple[int | None, float | None]:
        """(bytes, seconds) for this request: the route's marker, then ``limits`` by path,
        route template and prefix, then the defaults."""
        route, _ = _route_of(scope) if self._needs_route(scope) else (None, {})
        mark = getattr(getattr(route, "endpoint", None), _BODY_LIMIT_ATTR, None)
        if mark is not None:
            size, timeout = mark
            return size, self.body_timeout if timeout is _DEFAULT else timeout
        path = scope.get("path", "")
        template = _route_template(route)
        if path in self.exact:
            return self.exact[path], self.body_timeout
        if template is not None and template in self.exact:
            return self.exact[template], self.body_timeout
        for prefix, size in self.prefixes:
            if path.startswith(prefix):
                return size, self.body_timeout
        return self.max_body_bytes, self.body_timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, timeout = self.limits_for(scope)
        if limit is not None:
            for name, value in scope.get("headers", ()):
                if name == b"content-length":
                    try:
                        announced = int(value)
                    except ValueError:
                        announced = -1  # the server refuses it before us; the count still applies
                    if announced > limit:
                        await _send_json(send, 413, {"detail": "Request body too large"}, {"Connection": "close"})
                        return
                    break
        if limit is None and timeout is None:
            await self.app(scope, receive, send)
            return
        deadline = anyio.current_time() + timeout if timeout is not None else None
        received = 0
        started = False
        refused = False

        async def refuse(status: int, detail: str) -> dict[str, Any]:
            nonlocal refused
            if not refused and not started:
                await _send_json(send, status, {"detail": detail}, {"Connection": "close"})
            refused = True
            return {"type": "http.disconnect"}

        async def limited_receive() -> Any:
            nonlocal received
            if refused:
                return {"type": "http.disconnect"}
            message: Any = None
            if deadline is None:
                message = await receive()
            else:
                with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
                    message = await receive()
                if message is None:
                    return await refuse(408, "Request body not received in time")
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if limit is not None and received > limit:
                    return await refuse(413, "Request body too large")
            return message

        async def guarded_send(message: Any) -> None:
            nonlocal started
            if refused:
                return  # answered already: what the application sends now is discarded
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            # The application failed on the disconnect we reported; the request is answered.


# ---- security headers ----------------------------------------------------------------------

#: The ERP guide's headers, tightened for an API: a CSP that loads nothing from elsewhere,
#: ``X-XSS-Protection: 0`` (the guide's ``1; mode=block`` turns on a filter that browsers
#: removed and that could itself be abused; OWASP recommends 0).
DEFAULT_SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": "default-src 'self'; object-src 'none'; frame-ancestors 'none'; "
                               "base-uri 'self'; form-action 'self'",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-XSS-Protection": "0",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class SecurityHeadersMiddleware:
    """ASGI middleware adding ``DEFAULT_SECURITY_HEADERS`` and ``X-Request-ID`` to every
    HTTP response. ``headers`` overrides them by name (a value of None removes one); a header
    the application set on its response is kept (``override_app=True``: ours win).

    An exception of the application that no handler turned into a response is answered here,
    as a generic 500 ``{"detail": "Internal Server Error"}`` with the security headers and the
    request id (Starlette's own error page, outside every middleware, would carry neither),
    then re-raised for the server to log. Add it last (outermost) so that this covers every
    other middleware; the request id is the one ``AuditMiddleware`` records."""

    def __init__(self, app: Any, *, headers: Mapping[str, str | None] | None = None,
                 override_app: bool = False) -> None:
        self.app = app
        merged: dict[str, str | None] = {k.lower(): v for k, v in DEFAULT_SECURITY_HEADERS.items()}
        for k, v in (headers or {}).items():
            merged[k.lower()] = v
        self.headers = {k: v for k, v in merged.items() if v is not None}
        self.override_app = override_app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _ensure_request_id(scope)
        headers = {**self.headers, "x-request-id": rid}
        started = False

        async def tracking(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, _adding_headers(tracking, headers, replace=self.override_app))
        except Exception:
            if not started:
                await _send_json(tracking, 500, {"detail": "Internal Server Error"}, headers)
            raise


# ---- MFA -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class MFAEnrollment:
    """A new TOTP enrolment: store ``sealed`` (the secret encrypted for the user by bitsec);
    show ``uri`` / ``qr_png`` once. ``qr_data_uri`` is the PNG as a ``data:`` URI."""

    sealed: str
    uri: str
    qr_png: bytes | None

    @property
    def qr_data_uri(self) -> str | None:
        if self.qr_png is None:
            return None
        import base64
        return "data:image/png;base64," + base64.b64encode(self.qr_png).decode("ascii")


def mfa_enroll(rt: Runtime, user: str, account: str | None = None, *, qr: bool = True) -> MFAEnrollment:
    """``rt.totp_enroll(user, account)`` plus the QR code PNG (needs the ``qr`` extra;
    ``qr=False`` skips it). Sync: call it from a ``def`` endpoint."""
    e = rt.totp_enroll(user, account)
    return MFAEnrollment(e.sealed, e.uri, totp_qr_png(e.uri) if qr else None)


def verify_mfa_code(rt: Runtime, sealed: str, code: str, user: str) -> TOTPDecision:
    """Verifies a TOTP code against the user's sealed secret (replays and throttling in
    bitsec). Returns the accepted decision; raises ``HTTPException``: 401 "Invalid MFA code"
    (wrong or malformed code, or a sealed secret that does not open for this user), 401
    "MFA code already used" (replay), 429 "Too many MFA attempts" with ``Retry-After``
    (throttled), 503 when the state backend is unreachable. The 401s carry
    ``WWW-Authenticate: Bearer error="insufficient_user_authentication"`` (RFC 9470, the
    step-up authentication challenge)."""
    try:
        d = rt.totp_verify_sealed(sealed, code, user)
    except BackendUnavailableError:
        raise _unavailable() from None
    except BitsecError:
        raise _mfa_failed("Invalid MFA code") from None
    if d:
        return d
    if d.reason == "throttled":
        raise HTTPException(status_code=429, detail="Too many MFA attempts",
                            headers={"Retry-After": str(max(1, d.retry_after))})
    if d.reason == "replayed":
        raise _mfa_failed("MFA code already used")
    raise _mfa_failed("Invalid MFA code")


def _mfa_failed(detail: str, realm: str | None = None) -> HTTPException:
    """A 401 for a missing or refused second factor: RFC 9470's step-up challenge (every 401
    carries ``WWW-Authenticate``)."""
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": _bearer_challenge(
        realm, "insufficient_user_authentication", "A valid one-time code is required")})


class MFACode:
    """A step-up dependency: the authenticated user (``bearer``) must send a valid TOTP code
    in the ``header`` (default ``X-MFA-Code``); ``sealed_secret(request, claims)`` returns the
    user's sealed secret (or None when the user has not enrolled: 403 "MFA not enrolled").
    Returns the claims. A plain ``def`` dependency (FastAPI's thread pool): ``sealed_secret``
    is your code and may query a database."""

    def __init__(self, sealed_secret: Callable[[Request, TokenClaims], str | None], *,
                 bearer: BearerAuth | None = None, header: str = "X-MFA-Code") -> None:
        self.sealed_secret = sealed_secret
        self.bearer = bearer or BearerAuth()
        self.header = header

    def __call__(self, request: Request) -> TokenClaims:
        claims = self.bearer.verify(request)
        if claims is None or not claims.subject:
            raise self.bearer._fail(request, 401, "Not authenticated", "missing", None)
        sealed = self.sealed_secret(request, claims)
        if not sealed:
            raise HTTPException(status_code=403, detail="MFA not enrolled")
        code = request.headers.get(self.header)
        if not code:
            setattr(request.state, _AUTH_FAILURE, "mfa_required")
            raise _mfa_failed("MFA code required", self.bearer.realm)
        try:
            verify_mfa_code(get_runtime(request, self.bearer.attr), sealed, code, claims.subject)
        except HTTPException as e:
            if e.status_code == 401:
                setattr(request.state, _AUTH_FAILURE, "mfa_failed")
            raise
        return claims


from ._fastapi_metrics import PROMETHEUS_TEXT_CONTENT_TYPE, metrics_router  # noqa: E402

__all__ += ["metrics_router", "PROMETHEUS_TEXT_CONTENT_TYPE"]
