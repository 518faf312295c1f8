"""Rate limits, brute-force blocking and the login guard: ``Runtime.rate_limit_take``,
``Runtime.bruteforce_*``, ``Runtime.login_guard_*`` and ``Runtime.client_key``.

One C call per operation; the output array is a per-thread buffer reused across calls.
"""
from __future__ import annotations

import ctypes
import struct
import threading
from ctypes import POINTER, c_char_p, c_int64, c_size_t, c_void_p
from typing import TYPE_CHECKING, Union

from . import _abi
from . import _native as N

Key = Union[str, bytes]

_take = N.declare("bitsec_rate_limit_take")
_reset = N.declare("bitsec_rate_limit_reset")
_bf_fail = N.declare("bitsec_bruteforce_record_failure")
_bf_success = N.declare("bitsec_bruteforce_record_success")
_bf_check = N.declare("bitsec_bruteforce_check")
_bf_reset = N.declare("bitsec_bruteforce_reset")
_lg_begin = N.declare("bitsec_login_guard_begin")
_lg_succeeded = N.declare("bitsec_login_guard_succeeded")
_lg_cancel = N.declare("bitsec_login_guard_cancel")
_client_key = N.declare("bitsec_login_guard_client_key")
# The deprecated C names of renamed functions (exported for the rest of ABI version 1): declared
# so that every export of the header has its prototype here; never called.
N.declare("bitsec_client_key")

DECISION_LEN: int = _abi.BITSEC_RATE_LIMIT_DECISION_LEN
STATUS_LEN: int = _abi.BITSEC_BRUTEFORCE_STATUS_LEN
FLAG_DEGRADED: int = _abi.BITSEC_RATE_LIMIT_FLAG_DEGRADED
BF_FLAG_DEGRADED: int = _abi.BITSEC_BRUTEFORCE_FLAG_DEGRADED
BF_FLAG_NEWLY_BLOCKED: int = _abi.BITSEC_BRUTEFORCE_FLAG_NEWLY_BLOCKED
BF_FLAG_TABLE_FULL: int = _abi.BITSEC_BRUTEFORCE_FLAG_TABLE_FULL

#: BITSEC_RATE_LIMIT_REASON_* codes by value.
REASONS = N.names_by_value("BITSEC_RATE_LIMIT_REASON_")

GUARD_DECISION_LEN: int = _abi.BITSEC_LOGIN_GUARD_DECISION_LEN
GUARD_FLAG_DEGRADED: int = _abi.BITSEC_LOGIN_GUARD_FLAG_DEGRADED
GUARD_FLAG_NEWLY_BLOCKED: int = _abi.BITSEC_LOGIN_GUARD_FLAG_NEWLY_BLOCKED
GUARD_FLAG_TABLE_FULL: int = _abi.BITSEC_LOGIN_GUARD_FLAG_TABLE_FULL
#: BITSEC_LOGIN_GUARD_REASON_* codes by value.
GUARD_REASONS = N.names_by_value("BITSEC_LOGIN_GUARD_REASON_")
#: BITSEC_LOGIN_GUARD_KEY_* values by value (KEY_NONE is None).
GUARD_KEYS: tuple[str | None, ...] = (None, *N.names_by_value("BITSEC_LOGIN_GUARD_KEY_")[1:])

#: Indices of the decision arrays (BITSEC_RATE_LIMIT_D_*, BITSEC_LOGIN_GUARD_D_*).
_RL_ALLOWED: int = _abi.BITSEC_RATE_LIMIT_D_ALLOWED
_RL_LIMIT: int = _abi.BITSEC_RATE_LIMIT_D_LIMIT
_RL_REMAINING: int = _abi.BITSEC_RATE_LIMIT_D_REMAINING
_RL_RESET_AFTER: int = _abi.BITSEC_RATE_LIMIT_D_RESET_AFTER
_RL_RETRY_AFTER: int = _abi.BITSEC_RATE_LIMIT_D_RETRY_AFTER
_RL_FLAGS: int = _abi.BITSEC_RATE_LIMIT_D_FLAGS
_RL_REASON: int = _abi.BITSEC_RATE_LIMIT_D_REASON
_LG_ALLOWED: int = _abi.BITSEC_LOGIN_GUARD_D_ALLOWED
_LG_REASON: int = _abi.BITSEC_LOGIN_GUARD_D_REASON
_LG_REFUSED_BY: int = _abi.BITSEC_LOGIN_GUARD_D_REFUSED_BY
_LG_RETRY_AFTER: int = _abi.BITSEC_LOGIN_GUARD_D_RETRY_AFTER
_LG_REMAINING: int = _abi.BITSEC_LOGIN_GUARD_D_REMAINING
_LG_FAILURE_RETRY_AFTER: int = _abi.BITSEC_LOGIN_GUARD_D_FAILURE_RETRY_AFTER
_LG_TICKET: int = _abi.BITSEC_LOGIN_GUARD_D_TICKET
_LG_FLAGS: int = _abi.BITSEC_LOGIN_GUARD_D_FLAGS

_DecisionArray = c_int64 * DECISION_LEN
_GuardArray = c_int64 * GUARD_DECISION_LEN
_StatusArray = c_int64 * STATUS_LEN
_tls = threading.local()
_categories: dict[str, tuple[bytes, c_size_t]] = {}


def _decision_buf() -> "ctypes.Array[c_int64]":
    b = getattr(_tls, "d", None)
    if b is None:
        b = _tls.d = _DecisionArray()
    return b


def _status_buf() -> "ctypes.Array[c_int64]":
    b = getattr(_tls, "s", None)
    if b is None:
        b = _tls.s = _StatusArray()
    return b


def _key(key: Key) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"key must be str or bytes, not {type(key).__name__}")


def _category(category: str) -> tuple[bytes, c_size_t]:
    """The category's bytes and length, cached (the set of categories is small)."""
    c = _categories.get(category)
    if c is None:
        if not isinstance(category, str):
            raise TypeError(f"category must be str, not {type(category).__name__}")
        b = category.encode("utf-8")
        c = (b, c_size_t(len(b)))
        if len(_categories) < 1024:
            _categories[category] = c
    return c


def _at(at: float | int | None) -> int:
    return 0 if at is None else int(at)


class RateLimitDecision(tuple[int, ...]):
    """One take's decision. Truthy when allowed.

    ``limit``, ``remaining``, ``reset_after`` (seconds until the bucket is full) and
    ``retry_after`` (seconds to wait; >= 1 when denied, 0 when allowed) are what the
    ``X-RateLimit-*`` and ``Retry-After`` headers need; ``degraded`` says Redis was
    unavailable and the category's failure policy decided; ``reason`` is one of ``ok``,
    ``limited``, ``key_table_full``, ``backend_deny``, ``backend_allow``.

    It is an immutable tuple of the C decision array (built in one step from the C output,
    which keeps a take at one C call and a few hundred nanoseconds of Python).
    """

    __slots__ = ()

    def __new__(cls, allowed: bool, limit: int, remaining: int, reset_after: int, retry_after: int,
                degraded: bool = False, reason: str = "ok") -> "RateLimitDecision":
        code = REASONS.index(reason) if reason in REASONS else -1
        return tuple.__new__(cls, (1 if allowed else 0, limit, remaining, reset_after, retry_after,
                                   FLAG_DEGRADED if degraded else 0, code))

    @property
    def allowed(self) -> bool:
        return self[_RL_ALLOWED] == 1

    @property
    def limit(self) -> int:
        return self[_RL_LIMIT]

    @property
    def remaining(self) -> int:
        return self[_RL_REMAINING]

    @property
    def reset_after(self) -> int:
        return self[_RL_RESET_AFTER]

    @property
    def retry_after(self) -> int:
        return self[_RL_RETRY_AFTER]

    @property
    def degraded(self) -> bool:
        return self[_RL_FLAGS] & FLAG_DEGRADED != 0

    @property
    def reason(self) -> str:
        c = self[_RL_REASON]
        return REASONS[c] if 0 <= c < len(REASONS) else str(c)

    def headers(self) -> dict[str, str]:
        """``X-RateLimit-Limit``, ``X-RateLimit-Remaining``, ``X-RateLimit-Reset`` (seconds until
        the bucket is full, as the IETF RateLimit drafts use it) and, when denied, ``Retry-After``."""
        h = {
            "X-RateLimit-Limit": str(self[_RL_LIMIT]),
            "X-RateLimit-Remaining": str(self[_RL_REMAINING]),
            "X-RateLimit-Reset": str(self[_RL_RESET_AFTER]),
        }
        if self[_RL_ALLOWED] != 1:
            h["Retry-After"] = str(self[_RL_RETRY_AFTER])
        return h

    def __bool__(self) -> bool:
        return self[_RL_ALLOWED] == 1

    def __repr__(self) -> str:
        return ("RateLimitDecision(allowed={0.allowed}, limit={0.limit}, remaining={0.remaining}, "
                "reset_after={0.reset_after}, retry_after={0.retry_after}, degraded={0.degraded}, "
                "reason={0.reason!r})").format(self)


class BruteForceStatus:
    """Where a key stands in its failure window. Truthy when blocked.

    ``blocked``; ``failures`` in the window; ``remaining_attempts`` before a block;
    ``blocked_until`` (Unix seconds, 0 when not blocked); ``retry_after`` (seconds until
    unblocked); ``degraded`` (Redis unavailable, the failure policy decided);
    ``newly_blocked`` (this call started the block); ``table_full`` (in-process table full:
    the new key is reported blocked, the safe side).
    """

    __slots__ = ("blocked", "failures", "remaining_attempts", "blocked_until", "retry_after", "degraded",
                 "newly_blocked", "table_full")

    def __init__(self, v: list[int]) -> None:
        self.blocked = v[0] == 1
        self.failures = v[1]
        self.remaining_attempts = v[2]
        self.blocked_until = v[3]
        self.retry_after = v[4]
        flags = v[5]
        self.degraded = bool(flags & BF_FLAG_DEGRADED)
        self.newly_blocked = bool(flags & BF_FLAG_NEWLY_BLOCKED)
        self.table_full = bool(flags & BF_FLAG_TABLE_FULL)

    def __bool__(self) -> bool:
        return self.blocked

    def __repr__(self) -> str:
        return ("BruteForceStatus(blocked={0.blocked}, failures={0.failures}, remaining_attempts={0.remaining_attempts}, "
                "blocked_until={0.blocked_until}, retry_after={0.retry_after}, degraded={0.degraded}, "
                "newly_blocked={0.newly_blocked})").format(self)


class LoginGuardDecision(tuple[int, ...]):
    """The login guard's answer to ``login_guard_begin``. Truthy when the attempt may go ahead
    (it is then already counted as a failure: call ``login_guard_succeeded`` after a
    successful login, nothing after a failed one).

    ``allowed``; ``reason`` (``ok``, ``client_blocked``, ``account_backoff``,
    ``account_limit``, ``table_full``, ``backend_deny``); ``refused_by`` (``None``,
    ``"client"`` or ``"account"``); ``retry_after`` (seconds, >= 1 when refused);
    ``remaining`` (failures the client may still make before its block);
    ``failure_retry_after`` (when allowed: the seconds to wait if this attempt fails, 0 when
    the next attempt is free); ``ticket`` (the reservation, for ``login_guard_succeeded`` and
    ``login_guard_cancel``); ``degraded``, ``newly_blocked``, ``table_full``.

    An immutable tuple of the C decision array (built in one step from the C output).
    """

    __slots__ = ()

    @property
    def allowed(self) -> bool:
        return self[_LG_ALLOWED] == 1

    @property
    def reason(self) -> str:
        c = self[_LG_REASON]
        return GUARD_REASONS[c] if 0 <= c < len(GUARD_REASONS) else str(c)

    @property
    def refused_by(self) -> str | None:
        c = self[_LG_REFUSED_BY]
        return GUARD_KEYS[c] if 0 <= c < len(GUARD_KEYS) else str(c)

    @property
    def retry_after(self) -> int:
        return self[_LG_RETRY_AFTER]

    @property
    def remaining(self) -> int:
        return self[_LG_REMAINING]

    @property
    def failure_retry_after(self) -> int:
        return self[_LG_FAILURE_RETRY_AFTER]

    @property
    def ticket(self) -> int:
        return self[_LG_TICKET]

    @property
    def degraded(self) -> bool:
        return self[_LG_FLAGS] & GUARD_FLAG_DEGRADED != 0

    @property
    def newly_blocked(self) -> bool:
        return self[_LG_FLAGS] & GUARD_FLAG_NEWLY_BLOCKED != 0

    @property
    def table_full(self) -> bool:
        return self[_LG_FLAGS] & GUARD_FLAG_TABLE_FULL != 0

    def headers(self) -> dict[str, str]:
        """``Retry-After`` when refused; nothing when allowed."""
        return {} if self[_LG_ALLOWED] == 1 else {"Retry-After": str(max(1, self[_LG_RETRY_AFTER]))}

    def __bool__(self) -> bool:
        return self[_LG_ALLOWED] == 1

    def __repr__(self) -> str:
        return ("LoginGuardDecision(allowed={0.allowed}, reason={0.reason!r}, refused_by={0.refused_by!r}, "
                "retry_after={0.retry_after}, remaining={0.remaining}, failure_retry_after={0.failure_retry_after}, "
                "degraded={0.degraded})").format(self)


_guard_unpack = struct.Struct(f"{GUARD_DECISION_LEN}q").unpack_from
_new_decision = tuple.__new__
_unpack = struct.Struct(f"{DECISION_LEN}q").unpack_from
_ONE = c_int64(1)
_ZERO = c_int64(0)


class RateLimitMixin:
    """Mixed into ``bitsec.Runtime``; uses its ``handle``."""

    if TYPE_CHECKING:
        @property
        def handle(self) -> int: ...

    def rate_limit_take(self, key: Key, category: str = "default", cost: int = 1,
                        at: float | int | None = None) -> RateLimitDecision:
        """Takes ``cost`` tokens from ``key``'s bucket in ``category``; ``at`` is an explicit
        instant (Unix seconds), ``None`` for now. A denial is a decision, not an exception;
        a Redis outage is decided by the category's failure policy (``degraded``). Raises
        ``NotFoundError`` (unknown category), ``InvalidArgumentError`` (empty key, cost < 1 or
        above the capacity), ``TooLargeError`` (key over 512 bytes), ``ClosedError``."""
        k = key.encode("utf-8") if type(key) is str else _key(key)
        c = _categories.get(category) or _category(category)
        buf = getattr(_tls, "d", None) or _decision_buf()
        # The handle as a prebuilt c_void_p and the constant arguments as prebuilt ctypes
        # objects: ctypes passes those without a conversion each (~0.1 us per argument).
        h = self.__dict__.get("_rl_handle")
        if h is None or self._h is None:  # type: ignore[attr-defined]
            h = self.__dict__["_rl_handle"] = c_void_p(self.handle)
        rc = _take(h, c[0], c[1], k, len(k), _ONE if cost == 1 else cost, _ZERO if at is None else int(at), buf)
        if rc:
            N.check(rc)
        return _new_decision(RateLimitDecision, _unpack(buf))

    def rate_limit_reset(self, key: Key, category: str = "default") -> None:
        """Forgets ``key``'s bucket in ``category`` (administrators, tests)."""
        k = _key(key)
        c, n = _category(category)
        N.check(_reset(self.handle, c, n, k, len(k)))

    def bruteforce_record_failure(self, key: Key, at: float | int | None = None) -> BruteForceStatus:
        """Records a failed login for ``key`` (IP, account); blocks it after the configured
        number of failures within the window (default 5 in an hour, blocked for an hour)."""
        k = _key(key)
        buf = _status_buf()
        N.check(_bf_fail(self.handle, k, len(k), _at(at), buf))
        return BruteForceStatus(buf[:])

    def bruteforce_record_success(self, key: Key, at: float | int | None = None) -> BruteForceStatus:
        """Records a successful login: clears ``key``'s failures (an active block stays)."""
        k = _key(key)
        buf = _status_buf()
        N.check(_bf_success(self.handle, k, len(k), _at(at), buf))
        return BruteForceStatus(buf[:])

    def bruteforce_check(self, key: Key, at: float | int | None = None) -> BruteForceStatus:
        """Whether ``key`` is blocked, until when, and its failures in the window."""
        k = _key(key)
        buf = _status_buf()
        N.check(_bf_check(self.handle, k, len(k), _at(at), buf))
        return BruteForceStatus(buf[:])

    def bruteforce_reset(self, key: Key) -> None:
        """Clears ``key``'s failures and lifts its block (administrators, tests)."""
        k = _key(key)
        N.check(_bf_reset(self.handle, k, len(k)))

    # ---- the login guard ------------------------------------------------------------------

    def login_guard_begin(self, account: Key, client: Key, at: float | int | None = None) -> LoginGuardDecision:
        """Reserves one login attempt of ``account`` (as typed: the library folds it with
        NFKC_Casefold) from ``client`` (its address: grouped by network, see ``client_key``)
        BEFORE the password check, or refuses it. An allowed attempt is already counted as a
        failure of both: call ``login_guard_succeeded`` after a successful login (a failed
        one needs nothing). A refusal is a decision, not an exception."""
        a = account.encode("utf-8") if type(account) is str else _key(account)
        c = client.encode("utf-8") if type(client) is str else _key(client)
        buf = getattr(_tls, "g", None)
        if buf is None:
            buf = _tls.g = _GuardArray()
        h = self.__dict__.get("_rl_handle")
        if h is None or self._h is None:  # type: ignore[attr-defined]
            h = self.__dict__["_rl_handle"] = c_void_p(self.handle)
        rc = _lg_begin(h, a, len(a), c, len(c), _ZERO if at is None else int(at), buf)
        if rc:
            N.check(rc)
        return _new_decision(LoginGuardDecision, _guard_unpack(buf))

    def login_guard_succeeded(self, account: Key, client: Key, decision: "LoginGuardDecision | int",
                              at: float | int | None = None) -> None:
        """The attempt ``decision`` (from ``login_guard_begin``; or its ``ticket``) succeeded:
        the client's reservation is refunded (its failures against other accounts stay) and
        the account's failures and back-off are cleared."""
        a = account.encode("utf-8") if type(account) is str else _key(account)
        c = client.encode("utf-8") if type(client) is str else _key(client)
        ticket = decision if type(decision) is int else decision.ticket  # type: ignore[union-attr]
        h = self.__dict__.get("_rl_handle")
        if h is None or self._h is None:  # type: ignore[attr-defined]
            h = self.__dict__["_rl_handle"] = c_void_p(self.handle)
        rc = _lg_succeeded(h, a, len(a), c, len(c), ticket, _ZERO if at is None else int(at))
        if rc:
            N.check(rc)

    def login_guard_cancel(self, account: Key, client: Key, decision: "LoginGuardDecision | int",
                           at: float | int | None = None) -> None:
        """The attempt was neither a success nor a failure (the password was right and a
        second factor is still due): both reservations are refunded, nothing is cleared."""
        a = _key(account)
        c = _key(client)
        ticket = decision if isinstance(decision, int) else decision.ticket
        N.check(_lg_cancel(self.handle, a, len(a), c, len(c), ticket, _at(at)))

    def client_key(self, client: Key) -> str:
        """The key a client address is counted under: IPv4 reduced to ``ipv4_prefix`` bits
        (default 32), IPv6 to ``ipv6_prefix`` bits (default 64; ``rate_limits.login_guard``),
        IPv4-mapped IPv6 as IPv4, an IPv6 zone (``%eth0``) dropped, canonical text plus
        ``/<prefix>`` unless the prefix is the whole address; anything that is not an IP
        address unchanged."""
        c = _key(client)
        buf = ctypes.create_string_buffer(_MAX_CLIENT_KEY + 1)
        n = c_size_t(0)
        N.check(_client_key(self.handle, c, len(c), buf, len(buf), ctypes.byref(n)))
        return buf.raw[: n.value].decode("utf-8")


_MAX_CLIENT_KEY: int = _abi.BITSEC_RATE_LIMIT_MAX_KEY_BYTES
