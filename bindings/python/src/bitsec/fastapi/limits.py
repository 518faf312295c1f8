"""``RequestLimitsMiddleware`` and ``body_limit``: request body size and time limits."""
from __future__ import annotations

import weakref
from typing import Any, Callable, Mapping, TypeVar

import anyio

from ._common import _route_of, _route_template, _send_json, _walk_routes, routed_path

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
                hasattr(getattr(r, "endpoint", None), _BODY_LIMIT_ATTR) for r in _walk_routes(routes))
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
        path = routed_path(scope)  # (as the router matches it)
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
