"""bitsec: the Python binding of the bitsec security runtime (libbitsec.so via ctypes)."""
from __future__ import annotations

from . import _abi, _native
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
from .fields import (
    FIELD_BINARY,
    FIELD_DETERMINISTIC,
    FIELD_MAX_CONTEXT,
    FIELD_MAX_PLAINTEXT,
    FieldDecryptError,
    FieldExpiredError,
    FieldMalformedError,
    FieldNotYetValidError,
    FieldRetiredKeyError,
    FieldTamperedError,
    FieldUnknownKeyError,
    FieldWrongContextError,
    fernet_bound,
    field_bound,
    field_context,
    field_key_id,
)
from .ratelimit import BruteForceStatus, LoginGuardDecision, RateLimitDecision
from .permissions import Decision, PermissionDeniedError, Principal, permission_reason
from .audit import AuditHandler, AuditProblem, AuditVerifyReport, audit_verify
from .runtime import Runtime, random_bytes
from .keys import KEY_TYPES, generate_signing_key, jwk_thumbprint, public_jwk
from .sessions import SESSION_REASONS, Session, SessionCreated, SessionValidation
from .csrf import CSRFDecision
from .totp import (
    BackupCodeDecision,
    BackupCodes,
    SEALED_SECRET_CONTEXT_PREFIX,
    TOTPDecision,
    TOTPEnrollment,
    hotp,
    hotp_check,
    totp_check,
    totp_generate_secret,
    totp_now,
    totp_provisioning_uri,
    totp_qr_png,
)
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
    MissingKeyIdError,
    token_reason_name,
)
from .passwords import PasswordPolicyDecision, PasswordVerification, normalize_password

from .guardcheck import GuardArgs, GuardCheck  # noqa: E402

__version__: str = _abi.VERSION
ABI_VERSION = _native.ABI_VERSION


def library_version() -> str:
    """The loaded library's version string."""
    return (_native.version_string() or b"").decode()


def library_path() -> str:
    """The path of the loaded library."""
    return str(_native.lib._name)


__all__ = [
    "ABI_VERSION", "Runtime", "random_bytes", "library_version", "library_path", "GuardArgs", "GuardCheck",
    "RateLimitDecision", "BruteForceStatus",
    "BitsecError", "InvalidArgumentError", "ConfigError", "NotConfiguredError", "BufferTooSmallError",
    "BackendUnavailableError", "CryptoError", "ClosedError", "TooLargeError", "MalformedError",
    "BitsecIOError", "BitsecTimeoutError", "InternalError", "UnsupportedError", "NotFoundError",
    # fields
    "FIELD_BINARY", "FIELD_DETERMINISTIC", "FIELD_MAX_CONTEXT", "FIELD_MAX_PLAINTEXT",
    "FieldDecryptError", "FieldMalformedError", "FieldTamperedError", "FieldWrongContextError",
    "FieldUnknownKeyError", "FieldRetiredKeyError", "FieldExpiredError", "FieldNotYetValidError",
    "field_bound", "fernet_bound", "field_context", "field_key_id",
    "Decision", "Principal", "PermissionDeniedError", "permission_reason",
    "AuditHandler", "AuditProblem", "AuditVerifyReport", "audit_verify",
    # totp
    "TOTPDecision", "BackupCodeDecision", "BackupCodes", "TOTPEnrollment", "SEALED_SECRET_CONTEXT_PREFIX",
    "totp_generate_secret", "totp_now", "totp_check",
    "hotp", "hotp_check", "totp_provisioning_uri", "totp_qr_png",
    # tokens
    "TokenError", "TokenClaims", "JWKSRefresher", "token_reason_name", "MalformedTokenError", "TokenTooLargeError",
    "UnsupportedAlgorithmError", "AlgorithmMismatchError", "UnknownKeyError", "InvalidSignatureError",
    "ExpiredTokenError", "TokenNotYetValidError", "TokenIssuedInFutureError", "WrongIssuerError",
    "WrongAudienceError", "MissingClaimError", "InvalidClaimError", "RevokedTokenError", "CritUnsupportedError",
    "WrongTokenTypeError",
    # signing keys
    "KEY_TYPES", "generate_signing_key", "public_jwk", "jwk_thumbprint",
    # sessions
    "Session", "SessionCreated", "SessionValidation", "SESSION_REASONS",
    "MissingKeyIdError",
    "CSRFDecision",
    # passwords
    "PasswordPolicyDecision", "PasswordVerification", "normalize_password",
]
