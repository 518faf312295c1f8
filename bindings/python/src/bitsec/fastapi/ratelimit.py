"""Rate limits: ``RateLimit`` (a dependency) and ``RateLimitMiddleware`` (ASGI, categories by
path from ``PathCategories``)."""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterable, Sequence

import anyio
from fastapi import HTTPException, Request, Response

from .. import _abi
from ..errors import BackendUnavailableError, BitsecError, NotFoundError
from ..runtime import Runtime
from ..sessions import Session
from ._common import (_CLAIMS, STATE_ATTR, ClientIP, _adding_headers, _client_ip, _request_state, _runtime_of_scope,
                      _send_json, _unavailable, get_runtime, log, routed_path, _category_path, _route_of)
from .config import DEFAULT_PATH_CATEGORIES
from .sessions import _SESSION
from .offload import _check_offload, offload_plan

# ---- rate limits ---------------------------------------------------------------------------


def _identity(rt: Runtime, scope: Any, resolver: ClientIP) -> str:
    """The user's key (``_user_key``: ``user:<sub>``, with a tenant
    ``tenant:<n>:<tenant>:user:<sub>``) for a request whose cookie session was validated
    before (by ``CookieSession``, or the guard's cookie route) or whose bearer token verifies
    (never an unverified claim), else ``ip:<client address>``.

    A session comes first, as on the guard's cookie routes (which never read
    ``Authorization``): a session user sending someone else's valid token must not spend that
    account's budget instead of their own. A request the browser marks as started by another
    site or a sibling origin (``Sec-Fetch-Site: cross-site`` or ``same-site``: a link, an
    image, a form of another page, which the session cookie may go with) takes from the
    user's second bucket, ``xsite:<the user's key>``, as the guard does: another page must
    not be able to spend the user's own budget."""
    state = _request_state(scope)
    session = state.get(_SESSION)
    if type(session) is Session and session.user:
        key = _user_key(session.user, session.tenant)
        for name, value in scope.get("headers", ()):
            if name == b"sec-fetch-site":
                if value.lower() in (b"cross-site", b"same-site"):
                    return _bounded_key("xsite:" + key)
                break
        return key
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
        return _user_key(claims.subject, claims.tenant_id)
    return _address_key(rt, scope, resolver)


def _address_key(rt: Runtime, scope: Any, resolver: ClientIP) -> str:
    """``ip:<client address>`` (grouped as the login guard counts it)."""
    ip = _client_ip(scope, resolver)
    return _bounded_key("ip:" + (_grouped_client(rt, ip) if ip else "unknown"))


def _user_key(user: str, tenant: Any = None) -> str:
    """A verified user's rate-limit key, as the library's guard derives it
    (``BITSEC_GUARD_FLAG_KEY_BY_SUBJECT``): ``user:<user>`` without a tenant,
    ``tenant:<n>:<tenant>:user:<user>`` with one (``n``: the tenant's length in UTF-8 bytes),
    so that namesakes in two tenants have two buckets: a user of one tenant cannot spend
    the budget of the same name in another. The two forms never meet (their prefixes
    differ; the length ends the tenant unambiguously). Bounded (``_bounded_key``)."""
    if tenant and type(tenant) is str:
        n = len(tenant) if tenant.isascii() else len(tenant.encode("utf-8", "surrogatepass"))
        return _bounded_key(f"tenant:{n}:{tenant}:user:{user}")
    return _bounded_key("user:" + user)


def _bounded_key(key: str) -> str:
    """The key, or ``sha256:<hex>`` of it when longer than a rate-limit key may be (the
    library's guard derives a user's key the same way)."""
    if len(key) > 128 and len(key.encode("utf-8")) > _MAX_KEY_BYTES:
        return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
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


class _RateLimiting:
    """The decision shared by the dependency and the middleware."""

    def __init__(self, trusted_proxies: Iterable[str] | ClientIP, on_backend_error: str, attr: str,
                 offload: str = "auto") -> None:
        if on_backend_error not in ("deny", "allow"):
            raise ValueError("on_backend_error must be 'deny' or 'allow'")
        self.client_ip = ClientIP.of(trusted_proxies)
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
    verifies, ``tenant:<n>:<tenant>:user:<sub>`` when it also names a tenant, else
    ``ip:<client address>``). Allowed: ``X-RateLimit-Limit/Remaining/Reset``
    on the response; denied: 429 "Rate limit exceeded" with ``Retry-After`` and the same
    headers. A Redis outage is decided by the category's ``failure_policy`` (bitsec); should
    the library still report the backend unavailable, ``on_backend_error="deny"`` (default)
    answers 503 with ``Retry-After``, ``"allow"`` lets the request through. Inline with the
    local store, in the thread pool with Redis (``offload_plan``; ``offload="always"``)."""

    def __init__(self, category: str = "default", cost: int = 1, *, trusted_proxies: Iterable[str] | ClientIP = (),
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
    ``categorize(method, path)`` gives (default ``DEFAULT_PATH_CATEGORIES``, or a
    ``PathCategories`` from configuration: ``HTTPPolicy.categories``); ``exempt`` paths
    (exact, or prefixes ending in ``*``) are not limited. Same headers, 429 and outage
    behaviour as ``RateLimit``. ``app.add_middleware(RateLimitMiddleware, trusted_proxies=[...])``."""

    def __init__(self, app: Any, *, categorize: Callable[[str, str], str | None] = DEFAULT_PATH_CATEGORIES,
                 trusted_proxies: Iterable[str] | ClientIP = (), on_backend_error: str = "deny",
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
        path = routed_path(scope)  # (as the router matches it)
        rt = _runtime_of_scope(scope, self.attr)
        # exempt by path; the category of the route's template (_category_path)
        category = None if (path in self.exact or path.startswith(self.prefixes) or rt is None) \
            else self.categorize(scope["method"], _category_path(scope, _route_of(scope)[0]))
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
