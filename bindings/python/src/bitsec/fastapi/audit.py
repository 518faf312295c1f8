"""``AuditMiddleware``: one audit record per request, written when the response starts."""
from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, Callable, Iterable, Mapping

import anyio

from ..errors import BitsecError, NotConfiguredError
from ..runtime import Runtime
from ._common import (_ACTIONS, _AUTH_FAILURE, _CLAIMS, _DENIED, _VERBS, STATE_ATTR, UNMATCHED_RESOURCE, ClientIP,
                      _adding_headers, _client_ip, _ensure_request_id, _request_state, _route_of, _route_template,
                      _runtime_of_scope, _text, _valid_ip, log, routed_path)
from .offload import _check_offload, offload_plan
from .sessions import _SESSION, _SESSION_ENDED
from ..sessions import Session

# ---- audit ---------------------------------------------------------------------------------

_UNREAD: Any = object()

#: What a request record keeps of the values a client chooses, in characters (bitsec's own
#: limits are in bytes; each escapes to up to 12 bytes of JSON text, so a record of the
#: longest allowed values stays far below ``BITSEC_AUDIT_MAX_EVENT_BYTES``, the size over which
#: bitsec refuses an event whole instead of cutting it):
#: - the User-Agent and ``resource_id``: 1,025 characters, over bitsec's limits (1,024 and 256
#:   bytes), so bitsec still cuts them and names them in the record's ``truncated``;
#: - the path and each path parameter's value: 2,048 characters, at most 16 parameters; a
#:   value cut here is named in the record's ``details.cut`` (bitsec cuts ``details`` only
#:   when it is over ``max_event_bytes``).
_TEXT_CUT = 1025
_PATH_CUT = 2048
_PARAMS_CUT = 16


def _j(v: Any) -> str:
    """``v`` as JSON (a str through the C escaper; ASCII out)."""
    return _quote(v) if type(v) is str else json.dumps(v)


def _claims_members(claims: Any) -> str:
    """``,"actor":..,"tenant":..,"session_id":..`` of verified claims, written once per
    claims object (the runtime keeps one per token) and kept on it."""
    cached: str | None = getattr(claims, "_audit_members", None)
    if cached is not None:
        return cached
    out: list[str] = []
    if claims.subject:
        out += (',"actor":', _j(_text(claims.subject) if type(claims.subject) is str else claims.subject))
    if claims.tenant_id:
        out += (',"tenant":', _j(_text(claims.tenant_id) if type(claims.tenant_id) is str else claims.tenant_id))
    sid = claims.get("session_id") or claims.get("sid")
    if isinstance(sid, str) and sid:
        out += (',"session_id":', _j(_text(sid)))
    text = "".join(out)
    try:
        claims._audit_members = text
    except AttributeError:  # a claims object without the slot: written again next time
        pass
    return text


def _session_members(session: Session) -> str:
    """``,"actor":..,"tenant":..,"session_id":..`` of a validated cookie session."""
    out = [',"actor":', _j(_text(session.user))]
    if session.tenant:
        out += (',"tenant":', _j(_text(session.tenant)))
    out += (',"session_id":', _j(session.session_id))
    return "".join(out)


class AuditMiddleware:
    """ASGI middleware emitting, through ``rt.audit_emit``, for each HTTP request:

    - 401: ``authentication`` / ``unauthorized`` / failure, reason ``missing``, ``expired``,
      ``bad_signature``... (from ``BearerAuth``);
    - 403: ``authorization`` / ``permission_denied`` / denied, with the resource, action and
      the decision's reason when ``RequirePermission`` refused;
    - POST, PUT, PATCH, DELETE otherwise (``methods``): ``data_access`` with the action
      (create/update/delete), ``success`` below 400, else ``failure``; ``sensitive`` (a
      callable of the path; one that raises counts as sensitive) sets ``sensitive_data_accessed``;
    - any other request answered 500 (an unhandled exception): ``application`` /
      ``server_error`` / error.

    The resource is canonical: the matched route's template (``/api/v1/equipment/{eid}``),
    never the raw path (``(no route)`` when nothing matches); with one path parameter its
    value is the ``resource_id``. Every event carries the actor and tenant (verified claims,
    or the validated cookie session), the client IP (``trusted_proxies`` as for rate
    limits), the user agent, the token's ``session_id`` (a cookie route's: the session's),
    and ``details`` with ``request_id``, ``method``, the raw ``path``,
    ``path_params`` and ``status``. Values are passed as they are: bitsec cuts text over a
    member's limit by bytes (at a character boundary) and lists what it cut in the record's
    ``truncated``, so no request can make its event disappear. The request id is the
    client's ``X-Request-ID`` when it is a plain token (``[A-Za-z0-9._:-]{1,128}``), else a
    new UUID; it is echoed in the response's ``X-Request-ID``. An exception of the
    application is recorded as a 500 (and re-raised).

    The record is written when the response starts (its status is known then). With
    ``every_event`` durability (or the ``block`` policy) it is emitted then, in the thread
    pool, before the client gets anything: a client never holds an answer whose record is
    not on disk, whichever worker process served it and even if that process is killed right
    after. When an emit cannot wait (durability ``none``/``batched`` and full policy
    ``drop``: it only enqueues, and the record is not durable when the answer leaves either
    way) it is handed to bitsec at the end of the event loop's turn, in one batch with the
    records of the other responses that started in that turn: back to back, the same code
    stays in the CPU's caches, which costs less than emitting each record on its own between
    the other requests' code under a loaded server. ``Runtime.audit_flush``, ``audit_stats``,
    ``metrics_text`` and ``close`` hand over what is waiting first. So in the trail a
    request's record follows the records the library or the handler emitted directly during
    the same turn (a background task's, the library's own ``rate_limit`` record). Which of
    the two paths is taken: ``offload_plan``, and ``offload="always"`` always takes the
    thread pool. Never fails a request: without an ``audit`` section the middleware only sets
    request ids; a refused or dropped event is counted by bitsec and recorded in the trail
    (``audit``/``event_rejected``, ``audit``/``events_dropped``); one emitted in a worker
    thread and refused is also logged (``bitsec.fastapi`` logger).
    """

    def __init__(self, app: Any, *, trusted_proxies: Iterable[str] | ClientIP = (),
                 methods: Iterable[str] = ("POST", "PUT", "PATCH", "DELETE"),
                 sensitive: Callable[[str], bool] | None = None, attr: str = STATE_ATTR,
                 offload: str = "auto") -> None:
        self.app = app
        self.offload = _check_offload(offload)
        self.client_ip = ClientIP.of(trusted_proxies)
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
                    else:  # at the end of the loop's turn, with the turn's other records
                        rt._audit_soon(_same, event)

        async def send_wrapper(message: Any) -> None:
            # The record is written before the response starts; with every_event (or block)
            # it is emitted then too, so a client never holds an answer whose record is not
            # durable; otherwise it is handed over at the end of the loop's turn.
            if message["type"] == "http.response.start" and not recorded:
                await record(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, _adding_headers(send_wrapper, {"X-Request-ID": rid}, replace=True))
        finally:
            if not recorded:
                await record(500)

    def _event(self, scope: Any, state: Mapping[str, Any], status: int, rid: str,
               data_access: bool | None = None, user_agent: Any = _UNREAD,
               route: tuple[str | None, Mapping[str, Any]] | None = None) -> str | None:
        """The request's event as JSON text (None: nothing to record). ``data_access`` (a
        route's own audit flag): True records a ``data_access`` event whatever the method
        (``read`` for GET/HEAD), False records none (failures are still recorded), None
        follows ``methods``. ``user_agent`` (the raw header, None when absent) and ``route``
        (the template and path parameters) when the caller already read them.

        The text is written here, member by member (every string through the ``json``
        module's C escaper), rather than as a dict passed to ``json.dumps``: the same JSON
        for about a third of the time, on the path of every request."""
        method = _text(str(scope["method"]))
        if route is None:
            r, params = _route_of(scope)
            template = _route_template(r)
        else:
            template, params = route
        resource = template or UNMATCHED_RESOURCE
        if status == 401 or (status == 400 and state.get(_AUTH_FAILURE)):  # (400: an empty bearer token)
            out = ['{"type":"authentication","subtype":"unauthorized","result":"failure","reason":',
                   _j(str(state.get(_AUTH_FAILURE) or "unauthorized"))]
        elif status == 403:
            denied = state.get(_DENIED)
            out = ['{"type":"authorization","subtype":"permission_denied","result":"denied"']
            if denied:
                out += (',"resource":', _j(denied[0]), ',"action":', _j(denied[1]), ',"reason":', _j(denied[2]))
            else:
                out += (',"resource":', _j(resource), ',"action":', _j(_VERBS.get(method, "other")))
        elif data_access or (data_access is None and method in self.methods):
            action = _ACTIONS.get(method) or ("read" if method in ("GET", "HEAD") else _VERBS.get(method, "other"))
            out = ['{"type":"data_access","action":', _j(action), ',"resource":', _j(resource),
                   ',"result":"success"' if status < 400 else ',"result":"failure"']
            if self.sensitive is not None:
                out.append(',"sensitive_data_accessed":true' if self._sensitive(scope)
                           else ',"sensitive_data_accessed":false')
        elif status == 500:
            out = ['{"type":"application","subtype":"server_error","result":"error","resource":', _j(resource),
                   ',"action":', _j(_VERBS.get(method, "other"))]
        else:
            return None
        pp = ""
        cut: list[str] = []
        if params:
            items = [(_text(str(k)), str(v)) for k, v in params.items()]
            if len(items) > _PARAMS_CUT or any(len(v) > _PATH_CUT for _, v in items):
                cut.append("path_params")
                items = [(k, v[:_PATH_CUT]) for k, v in items[:_PARAMS_CUT]]
            items = [(k, _text(v)) for k, v in items]
            if len(items) == 1:
                out += (',"resource_id":', _j(items[0][1][:_TEXT_CUT]))
            pp = ',"path_params":{' + ",".join(_j(k) + ":" + _j(v) for k, v in items) + "}"
        claims = state.get(_CLAIMS)
        if claims is not None:
            out.append(_claims_members(claims))
        else:
            session = state.get(_SESSION) or state.get(_SESSION_ENDED)  # (ended by this request)
            if type(session) is Session:  # a cookie session (the guard's or CookieSession's)
                out.append(_session_members(session))
        ip = _valid_ip(_client_ip(scope, self.client_ip))
        if ip:
            out += (',"ip":', _j(ip))
        if user_agent is _UNREAD:
            user_agent = None
            for name, value in scope.get("headers", ()):
                if name == b"user-agent":
                    user_agent = value
                    break
        if user_agent is not None:
            out += (',"user_agent":', _j(user_agent[:_TEXT_CUT].decode("latin-1")))
        path = scope.get("path", "")
        if len(path) > _PATH_CUT:
            path = path[:_PATH_CUT]
            cut.insert(0, "path")
        out += (',"details":{"request_id":', _j(rid), ',"method":', _j(method), ',"path":',
                _j(_text(path)), ',"status":%d' % status, pp)
        if cut:
            out.append(',"cut":' + json.dumps(cut))
        out.append("}}")
        return "".join(out)

    def _sensitive(self, scope: Any) -> bool:
        """``sensitive(path)``; a callable that raises counts the access as sensitive (the
        record is kept, and errs on the side of the data), and the error is logged."""
        fn = self.sensitive
        if fn is None:
            return False
        try:
            return bool(fn(_text(routed_path(scope))))  # (as the router matches it)
        except Exception as e:  # the message may quote the path: only the exception's type is logged
            log.warning("bitsec audit: the sensitive callable raised %s; the access is recorded as sensitive",
                        type(e).__name__)
            return True

    def _emit(self, rt: Runtime, event: str) -> None:
        try:
            rt.audit_emit(event)
        except NotConfiguredError:
            self.disabled.add(id(rt))
        except BitsecError as e:
            # bitsec recorded the refusal itself (audit/event_rejected) and counted it.
            log.warning("bitsec audit event refused: %s", e)


def _same(event: str) -> str:
    """The item of ``Runtime._audit_soon`` for an event already written."""
    return event
