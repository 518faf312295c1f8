"""Password hashes of the reference service: ``hashlib.scrypt`` (RFC 7914)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2 ** 14, 8, 1, 32

#: The stored hash of an anonymised account: no password verifies against it.
UNUSABLE = "!"


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (16-byte random salt, parameters kept per hash so they can be raised)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=SCRYPT_LEN)
    return "scrypt${}${}${}${}${}".format(SCRYPT_N, SCRYPT_R, SCRYPT_P, base64.b64encode(salt).decode(),
                                          base64.b64encode(digest).decode())


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
        digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=int(n), r=int(r), p=int(p),
                                dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


# A hash to check unknown (or anonymised) usernames against, so that they cost the same
# time as known ones.
DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def check_password(password: str, stored: str | None) -> bool:
    """``verify_password`` that always pays for one scrypt, also when there is no usable hash."""
    usable = stored is not None and stored != UNUSABLE
    ok = verify_password(password, stored if usable and stored else DUMMY_HASH)
    return ok and usable
