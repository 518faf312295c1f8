"""CSRF defences (OWASP CSRF Prevention Cheat Sheet) through the runtime's ``csrf`` section:
synchronizer tokens bound to a session (``csrf_token_issue`` / ``csrf_token_verify``), signed
double-submit cookies bound to a session binding value (``csrf_cookie_issue`` /
``csrf_cookie_verify``) and the ``Origin`` / ``Sec-Fetch-Site`` check of unsafe methods
(``csrf_origin_check``).

A refused request is a decision (a falsy ``CSRFDecision`` whose ``reason`` is
``csrf_token_missing``, ``csrf_token_malformed``, ``csrf_token_invalid``,
``csrf_token_expired``, ``csrf_token_mismatch``, ``origin_not_allowed``, ``origin_missing`` or
``cross_site_request``), never an exception; exceptions mean the call could not decide (no
``csrf`` section, an empty session identifier, ...).
"""
from __future__ import annotations

import json
import threading
from ctypes import byref, c_int32, c_int64, c_size_t, c_void_p
from typing import Any, Mapping, TYPE_CHECKING, Union, cast

from . import _abi
from . import _native as N

__all__ = ["CSRFDecision", "REASONS", "TOKEN_BYTES", "MAX_TOKEN_BYTES", "CSRFMixin"]

Text = Union[str, bytes]

_token_issue = N.declare("bitsec_csrf_token_issue")
_token_verify = N.declare("bitsec_csrf_token_verify")
_cookie_issue = N.declare("bitsec_csrf_cookie_issue")
_cookie_verify = N.declare("bitsec_csrf_cookie_verify")
_origin_check = N.declare("bitsec_csrf_origin_check")
_reason_name = N.declare("bitsec_csrf_reason_name")
_keys_reload = N.declare("bitsec_csrf_keys_reload")
# Hot paths without ctypes' per-argument conversion (N.unconverted): every argument is passed
# with exactly its declared C type (c_void_p handle, bytes, c_size_t, c_int64, byref(c_int32)).
_token_verify_fast = N.unconverted(_token_verify)
_cookie_verify_fast = N.unconverted(_cookie_verify)
_AT_NOW = c_int64(0)
_tls = threading.local()


def _reason_ref() -> tuple[c_int32, Any]:
    r = getattr(_tls, "r", None)
    if r is None:
        c = c_int32(0)
        r = _tls.r = (c, byref(c))
    return cast("tuple[c_int32, Any]", r)

#: Length of every issued token (ASCII, URL-safe: usable as a cookie value or form field).
TOKEN_BYTES: int = _abi.BITSEC_CSRF_TOKEN_BYTES
#: Longer presented tokens are refused as ``csrf_token_malformed`` without being decoded.
MAX_TOKEN_BYTES: int = _abi.BITSEC_CSRF_MAX_TOKEN_BYTES

#: The reason names, indexed by the BITSEC_CSRF_* reason code.
REASONS: tuple[str, ...] = tuple(
    _reason_name(i).decode() for i in range(len(N.names_by_value("BITSEC_CSRF_", exclude=("TOKEN_BYTES", "MAX_")))))


class CSRFDecision:
    """The outcome of a CSRF check: truthy when the request may proceed; ``reason`` says why
    not (``valid`` when it may)."""

    __slots__ = ("reason", "code")

    def __init__(self, code: int) -> None:
        self.code = code
        self.reason = REASONS[code] if 0 <= code < len(REASONS) else f"unknown_{code}"

    @property
    def valid(self) -> bool:
        return self.code == _abi.BITSEC_CSRF_VALID

    def __bool__(self) -> bool:
        return self.code == _abi.BITSEC_CSRF_VALID

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CSRFDecision):
            return NotImplemented
        return self.code == other.code

    def __hash__(self) -> int:
        return hash(self.code)

    def __repr__(self) -> str:
        return f"CSRFDecision(reason={self.reason!r})"


_ORIGIN_MEMO_MAX = 2000
_DECISIONS = tuple(CSRFDecision(i) for i in range(len(REASONS)))


def _decision(code: int) -> CSRFDecision:
    return _DECISIONS[code] if 0 <= code < len(_DECISIONS) else CSRFDecision(code)


def _b(v: Text | None, name: str) -> bytes:
    if v is None:
        return b""
    if type(v) is str:
        return v.encode("utf-8", "surrogateescape")
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    raise TypeError(f"{name} must be str or bytes")


def _at(at: float | int | None) -> int:
    return 0 if at is None else int(at)


class CSRFMixin:
    """The ``csrf_*`` methods of ``Runtime``."""

    if TYPE_CHECKING:
        @property
        def handle(self) -> int: ...

    def csrf_token_issue(self, session_id: Text, at: float | int | None = None) -> str:
        """A synchronizer token bound to ``session_id`` (keep it in the session or render it
        into the page; it does not contain the session identifier)."""
        s = _b(session_id, "session_id")
        return N.call_with_output(_token_issue, self.handle, s, len(s), _at(at), initial=TOKEN_BYTES + 1).decode()

    def _csrf_handle(self) -> c_void_p:
        hp = self.__dict__.get("_csrf_hp")
        if hp is None or hp.value != self.handle:  # the handle property raises once closed
            hp = self.__dict__["_csrf_hp"] = c_void_p(self.handle)
        return cast(c_void_p, hp)

    def csrf_token_verify(self, session_id: Text, token: Text | None, at: float | int | None = None) -> CSRFDecision:
        """Checks a presented synchronizer token for ``session_id``: MAC in constant time,
        then age. ``None`` or empty is ``csrf_token_missing``."""
        s, t = _b(session_id, "session_id"), _b(token, "token")
        r, ref = _reason_ref()
        rc = _token_verify_fast(self._csrf_handle(), s, c_size_t(len(s)), t, c_size_t(len(t)),
                                _AT_NOW if at is None else c_int64(int(at)), ref)
        if rc:
            N.check(rc)
        return _decision(r.value)

    def csrf_cookie_issue(self, binding: Text, at: float | int | None = None) -> str:
        """The value of a signed double-submit cookie bound to ``binding`` (a session
        identifier or another value bound to the authenticated session)."""
        b = _b(binding, "binding")
        return N.call_with_output(_cookie_issue, self.handle, b, len(b), _at(at), initial=TOKEN_BYTES + 1).decode()

    def csrf_cookie_verify(self, binding: Text, cookie: Text | None, submitted: Text | None,
                           at: float | int | None = None) -> CSRFDecision:
        """Checks a double-submit request: ``cookie`` and ``submitted`` (header or form field)
        equal in constant time, and the cookie's MAC valid for ``binding``."""
        b, c, s = _b(binding, "binding"), _b(cookie, "cookie"), _b(submitted, "submitted")
        r, ref = _reason_ref()
        rc = _cookie_verify_fast(self._csrf_handle(), b, c_size_t(len(b)), c, c_size_t(len(c)), s, c_size_t(len(s)),
                                 _AT_NOW if at is None else c_int64(int(at)), ref)
        if rc:
            N.check(rc)
        return _decision(r.value)

    def csrf_origin_check(self, method: Text, origin: Text | None = None,
                          fetch_site: Text | None = None) -> CSRFDecision:
        """The ``Origin`` / ``Sec-Fetch-Site`` check: safe methods always pass; unsafe ones need
        an allowed origin, ``Sec-Fetch-Site: same-origin`` (or ``none``), or, with neither
        header, ``csrf.missing_origin: "allow"``."""
        m, o, f = _b(method, "method"), _b(origin, "origin"), _b(fetch_site, "fetch_site")
        # The decision depends only on these three values and the configuration, which a
        # reload does not change: remembered per runtime (bounded; cleared when full, so a
        # flood of distinct origins costs C calls, never memory).
        memo = self.__dict__.get("_csrf_origin_memo")
        if memo is None:
            memo = self.__dict__.setdefault("_csrf_origin_memo", {})
        key = (m, o, f)
        d = memo.get(key)
        if d is not None:
            return cast(CSRFDecision, d)
        r = c_int32(0)
        rc = _origin_check(self.handle, m, len(m), o, len(o), f, len(f), byref(r))
        if rc:
            N.check(rc)
        d = _decision(r.value)
        if len(memo) >= _ORIGIN_MEMO_MAX:
            memo.clear()
        memo[key] = d
        return d

    def csrf_keys_reload(self, keys: Mapping[str, Any] | str | bytes) -> None:
        """Replaces the csrf keys (``{"key": secret, "previous_keys": [...]}``) atomically; with
        a host store region every worker of the host follows at its next call. An audit event
        records it."""
        doc = keys if isinstance(keys, (str, bytes)) else json.dumps(keys)
        d = doc.encode() if isinstance(doc, str) else bytes(doc)
        N.check(_keys_reload(self.handle, d, len(d)))
