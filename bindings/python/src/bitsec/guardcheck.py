"""The request guard: token, scopes, permission and rate limit of one request in one native
call (``bitsec_guard_check``)."""
from __future__ import annotations

import ctypes
import struct
import threading
from ctypes import byref, c_int64, c_size_t, c_uint32, c_void_p
from typing import TYPE_CHECKING, Any, Callable, Mapping

from . import _abi, _accel
from . import _native as N
from .errors import InvalidArgumentError
from .permissions import REASONS as PERMISSION_REASONS
from .permissions import _packed_context
from .ratelimit import REASONS as RATE_REASONS
from .tokens import TOKEN_ERRORS, TokenClaims, _text

__all__ = ["GuardArgs", "GuardCheck", "GuardCheckMixin", "GUARD_DECISIONS"]

_guard = N.declare("bitsec_guard_check")
#: The hot path passes prebuilt C objects (thread-local below), skipping ctypes' conversion.
_guard_fast = N.unconverted(_guard)
#: The hot path's call: two structs (bitsec_guard_route, bitsec_guard_request) instead of
#: nineteen arguments, each of which ctypes would handle on every call.
_guard_request = N.unconverted(N.declare("bitsec_guard_check_request"))
#: The same call from compiled code (bitsec._speedups), for a token whose claims are known: the
#: request struct on the C stack instead of packed into the thread's buffer; None without it.
_compiled_request = _accel.bind(_guard_request)

#: Decision names by code (``BITSEC_GUARD_*``).
GUARD_DECISIONS = N.names_by_value("BITSEC_GUARD_", exclude=("NOT_CHECKED", "FLAG_", "RESULT_", "ROUTE_", "REQUEST_"))
_RESULT = struct.Struct("6i5q")
assert _RESULT.size == _abi.BITSEC_GUARD_RESULT_BYTES
#: bitsec_guard_route, and bitsec_guard_request's inputs, then its out_len and result.
_ROUTE = struct.Struct("@PNPNPNqII")
_REQUEST_IN = struct.Struct("@PNPNPNqPN")
_REQUEST_OUT = struct.Struct("@N6i5q")
assert _ROUTE.size == _abi.BITSEC_GUARD_ROUTE_BYTES
_pack_request, _REQUEST_IN_SIZE = _REQUEST_IN.pack_into, _REQUEST_IN.size
#: bitsec_guard_request's out_len, then its result (the fields, read without the length when
#: no document was asked for)
_unpack_fields, _FIELDS_AT = _RESULT.unpack_from, _REQUEST_IN_SIZE + struct.calcsize("@N")
_unpack_size = struct.Struct("@N").unpack_from
assert _REQUEST_OUT.size == struct.calcsize("@N") + _RESULT.size
assert _REQUEST_IN.size + _REQUEST_OUT.size == _abi.BITSEC_GUARD_REQUEST_BYTES
#: What the thread's request buffers hold (a longer token, key or context takes the
#: nineteen-argument call).
_TOKEN_ROOM, _KEY_ROOM, _CONTEXT_ROOM = 8192, 1024, 4096
_NOT_CHECKED = _abi.BITSEC_GUARD_NOT_CHECKED
_BUFFER_TOO_SMALL = _abi.BITSEC_E_BUFFER_TOO_SMALL
_UNKNOWN_KID = _abi.BITSEC_TOKEN_UNKNOWN_KID
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


class GuardCheck:
    """The decision of ``Runtime.guard_check``: truthy when allowed.

    ``decision`` (``allowed``, ``token_refused``, ``scope_missing``, ``permission_denied``,
    ``rate_limited``, ``rate_unavailable``), ``http_status`` (200, 401, 403, 429, 503);
    ``token_reason`` (``valid``, ``expired``, ... as ``TokenError.reason``; None when no token
    was checked), ``permission_reason`` (``granted``, ``no_grant``, ...; None when not
    checked), ``permission_rule`` (the deciding rule's index, -1 for none); ``rate_reason``
    and ``rate_limit``/``rate_remaining``/``rate_reset_after``/``rate_retry_after``/
    ``rate_degraded`` (when a take ran); ``claims`` (the verified token's ``TokenClaims``);
    ``fields`` (the raw ``bitsec_guard_result`` integers, in the C struct's order)."""

    __slots__ = ("decision", "http_status", "token_code", "permission_code", "permission_rule", "rate_code",
                 "rate_limit", "rate_remaining", "rate_reset_after", "rate_retry_after", "rate_flags", "claims",
                 "fields")

    def __init__(self, fields: tuple[int, ...], claims: TokenClaims | None) -> None:
        (d, self.http_status, self.token_code, self.permission_code, self.permission_rule, self.rate_code,
         self.rate_limit, self.rate_remaining, self.rate_reset_after, self.rate_retry_after, self.rate_flags) = fields
        self.decision = GUARD_DECISIONS[d] if 0 <= d < len(GUARD_DECISIONS) else f"unknown({d})"
        self.claims = claims
        self.fields = fields  #: the raw ``bitsec_guard_result`` fields, in the C struct's order

    def __bool__(self) -> bool:
        return self.decision == "allowed"

    @property
    def token_reason(self) -> str | None:
        c = self.token_code
        if c == _NOT_CHECKED:
            return None
        if c == 0:
            return "valid"
        cls = TOKEN_ERRORS.get(c)
        return cls.reason if cls is not None else f"unknown({c})"

    @property
    def permission_reason(self) -> str | None:
        c = self.permission_code
        return None if c == _NOT_CHECKED else PERMISSION_REASONS.get(c, "unknown")

    @property
    def rate_checked(self) -> bool:
        return self.rate_code != _NOT_CHECKED

    @property
    def rate_reason(self) -> str | None:
        c = self.rate_code
        if c == _NOT_CHECKED:
            return None
        return RATE_REASONS[c] if 0 <= c < len(RATE_REASONS) else "unknown"

    @property
    def rate_degraded(self) -> bool:
        return bool(self.rate_flags & _abi.BITSEC_RATE_LIMIT_FLAG_DEGRADED)

    def rate_headers(self) -> dict[str, str]:
        """``X-RateLimit-Limit/Remaining/Reset`` and, when limited, ``Retry-After`` (as
        ``RateLimitDecision.headers``); empty without a take."""
        if self.rate_code == _NOT_CHECKED or self.decision == "rate_unavailable":
            return {}
        h = {"X-RateLimit-Limit": str(self.rate_limit), "X-RateLimit-Remaining": str(self.rate_remaining),
             "X-RateLimit-Reset": str(self.rate_reset_after)}
        if self.decision == "rate_limited":
            h["Retry-After"] = str(self.rate_retry_after)
        return h

    def __repr__(self) -> str:
        return (f"GuardCheck(decision={self.decision!r}, http_status={self.http_status}, "
                f"token_reason={self.token_reason!r}, permission_reason={self.permission_reason!r}, "
                f"rate_reason={self.rate_reason!r})")


class _Buffers(threading.local):
    def __init__(self) -> None:
        self.result = ctypes.create_string_buffer(_RESULT.size)
        self.n = c_size_t(0)
        self.n_ref = byref(self.n)
        # the per-request lengths of the fast call, as the exact C types of the prototype
        self.token_len = c_size_t(0)
        self.ctx_len = c_size_t(0)
        self.key_len = c_size_t(0)
        self.at = c_int64(0)
        self.zero = c_size_t(0)
        # bitsec_guard_request and the bytes its pointers point to, copied in per call
        self.request = ctypes.create_string_buffer(_abi.BITSEC_GUARD_REQUEST_BYTES)
        self.request_mv = memoryview(self.request).cast("B")
        self.token = ctypes.create_string_buffer(_TOKEN_ROOM)
        self.token_mv = memoryview(self.token).cast("B")
        self.token_at = ctypes.addressof(self.token)
        self.key = ctypes.create_string_buffer(_KEY_ROOM)
        self.key_mv = memoryview(self.key).cast("B")
        self.key_at = ctypes.addressof(self.key)
        self.context = ctypes.create_string_buffer(_CONTEXT_ROOM)
        self.context_mv = memoryview(self.context).cast("B")
        self.context_at = ctypes.addressof(self.context)
        self.grow(16383)

    def grow(self, need: int) -> None:
        self.cap = need + 1
        self.buf = ctypes.create_string_buffer(self.cap)
        self.capv = c_size_t(self.cap)
        self.buf_at = ctypes.addressof(self.buf)
        # what the fast call uses, in one attribute (a thread-local's attributes cost a lookup each)
        self.fast = (self.token_mv, self.key_mv, self.context_mv, self.request_mv, self.request, self.token_at,
                     self.key_at, self.context_at, self.buf_at, self.cap)


_tls = _Buffers()


class GuardArgs:
    """The constant arguments of a guard call, encoded once (a route's requirement: scopes,
    permission, rate-limit category, cost, flags) as the exact C types of the prototype, and as
    a ``bitsec_guard_route`` over copies it holds. Immutable (a change would reach one of the
    two forms only); a copy or an unpickled one is built again from the same requirement."""

    __slots__ = ("scopes", "scopes_len", "permission", "permission_len", "category", "category_len", "cost",
                 "flags", "route", "route_at", "_held", "_given")

    def __init__(self, *, permission: str | None = None, scopes: tuple[str, ...] | list[str] = (),
                 category: str | None = None, cost: int = 1, key_by_subject: bool = False,
                 token_advisory: bool = False) -> None:
        if not (_I64_MIN <= cost <= _I64_MAX):
            raise InvalidArgumentError("cost must fit in 64 bits")
        scopes = tuple(scopes)  # read once: an iterator would be empty the second time
        self._given = (permission, scopes, category, cost, key_by_subject, token_advisory)
        self.scopes = " ".join(scopes).encode("utf-8") if scopes else b""
        self.scopes_len = c_size_t(len(self.scopes))
        self.permission = b"" if permission is None else _text(permission, "permission")
        self.permission_len = c_size_t(len(self.permission))
        self.category = b"" if category is None else _text(category, "category")
        self.category_len = c_size_t(len(self.category))
        self.cost = c_int64(cost)
        self.flags = c_uint32((_abi.BITSEC_GUARD_FLAG_KEY_BY_SUBJECT if key_by_subject else 0)
                              | (_abi.BITSEC_GUARD_FLAG_TOKEN_ADVISORY if token_advisory else 0))
        # the same as a bitsec_guard_route, over copies this object holds
        held = tuple(ctypes.create_string_buffer(b, max(len(b), 1)) for b in (self.scopes, self.permission, self.category))
        self._held = held
        route = ctypes.create_string_buffer(_ROUTE.size)
        self.route_at = ctypes.addressof(route)
        self.route = route  # (last: the object is immutable from here)
        _ROUTE.pack_into(self.route, 0, ctypes.addressof(held[0]), len(self.scopes), ctypes.addressof(held[1]),
                         len(self.permission), ctypes.addressof(held[2]), len(self.category), cost, self.flags.value, 0)

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "route"):  # (set last in __init__)
            raise AttributeError("GuardArgs is immutable: make a new one")
        object.__setattr__(self, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        # copy, deepcopy and pickle build it again: the route's pointers are this object's own
        return (_guard_args, self._given)


def _guard_args(permission: str | None, scopes: tuple[str, ...], category: str | None, cost: int,
                key_by_subject: bool, token_advisory: bool) -> GuardArgs:
    return GuardArgs(permission=permission, scopes=scopes, category=category, cost=cost,
                     key_by_subject=key_by_subject, token_advisory=token_advisory)


class GuardCheckMixin:
    """Mixed into ``bitsec.Runtime``; uses its ``handle`` and the tokens' claims memo."""

    if TYPE_CHECKING:
        @property
        def handle(self) -> int: ...

        _h: int | None
        _tokens_hp_cache: ctypes.c_void_p | None

        def _token_memo(self) -> dict[bytes, TokenClaims]: ...

        def _tokens_hp(self) -> ctypes.c_void_p: ...

        def verify_token(self, token: str | bytes, at: float | int | None = None) -> TokenClaims: ...

        def _unknown_kid_refetched(self) -> bool: ...

        _unknown_kid_hook: Callable[[], bool] | None

    def guard_check(self, token: str | bytes | None = None, *, permission: str | None = None,
                    context: Mapping[str, Any] | None = None, scopes: tuple[str, ...] | list[str] = (),
                    category: str | None = None, key: str | bytes | None = None, cost: int = 1, at: int = 0,
                    key_by_subject: bool = False, token_advisory: bool = False,
                    prepared: GuardArgs | None = None) -> GuardCheck:
        """One protected request in one native call: verifies ``token`` (through the
        verified-token cache), takes ``cost`` from the bucket of ``key`` in ``category`` (None:
        no rate limit), checks the token carries every scope of ``scopes``, then decides
        ``permission`` ("resource:action", with the resource ``context`` as
        ``check_permission``) for its principal. Every request takes, refused ones included (an
        invalid token from ``key``'s bucket, a refused scope or permission from the subject's
        with ``key_by_subject``), so refused requests meet the limit too; the answer is
        ``rate_limited`` first, then ``token_refused``, then ``scope_missing`` /
        ``permission_denied``, then ``rate_unavailable`` (only for an otherwise allowed
        request). ``key_by_subject``: the key is the user's when the token
        verified (``user:<sub>``; ``tenant:<n>:<tenant>:user:<sub>`` when it names a tenant); ``token_advisory``: an invalid token is no refusal (it only keys the
        rate limit). Decisions are results (``GuardCheck``); errors raise ``BitsecError``
        (``BackendUnavailableError`` when the revocation store cannot answer).

        ``prepared``: the per-route arguments (permission, scopes, category, cost and the two
        flags) encoded once as a ``GuardArgs``, for a caller that checks many requests
        against the same requirement (``bitsec.fastapi.GuardMiddleware`` keeps one per
        route); then those keywords must keep their defaults."""
        data = b"" if token is None else token.encode("utf-8") if type(token) is str else _text(token, "token")
        ctx = (_packed_context(context) or b"") if context else b""
        k = b"" if key is None else _text(key, "key")
        if not (_I64_MIN <= at <= _I64_MAX):
            raise InvalidArgumentError("cost and at must fit in 64 bits")
        if prepared is None:
            prepared = GuardArgs(permission=permission, scopes=scopes, category=category, cost=cost,
                                 key_by_subject=key_by_subject, token_advisory=token_advisory)
        elif (permission is not None or scopes or category is not None or cost != 1 or key_by_subject
              or token_advisory):
            raise InvalidArgumentError("give the requirement either as prepared= or as keywords, not both")
        fields, claims = self._guard_call(data, prepared, k, ctx, at)
        return GuardCheck(fields, claims)

    def _guard_call(self, data: bytes, args: GuardArgs, k: bytes, ctx: bytes = b"",
                    at: int = 0) -> tuple[tuple[int, ...], TokenClaims | None]:
        """The native call of ``guard_check`` with its arguments encoded: (the result's
        fields, the verified claims or None). Errors raise ``BitsecError``."""
        b = _tls
        if data:
            memo = self.__dict__.get("_tokens_memo")
            if memo is None:
                memo = self._token_memo()
            known = memo.get(data)
        else:
            memo = known = None
        want = known is None and bool(data)  # else the claims of this exact token are known: the decision alone
        if known is not None and _compiled_request is not None and not ctx and not at and type(data) is bytes \
                and type(k) is bytes:
            # (the same call from compiled code: the common request of a protected endpoint)
            hp = self._tokens_hp_cache
            if hp is None or self._h is None:
                hp = self._tokens_hp()  # (ClosedError after close())
            r = _compiled_request(hp.value, args.route_at, data, k)
            if type(r) is tuple:
                return r, (known if r[2] == 0 else None)
            N.check(r)  # (r is a nonzero status here: raises)
            raise RuntimeError(f"bitsec_guard_check_request returned {r}")
        n, kn, cn = len(data), len(k), len(ctx)
        if n <= _TOKEN_ROOM and kn <= _KEY_ROOM and cn <= _CONTEXT_ROOM:  # (the thread's buffers)
            token_mv, key_mv, context_mv, request_mv, request, token_at, key_at, context_at, buf_at, cap = b.fast
            token_mv[:n] = data
            key_mv[:kn] = k
            if cn:
                context_mv[:cn] = ctx
            _pack_request(request_mv, 0, token_at, n, key_at, kn, context_at, cn, at, buf_at if want else 0,
                          cap if want else 0)
            hp = self._tokens_hp_cache
            if hp is None or self._h is None:
                hp = self._tokens_hp()  # (ClosedError after close())
            rc = _guard_request(hp, args.route, request)
            fields = _unpack_fields(request_mv, _FIELDS_AT)
            if known is not None and not rc:  # (the common request: the claims of this token are known)
                return fields, (known if fields[2] == 0 else None)
            size = _unpack_size(request_mv, _REQUEST_IN_SIZE)[0] if want else 0
        else:
            b.token_len.value = n
            b.ctx_len.value = cn
            b.key_len.value = kn
            b.at.value = at
            buf, capv = (b.buf, b.capv) if want else (None, b.zero)
            rc = _guard_fast(c_void_p(self.handle), data, b.token_len, args.scopes, args.scopes_len,
                             args.permission, args.permission_len, ctx, b.ctx_len, args.category, args.category_len,
                             k, b.key_len, args.cost, b.at, args.flags, b.result, buf, capv, b.n_ref)
            fields = _RESULT.unpack_from(b.result)
            size = b.n.value
        claims: TokenClaims | None = None
        if rc == _BUFFER_TOO_SMALL and want and fields[2] == 0:
            # Decided (and taken from the bucket); only the document did not fit: read it
            # through the verify call (a cache hit), never by deciding again.
            b.grow(size)
            claims = self.verify_token(data, at=at or None)
        elif rc:
            N.check(rc)
        elif fields[2] == 0 and data:
            if known is not None:
                claims = known
            else:
                claims = TokenClaims._from_result(ctypes.string_at(b.buf, size))
                if memo is not None:
                    if len(memo) >= self.__dict__.get("_tokens_memo_max", 4096):
                        memo.clear()
                    memo[data] = claims
        elif fields[2] == _UNKNOWN_KID and self._unknown_kid_hook is not None:
            # Refused for a kid the keys lack: a JWKS refresher's hook asks its thread for a
            # (rate-limited) refetch and returns at once; the decision stands.
            self._unknown_kid_refetched()
        return fields, claims
