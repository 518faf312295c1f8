"""Password hashes of the reference service: bitsec's scrypt PHC strings
(``$scrypt$ln=17,r=8,p=1$salt$hash``, parameters from the ``passwords`` section), checked
with ``Runtime.password_verify``; the policy of ``Runtime.password_check`` for new passwords.

Hashes of earlier versions of this service (``scrypt$N$r$p$salt$hash``, hashlib.scrypt with
N = 2^14) are still verified here, and replaced by a bitsec hash at the next successful
login; so are bitsec hashes with parameters older than the configuration.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

import bitsec

#: The stored hash of an anonymised account: no password verifies against it.
UNUSABLE = "!"

#: Parameters of the earlier format are read from each hash, but only within these bounds
#: (a stored value must not make the service allocate gigabytes).
_LEGACY_MAX_N, _LEGACY_MAX_R, _LEGACY_MAX_P = 2 ** 20, 16, 16


def hash_password(rt: bitsec.Runtime, password: str) -> str:
    """A new bitsec scrypt PHC string (NFKC-normalised password, fresh salt)."""
    return rt.password_hash(password)


def _is_legacy(stored: str) -> bool:
    return stored.startswith("scrypt$")


def verify_legacy(password: str, stored: str) -> bool:
    """The earlier format ``scrypt$N$r$p$salt$hash`` (standard base64 with padding), hashed
    from the password's UTF-8 as typed (no normalisation)."""
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        n_, r_, p_ = int(n), int(r), int(p)
        if scheme != "scrypt" or not (1 < n_ <= _LEGACY_MAX_N and 0 < r_ <= _LEGACY_MAX_R and 0 < p_ <= _LEGACY_MAX_P):
            return False
        salt, expected = base64.b64decode(salt_b64, validate=True), base64.b64decode(digest_b64, validate=True)
        digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n_, r=r_, p=p_, dklen=len(expected),
                                maxmem=256 * 1024 * 1024)
    except (ValueError, TypeError, binascii.Error):
        return False
    return hmac.compare_digest(digest, expected)


def check_password(rt: bitsec.Runtime, password: str, user: Any | None) -> bool:
    """Whether ``password`` is ``user``'s. Always pays for one scrypt: an unknown user, an
    anonymised account or an unreadable hash runs bitsec's dummy verification instead. After a
    match, a hash in the earlier format or with outdated parameters is replaced on ``user``
    (``user.password_hash``; the caller's transaction stores it)."""
    stored = getattr(user, "password_hash", None) if user is not None else None
    if not stored or stored == UNUSABLE:
        rt.password_dummy_verify(password)
        return False
    if _is_legacy(stored):
        ok = verify_legacy(password, stored)
    else:
        try:
            ok = rt.password_verify(password, stored).match
        except (bitsec.MalformedError, bitsec.UnsupportedError, bitsec.TooLargeError, UnicodeError):
            rt.password_dummy_verify("")
            return False
    if ok and rt.password_needs_rehash(stored):
        user.password_hash = rt.password_hash(password)
    return ok


def policy_problem(rt: bitsec.Runtime, password: str, *, mfa: bool) -> str | None:
    """None when the policy accepts a new password, else the reason for a 422 (NIST SP
    800-63B-4: length in characters after normalisation, blocklist; no composition rules)."""
    d = rt.password_check(password, mfa=mfa)
    if d:
        return None
    section = rt.describe()["sections"]["passwords"]
    if "too_short" in d.reasons:
        return f"The new password must have at least {section['min_length_mfa' if mfa else 'min_length']} characters"
    if "too_long" in d.reasons:
        return f"The new password must have at most {section['max_length']} characters"
    return "The new password is too common (it appears in lists of breached passwords)"
