"""The service's CORS policy: a strict allow-list of origins from the configuration
(``service.cors``), enforced by Starlette's ``CORSMiddleware``.

- ``allow_origins``: exact origins (``https://erp.example.com``, ``http://localhost:5173``);
  no ``*``, no pattern, no path. Default: none (no cross-origin access at all).
- A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from a listed origin is
  answered 200 with the allowed methods and headers; from any other origin 400, without any
  ``Access-Control-Allow-*`` header.
- ``Access-Control-Allow-Credentials: true`` (cookies, ``Authorization``) is sent only to a
  listed origin, with that origin echoed (never ``*``); an unlisted origin's response has no
  CORS header, so the browser keeps it from the page.
"""
from __future__ import annotations

import re
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import PlainTextResponse, Response

ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
METHODS = ["GET", "POST", "PUT", "DELETE"]
HEADERS = ["Authorization", "Content-Type", "X-Request-ID", "X-CSRF-Token"]
EXPOSE = ["X-Request-ID", "Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"]


def cors_options(section: dict[str, Any] | None) -> dict[str, Any]:
    """``CORSMiddleware``'s keyword arguments for a ``service.cors`` section; raises
    ``ValueError`` for an origin that is not an exact ``scheme://host[:port]``."""
    section = dict(section or {})
    unknown = set(section) - {"allow_origins", "allow_credentials", "max_age_seconds"}
    if unknown:
        raise ValueError(f"service.cors: unknown member(s) {sorted(unknown)}")
    origins = section.get("allow_origins", [])
    if not isinstance(origins, list) or not all(isinstance(o, str) and ORIGIN.match(o) for o in origins):
        raise ValueError("service.cors.allow_origins: a list of exact origins (scheme://host[:port]), no '*'")
    max_age = section.get("max_age_seconds", 600)
    if type(max_age) is not int or not 0 <= max_age <= 86400:
        raise ValueError("service.cors.max_age_seconds: 0 to 86400")
    return {"allow_origins": [o.lower() for o in origins], "allow_credentials": bool(section.get("allow_credentials", True)),
            "allow_methods": METHODS, "allow_headers": HEADERS, "expose_headers": EXPOSE, "max_age": max_age}


class StrictCORSMiddleware(CORSMiddleware):
    """Starlette's middleware, but a refused preflight carries no ``Access-Control-Allow-*``
    header at all (Starlette's lists the allowed methods, headers and credentials to any origin)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # A simple request from an unlisted origin passes through untouched (Starlette would
        # still add Access-Control-Allow-Credentials to it).
        if scope["type"] == "http" and scope["method"] != "OPTIONS":
            origin = Headers(scope=scope).get("origin")
            if origin is not None and not self.is_allowed_origin(origin=origin):
                await self.app(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def preflight_response(self, request_headers: Headers) -> Response:
        if not self.is_allowed_origin(origin=request_headers["origin"]):
            return PlainTextResponse("Disallowed CORS origin", status_code=400, headers={"Vary": "Origin"})
        return super().preflight_response(request_headers)


def add_cors(app: Any, section: dict[str, Any] | None) -> None:
    app.add_middleware(StrictCORSMiddleware, **cors_options(section))
