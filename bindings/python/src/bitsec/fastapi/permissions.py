"""``RequirePermission`` / ``require_permission``: the runtime's policy as a dependency."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import anyio
from fastapi import HTTPException, Request
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase

from ..permissions import Principal
from ..tokens import TokenClaims
from ._common import _CLAIMS, _DENIED, get_runtime
from .bearer import BearerAuth, _bearer_challenge, _bearer_credentials
from .offload import _check_offload, offload_plan

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
