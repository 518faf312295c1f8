"""MFA: HOTP/TOTP codes, ``Runtime.totp_verify`` (replay protection and throttling), backup
codes, provisioning URIs and their QR codes (issue 6).

Module-level functions need no runtime: ``totp_generate_secret``, ``totp_now``,
``totp_check`` (stateless, no replay protection), ``hotp``, ``hotp_check``,
``totp_provisioning_uri`` and ``totp_qr_png`` (optional extra ``bitsec[qr]``). The runtime's
methods use its ``totp`` section: ``totp_verify``, ``totp_now``, ``totp_provisioning_uri``,
``backup_codes_generate``, ``backup_code_verify``; with a ``fields`` section too, secrets can
be stored sealed: ``totp_seal_secret``, ``totp_verify_sealed``, ``totp_enroll``.

Secrets are RFC 4648 base32 text (``str`` or ``bytes``). A wrong, replayed, throttled or
malformed code is a decision (a falsy ``TOTPDecision``), never an exception; exceptions mean
the call could not decide (bad secret, Redis unavailable, ...).
"""
from __future__ import annotations

import threading
from ctypes import POINTER, byref, c_char_p, c_int32, c_int64, c_size_t, c_uint64, create_string_buffer
from typing import NamedTuple, Sequence, TYPE_CHECKING, Union, cast

from . import _abi
from . import _native as N

__all__ = [
    "TOTPDecision", "BackupCodeDecision", "BackupCodes", "TOTPEnrollment", "REASONS", "ALGORITHMS",
    "SEALED_SECRET_CONTEXT_PREFIX",
    "totp_generate_secret", "totp_now", "totp_check", "hotp", "hotp_check",
    "totp_provisioning_uri", "totp_qr_png",
]

Text = Union[str, bytes]

_size_p = POINTER(c_size_t)
_secret_generate = N.declare("bitsec_totp_secret_generate")
_hotp_code = N.declare("bitsec_hotp_code")
_hotp_check = N.declare("bitsec_hotp_check")
_totp_code = N.declare("bitsec_totp_code")
_totp_check = N.declare("bitsec_totp_check")
_totp_uri = N.declare("bitsec_totp_uri")
_totp_verify = N.declare("bitsec_totp_verify")
_totp_now = N.declare("bitsec_totp_now")
_totp_provisioning_uri = N.declare("bitsec_totp_provisioning_uri")
_totp_secret_seal = N.declare("bitsec_totp_secret_seal")
_totp_verify_sealed = N.declare("bitsec_totp_verify_sealed")
_backup_codes_generate = N.declare("bitsec_backup_code_generate")
# The deprecated C names of renamed functions (exported for the rest of ABI version 1): declared
# so that every export of the header has its prototype here; never called.
N.declare("bitsec_backup_codes_generate")
_backup_code_verify = N.declare("bitsec_backup_code_verify")

#: Reason names by BITSEC_TOTP_* code.
REASONS = N.names_by_value("BITSEC_TOTP_", exclude=("MIN_", "MAX_", "DEFAULT_", "SEALED_"))
#: The field-encryption context of a sealed secret is this prefix followed by the user
#: (``Runtime.decrypt_field(sealed, SEALED_SECRET_CONTEXT_PREFIX + user)`` gives the secret back).
SEALED_SECRET_CONTEXT_PREFIX = "bitsec.totp.secret|"
#: BITSEC_TOTP_MAX_SEALED_SECRET_BYTES.
_MAX_SEALED: int = _abi.BITSEC_TOTP_MAX_SEALED_SECRET_BYTES
#: Algorithm names -> BITSEC_OTP_* code.
ALGORITHMS: dict[str, int] = {name.upper(): code for code, name in enumerate(N.names_by_value("BITSEC_OTP_"))}


class TOTPDecision:
    """The outcome of a verification: truthy when accepted.

    ``reason`` is one of ``ok``, ``wrong_code``, ``replayed``, ``throttled``,
    ``malformed_code``; ``step`` the matched time step (or HOTP counter), -1 when none;
    ``retry_after`` the seconds to wait when throttled, else 0.
    """

    __slots__ = ("reason", "step", "retry_after")

    def __init__(self, reason: str, step: int = -1, retry_after: int = 0) -> None:
        self.reason = reason
        self.step = step
        self.retry_after = retry_after

    @property
    def accepted(self) -> bool:
        return self.reason == "ok"

    def __bool__(self) -> bool:
        return self.reason == "ok"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TOTPDecision):
            return NotImplemented
        return (self.reason, self.step, self.retry_after) == (other.reason, other.step, other.retry_after)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, step={self.step}, retry_after={self.retry_after})"


class BackupCodeDecision(TOTPDecision):
    """A backup code verification: ``index`` is the position of the matched stored hash
    (delete it when accepted), -1 when none."""

    __slots__ = ()

    @property
    def index(self) -> int:
        return self.step


class TOTPEnrollment(NamedTuple):
    """A new enrolment: store ``sealed`` (the secret encrypted for the user), show ``uri`` once
    (as a QR code: ``totp_qr_png(uri)``), then confirm with a first ``totp_verify_sealed``."""

    sealed: str
    uri: str


class BackupCodes(NamedTuple):
    """New backup codes: show ``codes`` once, store ``hashes`` (same order), never the codes."""

    codes: list[str]
    hashes: list[str]


def _b(v: Text, name: str) -> bytes:
    if isinstance(v, str):
        # A lone surrogate (JSON's \ud800 gives one) has no UTF-8 form: passed on as the bytes
        # it would be, which bitsec refuses as it refuses any other invalid UTF-8 -- a code is
        # then malformed (a decision, recorded), a user an InvalidArgumentError, a secret a
        # MalformedError -- never a UnicodeEncodeError, which escapes ``except BitsecError``
        # (a 500). Never replaced: "eve\ud800" must not become another user's name.
        return v.encode("utf-8", "surrogatepass")
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    raise TypeError(f"{name} must be str or bytes, not {type(v).__name__}")


def _at(at: float | int | None) -> int:
    return 0 if at is None else int(at)


def _alg(algorithm: str) -> int:
    try:
        return ALGORITHMS[algorithm.upper().replace("-", "")]
    except KeyError:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, not {algorithm!r}") from None


# Per-thread out-parameters of the hot path: one allocation per thread, not per call
# (ctypes passes a c_int32 instance to a POINTER(c_int32) parameter by reference, and that
# is cheaper than byref()).
_tls = threading.local()


def _outs() -> tuple[c_int32, c_int64, c_int64]:
    try:
        return cast("tuple[c_int32, c_int64, c_int64]", _tls.outs)
    except AttributeError:
        _tls.outs = outs = (c_int32(), c_int64(), c_int64())
        return outs


def _small_output(fn, *args, cap: int = 2048) -> str:  # type: ignore[no-untyped-def]
    buf = create_string_buffer(cap)
    n = c_size_t(0)
    N.check(fn(*args, buf, cap, byref(n)))
    return buf.raw[: n.value].decode("ascii")


def totp_generate_secret(bits: int = 160) -> str:
    """A new base32 secret (no padding) of ``bits`` bits (128 to 512, multiple of 8) from
    OpenSSL's RNG."""
    return _small_output(_secret_generate, bits)


def hotp(secret: Text, counter: int, *, algorithm: str = "SHA1", digits: int = 6) -> str:
    """The RFC 4226 code of ``counter``."""
    s = _b(secret, "secret")
    return _small_output(_hotp_code, s, len(s), _alg(algorithm), digits, counter, cap=16)


def hotp_check(secret: Text, code: Text, counter: int, *, algorithm: str = "SHA1", digits: int = 6,
               look_ahead: int = 0) -> TOTPDecision:
    """Checks an HOTP code against ``counter .. counter + look_ahead``; ``.step`` is the matched
    counter (store ``step + 1`` as the next counter)."""
    s, c = _b(secret, "secret"), _b(code, "code")
    reason, counter_out = c_int32(), c_uint64()
    N.check(_hotp_check(s, len(s), c, len(c), _alg(algorithm), digits, counter, look_ahead, byref(reason), byref(counter_out)))
    ok = reason.value == 0
    return TOTPDecision(REASONS[reason.value], counter_out.value if ok else -1)


def totp_now(secret: Text, *, algorithm: str = "SHA1", digits: int = 6, period: int = 30, t0: int = 0,
             at: float | int | None = None) -> str:
    """The RFC 6238 code at ``at`` (Unix seconds; None = now)."""
    s = _b(secret, "secret")
    return _small_output(_totp_code, s, len(s), _alg(algorithm), digits, period, t0, _at(at), cap=16)


_ALG = dict(ALGORITHMS)


def totp_check(secret: Text, code: Text, *, algorithm: str = "SHA1", digits: int = 6, period: int = 30, t0: int = 0,
               window: int = 1, at: float | int | None = None) -> TOTPDecision:
    """Stateless check of a TOTP code within ``window`` steps: NO replay protection and no
    throttling (use ``Runtime.totp_verify`` for logins)."""
    try:
        s = secret.encode() if type(secret) is str else _b(secret, "secret")
        c = code.encode() if type(code) is str else _b(code, "code")
    except UnicodeEncodeError:  # (a lone surrogate: _b's)
        s, c = _b(secret, "secret"), _b(code, "code")
    r, st, _ = _outs()
    rc = _totp_check(s, len(s), c, len(c), _ALG.get(algorithm) if algorithm in _ALG else _alg(algorithm), digits, period, t0,
                     window, 0 if at is None else int(at), r, st)
    if rc:
        N.check(rc)
    return TOTPDecision(REASONS[r.value], st.value)


def totp_provisioning_uri(secret: Text, account: str, issuer: str | None = None, *, algorithm: str = "SHA1",
                          digits: int = 6, period: int = 30) -> str:
    """The Google Authenticator key URI (``otpauth://totp/Issuer:account?secret=...``)."""
    s, a = _b(secret, "secret"), _b(account, "account")
    i = b"" if issuer is None else _b(issuer, "issuer")
    return _small_output(_totp_uri, s, len(s), a, len(a), i or None, len(i), _alg(algorithm), digits, period)


def totp_qr_png(uri: str, *, box_size: int = 10, border: int = 4) -> bytes:
    """A QR code of ``uri`` as PNG bytes. Needs the optional extra: ``pip install bitsec[qr]``
    (qrcode + pypng, pure Python)."""
    try:
        import qrcode
        from qrcode.image.pure import PyPNGImage
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("totp_qr_png needs the qr extra: pip install 'bitsec[qr]'") from e
    import io

    qr = qrcode.QRCode(box_size=box_size, border=border, error_correction=qrcode.constants.ERROR_CORRECT_M,
                       image_factory=PyPNGImage)
    qr.add_data(uri)
    qr.make(fit=True)
    out = io.BytesIO()
    qr.make_image().save(out)
    return out.getvalue()


class TOTPMixin:
    """Mixed into ``bitsec.Runtime``; uses its ``handle``."""

    if TYPE_CHECKING:
        @property
        def handle(self) -> int: ...

    def totp_verify(self, secret: Text, code: Text, user: Text | None = None,
                    at: float | int | None = None) -> TOTPDecision:
        """Verifies a code with the runtime's ``totp`` parameters, refusing replays (a step
        accepted once for ``user`` and every earlier one) and throttling failures. Truthy when
        accepted; ``.reason`` says why not. Without ``user`` the state is keyed by a hash of
        the secret. One C call."""
        try:
            s = secret.encode() if type(secret) is str else _b(secret, "secret")
            c = code.encode() if type(code) is str else _b(code, "code")
            u = None if user is None else user.encode() if type(user) is str else _b(user, "user")
        except UnicodeEncodeError:  # (a lone surrogate: _b's)
            s, c, u = _b(secret, "secret"), _b(code, "code"), None if user is None else _b(user, "user")
        ul = 0 if u is None else len(u)
        r, st, ra = _outs()
        rc = _totp_verify(self.handle, s, len(s), c, len(c), u, ul, 0 if at is None else int(at), r, st, ra)
        if rc:
            N.check(rc)
        return TOTPDecision(REASONS[r.value], st.value, ra.value)

    def totp_seal_secret(self, secret: Text, user: Text) -> str:
        """Encrypts a base32 secret for ``user`` with the runtime's ``fields`` keys (context
        ``bitsec.totp.secret|<user>``): store the result instead of the secret. Needs ``totp``
        and ``fields`` sections (else ``NotConfiguredError``)."""
        s, u = _b(secret, "secret"), _b(user, "user")
        return _small_output(_totp_secret_seal, self.handle, s, len(s), u, len(u), cap=_MAX_SEALED + 1)

    def totp_verify_sealed(self, sealed: Text, code: Text, user: Text,
                           at: float | int | None = None) -> TOTPDecision:
        """``totp_verify`` with a sealed secret (``totp_seal_secret``), opened inside the library
        for ``user`` and wiped after use; same decisions, replay and throttle state. A sealed
        secret that does not open (altered, or sealed for another user) raises
        ``MalformedError``, never returns a decision."""
        try:
            s = sealed.encode() if type(sealed) is str else _b(sealed, "sealed")
            c = code.encode() if type(code) is str else _b(code, "code")
            u = user.encode() if type(user) is str else _b(user, "user")
        except UnicodeEncodeError:  # (a lone surrogate: _b's)
            s, c, u = _b(sealed, "sealed"), _b(code, "code"), _b(user, "user")
        r, st, ra = _outs()
        rc = _totp_verify_sealed(self.handle, s, len(s), c, len(c), u, len(u), 0 if at is None else int(at), r, st, ra)
        if rc:
            N.check(rc)
        return TOTPDecision(REASONS[r.value], st.value, ra.value)

    def totp_enroll(self, user: str, account: str | None = None) -> TOTPEnrollment:
        """Enrols a user: a new 160-bit secret, sealed for ``user``, and its provisioning URI
        (``account`` defaults to ``user``; the issuer is ``totp.issuer``). The plaintext secret
        exists only inside the URI, which is shown once."""
        secret = totp_generate_secret()
        return TOTPEnrollment(self.totp_seal_secret(secret, user),
                              self.totp_provisioning_uri(secret, user if account is None else account))

    def totp_now(self, secret: Text, at: float | int | None = None) -> str:
        """The current code with the runtime's parameters (enrolment checks, tests)."""
        s = _b(secret, "secret")
        return _small_output(_totp_now, self.handle, s, len(s), _at(at), cap=16)

    def totp_provisioning_uri(self, secret: Text, account: str) -> str:
        """The key URI with the runtime's parameters and ``totp.issuer``."""
        s, a = _b(secret, "secret"), _b(account, "account")
        return _small_output(_totp_provisioning_uri, self.handle, s, len(s), a, len(a))

    def backup_codes_generate(self, count: int | None = None) -> BackupCodes:
        """New single-use backup codes (``count`` or the configured number): show ``.codes``
        once, store ``.hashes``."""
        n = 0 if count is None else int(count)
        if n < 0:
            raise ValueError("count must be positive")
        cap = max(n, 64) * 128
        buf = create_string_buffer(cap)
        ln = c_size_t(0)
        N.check(_backup_codes_generate(self.handle, n, buf, cap, byref(ln)))
        text = buf.raw[: ln.value].decode("ascii")
        codes, hashes = [], []
        for line in text.splitlines():
            code, h = line.split("\t")
            codes.append(code)
            hashes.append(h)
        return BackupCodes(codes, hashes)

    def backup_code_verify(self, user: Text, code: Text, hashes: Sequence[str],
                           at: float | int | None = None) -> BackupCodeDecision:
        """Verifies a backup code against the user's stored hashes and consumes it. When
        accepted, delete ``hashes[decision.index]``; a code already used answers
        ``replayed``."""
        u, c = _b(user, "user"), _b(code, "code")
        stored = "\n".join(hashes).encode("utf-8", "surrogatepass")  # (not bitsec's hashes: refused by bitsec)
        reason, index, retry = c_int32(), c_int32(), c_int64()
        N.check(_backup_code_verify(self.handle, u, len(u), c, len(c), stored, len(stored), _at(at),
                                    byref(reason), byref(index), byref(retry)))
        return BackupCodeDecision(REASONS[reason.value], index.value, retry.value)
