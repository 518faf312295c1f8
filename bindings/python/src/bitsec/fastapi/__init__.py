"""``bitsec.fastapi``: FastAPI integration of a ``bitsec.Runtime`` (docs/fastapi.md).

A package with one module per concern (``lifespan``, ``offload``, ``bearer``, ``permissions``,
``ratelimit``, ``login``, ``audit``, ``limits``, ``headers``, ``mfa``, ``config``, ``guard``,
``sessions``, ``csrf``, ``jwks``, ``metrics``); every public
name is importable from ``bitsec.fastapi`` itself, which is the supported import path.

In FastAPI's own idiom:

- ``bitsec_lifespan(config)`` opens the runtime when the app starts, keeps it on
  ``app.state.bitsec`` and closes it (after flushing the audit queue) when the app stops;
- ``BearerAuth`` verifies ``Authorization: Bearer`` tokens (``Depends``/``Security``), with
  RFC 6750 ``WWW-Authenticate`` answers, and an optional mode (``auto_error=False``);
- ``RequirePermission`` / ``require_permission(resource, action)`` decides through the
  runtime's policy, with owner/tenant/department context from path parameters or a
  callable and ``SecurityScopes`` support;
- ``RateLimit`` (a dependency) and ``RateLimitMiddleware`` (ASGI, categories by path from
  ``PathCategories``, configurable) add ``X-RateLimit-*`` headers and answer 429 with ``Retry-After``;
- ``AuditMiddleware`` emits data-access, authentication and authorization events with the
  request id, client IP and user agent;
- ``SecurityHeadersMiddleware`` adds CSP (``DEFAULT_CSP``, configurable through ``HTTPPolicy``), HSTS, X-Frame-Options, nosniff, Referrer-Policy and
  ``X-Request-ID`` to every response, and answers an unhandled exception with a generic 500
  that carries them;
- ``RequestLimitsMiddleware`` (ASGI) bounds request bodies (413 before buffering; default
  1 MiB, per route with ``body_limit`` or a dict) and the time to receive them (408);
- ``mfa_enroll`` / ``verify_mfa_code`` / ``MFACode`` / ``mfa_user`` are the MFA building blocks.

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

from ._common import STATE_ATTR, UNMATCHED_RESOURCE, ClientIP, get_runtime, log, request_id
from .audit import AuditMiddleware
from .bearer import BearerAuth
from .config import (DEFAULT_CSP, DEFAULT_PATH_CATEGORIES, DEFAULT_SECURITY_HEADERS, CategoryRule, HTTPPolicy,
                     PathCategories, adr007_category)
from .guard import (GUARD_SCOPE_KEY, PUBLIC, GuardMiddleware, GuardResult, Requirement, RouteTable, compile_routes,
                    guard, guard_claims, guard_result, public)
from .headers import SecurityHeadersMiddleware
from .lifespan import bitsec_lifespan
from .limits import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_BYTES, RequestLimitsMiddleware, body_limit
from .login import LoginAttempt, LoginAttempts, LoginGuard
from .mfa import MFACode, MFAEnrollment, mfa_enroll, mfa_user, verify_mfa_code
from .offload import OFFLOAD_MODES, OPERATIONS, SLOW_VERIFY_ALGS, OffloadPlan, offload_plan, run_native
from .permissions import ContextFn, RequirePermission, require_permission
from .ratelimit import RateLimit, RateLimitMiddleware, _RateLimiting
from .sessions import SESSION_COOKIE, SESSION_DETAILS, CookieSession, session_of
from .csrf import CSRF_COOKIE, CSRF_FORM_FIELD, CSRF_HEADER, CSRFProtect, set_csrf_cookie
from .jwks import JWKSBackgroundRefresher, bitsec_jwks_lifespan, jwks_lifespan
from .metrics import PROMETHEUS_TEXT_CONTENT_TYPE, metrics_router

__all__ = [
    "STATE_ATTR", "bitsec_lifespan", "get_runtime", "BearerAuth", "RequirePermission", "require_permission",
    "ClientIP", "RateLimit", "RateLimitMiddleware", "adr007_category", "AuditMiddleware",
    "SecurityHeadersMiddleware", "DEFAULT_SECURITY_HEADERS", "MFAEnrollment", "mfa_enroll", "mfa_user", "verify_mfa_code",
    "MFACode", "request_id", "OffloadPlan", "offload_plan", "run_native", "OFFLOAD_MODES",
    "RequestLimitsMiddleware", "body_limit", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_BODY_TIMEOUT",
    "LoginGuard", "LoginAttempts", "LoginAttempt",
    # configuration of the application policy
    "DEFAULT_CSP", "DEFAULT_PATH_CATEGORIES", "CategoryRule", "PathCategories", "HTTPPolicy",
    "OPERATIONS", "SLOW_VERIFY_ALGS", "UNMATCHED_RESOURCE", "ContextFn",
    # the guard: one ASGI middleware, a route table compiled at startup
    "GuardMiddleware", "GuardResult", "Requirement", "RouteTable", "compile_routes", "guard", "public",
    "guard_result", "guard_claims", "PUBLIC", "GUARD_SCOPE_KEY",
    # cookie sessions
    "CookieSession", "SESSION_COOKIE", "SESSION_DETAILS", "session_of",
    # CSRF and the JWKS refresher
    "CSRFProtect", "set_csrf_cookie", "CSRF_HEADER", "CSRF_FORM_FIELD", "CSRF_COOKIE",
    "JWKSBackgroundRefresher", "jwks_lifespan", "bitsec_jwks_lifespan",
    # the Prometheus metrics route
    "metrics_router", "PROMETHEUS_TEXT_CONTENT_TYPE",
]

# Kept importable for code written against the single-file module (not part of the API).
_ = (log, _RateLimiting)
