"""Passwords: scrypt hashes in the PHC string format, verification with a dummy verification
for unknown accounts, needs-rehash, and the NIST SP 800-63B-4 password policy.

The runtime's methods use its ``passwords`` section: ``password_hash``, ``password_verify``,
``password_dummy_verify``, ``password_needs_rehash`` and ``password_check``.

Normalisation: every password is normalised to Unicode NFKC here (``normalize_password``)
before it crosses into the library, for hashing, verifying and the policy alike: the native
library does not normalise and counts lengths in code points of what it receives, so a
length checked from Python is the length the library checks (``len()`` of the NFKC text), and
"é" typed composed or decomposed hashes the same. C callers normalise themselves.

A mismatch and a refused password are decisions (falsy results), never exceptions;
exceptions mean the call could not decide (a malformed stored hash, another scheme, ...).
"""
from __future__ import annotations

import unicodedata
from ctypes import byref, c_int32, c_size_t, c_uint32
from typing import NamedTuple, TYPE_CHECKING, Union

from . import _abi
from . import _native as N

__all__ = ["PasswordPolicyDecision", "PasswordVerification", "POLICY_REASONS", "normalize_password"]

Text = Union[str, bytes]

_hash = N.declare("bitsec_password_hash")
_verify = N.declare("bitsec_password_verify")
_needs_rehash = N.declare("bitsec_password_needs_rehash")
_check = N.declare("bitsec_password_check")

#: Policy reason names by BITSEC_PASSWORD_POLICY_* bit.
POLICY_REASONS: dict[int, str] = {
    _abi.BITSEC_PASSWORD_POLICY_TOO_SHORT: "too_short",
    _abi.BITSEC_PASSWORD_POLICY_TOO_LONG: "too_long",
    _abi.BITSEC_PASSWORD_POLICY_BLOCKLISTED: "blocklisted",
}
_HASH_CAP: int = _abi.BITSEC_PASSWORD_MAX_HASH_BYTES
_MAX_BYTES: int = _abi.BITSEC_PASSWORD_MAX_BYTES


def normalize_password(password: str | bytes) -> bytes:
    """The UTF-8 bytes of the NFKC form of ``password`` (``bytes`` are decoded as UTF-8 first;
    invalid UTF-8 raises ``UnicodeDecodeError``)."""
    if isinstance(password, (bytes, bytearray, memoryview)):
        password = bytes(password).decode("utf-8")
    if not isinstance(password, str):
        raise TypeError(f"password must be str or bytes, not {type(password).__name__}")
    return unicodedata.normalize("NFKC", password).encode("utf-8")


class PasswordVerification(NamedTuple):
    """Truthy when the password matched. ``needs_rehash``: store ``password_hash(password)``
    now (the stored hash has other parameters than the configuration)."""
    match: bool
    needs_rehash: bool

    def __bool__(self) -> bool:
        return self.match


class PasswordPolicyDecision(NamedTuple):
    """Truthy when the policy accepts the password. ``reasons``: names of what refused it
    (``too_short``, ``too_long``, ``blocklisted``); ``length``: code points after NFKC."""
    reasons: tuple[str, ...]
    length: int

    def __bool__(self) -> bool:
        return not self.reasons

    @property
    def accepted(self) -> bool:
        return not self.reasons


class PasswordsMixin:
    """Mixed into ``bitsec.Runtime``; uses its ``handle``."""

    if TYPE_CHECKING:
        @property
        def handle(self) -> int: ...

    def password_hash(self, password: Text) -> str:
        """A new scrypt PHC string (``$scrypt$ln=17,r=8,p=1$salt$hash``) for the NFKC form of
        ``password``, with a fresh random salt. Costs one scrypt (128 MiB and roughly 0.4 s of CPU
        at the defaults): call it from a worker thread (FastAPI ``def`` dependencies
        and endpoints run in one); ctypes releases the GIL during the call."""
        pw = normalize_password(password)
        return N.call_with_output(_hash, self.handle, pw, len(pw), initial=_HASH_CAP).decode("ascii")

    def password_verify(self, password: Text, stored: Text | None) -> PasswordVerification:
        """Checks ``password`` against a stored PHC string in constant time. ``stored=None``
        (unknown or disabled account) runs the dummy verification: the same scrypt work at the
        configured parameters, never a match, so timing does not reveal which accounts exist.
        Raises ``MalformedError`` for a value that is not a scrypt PHC string,
        ``UnsupportedError`` for another scheme (verify it yourself, then rehash),
        ``TooLargeError`` for parameters beyond ``max_memory_mib``."""
        pw = normalize_password(password)
        reason, rehash = c_int32(_abi.BITSEC_PASSWORD_MISMATCH), c_int32(0)
        if stored is None:
            rc = _verify(self.handle, pw, len(pw), None, 0, byref(reason), byref(rehash))
        else:
            st = stored.encode("utf-8") if isinstance(stored, str) else bytes(stored)
            rc = _verify(self.handle, pw, len(pw), st, len(st), byref(reason), byref(rehash))
        N.check(rc)
        match = reason.value == _abi.BITSEC_PASSWORD_MATCH
        return PasswordVerification(match, match and rehash.value == 1)

    def password_dummy_verify(self, password: Text = "") -> None:
        """The dummy verification alone (``password_verify(password, None)``): call it on
        every path where a login fails before a password is checked (unknown user, disabled
        account), so that it costs what a real verification does."""
        self.password_verify(password, None)

    def password_needs_rehash(self, stored: Text) -> bool:
        """True for anything but a well-formed scrypt PHC string with exactly the configured
        parameters: older parameters, another scheme you still verify yourself, garbage."""
        st = stored.encode("utf-8") if isinstance(stored, str) else bytes(stored)
        out = c_int32(1)
        N.check(_needs_rehash(self.handle, st, len(st), byref(out)))
        return out.value != 0

    def password_check(self, password: Text, *, mfa: bool = False) -> PasswordPolicyDecision:
        """Checks a new password against the policy (NIST SP 800-63B-4 section 3.1.1.2) after NFKC
        normalisation: at least ``min_length`` code points (``min_length_mfa`` with ``mfa=True``:
        the password is one factor of several), at most ``max_length``, not on the blocklist
        (case-insensitive). No composition rules. Falsy when refused, with the reasons."""
        pw = normalize_password(password)
        if len(pw) > _MAX_BYTES:
            # More than 4096 bytes is more than 1024 code points (at most 4 bytes each), beyond
            # any max_length: too long, decided here rather than refused by the library.
            return PasswordPolicyDecision(("too_long",), len(pw.decode("utf-8")))
        reasons, length = c_uint32(_abi.BITSEC_PASSWORD_POLICY_TOO_SHORT), c_size_t(0)
        flags = _abi.BITSEC_PASSWORD_FLAG_MFA if mfa else 0
        N.check(_check(self.handle, pw, len(pw), flags, byref(reasons), byref(length)))
        names = tuple(name for bit, name in POLICY_REASONS.items() if reasons.value & bit)
        return PasswordPolicyDecision(names, length.value)


