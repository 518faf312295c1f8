"""The tokens capability of ``bitsec.Runtime``: JWT/JWS verification, issuing, revocation,
key reloads, and a JWKS refresher.

``rt.verify_token(token)`` makes one C call. The decision and the claims come back in a
per-thread buffer; the claims JSON is parsed once per distinct token (a small memo keyed on
the token bytes: the claims of a token never change, and the decision is still made by the
library on every call, so expiry, audience and revocation are always checked).
"""
from __future__ import annotations

import ctypes
import json
import logging
import math
import threading
import time
import urllib.request
from ctypes import POINTER, byref, c_char_p, c_int32, c_int64, c_size_t
from typing import Any, Callable, Iterator, Mapping, TYPE_CHECKING, Union, cast

from . import _abi
from . import _native as N
from .errors import BitsecError

_log = logging.getLogger("bitsec.tokens")
_handle = N.handle
_verify = N.declare("bitsec_verify_token")
_verify_at = N.declare("bitsec_verify_token_at")
_reason_name = N.declare("bitsec_token_reason_name")
_sign = N.declare("bitsec_token_sign")
_issue_pair = N.declare("bitsec_token_issue_pair")
_refresh = N.declare("bitsec_token_refresh")
_revoke = N.declare("bitsec_token_revoke")
_revoke_tok = N.declare("bitsec_token_revoke_token")
_revoke_session = N.declare("bitsec_token_revoke_session")
_revoke_subject = N.declare("bitsec_token_revoke_subject")
_revoke_subject_in_tenant = N.declare("bitsec_token_revoke_subject_in_tenant")
_is_revoked = N.declare("bitsec_token_is_revoked")
_keys_reload = N.declare("bitsec_token_keys_reload")
# The verify hot path skips ctypes' per-argument conversion (N.unconverted): it passes only
# objects of exactly the declared C types (a cached c_void_p handle, bytes, per-thread
# c_size_t/c_int64 objects, byref of c_int32/c_size_t, the buffer's address as a pointer).
_verify_fast = N.unconverted(_verify)
#: What the fast path passes for each parameter (checked by tests/test_tokens.py): bytes for
#: c_char_p inputs, ready instances of the declared simple types, "buffer" (a c_void_p holding
#: the address of the per-thread output buffer, or None for "the decision only"), "byref".
FAST_ARGTYPES = {
    "bitsec_verify_token": [ctypes.c_void_p, c_char_p, c_size_t, c_int64, "byref", "buffer", c_size_t, "byref"],
}
_AT_NOW = c_int64(0)
_ZERO = c_size_t(0)

_BUFFER_TOO_SMALL: int = _abi.BITSEC_E_BUFFER_TOO_SMALL
_UNKNOWN_KID: int = _abi.BITSEC_TOKEN_UNKNOWN_KID

Claims = Union[Mapping[str, Any], str, bytes]


# ---- decisions ----------------------------------------------------------------------------

class TokenError(BitsecError, ValueError):
    """A token was refused. ``reason`` is the stable reason name (``"expired"``, ...),
    ``reason_code`` the BITSEC_TOKEN_* value. Never carries the token or its claims."""

    reason = "invalid"
    reason_code = -1
    message = "Invalid token"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.message)


class MalformedTokenError(TokenError):
    reason, reason_code, message = "malformed", _abi.BITSEC_TOKEN_MALFORMED, "Malformed token"


class TokenTooLargeError(TokenError):
    reason, reason_code, message = "too_large", _abi.BITSEC_TOKEN_TOO_LARGE, "Token is too large"


class UnsupportedAlgorithmError(TokenError):
    reason, reason_code, message = "unsupported_alg", _abi.BITSEC_TOKEN_UNSUPPORTED_ALG, "Unsupported token algorithm"


class AlgorithmMismatchError(TokenError):
    reason, reason_code, message = "alg_mismatch", _abi.BITSEC_TOKEN_ALG_MISMATCH, "Token algorithm does not match its key"


class UnknownKeyError(TokenError):
    reason, reason_code, message = "unknown_kid", _abi.BITSEC_TOKEN_UNKNOWN_KID, "Unknown signing key"


class InvalidSignatureError(TokenError):
    reason, reason_code, message = "bad_signature", _abi.BITSEC_TOKEN_BAD_SIGNATURE, "Signature verification failed"


class ExpiredTokenError(TokenError):
    reason, reason_code, message = "expired", _abi.BITSEC_TOKEN_EXPIRED, "Token has expired"


class TokenNotYetValidError(TokenError):
    reason, reason_code, message = "not_yet_valid", _abi.BITSEC_TOKEN_NOT_YET_VALID, "Token is not yet valid"


class TokenIssuedInFutureError(TokenError):
    reason, reason_code, message = "issued_in_future", _abi.BITSEC_TOKEN_ISSUED_IN_FUTURE, "Token was issued in the future"


class WrongIssuerError(TokenError):
    reason, reason_code, message = "wrong_issuer", _abi.BITSEC_TOKEN_WRONG_ISSUER, "Invalid issuer"


class WrongAudienceError(TokenError):
    reason, reason_code, message = "wrong_audience", _abi.BITSEC_TOKEN_WRONG_AUDIENCE, "Invalid audience"


class MissingClaimError(TokenError):
    reason, reason_code, message = "missing_claim", _abi.BITSEC_TOKEN_MISSING_CLAIM, "Token is missing a required claim"


class InvalidClaimError(TokenError):
    reason, reason_code, message = "invalid_claim", _abi.BITSEC_TOKEN_INVALID_CLAIM, "Token has an invalid claim"


class RevokedTokenError(TokenError):
    reason, reason_code, message = "revoked", _abi.BITSEC_TOKEN_REVOKED, "Token has been revoked"


class CritUnsupportedError(TokenError):
    reason, reason_code, message = "crit_unsupported", _abi.BITSEC_TOKEN_CRIT_UNSUPPORTED, "Token requires an unsupported extension"


class WrongTokenTypeError(TokenError):
    reason, reason_code, message = "wrong_type", _abi.BITSEC_TOKEN_WRONG_TYPE, "Wrong token type"


class MissingKeyIdError(TokenError):
    reason, reason_code, message = "missing_kid", _abi.BITSEC_TOKEN_MISSING_KID, "Token has no key id (kid)"


TOKEN_ERRORS: dict[int, type[TokenError]] = {
    cls.reason_code: cls for cls in (
        MalformedTokenError, TokenTooLargeError, UnsupportedAlgorithmError, AlgorithmMismatchError,
        UnknownKeyError, InvalidSignatureError, ExpiredTokenError, TokenNotYetValidError,
        TokenIssuedInFutureError, WrongIssuerError, WrongAudienceError, MissingClaimError,
        InvalidClaimError, RevokedTokenError, CritUnsupportedError, WrongTokenTypeError, MissingKeyIdError,
    )
}


def token_error(code: int) -> TokenError:
    cls = TOKEN_ERRORS.get(code)
    if cls is None:
        e = TokenError(f"Invalid token (reason {code})")
        e.reason_code = code
        return e
    return cls()


class TokenClaims(Mapping[str, Any]):
    """The verified claims, read-only, plus the fields used on every request:
    ``subject``, ``roles`` (from ``role``/``roles``), ``scopes`` (the first of ``scope`` split
    on spaces, ``scopes``, ``scp``; empty when the token has none), ``tenant_id`` (or
    ``tenant``), ``jti`` and ``expires_at``.

    Built from the library's result document, the hot fields are parsed at once (a small
    prefix of the document) and the full claims object only on first access as a mapping."""

    __slots__ = ("_c", "_raw", "_audit_members", "subject", "roles", "scopes", "tenant_id", "jti", "expires_at")

    def __init__(self, doc: dict[str, Any]) -> None:
        self._c: dict[str, Any] | None = doc["claims"]
        self._raw: bytes | None = None
        self._hot(doc)

    def _hot(self, doc: dict[str, Any]) -> None:
        self.subject: str | None = doc["sub"]
        self.roles: tuple[str, ...] = tuple(doc["roles"])
        scope = doc["scope"]  # null when the token has neither scope nor scp
        self.scopes: tuple[str, ...] = tuple(scope) if scope is not None else ()
        self.tenant_id: str | None = doc["tenant_id"]
        self.jti: str | None = doc["jti"]
        self.expires_at: int | None = doc["exp"]

    @classmethod
    def _from_result(cls, raw: bytes) -> "TokenClaims":
        """From ``{"sub":..,"roles":..,"scope":..,"tenant_id":..,"jti":..,"exp":..,"claims":{..}}``
        as bitsec_verify_token writes it. Inside a JSON string every '"' is escaped, so the
        first ``,"claims":`` is the member separator: the prefix before it is the hot fields."""
        i = raw.find(b',"claims":')
        if i < 0 or raw[-1:] != b"}":
            return cls(json.loads(raw))
        self = cls.__new__(cls)
        self._c = None
        self._raw = raw[i + 10 : -1]
        self._hot(json.loads(raw[:i] + b"}"))
        return self

    @property
    def _claims(self) -> dict[str, Any]:
        c = self._c
        if c is None:
            c = json.loads(self._raw)  # type: ignore[arg-type]
            self._c = c  # _raw stays: another thread may be reading it right now
        return c

    def __getitem__(self, key: str) -> Any:
        return self._claims[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._claims)

    def __len__(self) -> int:
        return len(self._claims)

    def __contains__(self, key: object) -> bool:
        return key in self._claims

    def get(self, key: str, default: Any = None) -> Any:
        return self._claims.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the claims as plain JSON values."""
        return cast("dict[str, Any]", json.loads(json.dumps(self._claims)))

    def __repr__(self) -> str:
        return f"<TokenClaims sub={self.subject!r} keys={sorted(self._claims)}>"


# ---- per-thread output buffers -------------------------------------------------------------

class _Buffers(threading.local):
    def __init__(self) -> None:
        self.reason = c_int32(0)
        self.n = c_size_t(0)
        self.reason_ref = byref(self.reason)
        self.n_ref = byref(self.n)
        self.token_len = c_size_t(0)
        self.at = c_int64(0)
        self.grow(16383)

    def grow(self, need: int) -> None:
        self.cap = need + 1
        self.buf = ctypes.create_string_buffer(self.cap)
        self.bufp = ctypes.c_void_p(ctypes.addressof(self.buf))
        self.capv = c_size_t(self.cap)


_tls = _Buffers()
_MEMO_MAX = 4096
#: The largest memo, whatever the configured cache size (the memo holds parsed claims objects).
_MEMO_CAP = 65536


def _text(value: str | bytes, name: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"{name} must be str or bytes, not {type(value).__name__}")


def _claims_bytes(claims: Claims) -> bytes:
    if isinstance(claims, Mapping):
        return json.dumps(dict(claims), separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    return _text(claims, "claims")


def _instant(at: float | int | None) -> int:
    return 0 if at is None else int(at)


class TokensMixin:
    """Mixed into ``bitsec.Runtime``; uses its ``handle``."""

    #: Called when a token is refused for an unknown ``kid``; returns True when it changed the
    #: key set (then the token is verified once more). Set by a JWKS refresher
    #: (``bitsec.fastapi.JWKSBackgroundRefresher``, whose hook only asks its background thread
    #: for a rate-limited refetch and returns False: verify_token may run on an event loop and
    #: must not wait for a download); None: no refetch.
    _unknown_kid_hook: "Callable[[], bool] | None" = None

    if TYPE_CHECKING:
        @property
        def handle(self) -> int: ...

    def _unknown_kid_refetched(self) -> bool:
        """Calls ``_unknown_kid_hook``: True when it changed the key set. A hook that raises
        counts as no change (logged): the token is refused as unknown, never an error."""
        hook = self._unknown_kid_hook
        try:
            return hook is not None and bool(hook())
        except Exception:  # noqa: BLE001
            _log.exception("the unknown-kid hook failed")
            return False

    def _token_memo(self) -> dict[bytes, TokenClaims]:
        memo = self.__dict__.get("_tokens_memo")
        if memo is None:
            # As many parsed claims as the library's verified-token cache holds tokens (at
            # least _MEMO_MAX, at most _MEMO_CAP): a rotation of tokens that fits the cache
            # also fits the memo, so a cache hit never parses the claims again.
            size = _MEMO_MAX
            try:
                describe = getattr(self, "describe")
                configured = int((describe().get("sections", {}).get("tokens") or {}).get("cache_size") or 0)
                size = max(_MEMO_MAX, min(configured, _MEMO_CAP))
            except Exception:  # noqa: BLE001 - a runtime that cannot describe itself keeps the default
                pass
            self.__dict__.setdefault("_tokens_memo_max", size)
            memo = self.__dict__.setdefault("_tokens_memo", {})
        return cast("dict[bytes, TokenClaims]", memo)

    _tokens_hp_cache: ctypes.c_void_p | None = None

    def _tokens_hp(self) -> ctypes.c_void_p:
        """The handle as a c_void_p, cached (ClosedError after close())."""
        h = self.handle
        hp = self._tokens_hp_cache
        if hp is None or hp.value != h:
            hp = ctypes.c_void_p(h)
            self._tokens_hp_cache = hp
        return hp

    def verify_token(self, token: str | bytes, at: float | int | None = None) -> TokenClaims:
        """Verifies a JWT (signature, then exp/nbf/iat with the leeway, issuer, audience,
        required claims and revocation) at ``at`` (Unix seconds, default now; a float keeps
        its fraction: the time claims are compared to the nanosecond). Returns the
        claims; raises a ``TokenError`` subclass carrying ``.reason`` when the token is
        refused (``ExpiredTokenError``: "Token has expired")."""
        tt = type(token)
        if tt is str:
            data = token.encode("utf-8")  # type: ignore[union-attr]
        elif tt is bytes:
            data = token
        else:
            data = bytes(_text(token, "token"))  # subclasses become exact bytes; others: TypeError
        b = _tls
        b.token_len.value = len(data)
        if at is None:
            atv = _AT_NOW
        else:
            sec = int(at)
            if sec != at:
                return self._verify_token_at(data, at)
            atv = b.at
            atv.value = sec
        hp = self._tokens_hp_cache
        if hp is None or self._h is None:  # type: ignore[attr-defined]
            hp = self._tokens_hp()
        memo = self.__dict__.get("_tokens_memo")
        if memo is None:
            memo = self._token_memo()
        claims = memo.get(data)
        if claims is not None:
            # The claims of this exact token are known: ask for the decision only (the
            # library still checks signature or cache, time claims, audience, revocation).
            rc = _verify_fast(hp, data, b.token_len, atv, b.reason_ref, None, _ZERO, b.n_ref)
            if rc:
                N.check(rc)
            r = b.reason.value
            if r:
                raise token_error(r)
            return claims
        rc = _verify_fast(hp, data, b.token_len, atv, b.reason_ref, b.bufp, b.capv, b.n_ref)
        if rc:
            if rc == _BUFFER_TOO_SMALL and b.reason.value == 0:
                b.grow(b.n.value)
                rc = _verify_fast(hp, data, b.token_len, atv, b.reason_ref, b.bufp, b.capv, b.n_ref)
            N.check(rc)
        r = b.reason.value
        if r:
            if r == _UNKNOWN_KID and self._unknown_kid_hook is not None and self._unknown_kid_refetched():
                # The key set changed (a rotation): verify once more with the new keys.
                return self.verify_token(token, at)
            raise token_error(r)
        claims = TokenClaims._from_result(ctypes.string_at(b.buf, b.n.value))
        if len(memo) >= self.__dict__.get("_tokens_memo_max", _MEMO_MAX):
            memo.clear()
        memo[data] = claims
        return claims

    def _verify_token_at(self, data: bytes, at: float) -> TokenClaims:
        """verify_token at an instant with a fraction of a second (bitsec_verify_token_at:
        the time claims are compared to the nanosecond)."""
        sec = math.floor(at)
        nsec = min(max(int(round((at - sec) * 1e9)), 0), 999_999_999)
        reason = c_int32(0)
        n = c_size_t(0)
        cap = 2 * len(data) + 1024
        while True:
            buf = ctypes.create_string_buffer(cap)
            rc = _verify_at(self.handle, data, len(data), sec, nsec, byref(reason), buf, cap, byref(n))
            if rc == _BUFFER_TOO_SMALL and reason.value == 0 and n.value >= cap:
                cap = n.value + 1
                continue
            N.check(rc)
            break
        if reason.value:
            if reason.value == _UNKNOWN_KID and self._unknown_kid_hook is not None and self._unknown_kid_refetched():
                return self._verify_token_at(data, at)
            raise token_error(reason.value)
        return TokenClaims._from_result(buf.raw[: n.value])

    def sign_token(self, claims: Claims, kid: str | None = None) -> str:
        """Signs claims (a mapping, or JSON text) into a compact JWS with the key ``kid``
        (default: ``tokens.issuing.kid``, or the only key able to sign). Adds no claim."""
        data = _claims_bytes(claims)
        k = _text(kid, "kid") if kid else None
        out = N.call_with_output(_sign, self.handle, data, len(data), k, len(k) if k else 0, initial=2048)
        return out.decode("ascii")

    def issue_token_pair(self, claims: Claims, kid: str | None = None, at: float | int | None = None) -> dict[str, Any]:
        """Issues an access token (30 min by default) and a refresh token (7 days) sharing a
        ``session_id``, each with a random ``jti``. Returns ``{"access_token",
        "refresh_token", "token_type": "Bearer", "expires_in", "refresh_expires_in",
        "session_id"}``."""
        data = _claims_bytes(claims)
        k = _text(kid, "kid") if kid else None
        out = N.call_with_output(_issue_pair, self.handle, data, len(data), k, len(k) if k else 0, _instant(at),
                                 initial=8192)
        return cast("dict[str, Any]", json.loads(out))

    def refresh_token_pair(self, refresh_token: str | bytes, kid: str | None = None,
                           at: float | int | None = None) -> dict[str, Any]:
        """Exchanges a refresh token for a new pair and revokes it (a refresh token works
        once). Raises a ``TokenError`` when it is refused (``RevokedTokenError`` when it was
        already used, ``WrongTokenTypeError`` for an access token)."""
        data = _text(refresh_token, "refresh_token")
        k = _text(kid, "kid") if kid else None
        reason = c_int32(0)
        n = c_size_t(0)
        # The output size depends on tokens.max_token_bytes: the first call, with a one-byte
        # buffer, only asks for it (the library checks the buffer before it verifies or
        # revokes anything and reports the size needed with BITSEC_E_BUFFER_TOO_SMALL).
        cap = 1
        for _ in range(3):
            buf = ctypes.create_string_buffer(cap)
            rc = _refresh(self.handle, data, len(data), k, len(k) if k else 0, _instant(at), byref(reason), buf, cap,
                          byref(n))
            if rc == _BUFFER_TOO_SMALL and n.value > cap:
                cap = n.value
                continue
            N.check(rc)
            if reason.value:
                raise token_error(reason.value)
            return cast("dict[str, Any]", json.loads(buf.raw[: n.value]))
        raise RuntimeError("bitsec_token_refresh kept asking for a larger buffer")

    def revoke_token(self, token: str | bytes | None = None, *, jti: str | None = None, exp: int | None = None,
                     at: float | int | None = None) -> bool:
        """Revokes a token until its expiry. Give the token: it is verified (any type, so a
        refresh token too), then its ``jti`` is revoked with its subject; when the
        in-process table of single jtis is full, its session (else its subject) is revoked
        instead, never an error. An already expired or revoked token returns False; a
        refused token raises its ``TokenError``. Or give a bare ``jti`` and optionally
        ``exp`` (in Redis this matches tokens without ``sub`` only: prefer the token).
        Returns True when newly revoked."""
        if token is not None:
            if jti is not None:
                raise TypeError("give either token or jti")
            data = _text(token, "token")
            reason = c_int32(0)
            newly = c_int32(0)
            N.check(_revoke_tok(self.handle, data, len(data), _instant(at), byref(reason), byref(newly)))
            if reason.value in (0, ExpiredTokenError.reason_code, RevokedTokenError.reason_code):
                return reason.value == 0 and bool(newly.value)
            raise token_error(reason.value)
        if not jti:
            raise TypeError("revoke_token needs a token or a jti")
        j = jti.encode("utf-8")
        newly = c_int32(0)
        N.check(_revoke(self.handle, j, len(j), int(exp or 0), _instant(at), byref(newly)))
        return bool(newly.value)

    def revoke_session(self, session_id: str, subject: str, at: float | int | None = None) -> bool:
        """Revokes every token with this ``session_id`` and ``sub`` issued at or before
        ``at`` (default now; that whole second included). Tokens the session gets later
        stay valid. Never fails for lack of room (in process it widens to the subject).
        Returns True when this moved the session's revocation forward."""
        s = _text(session_id, "session_id")
        u = _text(subject, "subject")
        newly = c_int32(0)
        N.check(_revoke_session(self.handle, s, len(s), u, len(u), _instant(at), byref(newly)))
        return bool(newly.value)

    def revoke_subject(self, subject: str, not_before: float | int | None = None,
                       at: float | int | None = None, *, tenant: str | None = None) -> bool:
        """Revokes every token with this ``sub`` issued at or before ``not_before`` (default
        ``at``, default now; that whole second included): for a disabled, deleted or
        anonymised account. ``tenant``: only the tokens of that tenant (their ``tenant_id``,
        else ``tenant`` claim), where user names are only unique within a tenant; None (the
        default): the subject in every tenant. Returns True when this moved the subject's
        epoch forward."""
        u = _text(subject, "subject")
        newly = c_int32(0)
        if tenant is None:
            N.check(_revoke_subject(self.handle, u, len(u), int(not_before or 0), _instant(at), byref(newly)))
        else:
            t = _text(tenant, "tenant")
            N.check(_revoke_subject_in_tenant(self.handle, u, len(u), t, len(t), int(not_before or 0), _instant(at),
                                              byref(newly)))
        return bool(newly.value)

    def is_token_revoked(self, jti: str, at: float | int | None = None) -> bool:
        j = jti.encode("utf-8")
        out = c_int32(0)
        N.check(_is_revoked(self.handle, j, len(j), _instant(at), byref(out)))
        return bool(out.value)

    def reload_token_keys(self, jwks: Mapping[str, Any] | str | bytes) -> None:
        """Replaces the JWK Set keys atomically (the statically configured ``keys`` stay) and
        clears the verified-token cache."""
        data = json.dumps(dict(jwks)).encode("utf-8") if isinstance(jwks, Mapping) else _text(jwks, "jwks")
        N.check(_keys_reload(self.handle, data, len(data)))
        self._token_memo().clear()


def token_reason_name(code: int) -> str:
    return (_reason_name(code) or b"unknown").decode()


# ---- JWKS refresher ------------------------------------------------------------------------

class JWKSRefresher:
    """Keeps a runtime's JWK Set in step with a JWKS URL.

    - The set is fetched on first use and again once ``ttl`` seconds (ADR-007: 3600) have
      passed; a failed refetch keeps the current keys and is retried after ``retry_after``.
    - A token with an unknown ``kid`` triggers one refetch (a key rotation), but at most one
      per ``unknown_kid_cooldown`` seconds, so tokens with random kids cannot make every
      request fetch.
    - Only ``http``/``https`` URLs; the response is bounded to 4 MiB. Keys are trusted
      because this URL is configured: ``jku``/``x5u`` headers are never followed.

    Thread safe: concurrent callers share one fetch at a time. The fetches (the ``ttl``
    refresh, an unknown ``kid``) run in the calling thread, which waits for them (up to
    ``timeout``): never call its ``verify_token`` from an event loop. A FastAPI service uses
    ``bitsec.fastapi.bitsec_jwks_lifespan`` / ``JWKSBackgroundRefresher`` instead, whose
    background thread fetches and whose requests never wait.
    """

    MAX_BYTES = 4 << 20

    def __init__(self, runtime: Any, url: str, *, ttl: float = 3600.0, unknown_kid_cooldown: float = 60.0,
                 timeout: float = 5.0, retry_after: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("JWKS URL must be http:// or https://")
        self.runtime = runtime
        self.url = url
        self.ttl = ttl
        self.unknown_kid_cooldown = unknown_kid_cooldown
        self.timeout = timeout
        self.retry_after = retry_after
        self._lock = threading.Lock()
        self._next_refresh = 0.0
        self._last_unknown_fetch = float("-inf")
        self.fetches = 0
        self.last_error: Exception | None = None

    def _fetch(self) -> None:
        req = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (scheme checked)
            body = resp.read(self.MAX_BYTES + 1)
        if len(body) > self.MAX_BYTES:
            raise ValueError("JWKS response exceeds 4 MiB")
        self.fetches += 1
        self.runtime.reload_token_keys(body)

    def refresh(self, force: bool = False) -> bool:
        """Fetches the set if it is due (or ``force``); True when new keys were loaded."""
        now = time.monotonic()
        if not force and now < self._next_refresh:
            return False
        with self._lock:
            now = time.monotonic()
            if not force and now < self._next_refresh:
                return False
            try:
                self._fetch()
            except Exception as e:  # keep serving with the current keys
                self.last_error = e
                self._next_refresh = now + self.retry_after
                if force:
                    raise
                return False
            self.last_error = None
            self._next_refresh = now + self.ttl
            return True

    def verify_token(self, token: str | bytes, at: float | int | None = None) -> TokenClaims:
        """``runtime.verify_token`` with the set kept fresh and one refetch on an unknown kid."""
        if time.monotonic() >= self._next_refresh:
            self.refresh()
        try:
            return cast(TokenClaims, self.runtime.verify_token(token, at=at))
        except UnknownKeyError:
            now = time.monotonic()
            with self._lock:
                if now - self._last_unknown_fetch < self.unknown_kid_cooldown:
                    raise
                self._last_unknown_fetch = now
            try:
                self.refresh(force=True)
            except Exception:
                pass
            return cast(TokenClaims, self.runtime.verify_token(token, at=at))
