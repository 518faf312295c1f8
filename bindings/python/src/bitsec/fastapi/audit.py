"""``AuditMiddleware``: one audit record per request, emitted when the response starts."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import anyio

from ..errors import BitsecError, NotConfiguredError
from ..runtime import Runtime
from ._common import (_ACTIONS, _AUTH_FAILURE, _CLAIMS, _DENIED, STATE_ATTR, UNMATCHED_RESOURCE, ClientIP,
                      _adding_headers, _client_ip, _ensure_request_id, _request_state, _route_of, _route_template,
                      _runtime_of_scope, _text, _valid_ip, log)
from .offload import _check_offload, offload_plan

# ---- audit ---------------------------------------------------------------------------------

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

    def _event(self, scope: Any, state: Mapping[str, Any], status: int, rid: str,
               data_access: bool | None = None) -> dict[str, Any] | None:
        """The request's event (None: nothing to record). ``data_access`` (a route's own
        audit flag): True records a ``data_access`` event whatever the method (``read`` for
        GET/HEAD), False records none (failures are still recorded), None follows ``methods``."""
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
        elif data_access or (data_access is None and method in self.methods):
            action = _ACTIONS.get(method) or ("read" if method in ("GET", "HEAD") else method.lower())
            event = {"type": "data_access", "action": action, "resource": resource,
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
