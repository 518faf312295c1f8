"""Server-side sessions: ``Runtime.session_create`` at login, ``session_validate`` on each
request, ``session_rotate`` at login and privilege changes, ``session_list``,
``session_revoke`` and ``session_revoke_user``. They use the runtime's ``sessions`` section.

A session has a *token* (a secret: give it to the client, for example in a cookie, and
never log it) and a public *session id* (show it in session lists, put it in the
``session_id`` claim of tokens issued for the session). The store keeps only the session id,
a hash of the token. A refused session is a decision (a falsy ``SessionValidation`` with a
``reason``), never an exception; exceptions mean the call could not decide.
"""
from __future__ import annotations

import json
import threading
from ctypes import byref, c_int32, c_int64, c_size_t, create_string_buffer
from typing import Any, NamedTuple, TYPE_CHECKING, Union, cast

from . import _abi
from . import _native as N

__all__ = ["Session", "SessionCreated", "SessionValidation", "SESSION_REASONS"]

Text = Union[str, bytes]

_create = N.declare("bitsec_session_create")
_validate = N.declare("bitsec_session_validate")
_rotate = N.declare("bitsec_session_rotate")
_revoke = N.declare("bitsec_session_revoke")
_revoke_user = N.declare("bitsec_session_revoke_user")
_list = N.declare("bitsec_session_list")

#: Reason names by BITSEC_SESSION_REASON_* code: valid, unknown, expired, idle_timeout,
#: binding_mismatch.
SESSION_REASONS = N.names_by_value("BITSEC_SESSION_REASON_")
_TOKEN_LEN: int = _abi.BITSEC_SESSION_TOKEN_LEN
_ID_LEN: int = _abi.BITSEC_SESSION_ID_LEN
_INFO_MAX: int = _abi.BITSEC_SESSION_INFO_MAX_BYTES


class Session(NamedTuple):
    """One session as the library reports it (instants in Unix seconds). ``valid_until`` is
    when it ends unless used again (the idle timeout, capped by ``expires_at``)."""

    session_id: str
    user: str
    tenant: str | None
    created_at: int
    last_seen_at: int
    expires_at: int
    valid_until: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Session":
        return cls(str(d["session_id"]), str(d["user"]), None if d.get("tenant") is None else str(d["tenant"]),
                   int(d["created_at"]), int(d["last_seen_at"]), int(d["expires_at"]), int(d["valid_until"]))


class SessionCreated(NamedTuple):
    """A new (or rotated) session: ``token`` is the secret for the client, ``session_id``
    the public identifier."""

    token: str
    session_id: str


class SessionValidation:
    """The outcome of ``session_validate`` (or ``session_rotate``): truthy when valid.

    ``reason`` is one of ``valid``, ``unknown``, ``expired``, ``idle_timeout``,
    ``binding_mismatch``; ``session`` the session when valid; ``rotated`` the new token and
    id after a successful ``session_rotate``."""

    __slots__ = ("reason", "session", "rotated")

    def __init__(self, reason: str, session: Session | None = None, rotated: SessionCreated | None = None) -> None:
        self.reason = reason
        self.session = session
        self.rotated = rotated

    @property
    def valid(self) -> bool:
        return self.reason == "valid"

    def __bool__(self) -> bool:
        return self.reason == "valid"

    def __repr__(self) -> str:
        return f"SessionValidation(reason={self.reason!r}, session={self.session!r})"


def _b(v: Text | None, name: str) -> bytes:
    if v is None:
        return b""
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    raise TypeError(f"{name} must be str or bytes, not {type(v).__name__}")


def _at(at: float | int | None) -> int:
    return 0 if at is None else int(at)


_tls = threading.local()


def _bufs() -> tuple[Any, c_int32, c_size_t]:
    """Per-thread output buffers of validate: one allocation per thread, not per call."""
    try:
        return cast("tuple[Any, c_int32, c_size_t]", _tls.bufs)
    except AttributeError:
        _tls.bufs = bufs = (create_string_buffer(_INFO_MAX), c_int32(), c_size_t())
        return bufs


class SessionsMixin:
    """Mixed into ``bitsec.Runtime``; uses its ``handle``."""

    if TYPE_CHECKING:
        @property
        def handle(self) -> int: ...

    def session_create(self, user: Text, tenant: Text | None = None, client: Text | None = None,
                       user_agent: Text | None = None, at: float | int | None = None) -> SessionCreated:
        """Creates a session for ``user`` (who just authenticated) of ``tenant``, bound to the
        client by ``sessions.binding`` (``client``: the client's address; ``user_agent``: the
        ``User-Agent`` header). When the user already holds ``max_sessions_per_user``
        sessions, the oldest ends."""
        u, t, c, a = _b(user, "user"), _b(tenant, "tenant"), _b(client, "client"), _b(user_agent, "user_agent")
        tok = create_string_buffer(_TOKEN_LEN + 1)
        sid = create_string_buffer(_ID_LEN + 1)
        N.check(_create(self.handle, u, len(u), t, len(t), c, len(c), a, len(a), _at(at), tok, sid))
        return SessionCreated(tok.value.decode("ascii"), sid.value.decode("ascii"))

    def session_validate(self, token: Text, client: Text | None = None, user_agent: Text | None = None,
                         at: float | int | None = None) -> SessionValidation:
        """Validates a session token from a request and touches its idle timer. Refused:
        ``unknown`` (revoked, rotated, ended, not a token), ``expired``, ``idle_timeout``, or
        ``binding_mismatch`` (another client: the session was ended and an audit event
        emitted). One C call."""
        tk = token.encode() if type(token) is str else _b(token, "token")
        c = client.encode() if type(client) is str else _b(client, "client")
        a = user_agent.encode() if type(user_agent) is str else _b(user_agent, "user_agent")
        buf, r, n = _bufs()
        rc = _validate(self.handle, tk, len(tk), c, len(c), a, len(a), _at(at), byref(r), buf, _INFO_MAX, byref(n))
        if rc:
            N.check(rc)
        if r.value != 0:
            return SessionValidation(SESSION_REASONS[r.value])
        return SessionValidation("valid", Session.from_json(json.loads(buf.raw[: n.value])))

    def session_rotate(self, token: Text, client: Text | None = None, user_agent: Text | None = None,
                       at: float | int | None = None) -> SessionValidation:
        """Gives a valid session a new token and id (at login and at a change of privilege:
        prevents session fixation); the old token stops working. The result's ``rotated``
        holds the new token and id when valid."""
        tk, c, a = _b(token, "token"), _b(client, "client"), _b(user_agent, "user_agent")
        r = c_int32()
        tok = create_string_buffer(_TOKEN_LEN + 1)
        sid = create_string_buffer(_ID_LEN + 1)
        N.check(_rotate(self.handle, tk, len(tk), c, len(c), a, len(a), _at(at), byref(r), tok, sid))
        if r.value != 0:
            return SessionValidation(SESSION_REASONS[r.value])
        return SessionValidation("valid", rotated=SessionCreated(tok.value.decode("ascii"), sid.value.decode("ascii")))

    def session_revoke(self, session: Text, at: float | int | None = None) -> bool:
        """Ends one session given its token or its session id (logout); True when one
        ended. Tokens issued for it are revoked when the ``tokens`` section exists. An id is
        no secret (audit records, ``session_list``, a token's ``session_id`` claim): pass a
        value a client sent only when it has a token's length, as ``CookieSession`` does."""
        s = _b(session, "session")
        r = c_int32()
        N.check(_revoke(self.handle, s, len(s), _at(at), byref(r)))
        return r.value == 1

    def session_revoke_user(self, user: Text, tenant: Text | None = None, at: float | int | None = None) -> int:
        """Ends every session of a user (password change, anonymisation, "log out
        everywhere"); the number ended."""
        u, t = _b(user, "user"), _b(tenant, "tenant")
        n = c_int64()
        N.check(_revoke_user(self.handle, u, len(u), t, len(t), _at(at), byref(n)))
        return n.value

    def session_list(self, user: Text, tenant: Text | None = None, at: float | int | None = None) -> list[Session]:
        """The live sessions of a user, oldest first (tokens are never listed)."""
        u, t = _b(user, "user"), _b(tenant, "tenant")
        out = N.call_with_output(_list, self.handle, u, len(u), t, len(t), _at(at), initial=4096)
        return [Session.from_json(d) for d in json.loads(out)]
