"""Field encryption (issue 7): ``rt.encrypt_field`` / ``rt.decrypt_field``, ``rt.rewrap_field``,
keyring reload, and Fernet compatibility. See docs/fields.md for the token format.

A token that does not decrypt raises a :class:`FieldDecryptError` subclass whose ``reason``
is the library's stable reason (``tampered``, ``wrong_context``, ``unknown_key``,
``retired_key``, ``malformed``, ``expired``, ``not_yet_valid``); messages never contain the
plaintext or a key. Every operation is one C call; the output buffers are per thread.
"""
from __future__ import annotations

import ctypes
import json
import math
import threading
from ctypes import POINTER, c_char_p, c_int32, c_int64, c_size_t, c_uint32, create_string_buffer, string_at
from typing import TYPE_CHECKING, Any, Literal, Mapping, Union, overload

from . import _abi
from . import _native as N
from .errors import BitsecError

Bytesish = Union[bytes, bytearray, memoryview, str]

#: Flags of bitsec_encrypt_field (include/bitsec.h).
FIELD_BINARY: int = _abi.BITSEC_FIELD_BINARY
FIELD_DETERMINISTIC: int = _abi.BITSEC_FIELD_DETERMINISTIC
#: Limits (include/bitsec.h).
FIELD_MAX_PLAINTEXT: int = _abi.BITSEC_FIELD_MAX_PLAINTEXT
FIELD_MAX_CONTEXT: int = _abi.BITSEC_FIELD_MAX_CONTEXT
FIELD_MAX_KEY_ID: int = _abi.BITSEC_FIELD_MAX_KEY_ID
FIELD_MAX_TOKEN: int = _abi.BITSEC_FIELD_MAX_TOKEN
FERNET_MAX_TOKEN: int = _abi.BITSEC_FERNET_MAX_TOKEN

_sz = POINTER(c_size_t)
_i32 = POINTER(c_int32)
_encrypt = N.declare("bitsec_encrypt_field")
_decrypt = N.declare("bitsec_decrypt_field")
_rewrap = N.declare("bitsec_field_rewrap")
_bound = N.declare("bitsec_field_bound")
_reason_name = N.declare("bitsec_field_reason_name")
_reload = N.declare("bitsec_field_keys_reload")
# The deprecated C names of renamed functions (exported for the rest of ABI version 1): declared
# so that every export of the header has its prototype here; never called.
N.declare("bitsec_rewrap_field")
N.declare("bitsec_fields_reload")
_fernet_encrypt = N.declare("bitsec_fernet_encrypt")
_fernet_decrypt = N.declare("bitsec_fernet_decrypt")
_fernet_decrypt_ttl = N.declare("bitsec_fernet_decrypt_ttl")
_fernet_rotate = N.declare("bitsec_fernet_rotate")
_fernet_migrate = N.declare("bitsec_fernet_migrate")
_fernet_migrate_ttl = N.declare("bitsec_fernet_migrate_ttl")
_fernet_bound = N.declare("bitsec_fernet_bound")
#: The ttl of bitsec_fernet_decrypt_ttl / bitsec_fernet_migrate_ttl meaning "no limit".
FERNET_NO_TTL: int = _abi.BITSEC_FERNET_NO_TTL
_INT64_MAX = (1 << 63) - 1


# The two hot paths skip ctypes' argument conversion (N.unconverted): about 1.5 us for nine
# arguments, more than the encryption itself. They pass only exactly-typed objects
# (per-thread c_size_t / c_uint32 / c_void_p instances and bytes); tests/test_fields.py checks
# that what they pass matches the declared argtypes (FAST_ARGTYPES below).
_encrypt_fast = N.unconverted(_encrypt)
_decrypt_fast = N.unconverted(_decrypt)
#: What the fast paths pass for each parameter: bytes for c_char_p inputs, ready instances of
#: the declared simple types, "buffer" (a c_void_p holding the address of the per-thread
#: output buffer, for a declared ``char *``/``uint8_t *``) and "byref" (for a POINTER(...)).
FAST_ARGTYPES = {
    "bitsec_encrypt_field": [ctypes.c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, c_uint32, "buffer", c_size_t, "byref"],
    "bitsec_decrypt_field": [ctypes.c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, "buffer", c_size_t, "byref", "byref"],
}
_FLAG_OBJS = tuple(c_uint32(i) for i in range(4))
_FLAG0 = _FLAG_OBJS[0]


# ---- decisions as exceptions ------------------------------------------------------------

class FieldDecryptError(BitsecError, ValueError):
    """A token did not decrypt. ``reason`` is the stable reason name, ``reason_code`` the
    BITSEC_FIELD_REASON_* value. Never contains plaintext, keys or the context."""

    reason: str = "unknown"
    reason_code: int = -1

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or f"field token rejected: {self.reason}")


class FieldMalformedError(FieldDecryptError):
    reason, reason_code = "malformed", _abi.BITSEC_FIELD_REASON_MALFORMED


class FieldTamperedError(FieldDecryptError):
    reason, reason_code = "tampered", _abi.BITSEC_FIELD_REASON_TAMPERED


class FieldWrongContextError(FieldDecryptError):
    reason, reason_code = "wrong_context", _abi.BITSEC_FIELD_REASON_WRONG_CONTEXT


class FieldUnknownKeyError(FieldDecryptError):
    reason, reason_code = "unknown_key", _abi.BITSEC_FIELD_REASON_UNKNOWN_KEY


class FieldRetiredKeyError(FieldDecryptError):
    reason, reason_code = "retired_key", _abi.BITSEC_FIELD_REASON_RETIRED_KEY


class FieldExpiredError(FieldDecryptError):
    reason, reason_code = "expired", _abi.BITSEC_FIELD_REASON_EXPIRED


class FieldNotYetValidError(FieldDecryptError):
    reason, reason_code = "not_yet_valid", _abi.BITSEC_FIELD_REASON_NOT_YET_VALID


_BY_REASON: dict[int, type[FieldDecryptError]] = {
    c.reason_code: c for c in (FieldMalformedError, FieldTamperedError, FieldWrongContextError, FieldUnknownKeyError,
                               FieldRetiredKeyError, FieldExpiredError, FieldNotYetValidError)
}


def _reject(code: int) -> FieldDecryptError:
    cls = _BY_REASON.get(code)
    if cls is None:
        e = FieldDecryptError(f"field token rejected: reason {code}")
        e.reason_code = code
        return e
    return cls()


# ---- helpers ------------------------------------------------------------------------------

def _b(v: Bytesish, name: str) -> bytes:
    if type(v) is bytes:
        return v
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    raise TypeError(f"{name} must be bytes or str, not {type(v).__name__}")


def _flags(deterministic: bool, binary: bool) -> int:
    return (FIELD_DETERMINISTIC if deterministic else 0) | (FIELD_BINARY if binary else 0)


def field_bound(plaintext_len: int, *, deterministic: bool = False, binary: bool = False) -> int:
    """The largest token ``encrypt_field`` produces for ``plaintext_len`` bytes (0 if over the limit)."""
    return int(_bound(plaintext_len, _flags(deterministic, binary)))


def fernet_bound(plaintext_len: int) -> int:
    """The length of the Fernet token for ``plaintext_len`` bytes."""
    return int(_fernet_bound(plaintext_len))


def reason_name(code: int) -> str:
    """The name of a BITSEC_FIELD_REASON_* code."""
    return (_reason_name(code) or b"unknown").decode()


def field_context(*parts: object) -> str:
    """Builds a context from components (``table.column``, primary key, tenant, ...), joined
    with ``|``; ``\\`` and ``|`` inside a component are escaped, so distinct component lists
    never give the same context. ``None`` becomes the empty component."""
    out = []
    for p in parts:
        s = "" if p is None else (p.decode("utf-8") if isinstance(p, bytes) else str(p))
        out.append(s.replace("\\", "\\\\").replace("|", "\\|"))
    return "|".join(out)


def field_key_id(token: Bytesish) -> str:
    """The key id a token names (no decryption, no authentication): to find rows still under
    an old key during a migration."""
    import base64
    raw = _b(token, "token")
    if raw[:1] not in (b"\x01", b"\x02"):
        try:
            raw = base64.urlsafe_b64decode(raw[:48] + b"=" * (-len(raw[:48]) % 4))
        except Exception as e:  # noqa: BLE001
            raise FieldMalformedError() from e
    if len(raw) < 2 or raw[0] not in (1, 2) or not 1 <= raw[1] <= FIELD_MAX_KEY_ID or len(raw) < 2 + raw[1]:
        raise FieldMalformedError()
    return raw[2:2 + raw[1]].decode("ascii", "replace")


class _Scratch:
    """Per-thread output buffer and out-parameters, reused by every call on the thread. The
    buffer's capacity is passed as a ready ``c_size_t`` (it only changes when it grows)."""

    __slots__ = ("cap", "buf", "bufp", "mv", "zeros", "capv", "l1", "l2", "n", "pn", "r", "pr", "w", "pw")

    def __init__(self) -> None:
        self.l1 = c_size_t(0)
        self.l2 = c_size_t(0)
        self.n = c_size_t(0)
        self.pn = ctypes.byref(self.n)
        self.r = c_int32(0)
        self.pr = ctypes.byref(self.r)
        self.w = c_int32(0)
        self.pw = ctypes.byref(self.w)
        self.cap = 0
        self.grow(4096)

    def grow(self, cap: int) -> None:
        self.buf = create_string_buffer(cap)
        self.bufp = ctypes.c_void_p(ctypes.addressof(self.buf))
        self.mv = memoryview(self.buf).cast("B")
        self.zeros = memoryview(bytes(cap))
        self.capv = c_size_t(cap)
        self.cap = cap

    def buffer(self, need: int) -> Any:
        if need > self.cap:
            self.grow(max(need, self.cap * 2))
        return self.buf


_local = threading.local()


def _scratch() -> _Scratch:
    s = _Scratch()
    _local.s = s
    return s





def _section_bytes(section: Mapping[str, Any] | str | bytes) -> bytes:
    if isinstance(section, Mapping):
        return json.dumps(section).encode("utf-8")
    if isinstance(section, str):
        return section.encode("utf-8")
    if isinstance(section, bytes):
        return section
    raise TypeError("section must be a mapping, JSON text or bytes")


def _at(at: int | float | None) -> int:
    return 0 if at is None else int(at)


def _ttl(ttl: int | None) -> int:
    """cryptography's ttl as the C argument: None = no limit (FERNET_NO_TTL), 0 and up a limit
    (a limit beyond int64 is the same as int64's largest: no timestamp is that old). Fernet
    timestamps and cryptography's current time are whole seconds, so a fractional ttl decides
    exactly as its floor."""
    if ttl is None:
        return FERNET_NO_TTL
    t = math.floor(ttl)
    if t < 0:
        raise ValueError("ttl must be 0 or more (or None for no limit)")
    return min(t, _INT64_MAX)


class FieldsMixin:
    """Mixed into ``bitsec.Runtime``; uses its ``handle``."""

    if TYPE_CHECKING:
        @property
        def handle(self) -> int: ...
    _h: int | None
    _fields_hp_cache: ctypes.c_void_p | None = None

    def _fields_hp(self) -> ctypes.c_void_p:
        """The handle as a c_void_p, cached (ClosedError after close())."""
        h = self.handle
        hp = self._fields_hp_cache
        if hp is None or hp.value != h:
            hp = ctypes.c_void_p(h)
            self._fields_hp_cache = hp
        return hp

    @overload
    def encrypt_field(self, plaintext: Bytesish, context: Bytesish, *, deterministic: bool = ..., binary: Literal[False] = ...) -> str: ...

    @overload
    def encrypt_field(self, plaintext: Bytesish, context: Bytesish, *, deterministic: bool = ..., binary: Literal[True]) -> bytes: ...

    @overload
    def encrypt_field(self, plaintext: Bytesish, context: Bytesish, *, deterministic: bool = ..., binary: bool) -> str | bytes: ...

    def encrypt_field(self, plaintext: Bytesish, context: Bytesish, *, deterministic: bool = False,
                      binary: bool = False) -> str | bytes:
        """Encrypts ``plaintext`` under the primary key, bound to ``context``. Returns the text
        token (``str``), or ``bytes`` with ``binary=True``. ``deterministic=True`` (AES-SIV)
        only for contexts listed in ``fields.deterministic_contexts``."""
        try:
            s = _local.s
        except AttributeError:
            s = _scratch()
        pt = plaintext if type(plaintext) is bytes else _b(plaintext, "plaintext")
        if type(context) is str:
            context = context.encode()
        elif type(context) is not bytes:
            context = _b(context, "context")
        n = len(pt)
        if 2900 < n <= FIELD_MAX_PLAINTEXT:
            # Beyond the scratch buffer's first size: the library gives the bound (+ NUL).
            need = int(_bound(n, _flags(deterministic, binary))) + 1
            if need > s.cap:
                s.grow(max(need, s.cap * 2))
        s.l1.value = n
        s.l2.value = len(context)
        hp = self._fields_hp_cache
        if hp is None or self._h is None:
            hp = self._fields_hp()
        rc = _encrypt_fast(hp, pt, s.l1, context, s.l2,
                           _FLAG_OBJS[(FIELD_DETERMINISTIC if deterministic else 0) | (FIELD_BINARY if binary else 0)] if deterministic or binary else _FLAG0,
                           s.bufp, s.capv, s.pn)
        if rc:
            N.check(rc)
        if binary:
            token: bytes = s.mv[: s.n.value].tobytes()
            return token
        text: str = s.buf.value.decode("ascii")
        return text

    def decrypt_field(self, token: Bytesish, context: Bytesish) -> bytes:
        """Decrypts a token (text or binary) bound to ``context``; raises a
        :class:`FieldDecryptError` subclass (``.reason``) when it does not decrypt."""
        if type(token) is str:
            try:
                tok = token.encode("ascii")
            except UnicodeEncodeError:
                raise FieldMalformedError() from None
        else:
            tok = _b(token, "token")
        ctx = context.encode() if type(context) is str else (context if type(context) is bytes else _b(context, "context"))
        try:
            s = _local.s
        except AttributeError:
            s = _scratch()
        n = len(tok)
        if n >= s.cap and n <= FIELD_MAX_TOKEN:
            s.grow(max(n + 1, s.cap * 2))
        s.l1.value = n
        s.l2.value = len(ctx)
        hp = self._fields_hp_cache
        if hp is None or self._h is None:
            hp = self._fields_hp()
        rc = _decrypt_fast(hp, tok, s.l1, ctx, s.l2, s.bufp, s.capv, s.pn, s.pr)
        if rc:
            N.check(rc)
        if s.r.value:
            raise _reject(s.r.value)
        n = s.n.value
        mv = s.mv
        out: bytes = mv[:n].tobytes()
        mv[:n] = s.zeros[:n]  # do not leave plaintext in the reused buffer
        return out

    @overload
    def rewrap_field(self, token: Bytesish, context: Bytesish, *, binary: Literal[False] = ...) -> str: ...

    @overload
    def rewrap_field(self, token: Bytesish, context: Bytesish, *, binary: Literal[True]) -> bytes: ...

    @overload
    def rewrap_field(self, token: Bytesish, context: Bytesish, *, binary: bool) -> str | bytes: ...

    def rewrap_field(self, token: Bytesish, context: Bytesish, *, binary: bool = False) -> str | bytes:
        """Re-encrypts a token under the current primary key (same context and mode). A token
        already under the primary (in the same form) is verified and returned unchanged."""
        tok = _b(token, "token")
        ctx = _b(context, "context")
        try:
            s = _local.s
        except AttributeError:
            s = _scratch()
        buf = s.buffer(len(tok) * 4 // 3 + 64)
        rc = _rewrap(self.handle, tok, len(tok), ctx, len(ctx), FIELD_BINARY if binary else 0, buf, s.cap, s.pn, s.pr, s.pw)
        if rc:
            N.check(rc)
        if s.r.value:
            raise _reject(s.r.value)
        out = string_at(buf, s.n.value)
        return out if binary else out.decode("ascii")

    def fields_reload(self, section: Mapping[str, Any] | str | bytes) -> None:
        """Replaces the field keyring atomically with a new ``fields`` section (rotation)."""
        data = _section_bytes(section)
        N.check(_reload(self.handle, data, len(data)))

    # ---- Fernet ------------------------------------------------------------------------

    def fernet_encrypt(self, data: Bytesish, *, at: int | float | None = None) -> bytes:
        """A Fernet token (as ``cryptography.fernet.Fernet.encrypt``) under the first Fernet key."""
        pt = _b(data, "data")
        cap = int(_fernet_bound(len(pt))) + 1
        buf = create_string_buffer(cap)
        n = c_size_t(0)
        N.check(_fernet_encrypt(self.handle, pt, len(pt), _at(at), buf, cap, ctypes.byref(n)))
        return buf.raw[: n.value]

    def fernet_decrypt(self, token: Bytesish, *, ttl: int | None = None, at: int | float | None = None) -> bytes:
        """Decrypts a Fernet token with any configured Fernet key (MultiFernet); ``ttl`` in
        seconds exactly as cryptography's ``Fernet.decrypt(token, ttl)``: None = no limit
        (and no check of a future timestamp); otherwise expired when ``timestamp + ttl <
        now`` and refused when the timestamp is more than 60 s after ``now``, so ``ttl=0``
        accepts only tokens stamped in the current second. ``at``: Unix seconds to evaluate
        at (as ``decrypt_at_time``'s ``current_time``; None or 0 = now)."""
        tok = _b(token, "token")
        t = _ttl(ttl)
        cap = len(tok) + 1
        buf = create_string_buffer(cap)
        n = c_size_t(0)
        r = c_int32(0)
        N.check(_fernet_decrypt_ttl(self.handle, tok, len(tok), t, _at(at), buf, cap, ctypes.byref(n), ctypes.byref(r)))
        if r.value:
            raise _reject(r.value)
        out = buf.raw[: n.value]
        ctypes.memset(buf, 0, cap)
        return out

    def fernet_rotate(self, token: Bytesish) -> bytes:
        """MultiFernet.rotate: the token under the first Fernet key, same timestamp."""
        tok = _b(token, "token")
        cap = len(tok) + 64
        buf = create_string_buffer(cap)
        n = c_size_t(0)
        r = c_int32(0)
        N.check(_fernet_rotate(self.handle, tok, len(tok), buf, cap, ctypes.byref(n), ctypes.byref(r)))
        if r.value:
            raise _reject(r.value)
        return buf.raw[: n.value]

    @overload
    def fernet_migrate(self, token: Bytesish, context: Bytesish, *, ttl: int | None = ..., at: int | float | None = ..., deterministic: bool = ..., binary: Literal[False] = ...) -> str: ...

    @overload
    def fernet_migrate(self, token: Bytesish, context: Bytesish, *, ttl: int | None = ..., at: int | float | None = ..., deterministic: bool = ..., binary: Literal[True]) -> bytes: ...

    @overload
    def fernet_migrate(self, token: Bytesish, context: Bytesish, *, ttl: int | None = ..., at: int | float | None = ..., deterministic: bool = ..., binary: bool) -> str | bytes: ...

    def fernet_migrate(self, token: Bytesish, context: Bytesish, *, ttl: int | None = None,
                       at: int | float | None = None, deterministic: bool = False, binary: bool = False) -> str | bytes:
        """Decrypts a Fernet token and re-encrypts its plaintext in the bitsec format bound to
        ``context`` (the plaintext never reaches Python). ``ttl`` as for ``fernet_decrypt``."""
        tok = _b(token, "token")
        ctx = _b(context, "context")
        t = _ttl(ttl)
        flags = _flags(deterministic, binary)
        cap = int(_bound(len(tok), flags)) + 1 if len(tok) <= FIELD_MAX_PLAINTEXT else FIELD_MAX_TOKEN + 1
        buf = create_string_buffer(cap)
        n = c_size_t(0)
        r = c_int32(0)
        N.check(_fernet_migrate_ttl(self.handle, tok, len(tok), t, _at(at), ctx, len(ctx), flags, buf, cap,
                                ctypes.byref(n), ctypes.byref(r)))
        if r.value:
            raise _reject(r.value)
        out = buf.raw[: n.value]
        return out if binary else out.decode("ascii")
