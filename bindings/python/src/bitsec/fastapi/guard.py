"""``GuardMiddleware``: one pure ASGI middleware that secures every route from a table compiled
at startup.

Each route declares what it needs with ``@guard(resource, action, rate=..., audit=...)`` on
its endpoint (or the middleware's ``requirements`` mapping); at startup the middleware walks
the application's routes, checks every declaration against the runtime (an unknown
permission, rate-limit category or option is an error and the application does not start),
and keeps one ``Requirement`` per route. Per request it then does, before the handler and
in one place: the bearer token check (with the runtime's verified-token cache), the
rate-limit take, the permission decision, and puts a typed ``GuardResult`` on the scope for
``Depends(guard_result)`` / ``Depends(guard_claims)`` (and ``BearerAuth``/``RequirePermission``,
which reuse the verified claims instead of verifying again). The audit record is that of the
response's start, with its status: emitted then when the emit may wait, else written and
handed to bitsec at the end of the event loop's turn, in one batch with the turn's others.

Permission checks that need data from the database (the owner of a row, its department) stay
dependencies (``RequirePermission(..., context=...)``), which read the guard's claims.

Every request to a rate-limited route takes from a bucket, refused ones included: the
bucket of the user's key (``user:<sub>``, ``tenant:<n>:<tenant>:user:<sub>`` when the
credential names a tenant; a cookie route: the session's user and tenant) when the credential is
valid, even when the permission, a scope or the CSRF token then refuses; else the client
address's (no token, an invalid one, no valid session cookie; on a cookie route also a
request from another origin, and a safe request another site or a sibling origin started,
so that no other page can spend a user's budget). So no caller, the owner of a valid account
included, can send refused requests (each with its audit record) without limit: it meets 429
once over its limit, which comes before any other answer.

A route declared with ``cookies=True`` is a browser's: the guard authenticates it by the
session cookie (``CookieSession``) instead of a bearer token, checks CSRF on its unsafe
methods (the ``Origin``/``Sec-Fetch-Site`` check and the ``X-CSRF-Token`` header bound to the
session; the token after taking from the bucket of the session's user, a request from
another origin taking from its address's instead), then decides the permission for the
session's principal (``session_principal``).
"""
from __future__ import annotations

import inspect
import operator
from time import monotonic as _monotonic
from json.encoder import encode_basestring_ascii as _quote
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, TypeVar

import anyio
from fastapi import HTTPException, Request

from ..errors import BackendUnavailableError, BitsecError, InvalidArgumentError, TooLargeError
from .. import _abi
from .. import guardcheck as _guardcheck
from .._accel import SPEEDUPS as _SPEEDUPS
from .._native import check as _status_check
from ..guardcheck import GUARD_DECISIONS, GuardArgs, GuardCheck, GuardCheckMixin
from ..permissions import _packed_context
from ..permissions import Principal
from ..runtime import Runtime
from ..sessions import Session
from ..tokens import TokenClaims
from ._common import (_ACTIONS, _AUTH_FAILURE, _CLAIMS, _CLIENT_IP, _DENIED, _REQUEST_ID, _VERBS, STATE_ATTR,
                      UNMATCHED_RESOURCE, ClientIP, _client_ip, _ensure_request_id, _runtime_of_scope, _send_json,
                      _text, _valid_ip, log, RUNTIME_SCOPE_KEY, _catch_all, _walk_routes, _without_zone,
                      new_request_id, routed_path)
from .audit import _PARAMS_CUT, _PATH_CUT, _TEXT_CUT, _UNREAD, AuditMiddleware, _claims_members, _j, _session_members
from .bearer import _bearer_challenge
from .config import DEFAULT_PATH_CATEGORIES
from .csrf import _STATE as _CSRF_STATE
from .csrf import CSRF_COOKIE, CSRF_HEADER, SAFE_METHODS
from .offload import offload_plan
from .ratelimit import _address_key, _bounded_key, _RateLimiting, _user_key
from .sessions import _SESSION, _SESSION_COOKIE, _SESSION_ENDED, SESSION_DETAILS, CookieSession
from .sessions import _offloads as _sessions_offload

from starlette.requests import cookie_parser as _cookie_parser

from starlette._utils import get_route_path as _route_path  # the path without the root_path
from starlette.routing import Host, Match, Mount, WebSocketRoute

#: Where the guard's result lives in the ASGI scope (read it with ``guard_result(request)``).
GUARD_SCOPE_KEY = "bitsec.guard"
#: ``Requirement.auth`` values.
AUTH_MODES = ("required", "optional", "none")
_GUARD_ATTR = "__bitsec_guard__"
_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Requirement:
    """What a route needs, checked by ``GuardMiddleware`` before its handler runs.

    - ``resource``/``action``: the permission decided by the runtime's policy for the token's
      principal (both or neither); ``owner_param``/``tenant_param``/``department_param`` name
      path parameters giving the resource's context (as ``RequirePermission``);
    - ``scopes``: OAuth2 scopes the token must all carry (403 ``insufficient_scope``);
    - ``auth``: ``"required"`` (default: a valid bearer token), ``"optional"`` (a token, when
      sent, must be valid), ``"none"`` (the token is not read; the rate-limit key is the
      client address);
    - ``rate``: the rate-limit category (must be configured); None: the category of the
      method and the route's template (``categorize``, ``HTTPPolicy.categories``; never of a
      path parameter's value); ``""``: no rate limit; ``cost``: tokens taken;
    - ``audit``: True records a ``data_access`` event for every request (reads too), False
      only failures, None (default) the writes (POST, PUT, PATCH, DELETE) and failures;
    - ``cookies``: the route is a browser's, authenticated by the session cookie instead of
      a bearer token (``GuardMiddleware(session=...)``), with the CSRF check on its unsafe
      methods; needs ``auth="required"`` and no ``scopes`` (a session has none), and a
      permission needs ``GuardMiddleware(session_principal=...)``.
    """

    resource: str | None = None
    action: str | None = None
    rate: str | None = None
    cost: int = 1
    audit: bool | None = None
    auth: str = "required"
    scopes: tuple[str, ...] = ()
    owner_param: str | None = None
    tenant_param: str | None = None
    department_param: str | None = None
    cookies: bool = False

    def __post_init__(self) -> None:
        if (self.resource is None) != (self.action is None):
            raise ValueError("a requirement names both resource and action, or neither")
        if self.auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {AUTH_MODES}")
        if self.resource is not None and self.auth != "required":
            raise ValueError(f"{self.resource}:{self.action}: a permission needs auth='required'")
        if self.scopes and self.auth != "required":
            raise ValueError("scopes need auth='required'")
        if self.cookies and self.auth != "required":
            raise ValueError("a cookie route needs auth='required' (the session cookie is its authentication)")
        if self.cookies and self.scopes:
            raise ValueError("scopes need a bearer token: a cookie session carries none")
        if self.cost < 1:
            raise ValueError("cost must be >= 1")
        object.__setattr__(self, "scopes", tuple(self.scopes))

    @property
    def permission(self) -> str | None:
        return None if self.resource is None else f"{self.resource}:{self.action}"


#: The requirement of a route that declares none (``GuardMiddleware(default=...)``): no token
#: read, the path's rate-limit category, the default audit.
PUBLIC = Requirement(auth="none")


def guard(resource: str | None = None, action: str | None = None, **options: Any) -> Callable[[_F], _F]:
    """Declares an endpoint's ``Requirement`` (``@guard("inspections", "read", rate="default")``
    next to ``@app.get(...)``; ``@guard()``: a valid token, nothing else)."""
    req = Requirement(resource, action, **options)

    def mark(fn: _F) -> _F:
        setattr(fn, _GUARD_ATTR, req)
        return fn

    return mark


def public(fn: _F) -> _F:
    """Marks an endpoint as public (``PUBLIC``): useful with ``GuardMiddleware(strict=True)``."""
    setattr(fn, _GUARD_ATTR, PUBLIC)
    return fn


@dataclass(slots=True)
class GuardResult:
    """The guard's decision for one request (``guard_result(request)``).

    ``allowed``; ``status`` (200 when allowed, else the answer sent: 400, 401, 403, 429,
    503); ``reason`` (``ok``, ``public``, a token reason such as ``expired``, a permission
    reason such as ``no_grant``, ``rate_limited``, ``unavailable``); ``claims`` (the verified
    token's, or None); ``rate_headers`` (``X-RateLimit-*``, added to the response);
    ``requirement`` and ``route_template`` of the matched route; ``session`` (a cookie
    route's validated ``Session``, else None)."""

    allowed: bool
    status: int
    reason: str
    requirement: Requirement
    route_template: str | None = None
    claims: TokenClaims | None = None
    rate_headers: dict[str, str] = field(default_factory=dict)
    #: How the token was refused (``missing``, ``empty``, ``expired``, ``invalid``; on a cookie
    #: route ``session`` for a refused session, ``csrf`` for a refused CSRF check), else None.
    auth_error: str | None = None
    #: ``rate_headers`` as the response's raw header pairs, when the guard wrote them.
    _wire: list[tuple[bytes, bytes]] | None = field(default=None, repr=False, compare=False)
    #: A cookie route's validated session (None on bearer routes).
    session: Session | None = None

    @property
    def subject(self) -> str | None:
        if self.claims is not None:
            return self.claims.subject
        return self.session.user if self.session is not None else None

    @property
    def tenant(self) -> str | None:
        if self.claims is not None:
            return self.claims.tenant_id
        return self.session.tenant if self.session is not None else None

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.claims.roles) if self.claims is not None else ()

    @property
    def session_id(self) -> str | None:
        if self.claims is None:
            return self.session.session_id if self.session is not None else None
        sid = self.claims.get("session_id") or self.claims.get("sid")
        return sid if isinstance(sid, str) and sid else None


def guard_result(request: Request) -> GuardResult:
    """A dependency: the ``GuardResult`` of this request (RuntimeError without a
    ``GuardMiddleware``)."""
    r = request.scope.get(GUARD_SCOPE_KEY)
    if not isinstance(r, GuardResult):
        raise RuntimeError("no GuardMiddleware ran for this request: app.add_middleware(GuardMiddleware)")
    return r


def guard_claims(request: Request) -> TokenClaims:
    """A dependency: the verified claims of this request, as the guard checked them (never
    verified again); 401 when the route let the request through without a token."""
    claims = guard_result(request).claims
    if claims is None:
        raise HTTPException(status_code=401, detail="Not authenticated", headers={"WWW-Authenticate": "Bearer"})
    return claims


class _Entry:
    """A compiled route: its requirement and, per rate-limit category, the guard call's
    constant arguments encoded once."""

    __slots__ = ("route", "template", "requirement", "_args", "plan", "fast", "heads", "category_path",
                 "mounts_before")

    def __init__(self, route: Any, template: str | None, requirement: Requirement) -> None:
        self.route = route
        self.template = template
        self.requirement = requirement
        #: the path ``categorize`` reads for this route: its template, or None (the request's
        #: path) for a catch-all route (a ``{name:path}`` parameter) and the default entry
        self.category_path: str | None = None if route is None or _catch_all(route) else template
        #: the Mount and Host routes declared before this route that may serve some of its
        #: paths (Starlette serves the first match), each with whether its application has a
        #: guard of its own (compile_routes)
        self.mounts_before: tuple[tuple[Any, bool], ...] = ()
        self._args: dict[tuple[str | None, bool], GuardArgs] = {}
        #: (runtime, rate category, its GuardArgs, the advisory GuardArgs, whether the route's
        #: path parameters give a resource context): what ``decide`` would work out again on
        #: every request, once per runtime (only for a route whose category is declared, not
        #: derived from the path).
        self.plan: tuple[Any, str | None, GuardArgs, GuardArgs, bool] | None = None
        #: (runtime, GuardArgs, rate category) when a request with a bearer token needs no more
        #: than the native call (``GuardMiddleware._fast_route``); (runtime, None, None) when the
        #: category is worked out per request (``categorize`` of the method and the template)
        self.fast: tuple[Any, GuardArgs | None, str | None] | None = None
        #: method -> the constant start of its audit records (``GuardMiddleware._record_text``)
        self.heads: dict[str, tuple[str, str, str, str, str]] = {}

    def args(self, category: str | None, advisory: bool) -> GuardArgs:
        a = self._args.get((category, advisory))
        if a is None:
            req = self.requirement
            a = GuardArgs(permission=req.permission, scopes=req.scopes, category=category, cost=req.cost,
                          key_by_subject=True, token_advisory=advisory)
            if len(self._args) < 64:  # categories are the configured ones: a handful
                self._args[(category, advisory)] = a
        return a


class RouteTable:
    """The compiled routes: ``match(method, path)`` -> (entry or None, path parameters).
    Routes without parameters are found with one dict lookup; routes with parameters are
    tried in the application's order, but only those declared before the first static
    match (the order in which the application itself would match)."""

    def __init__(self, entries: list[tuple[int, str, Any, frozenset[str] | None, _Entry]]) -> None:
        self.static: dict[tuple[str, str], tuple[int, _Entry]] = {}
        self.static_any: dict[str, tuple[int, _Entry]] = {}
        self.dynamic: list[tuple[int, Any, frozenset[str] | None, _Entry]] = []
        self.entries = [e for *_, e in entries]
        # A route without parameters matches its path, and its path with one final newline
        # (Starlette's pattern ends in ``$``: ``routed_path``): both spellings are keys. The
        # others are tried with Starlette's own patterns, against the path as sent.
        self.static_paths = frozenset(p for _, path, *_ in entries if "{" not in path for p in (path, path + "\n"))
        for index, path, regex, methods, entry in entries:
            if "{" in path:
                self.dynamic.append((index, regex, methods, entry))
                continue
            for p in (path, path + "\n"):
                if methods is None:
                    self.static_any.setdefault(p, (index, entry))
                else:
                    for m in methods:
                        self.static.setdefault((m, p), (index, entry))

    def match(self, method: str, path: str) -> tuple[_Entry | None, dict[str, str]]:
        if path in self.static_paths:
            found = self.static.get((method, path))
            other = self.static_any.get(path)
            if other is not None and (found is None or other[0] < found[0]):
                found = other
            limit = found[0] if found is not None else 1 << 62
        else:  # (a path no route without parameters has: one set lookup)
            found, limit = None, 1 << 62
        for index, regex, methods, entry in self.dynamic:
            if index > limit:
                break
            if methods is not None and method not in methods:
                continue
            m = regex.match(path)
            if m is not None:
                return entry, m.groupdict()
        return (found[1], {}) if found is not None else (None, {})


def _routes_version(app: Any) -> Any:
    """What changes when the application's routes change: FastAPI's routes version (its
    included routers' too) with the route list's identity and the identities of its routes;
    the list's alone for a plain Starlette application."""
    router = getattr(app, "router", None)
    routes = getattr(router, "routes", None)
    # the list and the routes in it (a route replaced in place changes neither FastAPI's
    # version nor the list's length)
    listed = (id(routes), tuple(map(id, routes))) if isinstance(routes, list) else None
    version = getattr(router, "_get_routes_version", None)
    if callable(version):
        try:
            return (version(), listed)  # (a route appended to the list itself does not change it)
        except Exception:  # noqa: BLE001 - a FastAPI whose private method changed: the list alone
            pass
    return listed


def _may_serve(mount: Any, path: str) -> bool:
    """Whether a Mount (or Host) may serve a request for a path of the route ``path``: a Host
    any; a Mount those under its path, so a route whose paths cannot start with it (its text
    before the first parameter and the mount's path differ) is never shadowed by it."""
    if not isinstance(mount, Mount):
        return True
    fixed = path.split("{", 1)[0]
    if "{" in mount.path:  # (a parameter in the mount's path: its text before it)
        head = mount.path.split("{", 1)[0]
        return fixed.startswith(head) or head.startswith(fixed)
    prefix = mount.path.rstrip("/") + "/"
    return fixed.startswith(prefix) or prefix.startswith(fixed) or path.rstrip("/") == mount.path.rstrip("/")


def _is_public(req: Requirement) -> bool:
    """A requirement that asks nothing of the request but, at most, a rate limit."""
    return req.auth == "none" and req.resource is None and not req.scopes and not req.cookies


def _own_guard(app: Any) -> bool:
    """Whether an application has a ``GuardMiddleware`` of its own (``add_middleware``)."""
    return any(isinstance(getattr(m, "cls", None), type) and issubclass(m.cls, GuardMiddleware)
               for m in getattr(app, "user_middleware", None) or ())


def _check_unguarded(route: Any, declared: Mapping[str, Requirement], used: set[str], strict: bool,
                     http_templates: set[str | None], guarded: set[int]) -> None:
    """A route this guard does not decide (a WebSocket route; a ``Mount`` or ``Host`` and the
    routes under it): its declarations are refused at startup, since nothing would enforce
    them, and with ``strict`` so is a WebSocket route not declared ``@public``, or a mounted
    application with routes of its own and no ``GuardMiddleware``. ``http_templates``: the
    templates of the HTTP routes (a ``"/template"`` key is theirs); ``guarded``: the ids of
    the endpoints the table guards (served under a mount too, they would be open there)."""
    if isinstance(route, WebSocketRoute):  # (FastAPI's APIWebSocketRoute is one)
        template = getattr(route, "path_format", None) or route.path
        req = getattr(route.endpoint, _GUARD_ATTR, None)
        if template in declared and template not in http_templates:
            req = declared[template]
            used.add(template)
        if req is not None and not _is_public(req):
            raise ValueError(f"websocket route {template} declares a requirement, and GuardMiddleware guards HTTP "
                             "requests only: authenticate the connection in its endpoint, and declare it @public")
        if req is None and strict:
            raise ValueError(f"websocket route {template} declares no requirement (strict guard: GuardMiddleware "
                             "does not see WebSocket connections; authenticate in the endpoint and declare it "
                             "@public)")
        return
    sub = getattr(route, "app", None)
    where = f"{type(route).__name__} {getattr(route, 'path', None) or getattr(route, 'host', '')}"
    if sub is None or _own_guard(sub):
        return
    for r in _walk_routes(getattr(sub, "routes", None) or ()):
        if isinstance(r, (Mount, Host)):
            _check_unguarded(r, {}, set(), strict, set(), guarded)
            continue
        endpoint = getattr(r, "endpoint", None)
        req = getattr(endpoint, _GUARD_ATTR, None)
        if (req is not None and not _is_public(req)) or (endpoint is not None and id(endpoint) in guarded):
            raise ValueError(f"route {getattr(r, 'path', '?')} under {where} declares a requirement this "
                             "GuardMiddleware does not enforce (it decides the application's own routes): add "
                             "GuardMiddleware to the mounted application")
        if strict and not isinstance(r, WebSocketRoute) and getattr(r, "endpoint", None) is not None:
            raise ValueError(f"route {getattr(r, 'path', '?')} under {where} is not guarded (strict guard): add "
                             "GuardMiddleware to the mounted application")


def compile_routes(app: Any, rt: Runtime, *, default: Requirement = PUBLIC, strict: bool = False,
                   requirements: Mapping[str, Requirement] | None = None,
                   categorize: Callable[[str, str], str | None] = DEFAULT_PATH_CATEGORIES,
                   session_principal: Callable[[Session], Any] | None = None) -> RouteTable:
    """The route table of ``app`` for ``rt``, every declaration checked (``ValueError``
    naming the route): a permission whose resource or action the policy does not know, a
    rate category the configuration does not define, a token, rate limit, session or CSRF
    check the runtime is not configured for, a cookie route's permission without
    ``session_principal``; with ``strict``, an endpoint without a declaration.
    ``requirements`` maps ``"METHOD /template"`` (or ``"/template"``: every method) to a
    requirement and wins over the endpoint's ``@guard``."""
    sections = (rt.describe().get("sections") or {})
    categories = set(((sections.get("rate_limits") or {}).get("categories") or {}))
    has_tokens = bool(sections.get("tokens"))
    has_limits = bool(sections.get("rate_limits"))
    declared = dict(requirements or {})
    used: set[str] = set()
    entries: list[tuple[int, str, Any, frozenset[str] | None, _Entry]] = []
    unguarded: list[Any] = []
    checked: dict[Requirement, None] = {}
    mounts: list[tuple[Any, bool]] = []  # the Mount and Host routes so far
    for index, route in enumerate(_walk_routes(getattr(getattr(app, "router", None), "routes", ()))):
        if isinstance(route, (WebSocketRoute, Mount, Host)):
            # Never an HTTP route of this table: a WebSocketRoute matches no HTTP request (one
            # compiled here would take the path of the HTTP routes after it), a Mount or Host
            # serves another application's routes (checked below, once the table is known)
            unguarded.append(route)
            if not isinstance(route, WebSocketRoute):
                mounts.append((route, _own_guard(getattr(route, "app", None))))
            continue
        path = getattr(route, "path", None)
        regex = getattr(route, "path_regex", None)
        endpoint = getattr(route, "endpoint", None)
        if not isinstance(path, str) or regex is None or endpoint is None:
            continue  # another kind of route: not guarded
        methods = getattr(route, "methods", None)
        mset = frozenset(methods) if methods else None
        template = getattr(route, "path_format", None) or path
        # The requirement of each method: "METHOD /template" (a HEAD, a GET without its body,
        # that of "GET /template" unless it has its own), then "/template", then the
        # endpoint's @guard, then ``default``; the methods are grouped by requirement, one
        # entry each.
        base = declared.get(template)
        if base is not None:
            used.add(template)
        else:
            base = getattr(endpoint, _GUARD_ATTR, None)
        groups: dict[Requirement | None, list[str]] = {}
        for m in sorted(mset or ()):
            key = f"{m} {template}"
            if key not in declared and m == "HEAD":
                key = f"GET {template}"
            r = declared.get(key)
            if r is not None:
                used.add(key)
            groups.setdefault(r if r is not None else base, []).append(m)
        if not groups:
            groups[base] = []
        for req, ms in groups.items():
            gset = frozenset(ms) if mset else None
            where = f"{'/'.join(sorted(gset)) if gset else '*'} {template}"
            if req is None:
                if strict:
                    raise ValueError(f"route {where} declares no requirement (strict guard: use @guard or @public)")
                req = default
            if req not in checked:
                _check(req, rt, where, categories, has_tokens, has_limits)
                checked[req] = None
            if req.cookies:
                _check_cookies(req, where, gset, sections, session_principal is not None)
            if req.rate is None and categories and "default" not in categories:
                for m in sorted(gset or ("GET",)):
                    c = categorize(m, template)
                    if c and c not in categories:
                        raise ValueError(f"route {where}: its path's rate category {c!r} is not configured, and "
                                         "there is no 'default' bucket to limit it (configure one, or give the "
                                         "route rate=)")
            entry = _Entry(route, template, req)
            entry.mounts_before = tuple(m for m in mounts if _may_serve(m[0], path))
            entries.append((index, path, regex, gset, entry))
    http_templates = {e.template for *_, e in entries}
    guarded = {id(e.route.endpoint) for *_, e in entries if not _is_public(e.requirement)}
    for route in unguarded:
        _check_unguarded(route, declared, used, strict, http_templates, guarded)
    unknown = set(declared) - used
    if unknown:
        raise ValueError(f"requirements for routes the application does not have: {', '.join(sorted(unknown))}")
    return RouteTable(entries)


def _check(req: Requirement, rt: Runtime, where: str, categories: set[str], has_tokens: bool,
           has_limits: bool) -> None:
    if req.auth != "none" and not req.cookies and not has_tokens:
        raise ValueError(f"route {where}: needs tokens, and the runtime has no tokens section")
    if req.rate and not has_limits:
        raise ValueError(f"route {where}: rate category {req.rate!r}, and the runtime has no rate_limits section")
    if req.rate and req.rate not in categories:
        raise ValueError(f"route {where}: unknown rate category {req.rate!r} "
                         f"(configured: {', '.join(sorted(categories)) or 'none'})")
    if req.resource is not None:
        # (the batch call: a denial of check_permission is audited, and this is no request:
        # a startup wrote one authorization/permission_denied record per guarded route)
        try:
            (d,) = rt.check_permissions(Principal(), [(req.resource, req.action or "")])
        except InvalidArgumentError as e:
            raise ValueError(f"route {where}: {req.permission} is not a permission name ({e})") from None
        if d.reason in ("unknown_resource", "unknown_action"):
            raise ValueError(f"route {where}: the policy does not know the permission {req.permission} ({d.reason})")


def _check_cookies(req: Requirement, where: str, methods: frozenset[str] | None, sections: Mapping[str, Any],
                   resolves: bool) -> None:
    if not sections.get("sessions"):
        raise ValueError(f"route {where}: a cookie route needs sessions, and the runtime has no sessions section")
    if (methods is None or any(m not in SAFE_METHODS for m in methods)) and not sections.get("csrf"):
        raise ValueError(f"route {where}: a cookie route with unsafe methods needs the CSRF check, and the "
                         "runtime has no csrf section")
    if req.resource is not None and not resolves:
        raise ValueError(f"route {where}: the permission {req.permission} of a cookie route needs "
                         "GuardMiddleware(session_principal=...): a session names a user, not roles")


#: (status, detail, RFC 6750 error, error description) of a refused token, by kind.
_AUTH_ERRORS = {
    "missing": (401, "Not authenticated", None, None),
    "empty": (400, "Invalid token", "invalid_request", "The Authorization header has no token"),
    "expired": (401, "Token has expired", "invalid_token", "The access token expired"),
    "invalid": (401, "Invalid token", "invalid_token", "The access token is invalid"),
}


class GuardMiddleware(AuditMiddleware):
    """The pure ASGI guard (no ``BaseHTTPMiddleware``):
    ``app.add_middleware(GuardMiddleware, trusted_proxies=[...])``, declarations with
    ``@guard(...)`` on the endpoints (module docstring).

    - The table is compiled when the application starts (ASGI lifespan, after
      ``bitsec_lifespan`` opened the runtime); a wrong declaration makes the startup fail
      with the reason. Without a lifespan it is compiled at the first request.
    - Refusals answer as the dependencies do: 401 ``WWW-Authenticate: Bearer`` (detail "Not
      authenticated", "Invalid token", "Token has expired"), 400 for an empty bearer token,
      403 "Insufficient permissions: <resource>:<action>" (``insufficient_scope`` for a missing
      scope), 429 "Rate limit exceeded" with ``Retry-After``, 503 with ``Retry-After`` when a
      backend is unreachable. Allowed responses carry ``X-RateLimit-*`` and ``X-Request-ID``.
    - The rate-limit key is the user's (``user:<sub>``; with the token's tenant
      ``tenant:<n>:<tenant>:user:<sub>``) when the token verified, else ``ip:<client>``
      (``trusted_proxies`` as ``ClientIP``).
    - One audit record per request, of the response's start (status known): emitted then
      when the emit may wait, else written and handed to bitsec at the end of the event
      loop's turn, in a batch (``AuditMiddleware`` writes it at the start and defers only the
      emit), as ``AuditMiddleware`` (whose options it takes: ``methods``, ``sensitive``), with the route's
      ``audit`` flag. A runtime without an audit section records nothing.
    - Where it runs: the whole decision inline on the event loop when none of its calls can
      wait, else once in the thread pool (``offload_plan``, decided once per runtime).
    - Cookie routes (``@guard(..., cookies=True)``): ``session`` is the ``CookieSession`` whose
      cookie authenticates them (the one the login route uses; default: the cookie
      ``__Host-session`` with the guard's ``trusted_proxies``); ``session_principal`` maps a
      validated ``Session`` to the ``Principal`` its permissions are decided for (None: 401,
      the user is gone), and runs in the thread pool (it may query a database); CSRF on
      unsafe methods: the Origin check, then ``csrf_header`` (default ``X-CSRF-Token``) holding
      a synchronizer token of the session (``csrf_mode="synchronizer"``) or repeating the
      signed ``csrf_cookie`` (``"double_submit"``). A refused session: 401 with
      ``WWW-Authenticate: Cookie ...`` and the cookie cleared; a refused CSRF check: 403 with
      the reason as detail.

    ``default`` is the requirement of a route that declares none (``PUBLIC``); ``strict=True``
    refuses such a route at startup. ``categorize`` gives the rate category of a route whose
    requirement has ``rate=None`` (default ``DEFAULT_PATH_CATEGORIES``; ``HTTPPolicy.categories``).
    Routes added after startup are compiled when a request finds no route and the routes have
    changed, and otherwise within ``routes_recheck`` seconds (default 1; 0: every request);
    while such routes have declarations the table refuses, every request is answered 503.
    """

    def __init__(self, app: Any, *, trusted_proxies: Iterable[str] | ClientIP = (), default: Requirement = PUBLIC,
                 strict: bool = False, requirements: Mapping[str, Requirement] | None = None,
                 categorize: Callable[[str, str], str | None] = DEFAULT_PATH_CATEGORIES,
                 methods: Iterable[str] = ("POST", "PUT", "PATCH", "DELETE"),
                 sensitive: Callable[[str], bool] | None = None, realm: str | None = None,
                 on_backend_error: str = "deny", attr: str = STATE_ATTR, offload: str = "auto",
                 session: CookieSession | None = None,
                 session_principal: Callable[[Session], Principal | None] | None = None,
                 csrf_mode: str = "synchronizer", csrf_header: str = CSRF_HEADER,
                 csrf_cookie: str = CSRF_COOKIE, routes_recheck: float = 1.0) -> None:
        super().__init__(app, trusted_proxies=trusted_proxies, methods=methods, sensitive=sensitive, attr=attr,
                         offload=offload)
        if csrf_mode not in ("synchronizer", "double_submit"):
            raise ValueError("csrf_mode must be 'synchronizer' or 'double_submit'")
        if session_principal is not None and (inspect.iscoroutinefunction(session_principal)
                                              or inspect.iscoroutinefunction(getattr(session_principal, "__call__", None))):
            raise ValueError("session_principal must be a plain (sync) callable: the guard runs it in the thread pool")
        self.default = default
        self.strict = strict
        self.requirements = dict(requirements or {})
        self.categorize = categorize
        self.realm = realm
        self.limiter = _RateLimiting(trusted_proxies, on_backend_error, attr, offload)
        self.client_ip = self.limiter.client_ip
        self.session = session if session is not None else CookieSession(client_ip=self.client_ip, attr=attr)
        self.session_principal = session_principal
        self.csrf_mode = csrf_mode
        self.csrf_header = csrf_header.lower().encode("latin-1")
        self.csrf_cookie = csrf_cookie
        self.table: RouteTable | None = None
        self._table_of: Any = None
        self._routes_seen: Any = None  # the application's routes when the table was compiled
        self._routes_check_at = 0.0  # when to look at the routes again (_current_table)
        if not isinstance(routes_recheck, (int, float)) or isinstance(routes_recheck, bool) or not (
                routes_recheck >= 0):
            raise ValueError("routes_recheck must be a number of seconds, 0 or more")
        self.routes_recheck = float(routes_recheck)
        self._scope_key = RUNTIME_SCOPE_KEY + ":" + attr
        #: the Mount and Host routes in the router's order, each with whether its application
        #: has a GuardMiddleware of its own (a request the first matching one serves is then
        #: that guard's to decide and record); empty when none has (compile)
        self._mounts: tuple[tuple[Any, bool], ...] = ()
        self._broken: Any = None  # the routes version whose declarations compile refused
        self._no_runtime_logged = False
        self._categories: tuple[Runtime, frozenset[str]] | None = None
        self._default_entry = _Entry(None, None, default)
        self._plan: Any = None  # the runtime's OffloadPlan, read once per compiled table
        self._audit_inline = True  # the plan's: an emit never waits (records handed over per loop turn)
        #: (runtime, client address -> its rate-limit key, encoded)
        self._keys: tuple[Any, dict[str, bytes]] = (None, {})
        #: the audit record's ``ip`` member by client address (at most 4096), and
        #: ``user_agent`` member by raw header (at most 1024 of up to 256 bytes): parts of
        #: ``_record_text``; a flood of either only evicts
        self._ip_members: dict[str, str] = {}
        self._ua_members: dict[bytes, str] = {}
        #: ``,"path_params":{"<name>":`` by route parameter name (the routes' own: bounded)
        self._param_members: dict[Any, str] = {}
        #: whether ``_event`` is ``AuditMiddleware``'s own (a subclass may write its records
        #: otherwise): then ``_record_text`` writes the same text from the route's parts
        #: (decided here, from the class; the options it reads, such as ``methods``, are read
        #: when a route's parts are first written)
        self._own_event = type(self)._event is AuditMiddleware._event
        #: whether the compiled record (bitsec._speedups.record) may stand in for ``_record_text``:
        #: not when a subclass writes its records its own way
        self._own_record = (self._own_event and type(self)._record_text is GuardMiddleware._record_text
                            and type(self)._heads is GuardMiddleware._heads)
        #: whether ``decide`` and the steps ``__call__``'s fused path does in its place are
        #: this class's own (``_fast_route``)
        self._own_steps = all(getattr(type(self), n) is getattr(GuardMiddleware, n)
                              for n in ("decide", "_outcome", "_category", "_plan_of", "_address_key_bytes",
                                        "_refused_counted"))

    # ---- startup ---------------------------------------------------------------------------

    def compile(self, app: Any, rt: Runtime) -> RouteTable:
        table = compile_routes(app, rt, default=self.default, strict=self.strict, requirements=self.requirements,
                               categorize=self.categorize, session_principal=self.session_principal)
        self._plan = offload_plan(rt, self.offload)
        self._audit_inline = not (self._plan.reasons and self._plan.offloads("audit"))
        self.table, self._table_of = table, rt
        self._routes_seen = _routes_version(app)
        mounts = tuple((r, _own_guard(getattr(r, "app", None)))
                       for r in _walk_routes(getattr(getattr(app, "router", None), "routes", ()))
                       if isinstance(r, (Mount, Host)))
        # (the router's order: the first that matches serves; none when no mounted app has a guard)
        self._mounts = mounts if any(own for _, own in mounts) else ()
        for entry in table.entries:  # the plans of the routes, now (``_Entry.plan``, ``_Entry.fast``)
            req = entry.requirement
            if req.cookies or not self._own_steps:
                continue
            if req.rate is not None:
                self._plan_of(rt, None, entry, req)
            elif self._fast_route(rt, req):
                entry.fast = (rt, None, None)  # (the category: of the request's method and the template)
        return table

    async def _lifespan(self, scope: Any, receive: Any, send: Any) -> None:
        async def send_wrapper(message: Any) -> None:
            if message.get("type") == "lifespan.startup.complete":
                rt = _runtime_of_scope(scope, self.attr)
                if rt is not None:
                    # A wrong declaration raises here, inside the application's lifespan:
                    # the lifespan closes the runtime and reports "lifespan.startup.failed"
                    # with the reason, and the server does not start.
                    self.compile(scope.get("app"), rt)
            await send(message)

        await self.app(scope, receive, send_wrapper)

    # ---- per request -----------------------------------------------------------------------

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        try:  # (_runtime_of_scope, without its call: Starlette's State keeps its values in _state)
            values = scope["app"].state._state
        except (KeyError, AttributeError):
            values = None
        rt = values.get(self.attr) if type(values) is dict else _runtime_of_scope(scope, self.attr)
        if rt is None:
            rt = scope.get(self._scope_key)  # (a mounted application: an enclosing guard's, same attr)
            if rt is None:
                # Fail closed: without its runtime (bitsec_lifespan did not run: a server started
                # with the lifespan off, a lifespan that does not open it) nothing can be decided
                if not self._no_runtime_logged:
                    self._no_runtime_logged = True
                    log.error("bitsec guard: no runtime on app.state.%s (is bitsec_lifespan the application's "
                              "lifespan, and the server's lifespan on?); answering 503", self.attr)
                await _send_json(send, 503, {"detail": "Service temporarily unavailable"}, {"Retry-After": "1"})
                return
        scope[self._scope_key] = rt  # (for a guard of an application mounted under this one)
        table = self.table if self._table_of is rt else None
        if table is None or _monotonic() >= self._routes_check_at:
            table = self._current_table(scope.get("app"), rt, table)
            if table is None:  # routes changed after startup, and their declarations are wrong
                await _send_json(send, 503, {"detail": "Service temporarily unavailable"}, {"Retry-After": "1"})
                return
        inline_audit = self._audit_inline  # (this runtime's: read before anything awaits)
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        # The headers the guard reads, in one pass (the first of each).
        found = _scan(scope.get("headers", ())) if _scan is not None else None
        auth, ua, xrid = found if found is not None else _scan_headers(scope.get("headers", ()))
        rid = state.get(_REQUEST_ID)
        if not rid:  # (as _ensure_request_id, without its call when the client sent no id)
            rid = _ensure_request_id(scope, xrid) if xrid is not None else new_request_id()
            state[_REQUEST_ID] = rid
        entry, params = table.match(scope["method"], _route_path(scope) if scope.get("root_path") else scope["path"])
        if entry is None and _routes_version(scope.get("app")) != self._routes_seen:
            # routes added since the table was compiled (include_router after startup): looked
            # at on every request no route matched, and once a second on the others
            self._routes_check_at = 0.0
            table = self._current_table(scope.get("app"), rt, table)
            if table is None:
                await _send_json(send, 503, {"detail": "Service temporarily unavailable"}, {"Retry-After": "1"})
                return
            entry, params = table.match(scope["method"], _route_path(scope) if scope.get("root_path") else scope["path"])
        if entry is not None:
            if entry.mounts_before:
                # a Mount or Host declared before the route may serve the request (Starlette
                # serves the first match): then its own guard, or this guard's default, decides
                for mount, own in entry.mounts_before:
                    if mount.matches(scope)[0] == Match.FULL:
                        if own:
                            await self.app(scope, receive, send)
                            return
                        entry, params = self._default_entry, {}
                        break
        else:
            for mount, own in self._mounts:
                if mount.matches(scope)[0] == Match.FULL:
                    if own:
                        # the first Mount or Host that serves it has a guard of its own: that
                        # guard decides and records (deciding here too would take from a
                        # bucket twice)
                        await self.app(scope, receive, send)
                        return
                    break  # an application without one: decided here, by ``default``
            entry = self._default_entry
        req = entry.requirement
        if auth is not None and auth[:7] == b"Bearer ":  # (_bearer_value's result, in fewer steps)
            token = auth[7:].strip()
            if not token.isascii():
                token = token.decode("latin-1")
        else:
            token = _bearer_value(auth)
        try:
            fast = entry.fast
            if (fast is not None and fast[0] is rt and token and type(token) is bytes
                    and type(rt).guard_check is _GUARD_CHECK and "guard_check" not in rt.__dict__):
                # ``decide`` for the common route (``_fast_route``) and a bearer token, in fewer
                # steps: the rate-limit key from the cache by client address, one native call,
                # then ``_outcome``.
                args, category = fast[1], fast[2]
                if args is None:  # (a route whose rate category comes from categorize)
                    category = self._category(rt, scope, req, entry.category_path)
                    args = entry.args(category, False)
                kb = self._address_key_bytes(rt, scope) if category else b""
                try:
                    # (a token whose claims the runtime keeps: the call in compiled code, else
                    # _guard_call's; both the same call of the library)
                    memo = rt.__dict__.get("_tokens_memo") if _guard_known is not None else None
                    hp = rt._tokens_hp_cache
                    known = (_guard_known(memo, hp.value, args.route_at, token, kb)
                             if memo is not None and hp is not None and rt._h is not None else None)
                    if known is None:
                        fields, claims = rt._guard_call(token, args, kb)
                    elif type(known) is tuple:
                        fields, claims = known
                    else:
                        _status_check(known)  # (a nonzero status: raises its BitsecError)
                        raise RuntimeError(f"bitsec_guard_check_request returned {known}")
                except (TooLargeError, InvalidArgumentError) as e:  # (as decide: refused, and counted)
                    state[_AUTH_FAILURE] = type(e).__name__
                    result = self._refused_counted(rt, scope, category, GuardResult(
                        False, _AUTH_ERRORS["invalid"][0], type(e).__name__, req, entry.template, auth_error="invalid"))
                except BackendUnavailableError:
                    result = GuardResult(False, 503, "unavailable", req, entry.template)
                else:
                    if claims is not None:
                        state[_CLAIMS] = claims
                    result = (_allowed(GuardResult, req, entry.template, claims, fields)
                              if fields[0] == _ALLOWED and _allowed is not None  # (_outcome's, compiled)
                              else self._outcome(state, req, entry.template, fields, claims, category))
            elif self._cookie_offloads(rt, req) if req.cookies else (self._plan.reasons and
                                                                     self._offloads(rt, req, scope, token)):
                result = await anyio.to_thread.run_sync(self.decide, rt, scope, state, entry, req, params, token)
            else:
                result = self.decide(rt, scope, state, entry, req, params, token)
        except BitsecError as e:  # never a 500: the runtime could not decide (closed, a backend down)
            log.warning("bitsec guard could not decide: %s", e)
            result = GuardResult(False, 503, "unavailable", req, entry.template)
        scope[GUARD_SCOPE_KEY] = result
        # the event's route: the compiled one; a path no compiled route matches (a mount) is
        # looked up again after routing
        where = (entry.template, params) if entry.route is not None else None
        if not result.allowed:
            if entry.route is not None:  # the audit event names the route, as a routed request's would
                scope["route"], scope["path_params"] = entry.route, params
            await self._record(rt, scope, state, result.status, rid, req.audit, ua, where)
            await _send_json(send, result.status, {"detail": self._detail(result)},
                             {**self._refusal_headers(result), "X-Request-ID": rid})
            return
        wire = result._wire
        own_names = wire is not None  # the guard's own rate headers (a subclass may return others)
        if wire is None:
            wire = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in result.rate_headers.items()]
        extra = [*wire, (b"x-request-id", rid.encode("latin-1"))]
        if inline_audit and _Sender is not None and type(self.disabled) is set:
            # The wrapper below in compiled code (bitsec._speedups.Sender, the same steps): the
            # response's start gets ``extra`` and is recorded (``_audit_soon``, as below).
            if where is not None and self._own_record:
                # (the common record written in compiled code too, else by _record_text)
                sender = _Sender(send, extra, own_names, rt._audit_soon,
                                 (_compiled_record, self._record_text, self, entry, scope, state, 0, rid, ua, params),
                                 6, self.disabled, id(rt))
            elif where is not None and self._own_event:
                sender = _Sender(send, extra, own_names, rt._audit_soon,
                                 (self._record_text, entry, scope, state, 0, rid, ua, params), 4, self.disabled, id(rt))
            else:
                sender = _Sender(send, extra, own_names, rt._audit_soon,
                                 (self._event, scope, state, 0, rid, req.audit, ua, where), 3, self.disabled, id(rt))
            try:
                await self.app(scope, receive, sender)
            finally:
                if not sender.started:
                    await self._record(rt, scope, state, 500, rid, req.audit, ua, where)
            return
        # What the wrapper reads, in one list (whether the record is written, then the rest):
        # every variable a closure reads is a cell, made on each call of this method.
        box: list[Any] = [False, extra, own_names, inline_audit, rt, entry, scope, state, rid, ua, params, where]

        def send_wrapper(message: Any) -> Any:
            # (not a coroutine function: it returns the inner send's awaitable, one coroutine and
            # one frame less per message)
            if not box[0] and message["type"] == "http.response.start":
                box[0] = True
                _, extra, own_names, inline_audit, rt, entry, scope, state, rid, ua, params, where = box
                # our headers, unless the application set the same header itself
                existing = list(message.get("headers", ()))
                message = dict(message)
                if existing:
                    # (every name of ``extra`` is one of _GUARD_HEADERS: the names compared in C)
                    clash = not own_names or not _GUARD_HEADERS.isdisjoint(map(_lower, map(_name, existing)))
                    if clash:
                        names = {n.lower() for n, _ in existing}
                        existing += [(n, v) for n, v in extra if n not in names]
                    else:
                        existing += extra
                    message["headers"] = existing
                else:
                    message["headers"] = extra
                if inline_audit:
                    if id(rt) not in self.disabled:  # (_record_inline, without its call)
                        if where is not None and self._own_event:
                            rt._audit_soon(self._record_text, entry, scope, state, message["status"], rid, ua, params)
                        else:
                            rt._audit_soon(self._event, scope, state, message["status"], rid, entry.requirement.audit,
                                           ua, where)
                else:
                    return _record_then_send(self._record(rt, scope, state, message["status"], rid,
                                                          entry.requirement.audit, ua, where), send, message)
            return send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if not box[0]:
                await self._record(rt, scope, state, 500, rid, req.audit, ua, where)

    def _current_table(self, app: Any, rt: Runtime, table: RouteTable | None) -> RouteTable | None:
        """The table for ``rt``: compiled when there is none, and again when the application's
        routes changed since (looked at every ``routes_recheck`` seconds). None while routes
        added after startup have declarations ``compile`` refuses: the guard then answers 503
        (logged once per change) rather than decide by a table that does not match the
        routes (at startup, ``_lifespan``'s compile raises instead: the server does not start).
        (On a request no route matches, the routes are looked at every time.)"""
        now = _monotonic()
        if self._broken is not None and now < self._routes_check_at:
            return None
        self._routes_check_at = now + self.routes_recheck
        version = _routes_version(app)
        if table is not None and version == self._routes_seen:
            return table
        try:
            table = self.compile(app, rt)
        except ValueError as e:
            if self._broken != (version,):
                log.error("bitsec guard: the application's routes cannot be guarded (%s); answering 503 until "
                          "they are fixed", e)
            self._broken = (version,)
            self._table_of = None  # (every request comes back here: 503, a compile once a second)
            return None
        self._broken = None
        return table

    def _cookie_offloads(self, rt: Runtime, req: Requirement) -> bool:
        """Whether a cookie route decides in the thread pool: when the application's
        ``session_principal`` runs (it may query a database), when the sessions live in Redis,
        or when any other call of the runtime may wait."""
        return ((req.resource is not None and self.session_principal is not None) or _sessions_offload(rt)
                or bool(self._plan is not None and self._plan.reasons))

    def _audit_offloads(self, rt: Runtime) -> bool:
        plan = self._plan if self._table_of is rt and self._plan is not None else offload_plan(rt, self.offload)
        return bool(plan.reasons) and plan.offloads("audit")

    def _record_inline(self, rt: Runtime, scope: Any, state: Mapping[str, Any], status: int, rid: str,
                       flag: bool | None, ua: Any, where: tuple[str | None, Mapping[str, Any]] | None) -> None:
        """``_record`` when the emit cannot wait (the runtime's offload plan): no coroutine. The
        record (of the response's start: its status, the request as the guard and the
        dependencies left it) is written at the end of the event loop's turn and handed to
        bitsec in one call with the turn's other records (``Runtime._audit_soon``), whose
        writer thread validates them off the event loop."""
        if id(rt) not in self.disabled:
            rt._audit_soon(self._event, scope, state, status, rid, flag, ua, where)

    def _record_text(self, entry: _Entry, scope: Any, state: Mapping[str, Any], status: int, rid: str, ua: Any,
                     params: Mapping[str, Any]) -> str | None:
        """``_event(scope, state, status, rid, req.audit, ua, (entry.template, params))`` of a
        compiled route, the same text (tests/test_fastapi_guard.py compares them), from parts
        written once: the record's start per route and method, the ``ip`` member per client
        address, the ``user_agent`` member per header value. A refusal's record (401, 403)
        is ``_event``'s."""
        path = scope.get("path", "")
        if (status == 401 or status == 403 or status == 400 or len(path) > _PATH_CUT
                or (ua is not None and len(ua) > _TEXT_CUT)):
            # (a refusal, or a value the record cuts: _event's)
            return self._event(scope, state, status, rid, entry.requirement.audit, ua, (entry.template, params))
        method = scope["method"]
        heads = entry.heads.get(method)
        if heads is None:
            heads = self._heads(entry, method)
        if heads[0]:
            out = heads[3] if status < 400 else heads[4]
            if self.sensitive is not None:
                out += ',"sensitive_data_accessed":true' if self._sensitive(scope) else ',"sensitive_data_accessed":false'
        elif status == 500:
            out = heads[1]
        else:
            return None
        pp = ""
        if params:
            if len(params) == 1:
                for k, v in params.items():
                    if len(v if type(v) is str else str(v)) > _TEXT_CUT:  # (cut: _event's)
                        return self._event(scope, state, status, rid, entry.requirement.audit, ua,
                                           (entry.template, params))
                    # (_j, without its call: the C escaper of a str)
                    vj = _quote(v if type(v) is str and v.isascii() else _text(str(v)))
                    out += ',"resource_id":' + vj
                    pk = self._param_members.get(k)
                    if pk is None:
                        pk = ',"path_params":{' + _quote(_text(str(k))) + ":"
                        if len(self._param_members) < 256:  # route parameter names (a few)
                            self._param_members[k] = pk
                    pp = pk + vj + "}"
            elif len(params) > _PARAMS_CUT or any(len(str(v)) > _PATH_CUT for v in params.values()):
                return self._event(scope, state, status, rid, entry.requirement.audit, ua, (entry.template, params))
            else:
                pp = ',"path_params":{' + ",".join(_j(_text(str(k))) + ":" + _j(_text(str(v)))
                                                   for k, v in params.items()) + "}"
        claims = state.get(_CLAIMS)
        if claims is not None:
            try:  # (_claims_members, without its call when the claims object keeps them)
                cm = claims._audit_members
            except AttributeError:
                cm = None
            out += cm if cm is not None else _claims_members(claims)
        else:
            session = state.get(_SESSION) or state.get(_SESSION_ENDED)  # (ended by this request)
            if type(session) is Session:
                out += _session_members(session)
        addr = state.get(self.client_ip.state_key)  # (the guard's rate-limit key resolved it)
        if addr is None:
            addr = _client_ip(scope, self.client_ip)
        ipm = self._ip_members.get(addr)
        if ipm is None:
            ip = _valid_ip(addr)
            ipm = ',"ip":' + _j(ip) if ip else ""
            if len(self._ip_members) >= 4096:  # bounded: a flood of addresses only evicts
                self._ip_members.clear()
            self._ip_members[addr] = ipm
        if ua is not None:
            uam = self._ua_members.get(ua) if type(ua) is bytes else None
            if uam is None:
                uam = ',"user_agent":' + _j(ua.decode("latin-1"))
                if type(ua) is bytes and len(ua) <= 256:  # (a longer one is written each time, never kept)
                    if len(self._ua_members) >= 1024:  # bounded: a flood of user agents only evicts
                        self._ua_members.clear()
                    self._ua_members[ua] = uam
            out += ipm + uam
        else:
            out += ipm
        return (f'{out},"details":{{"request_id":{_quote(rid) if type(rid) is str else _j(rid)}{heads[2]}'
                f'{_quote(path if type(path) is str and path.isascii() else _text(path))}'
                + ',"status":%d' % status + pp + "}}")

    def _heads(self, entry: _Entry, method: Any) -> tuple[str, str, str, str, str]:
        """The constant parts of a route's audit records for one method (as ``_event`` writes
        them): the ``data_access`` record's start ("" when the route records none for this
        method), the ``server_error`` record's start (up to its ``action``), the details'
        ``method`` member, then the ``data_access`` start with its ``result`` for a success and
        for a failure. Kept per route for its own methods and a few others (bounded)."""
        m = _text(str(method))
        resource = _j(entry.template or UNMATCHED_RESOURCE)
        flag = entry.requirement.audit
        data = ""
        if flag or (flag is None and m in self.methods):
            action = _ACTIONS.get(m) or ("read" if m in ("GET", "HEAD") else _VERBS.get(m, "other"))
            data = '{"type":"data_access","action":' + _j(action) + ',"resource":' + resource
        heads = (data, '{"type":"application","subtype":"server_error","result":"error","resource":' + resource
                 + ',"action":' + _j(_VERBS.get(m, "other")), ',"method":' + _j(m) + ',"path":',
                 data and data + ',"result":"success"', data and data + ',"result":"failure"')
        if len(entry.heads) < 16:  # the route's methods, and a few a client sent (bounded)
            entry.heads[method] = heads
        return heads

    def _offloads(self, rt: Runtime, req: Requirement, scope: Any, token: Any = _UNREAD) -> bool:
        plan = self._plan if self._table_of is rt and self._plan is not None else offload_plan(rt, self.offload)
        if not plan.reasons:
            return False
        if token is _UNREAD:
            token = _bearer_token(scope)
        if plan.offloads("tokens") and (req.auth != "none" or (req.rate != "" and token)):
            return True  # (a public route's bearer token keys its rate limit: verified too)
        if req.resource is not None and plan.offloads("permissions"):
            return True
        return req.rate != "" and plan.offloads("rate_limits")

    async def _record(self, rt: Runtime, scope: Any, state: Mapping[str, Any], status: int, rid: str,
                      flag: bool | None, ua: Any = _UNREAD,
                      where: tuple[str | None, Mapping[str, Any]] | None = None) -> None:
        if not self._audit_offloads(rt):
            self._record_inline(rt, scope, state, status, rid, flag, ua, where)
            return
        if id(rt) in self.disabled:
            return
        event = self._event(scope, state, status, rid, flag, user_agent=ua, route=where)
        if event is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._emit, rt, event)

    def decide(self, rt: Runtime, scope: Any, state: dict[str, Any], entry: _Entry | None, req: Requirement,
               params: Mapping[str, str], token: Any = _UNREAD) -> GuardResult:
        """The decision (sync; the middleware runs it inline or in the thread pool): one
        native call (``Runtime.guard_check``) for the token, the rate-limit take, its scopes
        and the permission; every request of a limited route takes, refused ones included
        (a request without a token from its address's bucket). ``token``: the bearer token as
        ``_bearer_token`` reads it, when the caller already read it (else it is read here)."""
        if entry is None:
            entry = self._default_entry if req is self.default else _Entry(None, None, req)
        template = entry.template
        if req.cookies:
            return self._decide_cookies(rt, scope, state, req, template, params, entry.category_path)
        if token is _UNREAD:
            token = _bearer_token(scope)
        plan = entry.plan
        if plan is None or plan[0] is not rt or entry.requirement is not req:
            plan = self._plan_of(rt, scope, entry, req)
        category = plan[1]
        auth = req.auth
        advisory = False
        if auth != "none":
            if not token:
                if token is not None:
                    state[_AUTH_FAILURE] = "malformed"
                    return self._refused_counted(rt, scope, category, GuardResult(
                        False, _AUTH_ERRORS["empty"][0], "malformed", req, template, auth_error="empty"))
                if auth == "required":
                    state[_AUTH_FAILURE] = "missing"
                    return self._refused_counted(rt, scope, category, GuardResult(
                        False, _AUTH_ERRORS["missing"][0], "missing", req, template, auth_error="missing"))
            # (here the token is None, on an optional route, or not empty)
        else:
            # As the rate-limit dependencies: on a public route a bearer token that verifies
            # keys the bucket by its subject; it is read only for that.
            token = token or None
        kb = b""
        if category:
            if auth == "none":
                advisory = token is not None
            kb = self._address_key_bytes(rt, scope)
        else:
            category = None
            if auth == "none":
                token = None
        ctx = _resource_context(req, params) if plan[4] and params else None
        packed = b""
        if ctx:
            try:
                packed = _packed_context(ctx) or b""
            except (TooLargeError, InvalidArgumentError):
                # a path parameter the library refuses as context (a NUL, over its limit): the
                # client's doing, refused and recorded as on cookie routes, and counted
                state[_DENIED] = (req.resource, req.action, "invalid_argument")
                return self._refused_counted(rt, scope, category,
                                             GuardResult(False, 403, "invalid_argument", req, template))
        try:
            if type(rt).guard_check is _GUARD_CHECK and "guard_check" not in rt.__dict__:
                # the library's own method: its native call without building a GuardCheck
                fields, claims = rt._guard_call(token if type(token) is bytes else _token_bytes(token),
                                                plan[3] if advisory else plan[2], kb, packed)
            else:  # a runtime that wraps guard_check (counting, testing): through it
                key = kb.decode("utf-8") if category else None
                g = rt.guard_check(token, context=ctx, key=key, prepared=plan[3] if advisory else plan[2])
                fields, claims = g.fields, g.claims
        except BackendUnavailableError:
            return GuardResult(False, 503, "unavailable", req, template)
        except (TooLargeError, InvalidArgumentError) as e:
            if token is None:
                raise
            # a token the library refuses to read at all (over its argument limit): refused,
            # and counted against the address as any other refused token
            state[_AUTH_FAILURE] = type(e).__name__
            return self._refused_counted(rt, scope, category, GuardResult(
                False, _AUTH_ERRORS["invalid"][0], type(e).__name__, req, template, auth_error="invalid"))
        if claims is not None:
            state[_CLAIMS] = claims
        if advisory:
            claims = None  # a public route: the token only keyed the rate limit
        return self._outcome(state, req, template, fields, claims, category)

    def _outcome(self, state: dict[str, Any], req: Requirement, template: str | None, fields: tuple[int, ...],
                 claims: TokenClaims | None, category: str | None) -> GuardResult:
        """The ``GuardResult`` of the native guard call's ``fields`` (``claims``: the verified
        token's, None on a public route)."""
        d = fields[0]
        if d == _ALLOWED:
            reason = "ok" if req.auth != "none" else "public"
            if fields[5] == _NOT_CHECKED:
                return GuardResult(True, 200, reason, req, template, claims)
            limit, remaining, reset = str(fields[6]), str(fields[7]), str(fields[8])  # (_rate_headers)
            return GuardResult(True, 200, reason, req, template, claims,
                               {"X-RateLimit-Limit": limit, "X-RateLimit-Remaining": remaining,
                                "X-RateLimit-Reset": reset},
                               _wire=[(b"x-ratelimit-limit", limit.encode()),
                                      (b"x-ratelimit-remaining", remaining.encode()),
                                      (b"x-ratelimit-reset", reset.encode())])
        g = GuardCheck(fields, claims)
        if d == _TOKEN_REFUSED:
            failure = g.token_reason or "invalid"
            state[_AUTH_FAILURE] = failure
            kind = "expired" if failure == "expired" else "invalid"
            return GuardResult(False, _AUTH_ERRORS[kind][0], failure, req, template, auth_error=kind)
        if d == _SCOPE_MISSING or d == _PERMISSION_DENIED:
            reason = "scope_missing" if d == _SCOPE_MISSING else (g.permission_reason or "no_grant")
            state[_DENIED] = (req.resource, req.action, reason)
            # (taken from the bucket too: the remaining budget is on the answer)
            return GuardResult(False, 403, reason, req, template, claims,
                               _rate_headers(fields, False) if fields[5] != _NOT_CHECKED else {})
        if d == _RATE_LIMITED:
            return GuardResult(False, 429, "rate_limited", req, template, claims, g.rate_headers())
        # rate_unavailable: the store did not answer and its failure policy did not decide
        log.warning("bitsec rate limit backend unavailable (category %s): %s", category, self.limiter.on_backend_error)
        if self.limiter.on_backend_error == "allow":
            return GuardResult(True, 200, "ok" if req.auth != "none" else "public", req, template, claims)
        return GuardResult(False, 503, "unavailable", req, template, claims, {"Retry-After": "1"})

    def _decide_cookies(self, rt: Runtime, scope: Any, state: dict[str, Any], req: Requirement,
                        template: str | None, params: Mapping[str, str],
                        category_path: str | None = None) -> GuardResult:
        """A cookie route's decision (sync, as ``decide``): the session cookie validated (client
        binding checked, idle timer touched), on an unsafe method the Origin / Sec-Fetch-Site
        check, the take from the session user's bucket (with its tenant), on an unsafe method
        the token of the ``csrf_header`` bound to the session, the permission for ``session_principal(session)``.
        The take comes before the CSRF token and the permission, so refused requests count too;
        a request without a valid session or from another origin takes from its address's
        bucket (``_refused_counted``). One native call per step: 2 for a safe method, 4 for an
        unsafe one, one more with a permission."""
        origin = fetch_site = submitted = ua = None
        jar: dict[str, str] = {}
        for name, value in scope.get("headers", ()):
            if name == b"cookie":  # every Cookie header, the later winning: as request.cookies reads them
                jar.update(_cookie_parser(value.decode("latin-1")))
            elif name == b"origin":
                if origin is None:
                    origin = value.decode("latin-1")
            elif name == b"sec-fetch-site":
                if fetch_site is None:
                    fetch_site = value.decode("latin-1")
            elif name == b"user-agent":
                if ua is None:
                    ua = value.decode("latin-1")
            elif name == self.csrf_header and submitted is None:
                submitted = value.decode("latin-1")
        category = self._category(rt, scope, req, category_path)
        token = jar.get(self.session.cookie_name)
        if not token:
            state[_AUTH_FAILURE] = "missing"
            return self._refused_counted(rt, scope, category,
                                         GuardResult(False, 401, "missing", req, template, auth_error="session"))
        try:
            v = rt.session_validate(token, self.session.client_ip(scope), ua or "")
        except (TooLargeError, InvalidArgumentError):
            # a cookie or user agent over the library's limits: refused, the cookie kept (the
            # request, not the session, is what cannot be read)
            state[_AUTH_FAILURE] = "malformed"
            return self._refused_counted(rt, scope, category,
                                         GuardResult(False, 401, "malformed", req, template, auth_error="session"))
        session = v.session
        if not v or session is None:
            state[_AUTH_FAILURE] = v.reason
            return self._refused_counted(rt, scope, category,
                                         GuardResult(False, 401, v.reason, req, template, auth_error="session"))
        # CookieSession's dependency of the same cookie (and session_of) reuse it
        state[_SESSION], state[_SESSION_COOKIE] = session, self.session.cookie_name
        method = str(scope["method"]).upper()
        unsafe = method not in SAFE_METHODS
        if unsafe:
            # The Origin check first: a request from another origin (a sibling site whose
            # browser sends the SameSite cookie too) must not spend the user's budget; it is
            # counted against its address instead.
            d = rt.csrf_origin_check(method, origin, fetch_site)
            if not d:
                return self._refused_counted(rt, scope, category, self._csrf_refused(state, req, template, method, d,
                                                                                     session))
        # The take before the CSRF token and the permission, as on the bearer path: the
        # session's refused requests count against its user's bucket too. A safe request the
        # browser marks as started by another site or a sibling origin (Sec-Fetch-Site
        # cross-site / same-site: a link, an image, a frame; the SameSite=Lax cookie goes with
        # some of them) takes from a second bucket of the user's, ``xsite:<the user's key>``: another
        # page must not be able to spend the user's own budget, and a client that sends the
        # header itself gets at most the two budgets, from however many addresses (it was the
        # address's bucket, one more per address). (An unsafe one passed the Origin check.)
        headers: dict[str, str] = {}
        unavailable = False
        if category:
            if not unsafe and fetch_site is not None and fetch_site.lower() in ("cross-site", "same-site"):
                bucket = _bounded_key("xsite:" + _user_key(session.user, session.tenant))
            else:
                bucket = _user_key(session.user, session.tenant)
            try:
                r = rt.rate_limit_take(bucket, category, req.cost)
            except BackendUnavailableError:  # the store did not answer: as the bearer path
                log.warning("bitsec rate limit backend unavailable (category %s): %s", category,
                            self.limiter.on_backend_error)
                unavailable = True
            else:
                headers = r.headers()
                if not r:
                    # refused, a store failure decided by the category's policy included: 429,
                    # as the bearer path and the RateLimit dependency answer
                    return GuardResult(False, 429, "rate_limited", req, template, None, headers, session=session)
        if unsafe:
            if self.csrf_mode == "synchronizer":
                d = rt.csrf_token_verify(session.session_id, submitted)
            else:
                d = rt.csrf_cookie_verify(session.session_id, jar.get(self.csrf_cookie), submitted)
            if not d:
                refusal = self._csrf_refused(state, req, template, method, d, session)
                refusal.rate_headers.update(headers)
                return refusal
        if req.resource is not None:
            resolve = self.session_principal
            try:
                principal = resolve(session) if resolve is not None else None
            except Exception as e:  # the application's code (a database down): never a 500 without a record
                log.warning("bitsec guard: session_principal raised %s", type(e).__name__)
                return GuardResult(False, 503, "unavailable", req, template, None, {"Retry-After": "1"},
                                   session=session)
            if principal is None:  # the session's user is gone (or has no principal)
                state[_AUTH_FAILURE] = "unknown"
                return GuardResult(False, 401, "unknown", req, template, auth_error="session")
            ctx = _resource_context(req, params) if params else None
            try:
                p = rt.check_permission(principal, req.resource, req.action, context=ctx)
            except (TooLargeError, InvalidArgumentError):
                # a principal the library cannot read, or a path parameter it refuses as context
                # (the client's doing: refused and recorded, not logged per request)
                state[_DENIED] = (req.resource, req.action, "invalid_argument")
                return GuardResult(False, 403, "invalid_argument", req, template, None, headers, session=session)
            if not p:
                state[_DENIED] = (req.resource, req.action, p.reason)
                return GuardResult(False, 403, p.reason, req, template, None, headers, session=session)
        if unavailable and self.limiter.on_backend_error != "allow":
            return GuardResult(False, 503, "unavailable", req, template, None, {"Retry-After": "1"}, session=session)
        return GuardResult(True, 200, "ok", req, template, None, headers, session=session)

    @staticmethod
    def _csrf_refused(state: dict[str, Any], req: Requirement, template: str | None, method: str, d: Any,
                      session: Session) -> GuardResult:
        state[_CSRF_STATE] = d.reason
        state[_DENIED] = (req.resource or template or method, req.action or _VERBS.get(method, "other"), d.reason)
        return GuardResult(False, 403, d.reason, req, template, auth_error="csrf", session=session)

    def _plan_of(self, rt: Runtime, scope: Any, entry: _Entry,
                 req: Requirement) -> tuple[Any, str | None, GuardArgs, GuardArgs, bool]:
        """``_Entry.plan`` for ``rt``: kept on the entry when the route's category does not
        depend on the request's path (``rate`` declared)."""
        category = self._category(rt, scope, req, entry.category_path)
        plan = (rt, category, entry.args(category, False), entry.args(category, True),
                req.resource is not None and bool(req.owner_param or req.tenant_param or req.department_param))
        if req.rate is not None and entry.requirement is req:
            entry.plan = plan
            entry.fast = (rt, plan[2], category) if self._fast_route(rt, req) else None
        return plan

    def _fast_route(self, rt: Runtime, req: Requirement) -> bool:
        """Whether ``__call__`` decides the route's requests with a bearer token in one native
        call, without ``decide``: the route takes a token, needs no resource context and no
        cookies, nothing of the compiled runtime offloads, its ``guard_check`` is the
        library's own, and so are the middleware's ``decide`` and the steps the fused path
        does in its place (a subclass that overrides one of them has every request decided
        through it)."""
        return (self._own_steps and req.auth != "none" and not req.cookies
                and not (req.resource is not None and bool(req.owner_param or req.tenant_param or req.department_param))
                and self._table_of is rt and self._plan is not None and not self._plan.reasons
                and type(rt).guard_check is _GUARD_CHECK and type(rt)._guard_call is _GUARD_CALL)

    def _category(self, rt: Runtime, scope: Any, req: Requirement, template: str | None = None) -> str | None:
        """The route's rate category as the runtime defines it (``req.rate``, else
        ``categorize`` of the method and ``template``, the route's ``_Entry.category_path``: a
        path parameter's value never picks the bucket; the request's path, ``routed_path``,
        where no compiled route matched and for a catch-all route): a path category the
        configuration does not define is limited by the default bucket (startup refuses a
        route whose path category has neither); with no bucket configured at all (no
        rate_limits section) nothing is limited. None: not limited."""
        category = req.rate if req.rate is not None else self.categorize(
            scope["method"], template if template is not None else routed_path(scope))
        if not category:
            return None
        cats = self._categories
        names = cats[1] if cats is not None and cats[0] is rt else self._categories_of(rt)
        if category not in names:
            return "default" if names else None
        return category

    def _address_key_bytes(self, rt: Runtime, scope: Any) -> bytes:
        """``_address_key`` encoded, from a bounded cache per runtime keyed by the client's
        address (the key depends on nothing else): one dict lookup on the path of a request."""
        resolver = self.client_ip
        state = scope.get("state")
        if type(state) is dict and type(resolver) is ClientIP and resolver.direct:
            # (_client_ip without its calls: no trusted proxy, so the peer is the client)
            ip = state.get(_CLIENT_IP)
            if ip is None:
                client = scope.get("client")
                ip = client[0] if client else ""
                if "%" in ip:  # (an IPv6 zone: ClientIP's answer)
                    ip = _without_zone(ip)
                state[_CLIENT_IP] = ip
        else:
            ip = _client_ip(scope, resolver)
        cache = self._keys
        if cache[0] is rt:
            kb = cache[1].get(ip)
            if kb is not None:
                return kb
        else:
            cache = self._keys = (rt, {})
        kb = _address_key(rt, scope, self.client_ip).encode("utf-8")
        if len(cache[1]) >= 4096:  # bounded: a flood of addresses only evicts
            cache[1].clear()
        cache[1][ip] = kb
        return kb

    def _refused_counted(self, rt: Runtime, scope: Any, category: str | None, refusal: GuardResult) -> GuardResult:
        """A request refused before the library saw a credential (no token, an empty one, no
        or a refused session cookie) still takes from its route's bucket, keyed by the
        client's address, as the native guard takes for a refused token: a client guessing
        tokens or session cookies, or polling without one, meets 429 once over its limit. A
        store that does not answer changes nothing (the refusal stands)."""
        if not category:
            return refusal
        try:
            r = rt.rate_limit_take(_address_key(rt, scope, self.client_ip), category, refusal.requirement.cost)
        except BackendUnavailableError:
            return refusal
        if r:
            refusal.rate_headers.update(r.headers())
            return refusal
        headers = r.headers()
        if refusal.auth_error == "session":
            # the 429 still clears a refused session's cookie and says how to authenticate
            headers.update(self._refusal_headers(refusal))
        return GuardResult(False, 429, "rate_limited", refusal.requirement, refusal.route_template, None, headers)

    def _categories_of(self, rt: Runtime) -> frozenset[str]:
        """The rate-limit categories the runtime defines (read once per runtime)."""
        cached = self._categories
        if cached is not None and cached[0] is rt:
            return cached[1]
        sections = rt.describe().get("sections") or {}
        names = frozenset((sections.get("rate_limits") or {}).get("categories") or {})
        self._categories = (rt, names)
        return names

    def _detail(self, r: GuardResult) -> str:
        if r.auth_error == "csrf":
            return r.reason  # as CSRFProtect: the reason is the detail
        if r.auth_error == "session":
            return SESSION_DETAILS.get(r.reason, SESSION_DETAILS["unknown"])
        if r.status == 403:
            return f"Insufficient permissions: {r.requirement.permission}"
        if r.status == 429:
            return "Rate limit exceeded"
        if r.status == 503:
            return "Service temporarily unavailable"
        return _AUTH_ERRORS[r.auth_error or "invalid"][1]

    def _refusal_headers(self, r: GuardResult) -> dict[str, str]:
        if r.auth_error == "session":  # as CookieSession: a refused session's cookie is cleared
            h = {"WWW-Authenticate": f'Cookie realm="session", cookie-name="{self.session.cookie_name}"'}
            if r.reason not in ("missing", "malformed"):
                h["Set-Cookie"] = self.session._clear_header()
            return h
        if r.auth_error == "csrf":
            return dict(r.rate_headers)
        if r.status in (400, 401):
            _, _, error, description = _AUTH_ERRORS[r.auth_error or "invalid"]
            return {"WWW-Authenticate": _bearer_challenge(self.realm, error, description)}
        if r.status == 403 and r.reason == "scope_missing":
            scope = " ".join(r.requirement.scopes) if r.requirement.scopes else r.requirement.permission
            return {**r.rate_headers, "WWW-Authenticate": _bearer_challenge(
                self.realm, "insufficient_scope", "The access token lacks a required scope", scope)}
        if r.status == 503:
            return {"Retry-After": r.rate_headers.get("Retry-After", "1")}
        return dict(r.rate_headers)


def _scan_headers(headers: Any) -> tuple[Any, Any, Any]:
    """The headers the guard reads, in one pass: ``Authorization``, ``User-Agent`` and
    ``X-Request-ID``, the first (not None) value of each, names as ASGI sends them (lower-case
    bytes). (bitsec._speedups.scan does the same for a server's list of pairs.)"""
    auth = ua = xrid = None
    for name, value in headers:
        if name == b"authorization":
            if auth is None:
                auth = value
        elif name == b"user-agent":
            if ua is None:
                ua = value
        elif name == b"x-request-id" and xrid is None:
            xrid = value
    return auth, ua, xrid


async def _record_then_send(record: Any, send: Any, message: Any) -> None:
    """The guard's ``send`` for a response's start when the record's emit may wait (the
    runtime's offload plan): the record first, as before the response."""
    await record
    await send(message)


def _resource_context(req: Requirement, params: Mapping[str, str]) -> dict[str, Any] | None:
    """The resource's context from the route's path parameters (``owner_param``,
    ``tenant_param``, ``department_param``), or None when the route names none."""
    ctx: dict[str, Any] | None = None
    if req.owner_param or req.tenant_param or req.department_param:
        for k, name in (("owner_id", req.owner_param), ("tenant_id", req.tenant_param),
                        ("department", req.department_param)):
            if name is not None and name in params:
                ctx = ctx or {}
                ctx[k] = str(params[name])
    return ctx


def _bearer_token(scope: Mapping[str, Any]) -> str | bytes | None:
    """The token of ``Authorization: Bearer <token>`` read once from the raw headers; None
    when absent or another scheme; "" for a Bearer header without a token."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return _bearer_value(value)
    return None


def _bearer_value(value: bytes | None) -> str | bytes | None:
    """The token of one raw ``Authorization`` value (as ``_bearer_token``): bytes when it is
    ASCII (every well-formed token is), else the text as Latin-1 read it."""
    if value is None:
        return None
    scheme, _, cred = value.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    cred = cred.strip()
    return cred if cred.isascii() else cred.decode("latin-1")


def _token_bytes(token: str | bytes | None) -> bytes:
    if token is None:
        return b""
    return token if type(token) is bytes else token.encode("utf-8")  # type: ignore[union-attr]


_GUARD_CHECK = GuardCheckMixin.guard_check
_GUARD_CALL = GuardCheckMixin._guard_call


def _rate_headers(fields: tuple[int, ...], limited: bool) -> dict[str, str]:
    h = {"X-RateLimit-Limit": str(fields[6]), "X-RateLimit-Remaining": str(fields[7]),
         "X-RateLimit-Reset": str(fields[8])}
    if limited:
        h["Retry-After"] = str(fields[9])
    return h


_NOT_CHECKED = _abi.BITSEC_GUARD_NOT_CHECKED
#: The guard's send wrapper in compiled code (bitsec._speedups), or None: the Python one.
_Sender: Any = _SPEEDUPS.sender if _SPEEDUPS is not None else None
#: ``_guard_call`` for a token whose claims are kept, and ``_outcome`` of an allowed decision,
#: in compiled code (bitsec._speedups.guard_known, .allowed), or None.
_guard_known: Any = _SPEEDUPS.guard_known if _SPEEDUPS is not None and _guardcheck._compiled_request is not None else None
_allowed: Any = _SPEEDUPS.allowed if _SPEEDUPS is not None else None
#: The header pass of ``__call__`` in compiled code (bitsec._speedups.scan), or None.
_scan: Any = _SPEEDUPS.scan if _SPEEDUPS is not None else None
#: ``_record_text``'s common record in compiled code (bitsec._speedups.record), or None.
_compiled_record: Any = _SPEEDUPS.record if _SPEEDUPS is not None else None
if _SPEEDUPS is not None:
    _SPEEDUPS.record_setup(_CLAIMS, _PATH_CUT, _TEXT_CUT)
#: The response headers the guard adds (lower case, as ASGI sends them).
_name, _lower = operator.itemgetter(0), operator.methodcaller("lower")
_GUARD_HEADERS = frozenset({b"x-ratelimit-limit", b"x-ratelimit-remaining", b"x-ratelimit-reset", b"retry-after",
                            b"x-request-id"})
_ALLOWED, _TOKEN_REFUSED, _SCOPE_MISSING, _PERMISSION_DENIED, _RATE_LIMITED = (
    GUARD_DECISIONS.index(n) for n in ("allowed", "token_refused", "scope_missing", "permission_denied",
                                       "rate_limited"))
