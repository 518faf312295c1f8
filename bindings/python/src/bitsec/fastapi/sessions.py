"""Cookie sessions for FastAPI: ``CookieSession``, a dependency that authenticates a browser
by a server-side session (``Runtime.session_validate``) kept in a ``__Host-`` cookie, and its
login / logout / rotate helpers. Bearer-token endpoints (``BearerAuth``) are unaffected.

The cookie is ``__Host-`` prefixed (the browser then requires ``Secure``, ``Path=/`` and no
``Domain``: no subdomain and no plain-HTTP page can set or overwrite it), ``HttpOnly`` (no
script can read it) and ``SameSite=Lax`` by default: the browser does not send it on
cross-site subrequests and POSTs (the bulk of CSRF), yet a user following a link to the
application from an e-mail or another site arrives logged in. ``same_site="strict"`` also
withholds it on those top-level navigations (safer, at that cost in convenience); ``"none"``
is refused, since it would send the cookie on every cross-site request. Pair it with the
CSRF check for unsafe methods either way.
"""
from __future__ import annotations

import weakref
from typing import Any, Mapping

import anyio
from fastapi import HTTPException, Request, Response
from fastapi.openapi.models import APIKey, APIKeyIn
from fastapi.security.base import SecurityBase

from ..errors import BackendUnavailableError, InvalidArgumentError, TooLargeError
from ..runtime import Runtime
from ..sessions import _TOKEN_LEN, Session, SessionCreated
from ._common import STATE_ATTR, ClientIP, get_runtime

__all__ = ["CookieSession", "SESSION_COOKIE", "SESSION_DETAILS", "session_of"]

#: The default cookie name.
SESSION_COOKIE = "__Host-session"
#: The 401 detail of each refusal.
SESSION_DETAILS: Mapping[str, str] = {
    "missing": "Not authenticated: no session cookie",
    "unknown": "Session is not valid: log in again",
    "expired": "Session expired: log in again",
    "idle_timeout": "Session expired after inactivity: log in again",
    "binding_mismatch": "Session ended: it was used from another client",
}
_SESSION = "bitsec_session"  # request.state: the validated Session
_SESSION_COOKIE = "bitsec_session_cookie"  # request.state: the name of the cookie it came from
#: request.state: the session a rotate or logout of this request ended (its audit record names it)
_SESSION_ENDED = "bitsec_session_ended"
_MEMORY_STORES = frozenset({"process", "host"})
_OFFLOAD: "weakref.WeakKeyDictionary[Runtime, bool]" = weakref.WeakKeyDictionary()


def _offloads(rt: Runtime) -> bool:
    """Whether session calls may wait (the sessions' store is Redis): then they run in the
    thread pool, else inline."""
    v = _OFFLOAD.get(rt)
    if v is None:
        try:
            store = (rt.describe().get("sections") or {}).get("sessions", {}).get("store")
            v = store not in _MEMORY_STORES
        except Exception:  # noqa: BLE001 - cannot tell: the safe answer
            return True
        _OFFLOAD[rt] = v
    return v


class CookieSession(SecurityBase):
    """A FastAPI dependency: the request's ``Session`` from its session cookie, validated
    (idle timer touched, client binding checked) by the runtime's ``sessions`` section.

    - no cookie: 401 "Not authenticated: no session cookie" (``auto_error=False``: None);
    - a refused session: 401 with a detail per reason (``SESSION_DETAILS``: unknown,
      expired, idle timeout, binding mismatch = a hijacked cookie, which also ends the
      session) and the cookie cleared; also with ``auto_error=False``;
    - the store unreachable: 503 with ``Retry-After``.

    ``login(request, response, user)`` creates the session at login (ending the session
    the request came with, if any: a session identifier from before the login is never
    carried over, so session fixation gets nothing) and sets the cookie;
    ``rotate(request, response)`` gives the current session a new identifier (call it on a
    change of privilege); ``logout(request, response)`` ends it and clears the cookie.
    ``client_ip`` resolves the client's address (behind a proxy: ``ClientIP(trusted_proxies)``);
    ``attr``: where the runtime is on ``app.state`` (default ``STATE_ATTR``).
    """

    def __init__(self, *, cookie_name: str = SESSION_COOKIE, same_site: str = "lax", max_age: int | None = None,
                 auto_error: bool = True, client_ip: "ClientIP | None" = None, attr: str | None = None,
                 scheme_name: str | None = None) -> None:
        if not cookie_name.startswith("__Host-") or len(cookie_name) <= len("__Host-"):
            raise ValueError("cookie_name must start with __Host- (Secure, Path=/, no Domain)")
        if any(c in cookie_name for c in " ;,=\t\r\n\"\\"):
            raise ValueError("cookie_name must be a cookie token")
        same = same_site.lower()
        if same not in ("lax", "strict"):
            raise ValueError("same_site must be 'lax' or 'strict'")
        if max_age is not None and max_age <= 0:
            raise ValueError("max_age must be positive (None: a browser-session cookie)")
        self.cookie_name = cookie_name
        self.same_site = same
        self.max_age = max_age
        self.auto_error = auto_error
        self.client_ip = client_ip or ClientIP()
        self.attr = STATE_ATTR if attr is None else attr
        self.model = APIKey(**{"in": APIKeyIn.cookie}, name=cookie_name)  # type: ignore[arg-type]
        self.scheme_name = scheme_name or "CookieSession"

    # ---- cookie ----------------------------------------------------------------------------

    def set_cookie(self, response: Response, token: str) -> None:
        """Sets the session cookie (``__Host-``, Secure, HttpOnly, Path=/, SameSite)."""
        response.set_cookie(self.cookie_name, token, max_age=self.max_age, path="/", secure=True, httponly=True,
                            samesite=self.same_site)  # type: ignore[arg-type]

    def clear_cookie(self, response: Response) -> None:
        """Removes the session cookie in the browser."""
        response.delete_cookie(self.cookie_name, path="/", secure=True, httponly=True,
                               samesite=self.same_site)  # type: ignore[arg-type]

    def _clear_header(self) -> str:
        return f"{self.cookie_name}=\"\"; Max-Age=0; Path=/; Secure; HttpOnly; SameSite={self.same_site.capitalize()}"

    def _client(self, request: Request) -> tuple[str, str]:
        return self.client_ip(request.scope), request.headers.get("user-agent", "")

    # ---- dependency ------------------------------------------------------------------------

    def _refused(self, reason: str, clear: bool) -> HTTPException:
        headers = {"WWW-Authenticate": f'Cookie realm="session", cookie-name="{self.cookie_name}"'}
        if clear:
            headers["Set-Cookie"] = self._clear_header()
        return HTTPException(status_code=401, detail=SESSION_DETAILS.get(reason, SESSION_DETAILS["unknown"]),
                             headers=headers)

    def validate(self, request: Request) -> Session | None:
        """The dependency's work as a plain sync method."""
        cached = getattr(request.state, _SESSION, None)
        if cached is not None and getattr(request.state, _SESSION_COOKIE, None) == self.cookie_name:
            return cached  # type: ignore[no-any-return]  # validated from this very cookie
        token = request.cookies.get(self.cookie_name)
        if not token:
            if not self.auto_error:
                return None
            raise self._refused("missing", False)
        rt = get_runtime(request, self.attr)
        client, agent = self._client(request)
        try:
            v = rt.session_validate(token, client, agent)
        except BackendUnavailableError:
            raise HTTPException(status_code=503, detail="Service temporarily unavailable",
                                headers={"Retry-After": "1"}) from None
        except (TooLargeError, InvalidArgumentError):
            # a cookie or user agent over the library's limits: refused as the guard's cookie
            # routes refuse it (401, the "unknown" detail), the cookie kept (the request, not
            # the session, cannot be read)
            raise self._refused("malformed", False) from None
        if not v or v.session is None:
            raise self._refused(v.reason, True)
        setattr(request.state, _SESSION, v.session)
        setattr(request.state, _SESSION_COOKIE, self.cookie_name)
        return v.session

    async def __call__(self, request: Request) -> Session | None:
        if request.cookies.get(self.cookie_name) and _offloads(get_runtime(request, self.attr)):
            return await anyio.to_thread.run_sync(self.validate, request)
        return self.validate(request)

    # ---- login, rotation, logout -----------------------------------------------------------

    def login(self, request: Request, response: Response, user: str, tenant: str | None = None) -> SessionCreated:
        """Creates a session for ``user`` (who just authenticated) and sets the cookie. The
        session the request came with, if any, is ended first: login always yields a new
        identifier (no session fixation). Sync: from an ``async def`` endpoint with a Redis
        store, run it with ``anyio.to_thread.run_sync``."""
        rt = get_runtime(request, self.attr)
        old = _token_of(request.cookies.get(self.cookie_name))
        if old:
            rt.session_revoke(old)
        client, agent = self._client(request)
        try:
            created = rt.session_create(user, tenant, client, agent)
        except (TooLargeError, InvalidArgumentError) as e:  # (a user agent over the library's limit)
            raise HTTPException(status_code=400, detail="The session cannot be bound to this client: "
                                + ("a request header is too long" if isinstance(e, TooLargeError)
                                   else "invalid user or client")) from None
        self.set_cookie(response, created.token)
        setattr(request.state, _SESSION, None)
        return created

    def rotate(self, request: Request, response: Response) -> SessionCreated:
        """Gives the request's session a new identifier (after a change of privilege: MFA
        passed, role granted) and sets the new cookie; 401 when the session is not valid."""
        rt = get_runtime(request, self.attr)
        token = request.cookies.get(self.cookie_name)
        if not token:
            raise self._refused("missing", False)
        client, agent = self._client(request)
        try:
            v = rt.session_rotate(token, client, agent)
        except (TooLargeError, InvalidArgumentError):
            raise self._refused("malformed", False) from None
        if not v or v.rotated is None:
            raise self._refused(v.reason, True)
        self.set_cookie(response, v.rotated.token)
        self._ended(request)
        return v.rotated

    def logout(self, request: Request, response: Response) -> bool:
        """Ends the request's session (its tokens too) and clears the cookie; True when a
        session ended."""
        rt = get_runtime(request, self.attr)
        token = _token_of(request.cookies.get(self.cookie_name))
        ended = bool(token) and rt.session_revoke(token or "")
        self.clear_cookie(response)
        self._ended(request)
        return ended

    @staticmethod
    def _ended(request: Request) -> None:
        """The request's session is over (rotated, logged out): ``validate`` and ``session_of``
        no longer give it; the request's audit record still names who did it."""
        ended = getattr(request.state, _SESSION, None)
        if ended is not None:
            setattr(request.state, _SESSION_ENDED, ended)
        setattr(request.state, _SESSION, None)


def _token_of(value: str | None) -> str | None:
    """The cookie's value when it has a session token's form (its length), else None.
    ``session_revoke`` also ends a session given its id, which is no secret (audit records,
    a token's ``session_id`` claim, ``session_list``): a cookie holding an id must end
    nothing, or anyone who read an id could log its user out."""
    return value if value and len(value) == _TOKEN_LEN else None


def session_of(request: Request) -> Any:
    """The ``Session`` a ``CookieSession`` dependency validated for this request (None
    before)."""
    return getattr(request.state, _SESSION, None)

