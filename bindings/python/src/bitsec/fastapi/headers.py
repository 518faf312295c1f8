"""``SecurityHeadersMiddleware``: security headers and ``X-Request-ID`` on every response."""
from __future__ import annotations

from typing import Any, Mapping

from ._common import _adding_headers, _ensure_request_id, _send_json
from .config import DEFAULT_SECURITY_HEADERS, HTTPPolicy


class SecurityHeadersMiddleware:
    """ASGI middleware adding ``DEFAULT_SECURITY_HEADERS`` and ``X-Request-ID`` to every
    HTTP response. ``headers`` overrides them by name (a value of None removes one), ``csp``
    replaces the Content-Security-Policy (default ``DEFAULT_CSP``; "" removes it), and
    ``policy`` (an ``HTTPPolicy``, e.g. from configuration) gives both at once, applied before
    ``headers`` and ``csp``; a header the application set on its response is kept
    (``override_app=True``: ours win).

    An exception of the application that no handler turned into a response is answered here,
    as a generic 500 ``{"detail": "Internal Server Error"}`` with the security headers and the
    request id (Starlette's own error page, outside every middleware, would carry neither),
    then re-raised for the server to log. Add it last (outermost) so that this covers every
    other middleware; the request id is the one ``AuditMiddleware`` records."""

    def __init__(self, app: Any, *, headers: Mapping[str, str | None] | None = None,
                 override_app: bool = False, csp: str | None = None, policy: HTTPPolicy | None = None) -> None:
        self.app = app
        base = policy.headers() if policy is not None else DEFAULT_SECURITY_HEADERS
        merged: dict[str, str | None] = {k.lower(): v for k, v in base.items()}
        for k, v in (headers or {}).items():
            merged[k.lower()] = v
        if csp is not None:
            merged["content-security-policy"] = csp or None
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
