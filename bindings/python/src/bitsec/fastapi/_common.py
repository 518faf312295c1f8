"""What the modules of ``bitsec.fastapi`` share: where the runtime lives, the per-request
values kept in ``scope["state"]``, the client address, the request id, the route of a scope
and the small ASGI helpers."""
from __future__ import annotations

import functools
import ipaddress
import itertools
import json
import logging
import os
import re
from typing import Any, Iterable, Iterator, Mapping, cast

from fastapi import HTTPException, Request
from starlette._utils import get_route_path
from starlette.convertors import PathConvertor
from starlette.routing import Match

from ..runtime import Runtime

#: The logger of every part of ``bitsec.fastapi``.
log = logging.getLogger("bitsec.fastapi")

#: Where the runtime lives: ``app.state.bitsec``.
STATE_ATTR = "bitsec"
#: Where ``GuardMiddleware`` leaves the runtime in the ASGI scope (the key, then ``:`` and the
#: runtime's ``attr``), for an application mounted under the one whose lifespan opened it
#: (Starlette runs no lifespan for a mounted app).
RUNTIME_SCOPE_KEY = "bitsec.runtime"
# Per-request values kept on ``request.state`` (shared with the ASGI middlewares through
# ``scope["state"]``).
_CLAIMS = "bitsec_claims"           # verified TokenClaims of this request
_AUTH_FAILURE = "bitsec_auth_failure"  # "missing" / reason name of a refused token
_DENIED = "bitsec_denied"           # (resource, action, reason) of a 403
_REQUEST_ID = "bitsec_request_id"
_CLIENT_IP = "bitsec_client_ip"
_NO_CLAIMS = object()


def get_runtime(request: Request, attr: str = STATE_ATTR) -> Runtime:
    """The runtime of the request's application (``app.state.bitsec``)."""
    try:
        return cast(Runtime, getattr(request.app.state, attr))
    except AttributeError:
        raise RuntimeError(f"no bitsec runtime on app.state.{attr}: use lifespan=bitsec_lifespan(config)") from None


def _runtime_of_scope(scope: Mapping[str, Any], attr: str) -> Runtime | None:
    app = scope.get("app")
    state = getattr(app, "state", None)
    values = getattr(state, "_state", None)  # Starlette's State keeps its values in this dict
    rt = values.get(attr) if type(values) is dict else getattr(state, attr, None)
    if rt is None:  # a mounted application: the runtime of this attr an enclosing guard found
        rt = scope.get(RUNTIME_SCOPE_KEY + ":" + attr)
    return cast("Runtime | None", rt)


def _request_state(scope: Any) -> dict[str, Any]:
    return scope.setdefault("state", {})  # type: ignore[no-any-return]


def _unavailable(retry_after: int = 1) -> HTTPException:
    return HTTPException(status_code=503, detail="Service temporarily unavailable",
                         headers={"Retry-After": str(max(1, retry_after))})


# ---- client address ------------------------------------------------------------------------

class ClientIP:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the
    proxy's header is read right to left and the first address that is not a trusted proxy
    is the client (so a client cannot forge its address by sending its own header).
    ``trusted_proxies``: addresses or networks (``"10.0.0.0/8"``), and ``"unix"`` for a proxy
    that connects over a Unix socket (``uvicorn --uds``: the server reports no peer address,
    so without it every client would be the same unknown one); empty (the default): no
    header is ever trusted. ``header``: the one header the proxies write,
    ``"x-forwarded-for"`` (the default) or ``"forwarded"`` (RFC 7239, its ``for=``
    parameters). Only that one is read: a proxy that writes one passes a client's own copy
    of the other through untouched, so trusting both would let a client choose its address.
    Components that take ``trusted_proxies`` also take a ``ClientIP``."""

    #: The most ``Forwarded`` elements read, from the right (RFC 7239 hops): a longer chain
    #: of trusted proxies is no deployment, and the peer is kept instead.
    MAX_FORWARDED_ELEMENTS = 64

    def __init__(self, trusted_proxies: Iterable[str] = (), header: str = "x-forwarded-for") -> None:
        if header not in ("x-forwarded-for", "forwarded"):
            raise ValueError(f"header must be 'x-forwarded-for' or 'forwarded', not {header!r}")
        if isinstance(trusted_proxies, str):
            raise TypeError("trusted_proxies is a list of addresses or networks, not one string")
        proxies = list(trusted_proxies)
        self.unix = "unix" in proxies
        self.networks = [ipaddress.ip_network(p, strict=False) for p in proxies if p != "unix"]
        self.header = header
        self._name = header.encode("ascii")
        #: No proxy is trusted: the peer is the client.
        self.direct = not self.networks and not self.unix
        #: Where the address is kept for the rest of the request (``_client_ip``): one place per
        #: list of trusted proxies and header, so that a component trusting none (the peer is
        #: the client) and one trusting a proxy each get their own answer, whichever reads it first.
        self.state_key = (_CLIENT_IP + "".join(sorted("@" + str(n) for n in self.networks))
                          + ("@unix" if self.unix else "") + ("@forwarded" if header == "forwarded" else ""))

    @classmethod
    def of(cls, trusted_proxies: "Iterable[str] | ClientIP") -> "ClientIP":
        """``trusted_proxies`` as a component takes it: a ``ClientIP``, or the list for one."""
        return trusted_proxies if isinstance(trusted_proxies, ClientIP) else cls(trusted_proxies)

    def _trusted(self, addr: str) -> bool:
        try:
            ip: Any = ipaddress.ip_address(addr)
        except ValueError:
            return False
        # an IPv4 proxy as a dual-stack socket reports it (``::ffff:10.0.0.1``, uvicorn --host ::)
        # is the IPv4 address its networks name
        mapped = getattr(ip, "ipv4_mapped", None)
        return any(ip in n for n in self.networks) or (mapped is not None and any(mapped in n for n in self.networks))

    def __call__(self, scope: Mapping[str, Any]) -> str:
        client = scope.get("client")
        peer = client[0] if client else ""
        if "%" in peer:
            peer = _without_zone(peer)  # (only from an IPv6 address)
        if not (self.unix and not peer) and (not self.networks or not self._trusted(peer)):
            return peer
        forwarded: list[str] = []
        name = self._name
        size = 0
        for n, value in scope.get("headers", ()):
            if n == name:
                if name == b"forwarded":
                    size += len(value)
                    nodes = _forwarded_for(value.decode("latin-1")) if size <= FORWARDED_MAX_BYTES else None
                    if nodes is None:
                        return peer  # (a line off the grammar, or too long a header: nothing in it is sure)
                    forwarded.extend(nodes)
                else:
                    forwarded.extend(v.strip() for v in value.decode("latin-1").split(","))
        if name == b"forwarded" and len(forwarded) > self.MAX_FORWARDED_ELEMENTS:
            forwarded = [""] + forwarded[-self.MAX_FORWARDED_ELEMENTS:]  # (past them: the peer, below)
        for addr in reversed(forwarded):
            if not addr:
                if name == b"forwarded":
                    return peer  # an element without for=, "unknown", or over the limit
                continue
            addr = _without_port(addr)
            if not self._trusted(addr):
                try:
                    return _without_zone(str(ipaddress.ip_address(addr)))
                except ValueError:
                    return peer  # garbage from a trusted proxy's upstream (or "_hidden"): do not key on it
        return peer


# RFC 7239 section 4 (with RFC 7230's token, quoted-string and optional whitespace around
# the list's commas and the element's semicolons): a pair is token "=" (token / quoted-string).
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_PAIR = re.compile(rf"({_TOKEN})=({_TOKEN}|{_QUOTED})")
#: An element's pairs (after the list's whitespace): tried once per element, never backtracked
#: into from outside, so its cost is linear in the line (a header of spaces cost seconds with
#: the whitespace on both sides of one pattern).
_ELEMENT = re.compile(rf"(?:{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))?(?:[ \t]*;[ \t]*(?:{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))?)*")
_WS = re.compile(r"[ \t]*")
_UNQUOTE = re.compile(r"\\(.)")
#: The most bytes of ``Forwarded`` read (all its lines): a longer header keeps the peer.
FORWARDED_MAX_BYTES = 8192


def _forwarded_for(value: str) -> list[str] | None:
    """The ``for=`` node of each element of a ``Forwarded`` header line (RFC 7239 section 4),
    left to right, unquoted (``"[2001:db8::1]:443"`` stays bracketed for ``_without_port``);
    "" for an element without one or with ``unknown``; empty elements are skipped. None when the line does not follow
    the grammar (an unterminated quoted string, text after one, a parameter twice in one
    element, an IPv6 address or a port outside quotes): then no element of it can be told
    apart from what a client wrote, since a proxy may append its element to the client's own
    line, and the caller keeps the peer."""
    out: list[str] = []
    pos, n = 0, len(value)
    while True:
        pos = _WS.match(value, pos).end()  # type: ignore[union-attr]
        m = _ELEMENT.match(value, pos)
        assert m is not None  # (every part of the pattern is optional)
        node = ""
        seen: set[str] = set()
        for pair in _PAIR.finditer(m.group(0)):
            name = pair.group(1).lower()
            if name in seen:
                return None  # (RFC 7239: a parameter at most once per element)
            seen.add(name)
            if name == "for":
                v = pair.group(2)
                if v[:1] == '"':
                    v = _UNQUOTE.sub(r"\1", v[1:-1])
                node = "" if v.lower() == "unknown" else v
        if m.end() > pos:  # (an empty element, as ",," or a final ",", is none: RFC 7230 section 7)
            out.append(node)
        pos = _WS.match(value, m.end()).end()  # type: ignore[union-attr]
        if pos >= n:
            return out
        if value[pos] != ",":
            return None  # (anything else after an element: off the grammar)
        pos += 1


def _without_zone(addr: str) -> str:
    """An IPv6 address without its zone (``fe80::1%eth0``, as a link-local peer is reported):
    one client whatever interface it is named through, grouped by its /64 as other IPv6
    clients are, and an address bitsec's records take. Anything else as it is (``%eth0``
    does not become the empty peer of a Unix socket)."""
    head, _, zone = addr.partition("%")
    if not zone or "%" in zone or ":" not in head:
        return addr  # no zone (RFC 4007 section 11: "%" and a non-empty identifier without "%")
    try:
        ipaddress.IPv6Address(head)
    except ValueError:
        return addr
    return head


def _without_port(addr: str) -> str:
    """An ``X-Forwarded-For`` entry without the port some proxies add (``203.0.113.10:5678``,
    ``[2001:db8::1]:443``; an Azure application gateway does): else each client behind them
    would be keyed as the proxy."""
    if addr[:1] == "[":
        end = addr.find("]")
        return addr[1:end] if end > 0 else addr
    if addr.count(":") == 1:
        return addr.split(":", 1)[0]
    return addr


def _client_ip(scope: Any, resolver: ClientIP) -> str:
    """The client's address by ``resolver``, resolved once per request and resolver (its
    list of trusted proxies)."""
    state = _request_state(scope)
    key = resolver.state_key if type(resolver) is ClientIP else f"{_CLIENT_IP}@{id(resolver):x}"
    ip = state.get(key)
    if ip is None:
        ip = state[key] = resolver(scope)
    return ip


def _valid_ip(addr: str | None) -> str | None:
    """The address in canonical form, or None when it is not one."""
    if not addr:
        return None
    return _canonical_ip(addr)


@functools.lru_cache(maxsize=4096)  # bounded: a flood of distinct addresses only evicts
def _canonical_ip(addr: str) -> str | None:
    """Without an IPv6 zone (``fe80::1%eth0``, as a link-local peer is reported): bitsec's
    records take an address only, and would refuse the whole record for it."""
    try:
        ip: Any = ipaddress.ip_address(addr)
    except ValueError:
        return None
    if getattr(ip, "scope_id", None) is not None:
        return str(ipaddress.IPv6Address(ip.packed))
    return str(ip)


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


# ---- request ids and routes ----------------------------------------------------------------

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_ACTIONS = {"POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}
#: A record's action for a method of HTTP's own (RFC 9110's and PATCH): its name in lower
#: case. Any other method a client sends is the action ``other`` (``details.method`` keeps it
#: as sent): a ``data_access`` record's action is its subtype, a label of the metrics, whose
#: label sets are capped -- made-up methods would fill them and push the real subtypes (the
#: alerts' ``failed_login``, ``unauthorized``) into ``_other``.
_VERBS = {m: m.lower() for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")}
#: The resource of an event whose path matches no route of the application.
UNMATCHED_RESOURCE = "(no route)"


def request_id(request: Request) -> str | None:
    """The request id ``AuditMiddleware`` (or ``SecurityHeadersMiddleware``) honoured or
    created (None without them)."""
    return _request_state(request.scope).get(_REQUEST_ID)


def _ensure_request_id(scope: Any, header: Any = None) -> str:
    """The request's id, decided once per request by the outermost bitsec middleware: the
    client's ``X-Request-ID`` when it is a plain token (``[A-Za-z0-9._:-]{1,128}``), else a
    new one (``new_request_id``); kept in ``scope["state"]``. ``header``: the raw
    ``X-Request-ID`` value when the caller already read the headers (``b""`` when absent)."""
    state = _request_state(scope)
    rid = state.get(_REQUEST_ID)
    if rid:
        return rid  # type: ignore[no-any-return]
    if header is None:
        header = b""
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                header = value
                break
    if header:
        text = header.decode("latin-1").strip()
        if _REQUEST_ID_RE.match(text):
            rid = text
    rid = state[_REQUEST_ID] = rid or new_request_id()
    return rid


def routed_path(scope: Any) -> str:
    """The request's path as Starlette's router matches it against the routes. Two things
    differ from ``scope["path"]``: the ``root_path`` is left out when the path starts with it
    (``FastAPI(root_path="/api")`` serves both ``/api/auth/login`` and ``/auth/login`` with the
    ``/auth/login`` route), and a route's pattern ends in ``$``, which in Python's ``re`` also
    matches just before one final newline (``GET /admin%0A``, path ``"/admin\n"``, is served by
    the ``/admin`` route), so that newline is left out too. Every decision this package takes
    from the path (the guard's route table, rate categories, exemptions, body limits,
    ``sensitive``) reads it this way, so a client cannot pick a spelling of the path that
    reaches a route under the rules of another path (or of none). The audit record keeps the
    path as sent."""
    path: str = get_route_path(scope) if scope.get("root_path") else scope.get("path", "")
    return path[:-1] if path[-1:] == "\n" else path


def new_request_id() -> str:
    """A new request id in the form of a version-4 UUID: 74 bits drawn from the OS once per
    process (and again in every forked worker), then a 48-bit counter that starts at a random
    value and is mixed through a random bijection of 48 bits (so consecutive ids do not show
    a worker's request count at a glance). Unique within the process, and across processes
    and hosts through the random part; not unpredictable, which a request id need not be: it
    correlates log lines and is no secret (a client may send its own ``X-Request-ID``). As the library's own record ids
    (instance, then sequence number), and for the same reason: a fifth of a random UUID's
    cost on the path of every request. Python's shared ``random`` is not involved, so an
    application that seeds it cannot make its workers repeat each other's ids."""
    return _rid_prefix + "%012x" % (next(_rid_count) * _rid_mul & 0xFFFFFFFFFFFF ^ _rid_xor)


def _rid_reseed() -> None:
    global _rid_prefix, _rid_count, _rid_mul, _rid_xor
    r = int.from_bytes(os.urandom(28), "big")
    x = r & ((1 << 128) - 1)  # the prefix: its high 80 bits, version and variant set
    h = "%032x" % (x & ~((0xF000 << 64) | (0xC000 << 48)) | (0x4000 << 64) | (0x8000 << 48))
    _rid_prefix = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-"
    _rid_count = itertools.count((r >> 128) & 0xFFFFFFFFFFFF)
    # the counter mixed through a bijection of 48 bits (an odd multiplier, then an xor), so
    # that consecutive ids do not show a worker's request count at a glance; unique all the same
    _rid_mul = (r >> 176) & 0xFFFFFFFFFFFF | 1
    _rid_xor = r & 0xFFFFFFFFFFFF


_rid_prefix = ""
_rid_count = itertools.count()
_rid_mul = 1
_rid_xor = 0
_rid_reseed()
os.register_at_fork(after_in_child=_rid_reseed)


def _walk_routes(routes: Iterable[Any]) -> Iterator[Any]:
    """The application's routes in the order the router tries them, an included router's
    routes in its place (FastAPI's effective routes, the prefix applied: for a route that is
    not an ``APIRoute``, the Starlette route FastAPI made of it)."""
    for r in routes:
        effective = getattr(r, "effective_candidates", None)
        if callable(effective):  # FastAPI's included router
            yield from _walk_routes(effective())
        else:
            inner = getattr(r, "starlette_route", None)
            yield inner if inner is not None else r


def _category_path(scope: Any, route: Any) -> str:
    """The path a rate category is worked out from (``categorize(method, path)``): the
    matched route's template, so that a path parameter's value never picks the bucket
    (``POST /artifacts/auth`` is ``/artifacts/{name}``); the request's path (``routed_path``)
    when no route matched, or for a route with a ``{name:path}`` parameter (a catch-all
    serves many paths, each of its own category)."""
    template = _route_template(route)
    return routed_path(scope) if template is None or _catch_all(route) else template


def _catch_all(route: Any) -> bool:
    """Whether a route has a ``{name:path}`` parameter (it serves paths of many shapes)."""
    return any(isinstance(c, PathConvertor) for c in (getattr(route, "param_convertors", None) or {}).values())


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
    for r in _walk_routes(getattr(router, "routes", ())):
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
    if s.isascii():  # (constant time: most text on the path of a request)
        return s
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")
