"""bitsec: the Python binding of the bitsec security runtime (libbitsec.so via ctypes)."""
from __future__ import annotations

from . import _native
from .errors import (
    BackendUnavailableError,
    BitsecError,
    BitsecIOError,
    BitsecTimeoutError,
    BufferTooSmallError,
    ClosedError,
    ConfigError,
    CryptoError,
    InternalError,
    InvalidArgumentError,
    MalformedError,
    NotConfiguredError,
    NotFoundError,
    TooLargeError,
    UnsupportedError,
)
from .runtime import Runtime, random_bytes
from .tokens import (
    AlgorithmMismatchError,
    CritUnsupportedError,
    ExpiredTokenError,
    InvalidClaimError,
    InvalidSignatureError,
    JWKSRefresher,
    MalformedTokenError,
    MissingClaimError,
    RevokedTokenError,
    TokenClaims,
    TokenError,
    TokenIssuedInFutureError,
    TokenNotYetValidError,
    TokenTooLargeError,
    UnknownKeyError,
    UnsupportedAlgorithmError,
    WrongAudienceError,
    WrongIssuerError,
    WrongTokenTypeError,
    token_reason_name,
)

__version__ = "0.1.0"
ABI_VERSION = _native.ABI_VERSION


def library_version() -> str:
    """The loaded library's version string."""
    return (_native.version_string() or b"").decode()


def library_path() -> str:
    """The path of the loaded library."""
    return str(_native.lib._name)


__all__ = [
    "ABI_VERSION", "Runtime", "random_bytes", "library_version", "library_path",
    "BitsecError", "InvalidArgumentError", "ConfigError", "NotConfiguredError", "BufferTooSmallError",
    "BackendUnavailableError", "CryptoError", "ClosedError", "TooLargeError", "MalformedError",
    "BitsecIOError", "BitsecTimeoutError", "InternalError", "UnsupportedError", "NotFoundError",
    # tokens
    "TokenError", "TokenClaims", "JWKSRefresher", "token_reason_name", "MalformedTokenError", "TokenTooLargeError",
    "UnsupportedAlgorithmError", "AlgorithmMismatchError", "UnknownKeyError", "InvalidSignatureError",
    "ExpiredTokenError", "TokenNotYetValidError", "TokenIssuedInFutureError", "WrongIssuerError",
    "WrongAudienceError", "MissingClaimError", "InvalidClaimError", "RevokedTokenError", "CritUnsupportedError",
    "WrongTokenTypeError",
]
